"""The desktop client of chat/1: tkinter (the standard library's), on the shared client core.

    python -m chat.gui [--host H] [--port P] [--name N] [--tls] [--cafile F]

    app.py          the glue, on Tk's main loop: carries out the core's effects
    window.py       the widgets: tabs of conversations, who is online, input, status
    dialogs.py      the connect dialog and one-question prompts
    connection.py   the socket, in worker threads that only talk through a queue

The decisions (commands, pending messages, reconnecting, completion) are the
client core's (chat/client_core.py), the same the CLI uses; this package only
shows them and owns the window, the socket's threads and the clock.
"""
