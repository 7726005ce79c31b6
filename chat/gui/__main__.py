"""`python -m chat.gui`: the desktop client (see chat/gui/__init__.py)."""

from __future__ import annotations

import argparse
import sys

from chat import client
from chat.protocol import VERSION


def build_parser() -> argparse.ArgumentParser:
    """The CLI's options (chat/client.py), which say where and as whom to
    connect: one set of options, one meaning, for both clients."""
    parser = client.build_parser()
    parser.prog = "chat-gui"
    parser.description = (f"The desktop client of the {VERSION} chat protocol (see SPEC.md). "
                          "With --name it connects at once; otherwise the connect dialog asks, "
                          "filled in from these options.")
    parser.epilog = None
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        import tkinter
    except ImportError:
        print("chat-gui: this Python has no tkinter (on Debian: apt install python3-tk)",
              file=sys.stderr)
        return 1
    from chat.gui.app import ChatApp
    from chat.gui.connection import ServerAddress
    from chat.protocol import is_valid_name

    try:
        password = client.read_password(args.password_file)
    except OSError as error:
        parser.error(f"cannot read the password file: {error.strerror}")
    try:
        root = tkinter.Tk(className="chat-gui")
    except tkinter.TclError as error:
        print(f"chat-gui: cannot open a window: {error}", file=sys.stderr)
        return 1
    app = ChatApp(root)
    address = ServerAddress(args.host, args.port, args.tls or args.cafile is not None, args.cafile)
    if args.name is not None and is_valid_name(args.name):
        app.begin(address, args.name, password)
    else:
        app.show_connect_dialog(address, args.name, password)
    root.mainloop()
    app.close()
    return app.status if app.status is not None else 0


if __name__ == "__main__":
    sys.exit(main())
