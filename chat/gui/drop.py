"""Files dropped on the chat window, where Tk has the tkdnd extension.

Tk 8.6 has no drag and drop of its own; tkdnd (a Tcl package, Debian's
`tkdnd`, not a Python one) adds it: XDND on X11, OLE on Windows, Cocoa on
macOS. Where `package require tkdnd` fails, enable_drops() does nothing and
the window is exactly what it is without it (the "Send file..." button stays).
local_files() is pure: what was dropped -> the local files, and a note for
everything else. Main thread only, like the rest of chat/gui.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: tkdnd's type for a list of files (text/uri-list on X11, CF_HDROP on Windows).
FILES = "DND_Files"
#: tkdnd's event for a drop of that type; its %D is the list of files.
DROP_EVENT = "<<Drop:DND_Files>>"


def local_files(items: list[str]) -> tuple[list[str], list[str]]:
    """The local files among what was dropped, and a note for each item refused.

    tkdnd gives paths (it strips `file://` and %-unquotes on X11); a
    `file://` URI is taken too, for other versions. Anything else (a web
    address, a folder, a path that is not there) is refused, never fetched.
    """
    files: list[str] = []
    refused: list[str] = []
    for item in items:
        text = item
        if text.startswith("file://"):
            uri = urlsplit(text)
            if uri.netloc not in ("", "localhost"):
                refused.append(f"not dropped: {item} is on another computer")
                continue
            text = unquote(uri.path)
        elif "://" in text:
            refused.append(f"not dropped: {item} is not a local file")
            continue
        path = Path(text)
        if not path.is_file():
            path = Path(_utf8_unquoted(text))
        if not path.is_absolute() or not path.is_file():
            refused.append(f"not dropped: {item} is not a file here (only files can be sent)")
            continue
        files.append(str(path))
    return files, refused


def _utf8_unquoted(text: str) -> str:
    """A path that tkdnd 2.6 (X11) %-unquoted a byte at a time, as UTF-8.

    Its urn_unquote makes one character of each %XX, so that a file manager's
    `caf%C3%A9.txt` arrives as `cafÃ©.txt`; those characters are the UTF-8
    bytes. Text that is not such bytes is returned as it came."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def enable_drops(root: tk.Tk, on_drop: Callable[[list[str]], None]) -> bool:
    """Make every widget of the window `root` take dropped files, where tkdnd
    is there; on_drop(items) then runs from the event loop, after the drop.
    Whether tkdnd is there (False: nothing was changed)."""
    try:
        root.tk.call("package", "require", "tkdnd")
    except tk.TclError:
        return False

    def dropped(data: str) -> str:
        items = list(root.tk.splitlist(data))
        # After the drop, not in it: the source waits for the XDND exchange to
        # end, and on_drop may open a dialog (to whom?).
        root.after_idle(on_drop, items)
        return "copy"

    command = root.register(dropped)
    registered: set[str] = set()

    def register(widget: tk.Misc) -> None:
        # tkdnd 2.6 on X11 offers a drop to a widget under the pointer (the
        # innermost one, or one of its parents), and only a widget with the
        # type and the binding takes it: each of them gets both.
        path = str(widget)
        if path in registered or not widget.winfo_exists():
            return
        registered.add(path)
        root.tk.call("tkdnd::drop_target", "register", path, FILES)
        root.tk.call("bind", path, DROP_EVENT, f"{command} %D")

    def register_tree(widget: tk.Misc) -> None:
        register(widget)
        for child in widget.winfo_children():
            if not isinstance(child, tk.Toplevel):  # dialogs, the Transfers window
                register_tree(child)

    register_tree(root)
    # Widgets made later (a private conversation's tab) are registered when
    # they first show, in case the drop is offered to them: the window's own
    # tag is in each of its widgets' bindtags.
    def mapped(event: tk.Event) -> None:
        # event.widget is a string for a widget tkinter did not make.
        if isinstance(event.widget, tk.Misc) and event.widget.winfo_toplevel() is root:
            register(event.widget)

    root.bind("<Map>", mapped, add="+")
    return True
