"""Files dragged onto the desktop client (chat/gui/drop.py), where Tk has tkdnd.

A real XDND drag between two X clients on the tests' Xvfb: a second process
(tests/drag_source.py, tkdnd's drag source) holds the files, xdotool presses
the mouse on it, moves it over the chat window and releases it there, and
the window then shows what the "Send file..." button shows (the recipient is
asked as the button asks, then /send). Each step waits for the step before
it to be reported (the source says when the drag began and when the window
accepted it), never for a fixed time. Without tkdnd (Debian: apt-get install
tkdnd) or xdotool, the drag tests skip, with the reason; on CI (CI=true) they
fail instead, like the other GUI tests (tests/xdisplay.py).
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from chat.client_files import FileTransfers, OfferReceived
from tests.conftest import DEADLINE

tk = pytest.importorskip("tkinter", reason="this Python has no tkinter")

from chat.gui.drop import enable_drops, local_files  # noqa: E402  (after the tkinter check)
from tests import test_gui  # noqa: E402
from tests.test_gui_files import Answers, file_line  # noqa: E402

x_display, gui, alice, others = test_gui.x_display, test_gui.gui, test_gui.alice, test_gui.others

SOURCE = Path(__file__).with_name("drag_source.py")
#: Where the windows stand: the chat window at the top left, the drag source
#: clear of it, so that the pointer's path from one to the other is known.
CHAT_GEOMETRY = "860x520+0+0"
SOURCE_GEOMETRY = "160x80+1000+700"


# -- what counts as a dropped file (no window needed) ---------------------------------


def test_local_files_takes_paths_and_file_uris_and_refuses_the_rest(tmp_path):
    photo = tmp_path / "a photo.jpg"
    photo.write_bytes(b"jpeg")
    items = [str(photo), "file://" + str(photo).replace(" ", "%20"), f"file://localhost{photo}",
             "https://example.org/x.zip", f"file://elsewhere{photo}", str(tmp_path),
             str(tmp_path / "gone.txt"), "relative.txt"]
    files, refused = local_files(items)
    assert files == [str(photo)] * 3
    assert refused == [
        "not dropped: https://example.org/x.zip is not a local file",
        f"not dropped: file://elsewhere{photo} is on another computer",
        f"not dropped: {tmp_path} is not a file here (only files can be sent)",
        f"not dropped: {tmp_path / 'gone.txt'} is not a file here (only files can be sent)",
        "not dropped: relative.txt is not a file here (only files can be sent)",
    ]


def test_local_files_reads_names_tkdnd_unquoted_a_byte_at_a_time(tmp_path):
    cafe = tmp_path / "café menu.txt"
    cafe.write_bytes(b"soup")
    as_tkdnd_gives_it = str(cafe).encode("utf-8").decode("latin-1")
    assert local_files([as_tkdnd_gives_it]) == ([str(cafe)], [])


def test_without_tkdnd_the_window_is_as_it_was(x_display):
    """Where `package require tkdnd` fails, nothing is registered or bound."""
    root = tk.Tk()
    try:
        root.tk.call("set", "auto_path", "")  # so that no tkdnd can be found
        root.tk.call("package", "forget", "tkdnd")
        assert enable_drops(root, lambda items: pytest.fail("a drop without tkdnd")) is False
        assert root.bind("<Map>") == ""
        assert "tkdnd" not in root.tk.call("package", "names")
    finally:
        root.destroy()


# -- a real drag ----------------------------------------------------------------------------------


def _missing(reason: str) -> None:
    # As tests/xdisplay.py does for the display: a skip with the reason, a failure on CI.
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true, and the drag-and-drop tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"drag-and-drop tests: {reason}")


@pytest.fixture
def dnd_tools(x_display):
    """tkdnd in this Tk and xdotool on PATH, or a skip (a failure on CI) saying which is missing."""
    xdotool = shutil.which("xdotool")
    if xdotool is None:
        _missing("no xdotool on PATH to drag with (Debian: apt-get install xdotool)")
    probe = tk.Tk()
    try:
        probe.tk.call("package", "require", "tkdnd")
    except tk.TclError as error:
        _missing(f"Tk has no tkdnd, so no drag and drop ({error}; Debian: apt-get install tkdnd)")
    finally:
        probe.destroy()
    return xdotool


class DragSource:
    """tests/drag_source.py, running: its window, and the lines it reports."""

    def __init__(self, driver, items: list[str]) -> None:
        self.driver = driver
        self.process = subprocess.Popen([sys.executable, str(SOURCE), SOURCE_GEOMETRY, *items],
                                        stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def wait_for(self, expected: str) -> None:
        """Run the chat window's event loop (it is the drop target) until the source reports `expected`."""
        def reported():
            while not self.lines.empty():
                self.seen.append(self.lines.get())
            return expected in self.seen

        self.driver.wait_until(reported, lambda: f"{expected!r} from the drag source; it said {self.seen}")

    def __enter__(self) -> DragSource:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(DEADLINE)
        self.reader.join(DEADLINE)
        self.process.stdout.close()


def drag(driver, xdotool: str, items: list[str], widget) -> DragSource:
    """Drag `items` from a drag source onto `widget` of the chat window, as a person does."""
    driver.root.geometry(CHAT_GEOMETRY)
    driver.root.update()
    source = DragSource(driver, items)
    # The pointer goes back where it was: with no window manager, the
    # keyboard focus follows it, and other GUI tests share this display.
    was = subprocess.run([xdotool, "getmouselocation", "--shell"], check=True, timeout=DEADLINE,
                         capture_output=True, text=True).stdout.split()
    back = [part.split("=")[1] for part in was if part.startswith(("X=", "Y="))]
    try:
        source.wait_for("ready")
        left, top = (int(n) for n in SOURCE_GEOMETRY.split("+")[1:])
        start_x, start_y = left + 80, top + 40
        to_x = widget.winfo_rootx() + widget.winfo_width() // 2
        to_y = widget.winfo_rooty() + widget.winfo_height() // 2

        def mouse(*steps: str) -> None:
            subprocess.run([xdotool, *steps], check=True, timeout=DEADLINE)

        # tkdnd starts a drag once the pointer moves more than 3 pixels with the button held.
        mouse("mousemove", str(start_x), str(start_y), "mousedown", "1",
              "mousemove", str(start_x - 10), str(start_y - 10))
        source.wait_for("dragging")
        mouse("mousemove", str(to_x), str(to_y))
        source.wait_for("accepted")  # the chat window said yes to XdndPosition
        mouse("mouseup", "1")
        source.wait_for("ended")
    except BaseException:
        subprocess.run([xdotool, "mouseup", "1"], timeout=DEADLINE)  # never leave it held
        source.close()
        raise
    finally:
        subprocess.run([xdotool, "mousemove", *back], timeout=DEADLINE)
    return source


def test_a_file_dragged_onto_the_window_is_offered_as_the_button_offers_it(
        dnd_tools, alice, server, others, tmp_path):
    assert alice.app.files.drops
    bob = others("bob")
    alice.wait_for("bob joined")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(os.urandom(200_000))
    answers = alice.app.files.dialogs = Answers(recipient="bob")
    with drag(alice, dnd_tools, [str(photo)], alice.window.room.text):
        alice.wait_for("offered photo.jpg to bob")
        assert answers.asked == ["recipient"]  # the file is known: no file dialog
        offer = file_line(bob, FileTransfers("bob"))
        assert isinstance(offer, OfferReceived)
        assert (offer.transfer.shown_name, offer.transfer.size) == ("photo.jpg", 200_000)
        screenshot(alice, tmp_path)


def test_several_files_dropped_are_each_offered_to_one_recipient_asked_once(
        dnd_tools, alice, server, others, tmp_path):
    bob = others("bob")
    alice.wait_for("bob joined")
    paths = []
    for name in ("one.txt", "two.txt"):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(name.encode())
    answers = alice.app.files.dialogs = Answers(recipient="bob")
    # Onto the list of who is online this time: any part of the window takes a drop.
    with drag(alice, dnd_tools, [str(path) for path in paths], alice.window.members):
        alice.wait_for("offered two.txt to bob")
        assert "offered one.txt to bob" in alice.room_text()
        assert answers.asked == ["recipient"]
        book = FileTransfers("bob")
        assert sorted(file_line(bob, book).transfer.shown_name for _ in paths) == ["one.txt", "two.txt"]


def test_a_file_dropped_on_a_private_conversation_goes_to_that_person_unasked(
        dnd_tools, alice, server, others, tmp_path):
    """As the button does: the private conversation shown is the recipient."""
    bob = others("bob")
    alice.wait_for("bob joined")
    private = alice.window.conversation("bob")
    alice.window.select(private)
    alice.wait_until(private.text.winfo_ismapped, lambda: "bob's tab is not shown")
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"for bob")
    answers = alice.app.files.dialogs = Answers(recipient="nobody")
    with drag(alice, dnd_tools, [str(notes)], private.text):
        alice.wait_for("offered notes.txt to bob")
        assert answers.asked == []
        assert file_line(bob, FileTransfers("bob")).transfer.shown_name == "notes.txt"


def test_a_file_managers_uri_with_spaces_and_accents_is_offered(
        dnd_tools, alice, server, others, tmp_path):
    """A file manager sends text/uri-list, %-encoded (GLib's g_filename_to_uri)."""
    bob = others("bob")
    alice.wait_for("bob joined")
    menu = tmp_path / "café menu.txt"
    menu.write_bytes(b"soup of the day")
    alice.app.files.dialogs = Answers(recipient="bob")
    with drag(alice, dnd_tools, [menu.as_uri()], alice.window.room.text):
        alice.wait_for("offered café menu.txt to bob")
        assert file_line(bob, FileTransfers("bob")).transfer.shown_name == "café menu.txt"


def test_more_files_than_the_server_takes_at_once_are_refused_whole(
        dnd_tools, alice, server, others, tmp_path):
    at_once = alice.app.core.features["file-per-user"]
    paths = []
    for number in range(at_once + 1):
        paths.append(tmp_path / f"{number}.txt")
        paths[-1].write_bytes(b"x")
    answers = alice.app.files.dialogs = Answers(recipient="bob")
    with drag(alice, dnd_tools, [str(path) for path in paths], alice.window.room.text):
        alice.wait_for(f"not dropped: {at_once + 1} files; this server takes at most {at_once} at once")
        assert answers.asked == []
        assert "offered" not in alice.room_text()


def test_a_web_address_dropped_is_refused_with_a_note(dnd_tools, alice, server, others, tmp_path):
    answers = alice.app.files.dialogs = Answers(recipient="bob")
    with drag(alice, dnd_tools, ["https://example.org/report.pdf"], alice.window.entry):
        alice.wait_for("not dropped: https://example.org/report.pdf is not a local file")
        assert answers.asked == []
        assert "offered" not in alice.room_text()


def screenshot(driver, tmp_path: Path) -> None:
    """The window after the drop, as a PNG: tmp_path/drop.png, or where
    CHAT_GUI_DROP_SCREENSHOT says (to look at it)."""
    importer = shutil.which("import")
    if importer is None:
        pytest.fail("ImageMagick's import is needed for the screenshot (.ci/run installs it)")
    driver.root.update()
    path = Path(os.environ.get("CHAT_GUI_DROP_SCREENSHOT") or tmp_path / "drop.png")
    subprocess.run([importer, "-window", driver.root.wm_frame(), str(path)], check=True, timeout=30)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
