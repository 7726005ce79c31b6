"""The desktop client (chat/gui/) in a real Tk window, against a real reference server.

The window runs on an X display of its own (tests/xdisplay.py: Xvfb, started
here). Tests drive it as a user would, with Tk's own events (keys into the
input line, button invocations), and read what a user would see: the Text
widgets' contents and tags, the list of who is online, the tabs' titles,
the status bar. Waiting is Tk's: `pump` runs the event loop (the app polls
its socket queue from it) until the expected content shows, with a
deadline; nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chat.cli import History
from chat.client_core import STALL_NOTICE
from chat.server import ChatServer
from tests.conftest import DEADLINE, TEST_LIMITS, LineClient
from tests.xdisplay import private_display

tk = pytest.importorskip("tkinter", reason="this Python has no tkinter")

from chat.gui.app import ChatApp  # noqa: E402  (after the tkinter check)
from chat.gui.connection import ServerAddress  # noqa: E402
from chat.gui.dialogs import Prompt  # noqa: E402
from chat.gui.window import colour_for, name_tag  # noqa: E402
from tests.gui_driver import (  # noqa: E402
    Driver,
    SilentServer,
    WallClock,
    connect_through_dialog,
    pump,
    read_until,
)

#: Seconds to wait for a reconnect: the core's first backoff is at most
#: BACKOFF_FIRST * 1.5 (jitter), and the tests pin the jitter to 0 (0.5 s).
RECONNECT_DEADLINE = 15.0


@pytest.fixture(scope="session")
def x_display():
    """The X display of every GUI test here (Xvfb, started and stopped by the tests)."""
    with private_display() as display:
        yield display


@pytest.fixture
def others(request):
    """Other people in the room, as raw LineClients: others("bob") is bob,
    registered with the `server` fixture (or at `address`); all are closed
    after the test."""
    clients = []

    def join_as(name: str, address=None) -> LineClient:
        client = LineClient(address or request.getfixturevalue("server").address)
        clients.append(client)
        return client.register(name)

    yield join_as
    for client in clients:
        client.close()


@pytest.fixture
def gui(x_display, tmp_path):
    """A chat window (no session yet); closed, with its threads, after the test."""
    root = tk.Tk()
    wall_clock = WallClock()
    quit_statuses: list[int] = []
    app = ChatApp(root, wall_clock=wall_clock, jitter=lambda: 0.0, on_quit=quit_statuses.append,
                  history_dir=tmp_path / "state")
    driver = Driver(app)
    driver.wall_clock = wall_clock
    driver.quit_statuses = quit_statuses
    yield driver
    app.close()
    root.destroy()
    # Tk objects must die on the main thread: left to the cyclic collector,
    # they would be freed by whichever thread it runs in next (a later test's
    # socket reader), where tkinter waits for a main loop that is not there.
    del app, driver
    gc.collect()


@pytest.fixture
def alice(gui, server):
    """The window, connected to the `server` fixture as alice."""
    connect_through_dialog(gui, server.address)
    return gui


def test_connect_dialog_leads_to_the_room(gui, server):
    dialog = gui.app.show_connect_dialog(ServerAddress("127.0.0.1", 5000))
    # Typing goes to the first empty field at once, without a click.
    gui.wait_until(lambda: gui.root.focus_get() is dialog.entries["Your name"], gui.root.focus_get)
    gui.root.update()
    assert gui.root.focus_get() is dialog.entries["Your name"]  # and it stays there
    dialog.port.set("not a port")
    dialog.connect_button.invoke()
    assert "port" in dialog.problem.get()
    dialog.host.set(server.address[0])
    dialog.port.set(str(server.address[1]))
    dialog.name.set("9lives")
    dialog.connect_button.invoke()
    assert "name" in dialog.problem.get()
    dialog.name.set("alice")
    dialog.connect_button.invoke()
    gui.wait_for("you joined the room as alice")
    gui.wait_until(lambda: "1 online" in gui.status(), gui.status)
    assert f"alice on 127.0.0.1:{server.address[1]}" in gui.status()
    assert gui.members() == ["alice"]
    assert gui.window.tab_titles() == ["room"]
    assert "alice" in gui.root.title()


def test_a_message_from_another_user_shows_in_the_senders_colour(alice, server, others):
    bob = others("bob")
    bob.send("MSG hi everyone")
    alice.wait_for("hi everyone")
    line = alice.room_text().splitlines()[-1]
    assert line.endswith("\tbob\thi everyone"), line
    tags = alice.tags_at(alice.window.room, "bob\thi")
    assert name_tag("bob") in tags
    assert alice.window.room.text.tag_cget(name_tag("bob"), "foreground") == colour_for("bob")
    assert colour_for("bob") == colour_for("BOB")  # the same person ([NAME-2])


def test_a_line_naming_us_is_highlighted(alice, server, others):
    bob = others("bob")
    bob.send("MSG alice: look at this")
    alice.wait_for("look at this")
    assert "mention" in alice.tags_at(alice.window.room, "look at this")
    bob.send("MSG nothing for you")
    alice.wait_for("nothing for you")
    assert "mention" not in alice.tags_at(alice.window.room, "nothing for you")


def test_own_message_is_pending_until_the_server_echoes_it(alice, server, others):
    bob = others("bob")
    alice.say("hello bob")
    # Shown at once, before any event from the socket was handled: pending.
    assert "hello bob" in alice.room_text()
    assert "pending" in alice.tags_at(alice.window.room, "hello bob")
    assert alice.window.entry.get() == ""
    read_until(bob, "MSG alice hello bob")
    alice.wait_until(lambda: "pending" not in alice.tags_at(alice.window.room, "hello bob"),
                     lambda: alice.tags_at(alice.window.room, "hello bob"))
    assert alice.room_text().count("hello bob") == 1  # once, not twice
    alice.wait_until(lambda: "lag" in alice.status(), alice.status)


def test_the_user_list_follows_join_and_leave(alice, server, others):
    bob = others("bob")
    alice.wait_until(lambda: alice.members() == ["alice", "bob"], alice.members)
    assert alice.window.members_label.cget("text") == "2 online"
    alice.wait_for("bob joined")
    carol = others("carol")
    alice.wait_until(lambda: alice.members() == ["alice", "bob", "carol"], alice.members)
    bob.send("LEAVE")
    alice.wait_until(lambda: alice.members() == ["alice", "carol"], alice.members)
    alice.wait_for("bob left")
    bob.close()
    carol.close()
    alice.wait_for("carol left (connection closed)")
    assert alice.members() == ["alice"]
    assert alice.window.members.itemcget(0, "foreground") == colour_for("alice")


def test_a_private_message_opens_its_own_tab_with_an_unread_mark(alice, server, others):
    bob = others("bob")
    bob.send("PM alice psst, alice")
    pump(alice.root, lambda: len(alice.window.tab_titles()) == 2, alice.window.tab_titles)
    assert alice.window.tab_titles() == ["room", "bob (1!)"]
    conversation = alice.window.find("bob")
    assert "psst, alice" in conversation.contents()
    assert "mention" not in alice.tags_at(conversation, "psst")  # all of it is for us: no highlight
    assert "psst" not in alice.room_text()  # kept apart from the room
    bob.send("PM alice another")
    alice.wait_for("another", conversation)
    assert alice.window.tab_titles() == ["room", "bob (2!)"]

    alice.window.select(conversation)
    alice.root.update()
    assert alice.window.tab_titles() == ["room", "bob"]
    assert alice.window.target_label.cget("text") == "to bob"
    alice.say("hi bob, just us")  # typed in bob's tab: private
    read_until(bob, "PM alice bob hi bob, just us")
    alice.wait_until(lambda: "pending" not in alice.tags_at(conversation, "just us"),
                     lambda: alice.tags_at(conversation, "just us"))
    assert "just us" not in alice.room_text()

    bob.send("MSG back in the room")  # the room's tab, not shown: unread
    alice.wait_until(lambda: alice.window.tab_titles()[0] == "room (1)",
                     alice.window.tab_titles)
    alice.key("Control-w")  # closes the private tab
    alice.root.update()
    assert alice.window.tab_titles() == ["room"]


def test_a_refused_message_is_struck_through_with_the_reason(alice):
    alice.say("@nobody are you there?")
    conversation = alice.window.find("nobody")
    assert conversation is not None and alice.window.current is not conversation
    assert alice.window.tab_titles() == ["room", "nobody"]  # our own line is not unread
    alice.wait_until(lambda: "failed" in alice.tags_at(conversation, "are you there?"),
                     conversation.contents)
    assert "pending" not in alice.tags_at(conversation, "are you there?")
    assert "refused: " in conversation.contents()


def test_a_double_click_on_a_name_opens_a_private_tab(alice, server, others):
    others("bob")
    alice.wait_until(lambda: alice.members() == ["alice", "bob"], alice.members)
    alice.root.update()  # laid out: the item has a place to click
    x, y, width, height = alice.window.members.bbox(1)
    for _ in range(2):  # a double click is two clicks, close in time and place
        alice.window.members.event_generate("<ButtonPress-1>", x=x + 2, y=y + 2)
        alice.window.members.event_generate("<ButtonRelease-1>", x=x + 2, y=y + 2)
    alice.root.update()
    assert alice.window.tab_titles() == ["room", "bob"]
    assert alice.window.current.peer == "bob"
    alice.key("Control-Next")  # the next tab, round to the room
    alice.root.update()
    assert alice.window.current.peer is None


def test_query_opens_a_tab_and_query_alone_closes_it(alice, server, others):
    others("bob")
    alice.wait_until(lambda: "bob" in alice.members(), alice.members)
    alice.say("/query BOB")
    alice.root.update()
    assert alice.window.tab_titles() == ["room", "bob"]
    assert alice.window.current.peer == "bob"
    alice.say("/query")
    alice.root.update()
    assert alice.window.tab_titles() == ["room"]


def test_up_and_down_walk_the_input_history(alice, tmp_path):
    alice.say("/help")
    alice.say("/names")
    alice.type("a draft")
    alice.key("Up")
    assert alice.window.entry.get() == "/names"
    alice.key("Up")
    assert alice.window.entry.get() == "/help"
    alice.key("Up")
    assert alice.window.entry.get() == "/help"  # the oldest stays
    alice.key("Down")
    assert alice.window.entry.get() == "/names"
    alice.key("Down")
    assert alice.window.entry.get() == "a draft"  # the draft comes back
    # Kept for the next session under this name, in the CLI's own file.
    assert History("alice", tmp_path / "state").load() == ["/help", "/names"]


def test_the_history_of_an_earlier_session_is_there(gui, server, tmp_path):
    History("alice", tmp_path / "state").save(["said yesterday"])
    connect_through_dialog(gui, server.address, "alice")
    gui.key("Up")
    assert gui.window.entry.get() == "said yesterday"


def test_tab_completes_names_of_people_online(alice, server, others):
    others("bob")
    others("bobby")
    alice.wait_until(lambda: alice.members() == ["alice", "bob", "bobby"], alice.members)
    alice.type("b")
    alice.key("Tab")
    assert alice.window.entry.get() == "bob: "
    assert alice.window.entry.index("insert") == len("bob: ")
    alice.key("Tab")
    assert alice.window.entry.get() == "bobby: "
    assert alice.root.focus_get() is alice.window.entry  # Tab did not move the focus
    alice.type("/na")
    alice.key("Tab")
    assert alice.window.entry.get() == "/names "


def test_a_refused_name_asks_for_another(gui, server, others):
    others("alice")
    dialog = gui.app.show_connect_dialog(ServerAddress(*server.address))
    dialog.name.set("alice")
    dialog.connect_button.invoke()
    prompt = gui.wait_until(lambda: isinstance(gui.app.dialog, Prompt) and gui.app.dialog,
                            lambda: gui.app.dialog)
    prompt.answer.set("alice2")
    prompt.ok_button.invoke()
    gui.wait_for("you joined the room as alice2")


def test_a_server_restart_is_shown_and_the_conversation_goes_on(gui, make_server, others):
    first = make_server()
    address = first.address
    connect_through_dialog(gui, address)
    gui.say("before the restart")
    gui.wait_until(lambda: "pending" not in gui.tags_at(gui.window.room, "before the restart"),
                   gui.status)
    first.shutdown()
    gui.wait_for("disconnected")
    gui.wait_until(lambda: "reconnecting" in gui.status(), gui.status)
    gui.wait_for("reconnecting in 0.5 s (attempt 1)")
    gui.say("typed while away")  # not lost: back in the input line
    assert gui.window.entry.get() == "typed while away"
    assert "not connected" in gui.room_text()

    second = ChatServer(*address, TEST_LIMITS).start()  # the same port again
    try:
        gui.wait_for("you are back in the room as alice", deadline=RECONNECT_DEADLINE)
        assert gui.members() == ["alice"]
        bob = others("bob", address)
        bob.send("MSG welcome back")
        gui.wait_for("welcome back")
        gui.key("Return")  # the draft kept in the input line goes out now
        read_until(bob, "MSG alice typed while away")
    finally:
        gui.app.close()
        second.shutdown()


def test_own_action_and_a_rename_show_in_the_room_and_the_list(alice, server, others):
    bob = others("bob")
    bob.send("PM alice psst")
    alice.wait_until(lambda: alice.window.find("bob") is not None, alice.window.tab_titles)
    alice.say("/me waves")
    assert "alice waves" in alice.room_text().replace("\t", " ").replace("  ", " ")
    assert "pending" in alice.tags_at(alice.window.room, "waves")
    read_until(bob, "ACT alice waves")
    alice.wait_until(lambda: "pending" not in alice.tags_at(alice.window.room, "waves"),
                     lambda: alice.tags_at(alice.window.room, "waves"))

    bob.send("NICK robert")
    alice.wait_for("bob is now robert")
    assert alice.members() == ["alice", "robert"]
    assert alice.window.tab_titles() == ["room", "robert (1!)"]  # the private tab follows
    alice.window.select(alice.window.find("robert"))
    alice.root.update()
    assert alice.window.target_label.cget("text") == "to robert"
    alice.say("/nick alicia")
    alice.wait_for("you are now alicia")
    assert alice.members() == ["alicia", "robert"]
    assert "alicia on " in alice.status()
    assert "alicia" in alice.root.title()


def test_a_long_paste_asks_first_then_goes_out_line_by_line(alice, server, others):
    bob = others("bob")
    lines = [f"line {n}" for n in range(1, 8)]
    alice.type("\n".join(lines))
    alice.key("Return")
    prompt = alice.wait_until(lambda: isinstance(alice.app.dialog, Prompt) and alice.app.dialog,
                              lambda: alice.app.dialog)
    assert "Send these 7 lines to the room" in prompt.message.cget("text")
    prompt.ok_button.invoke()  # Yes
    for line in lines:
        read_until(bob, f"MSG alice {line}")


def test_a_room_password_is_asked_for(gui, make_server):
    server = make_server(dataclasses.replace(TEST_LIMITS, password="sesame"))
    dialog = gui.app.show_connect_dialog(ServerAddress(*server.address))
    dialog.name.set("alice")
    dialog.connect_button.invoke()
    prompt = gui.wait_until(lambda: isinstance(gui.app.dialog, Prompt) and gui.app.dialog,
                            lambda: gui.app.dialog)
    assert prompt.entry.cget("show") == "\N{BULLET}"
    prompt.answer.set("sesame")
    prompt.ok_button.invoke()
    gui.wait_for("you joined the room as alice")


def test_tls_with_the_servers_ca_file(gui, tmp_path):
    trustme = pytest.importorskip("trustme", reason="trustme makes the test certificates")
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    cafile = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(cafile))
    server = ChatServer("127.0.0.1", None, TEST_LIMITS, tls_context=context, tls_port=0).start()
    try:
        dialog = gui.app.show_connect_dialog(ServerAddress(*server.tls_address))
        dialog.name.set("alice")
        dialog.tls_button.invoke()
        assert str(dialog.cafile_entry.cget("state")) == "normal"
        dialog.cafile.set(str(cafile))
        dialog.connect_button.invoke()
        gui.wait_for("you joined the room as alice")
        assert "(with TLS)" in gui.room_text()
        assert "(TLS)" in gui.status()
    finally:
        gui.app.close()
        server.shutdown()


def test_the_window_answers_while_the_connection_hangs(gui):
    """A TLS handshake that never ends happens in the Link's thread: the
    window goes on taking keys and drawing meanwhile."""
    silent = socket.create_server(("127.0.0.1", 0))  # listens, never accepts, never speaks
    try:
        gui.app.begin(ServerAddress(*silent.getsockname()[:2], tls=True), "alice", None)
        gui.wait_until(lambda: "connecting" in gui.status(), gui.status)
        gui.say("/help")  # not connected: handled by the core at once
        assert "Type a message" in gui.room_text()
        gui.key("Up")
        assert gui.window.entry.get() == "/help"
        assert "connecting" in gui.status()
    finally:
        silent.close()  # resets the connection: the handshake fails, the thread ends
    gui.wait_for("cannot connect")


def test_a_server_gone_silent_shows_in_the_status_bar_and_the_message_stays_marked(gui):
    silent = SilentServer()
    try:
        gui.app.begin(ServerAddress(*silent.address), "alice", None)
        gui.wait_for("you joined the room as alice")
        gui.say("anyone there?")
        # The core's stall notice comes after STALL_NOTICE seconds without a word.
        gui.wait_until(lambda: "no reply for" in gui.status(), gui.status,
                       deadline=STALL_NOTICE + DEADLINE)
        assert "pending" in gui.tags_at(gui.window.room, "anyone there?")
    finally:
        silent.close()
    gui.wait_for("it may not have arrived")
    assert "lost" in gui.tags_at(gui.window.room, "anyone there?")
    assert "pending" not in gui.tags_at(gui.window.room, "anyone there?")


def test_closing_the_window_leaves_the_room(alice, server, others):
    bob = others("bob")
    alice.app.request_quit()
    read_until(bob, "LEAVE alice quit")
    alice.wait_until(lambda: alice.quit_statuses, lambda: alice.app.status)
    assert alice.quit_statuses == [0]


@pytest.mark.timeout(60)
def test_two_cli_users_and_one_gui_user_go_on_after_a_server_restart(gui, make_server, tmp_path):
    """Issue 11's "done when": three people (two in the terminal, one in the
    window) chat, the server restarts, all three come back under their own
    names with what they were typing, and the conversation goes on."""
    pytest.importorskip("pyte", reason="pyte emulates the terminal the CLI runs in (test extra)")
    from tests.test_cli_screen import Terminal

    first = make_server()
    port = first.address[1]
    connect_through_dialog(gui, first.address, "carol")
    terminals = []
    try:
        for name in ("alice", "bob"):
            terminals.append(Terminal(port, "--name", name, state=tmp_path / "state"))
            gui.wait_for(f"{name} joined")
        alice, bob = terminals
        bob.wait_for(r"\* online \(3\): alice, bob, carol")
        alice.type("half-typed")
        gui.type("carol's draft")

        first.shutdown()
        gui.wait_for("disconnected: the server is shutting down")
        gui.wait_for("reconnecting in")
        for person in (alice, bob):
            person.wait_for(r"\* reconnecting in \d+\.\d s \(attempt 1\)")
        second = ChatServer("127.0.0.1", port, TEST_LIMITS).start()
        try:
            gui.wait_for("you are back in the room as carol", deadline=RECONNECT_DEADLINE)
            gui.wait_until(lambda: gui.members() == ["alice", "bob", "carol"], gui.members,
                           deadline=RECONNECT_DEADLINE)
            for person, name in ((alice, "alice"), (bob, "bob")):
                person.wait_for(rf"\* disconnected: the server is shutting down\n(.*\n)*.*\* {name} joined",
                                deadline=RECONNECT_DEADLINE)
            assert alice.input_row == "alice> half-typed"
            assert gui.window.entry.get() == "carol's draft"

            bob.type("we are back\r")
            alice.wait_for(r"<bob> we are back$")
            gui.wait_for("we are back")
            gui.key("Return")
            alice.wait_for(r"<carol> carol's draft$")
            alice.type("\r")
            gui.wait_for("half-typed")
            bob.wait_for(r"<alice> half-typed$")
            assert all(person.process.poll() is None for person in terminals)
        finally:
            gui.app.close()
            second.shutdown()
    finally:
        for terminal in terminals:
            terminal.close()


def test_the_command_says_what_it_takes_and_why_it_cannot_open_a_window():
    repository = Path(__file__).resolve().parent.parent
    help_run = subprocess.run([sys.executable, "-m", "chat.gui", "--help"], capture_output=True,
                              text=True, timeout=30, cwd=repository)
    assert help_run.returncode == 0
    assert help_run.stdout.startswith("usage: chat-gui ")
    assert "--cafile" in help_run.stdout and "connect dialog" in help_run.stdout
    no_display = subprocess.run([sys.executable, "-m", "chat.gui", "--name", "alice"],
                                capture_output=True, text=True, timeout=30, cwd=repository,
                                env={**os.environ, "DISPLAY": ":65000"})
    assert no_display.returncode == 1
    assert no_display.stderr.startswith("chat-gui: cannot open a window:")


SCREENSHOT_ENV = "CHAT_GUI_SCREENSHOT"


def test_screenshot_of_a_three_person_conversation(gui, server, others, x_display, tmp_path):
    """A window with a conversation in it, as a PNG. By default to a temporary
    file; CHAT_GUI_SCREENSHOT=docs/gui.png makes the README's picture."""
    importer = shutil.which("import")
    if importer is None:
        pytest.fail("ImageMagick's import is needed for the screenshot (.ci/run installs it)")
    gui.wall_clock.at = time.mktime((2026, 11, 30, 9, 41, 0, 0, 0, -1))
    gui.root.geometry("860x520+0+0")
    connect_through_dialog(gui, server.address, "alice")
    bob = others("bob")
    carol = others("carol")
    conversation = [
        (bob, "MSG morning! did the release go out?"),
        (None, "it did, 1.0 is tagged"),
        (carol, "MSG nice work, alice!"),
        (bob, "ACT raises a coffee"),
        (None, "thanks both. carol: the notes are in the README"),
        (carol, "MSG on it"),
    ]
    for who, line in conversation:
        gui.wall_clock.at += 37
        if who is None:
            gui.say(line)
            gui.wait_until(lambda line=line: "pending" not in gui.tags_at(gui.window.room, line),
                           gui.status)
        else:
            who.send(line)
            gui.wait_for(line.split(" ", 1)[1])
    bob.send("PM alice lunch at noon?")
    gui.wait_until(lambda: len(gui.window.tab_titles()) == 2, gui.window.tab_titles)
    gui.type("sounds good")
    gui.wait_until(lambda: "lag" in gui.status(), gui.status)
    gui.root.update()

    path = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "gui.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([importer, "-window", gui.root.wm_frame(), str(path)], check=True, timeout=30,
                   env={**os.environ, "DISPLAY": x_display})
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    assert (width, height) == (gui.root.winfo_width(), gui.root.winfo_height()) == (860, 520)
