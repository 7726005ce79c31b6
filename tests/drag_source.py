"""A second X client that files can be dragged from (tkdnd's XDND drag source),
for tests/test_gui_drop.py: `python tests/drag_source.py GEOMETRY ITEM...`.

It shows a small window at GEOMETRY (e.g. 160x80+1000+700) whose label is a
drag source of ITEMs (paths or URIs, as tkdnd's DND_Files), and reports on
stdout, one line each, what the test waits for instead of sleeping:
`ready`, `dragging` (the drag began: the pointer is grabbed), `accepted` (the
window under the pointer answered XdndStatus with a yes, so a release now
drops), `ended` (the button is up and the drag over: tkdnd 2.6 on X11 does not say
whether anything took the drop, so the test looks at the window for that).
"""

from __future__ import annotations

import sys
import tkinter as tk


def main(geometry: str, items: list[str]) -> None:
    root = tk.Tk()
    root.title("drag source")
    root.geometry(geometry)
    root.tk.call("package", "require", "tkdnd")
    label = tk.Label(root, text="drag me", background="#fde68a")
    label.pack(fill="both", expand=True)
    root.tk.call("tkdnd::drag_source", "register", str(label), "DND_Files")

    def say(line: str) -> None:
        print(line, flush=True)

    def begin() -> tuple:
        say("dragging")
        return ("copy", "DND_Files", tuple(items))

    def status(*_trace) -> None:
        # Called after tkdnd's own handler of XdndStatus: its verdict is set.
        if root.tk.getvar("::tkdnd::xdnd::_dodragdrop_drop_target_accepts_drop") in (1, "1"):
            say("accepted")

    def end() -> None:
        say("ended")

    root.tk.call("bind", str(label), "<<DragInitCmd>>", root.register(begin))
    root.tk.call("bind", str(label), "<<DragEndCmd>>", root.register(end))
    root.tk.call("trace", "add", "execution", "::tkdnd::xdnd::_HandleXdndStatus", "leave",
                 root.register(status))
    root.update()
    say("ready")
    root.mainloop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
