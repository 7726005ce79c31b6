"""The GUI's widgets: conversations in tabs, who is online, the input line, the status bar.

Only the main thread uses these (Tk is not thread-safe). They know nothing
of sockets or of the protocol: chat/gui/app.py decides what to show and
calls the methods here; what the user types goes back through the callbacks
given to ChatWindow.

    +--------------------------------------------+-----------+
    | [room] [bob (2)]                            | 3 online  |
    | 09:41  alice  hello                         | alice     |
    | 09:41  bob    hi alice                      | bob       |
    |                                             | carol     |
    +--------------------------------------------+-----------+
    | > input line                                           |
    +--------------------------------------------------------+
    | alice on 127.0.0.1:5000 | lag 2 ms | 3 online           |
    +--------------------------------------------------------+
"""

from __future__ import annotations

import tkinter as tk
import zlib
from collections.abc import Callable
from tkinter import font as tkfont
from tkinter import ttk

from chat.cli import LineEditor
from chat.protocol import name_key

#: Name colours: eight hues told apart at a glance (more would give
#: neighbours that look alike), each at least 4.5:1 against the white
#: background (WCAG AA) and against the mention highlight. A name always gets
#: the same one (colour_for), on every run and in every client.
NAME_COLOURS = (
    "#a35200",  # orange
    "#c0392b",  # red
    "#8e44ad",  # purple
    "#1b7a43",  # green
    "#0e7c7b",  # teal
    "#c2185b",  # pink
    "#6d4c41",  # brown
    "#1f6fb2",  # blue
)
#: Grey for timestamps and pending text; red for refusals.
MUTED = "#6b7280"
ALERT = "#b91c1c"
#: Background of a line that names us.
MENTION_BACKGROUND = "#fff4c2"
#: Points; 11 is the size desktop chat clients default to, and reads well
#: beside the 9-point Tk default used for the widgets' chrome.
TEXT_SIZE = 11
#: The width the sender column is made for: longer names push their text
#: right (names go up to 32 characters, [NAME-1]; most are under 10).
SENDER_COLUMN = "mmmmmmm"
#: Lines a conversation keeps; older ones are dropped from the top, so that
#: a busy room left open for days does not grow the Text widget without end.
SCROLLBACK_LINES = 5000


def colour_for(name: str) -> str:
    """The stable colour of `name` (the same ignoring case, as names are, [NAME-2])."""
    return NAME_COLOURS[zlib.crc32(name_key(name).encode("utf-8")) % len(NAME_COLOURS)]


def name_tag(name: str) -> str:
    """The Text tag that colours `name`."""
    return "name-" + name_key(name)


class Conversation:
    """One tab: the room (peer None) or a private conversation with `peer`."""

    def __init__(self, notebook: ttk.Notebook, peer: str | None, fonts: dict[str, tkfont.Font]) -> None:
        self.peer = peer
        self._last_line_tags: tuple[str, ...] = ()
        self.unread = 0
        self.mentioned = False
        self.frame = ttk.Frame(notebook)
        self.text = tk.Text(self.frame, wrap="word", state="disabled", font=fonts["text"],
                            relief="flat", borderwidth=0, padx=8, pady=6, background="white",
                            foreground="#111827", spacing1=2, spacing3=2, cursor="arrow",
                            takefocus=False, height=1, width=1)
        scrollbar = ttk.Scrollbar(self.frame, orient="vertical", command=self.text.yview)
        self.text.configure(yscrollcommand=scrollbar.set)
        self.text.grid(row=0, column=0, sticky="nsew")
        scrollbar.grid(row=0, column=1, sticky="ns")
        self.frame.rowconfigure(0, weight=1)
        self.frame.columnconfigure(0, weight=1)
        # Columns: the time, the sender right-aligned (as weechat does), the
        # text; a long line wraps to the text's column, not to the margin.
        time_width = fonts["small"].measure("00:00")
        sender_end = time_width + fonts["bold"].measure(SENDER_COLUMN) + 12
        text_start = sender_end + fonts["text"].measure("  ") + 6
        self.text.configure(tabs=(sender_end, "right", text_start, "left"))
        self.text.tag_configure("line", lmargin2=text_start)
        self.text.tag_configure("time", foreground=MUTED, font=fonts["small"])
        self.text.tag_configure("sign", foreground=MUTED)
        self.text.tag_configure("event", foreground="#4b5563")
        self.text.tag_configure("name", font=fonts["bold"])
        self.text.tag_configure("pending", foreground=MUTED, font=fonts["italic"])
        self.text.tag_configure("failed", foreground=ALERT, overstrike=True)
        self.text.tag_configure("lost", foreground="#b45309")
        self.text.tag_configure("note", foreground=MUTED, font=fonts["italic"])
        # Text laid out in columns with spaces (/help) keeps them in a fixed font.
        self.text.tag_configure("columns", foreground=MUTED, font=fonts["fixed"])
        self.text.tag_configure("error", foreground=ALERT)
        self.text.tag_configure("action", font=fonts["italic"])
        self.text.tag_configure("mention", background=MENTION_BACKGROUND)
        self.text.tag_raise("pending")
        self.text.tag_raise("failed")

    @property
    def title(self) -> str:
        base = "room" if self.peer is None else self.peer
        if not self.unread:
            return base
        return f"{base} ({self.unread}{'!' if self.mentioned else ''})"

    def append(self, parts: list[tuple[str, tuple[str, ...]]], line_tags: tuple[str, ...] = ()) -> None:
        """Add one line made of (text, tags) parts, keeping the view at the
        bottom if it was there (a user reading back is not pulled down).

        A line's tags cover its newline too, so that a highlight spans the
        whole width: the widget's last newline carries the last line's tags,
        and hands them to the separator when a line comes after it."""
        at_bottom = self.text.yview()[1] >= 0.999
        self.text.configure(state="normal")
        if self.text.index("end-1c") != "1.0":
            self.text.insert("end", "\n", self._last_line_tags)
        for text, tags in parts:
            self.text.insert("end", text, tags + line_tags)
        for tag in self._last_line_tags:
            self.text.tag_remove(tag, "end-1c", "end")
        for tag in line_tags:
            self.text.tag_add(tag, "end-1c", "end")
        self._last_line_tags = line_tags
        excess = int(self.text.index("end-1c").split(".")[0]) - SCROLLBACK_LINES
        if excess > 0:
            self.text.delete("1.0", f"{excess + 1}.0")
        self.text.configure(state="disabled")
        if at_bottom:
            self.text.see("end")

    def tag_text(self, tag: str, add: tuple[str, ...] = (), remove: tuple[str, ...] = ()) -> bool:
        """Add and remove tags over the text carrying `tag`; whether there was any."""
        ranges = self.text.tag_ranges(tag)
        for start, end in zip(ranges[::2], ranges[1::2], strict=True):
            for name in remove:
                self.text.tag_remove(name, start, end)
            for name in add:
                self.text.tag_add(name, start, end)
        return bool(ranges)

    def insert_after(self, tag: str, text: str, tags: tuple[str, ...]) -> None:
        """Insert `text` just after the text carrying `tag`."""
        ranges = self.text.tag_ranges(tag)
        if ranges:
            self.text.configure(state="normal")
            self.text.insert(ranges[-1], text, tags)
            self.text.configure(state="disabled")

    def clear(self) -> None:
        self.text.configure(state="normal")
        self.text.delete("1.0", "end")
        self._last_line_tags = ()
        self.text.configure(state="disabled")

    def contents(self) -> str:
        return self.text.get("1.0", "end-1c")


class ChatWindow:
    """The main window's widgets.

    `on_enter(text, peer)`: the user pressed Enter in the input line while the
    conversation with `peer` (None: the room) was shown. `on_complete(text,
    cursor)` returns the completed text and cursor (Tab). `on_select(peer)`:
    another tab was chosen. `on_open(peer)`: the user asked for a private
    conversation (double-click in the list). `on_close_tab(peer)`: Ctrl-W.
    """

    def __init__(self, root: tk.Tk, *,
                 on_enter: Callable[[str, str | None], None],
                 on_complete: Callable[[str, int], tuple[str, int]],
                 on_select: Callable[[str | None], None],
                 on_open: Callable[[str], None],
                 on_close_tab: Callable[[str], None]) -> None:
        self.root = root
        self._on_enter = on_enter
        self._on_complete = on_complete
        self._on_select = on_select
        self._on_open = on_open
        self._on_close_tab = on_close_tab
        #: The CLI's line editor, for its history (Up/Down); the Entry does the editing.
        self.editor = LineEditor()
        self.fonts = _make_fonts(root)
        root.title("chat/1")
        root.geometry("860x520")
        root.minsize(480, 300)
        style = ttk.Style(root)
        if "clam" in style.theme_names():
            style.theme_use("clam")
        style.configure("TNotebook.Tab", padding=(12, 4))
        style.configure("Status.TLabel", padding=(8, 3), foreground="#374151")
        style.configure("Members.TLabel", padding=(6, 4), font=self.fonts["bold"])

        panes = ttk.PanedWindow(root, orient="horizontal")
        self.notebook = ttk.Notebook(panes)
        self.notebook.bind("<<NotebookTabChanged>>", self._tab_changed)
        side = ttk.Frame(panes)
        self.members_label = ttk.Label(side, text="nobody online", style="Members.TLabel")
        self.members = tk.Listbox(side, font=self.fonts["text"], activestyle="none", relief="flat",
                                  borderwidth=0, highlightthickness=0, width=16, background="white",
                                  selectbackground="#dbeafe", selectforeground="#111827")
        self.members.bind("<Double-Button-1>", self._member_chosen)
        self.members.bind("<Return>", self._member_chosen)
        self.members_label.pack(side="top", fill="x")
        self.members.pack(side="top", fill="both", expand=True)
        panes.add(self.notebook, weight=4)
        panes.add(side, weight=0)  # The list keeps its width; the chat grows.

        entry_row = ttk.Frame(root, padding=(6, 4))
        self.target_label = ttk.Label(entry_row, text="to room", foreground=MUTED, width=12)
        self.entry = ttk.Entry(entry_row, font=self.fonts["text"])
        self.target_label.pack(side="left")
        self.entry.pack(side="left", fill="x", expand=True)
        self.entry.bind("<Return>", self._enter)
        self.entry.bind("<KP_Enter>", self._enter)
        self.entry.bind("<Tab>", self._complete)
        self.entry.bind("<Up>", lambda event: self._browse("up"))
        self.entry.bind("<Down>", lambda event: self._browse("down"))
        self.entry.bind("<Control-w>", self._close_current)
        self.entry.bind("<Control-Next>", lambda event: self._cycle(+1))
        self.entry.bind("<Control-Prior>", lambda event: self._cycle(-1))

        self.status = ttk.Label(root, text="not connected", style="Status.TLabel", anchor="w",
                                relief="sunken")
        self.status.pack(side="bottom", fill="x")
        entry_row.pack(side="bottom", fill="x")
        panes.pack(side="top", fill="both", expand=True)

        #: The marks on tabs with unread lines: one for lines that name us or
        #: are private, one for the rest.
        self._dots = {"mention": _dot(root, ALERT), "unread": _dot(root, "#2563eb")}
        self.conversations: dict[str | None, Conversation] = {}
        self.room = self.conversation(None)
        self.entry.focus_set()

    # -- conversations ---------------------------------------------------------

    def conversation(self, peer: str | None) -> Conversation:
        """The tab for `peer` (None: the room), made if there is none."""
        key = None if peer is None else name_key(peer)
        found = self.conversations.get(key)
        if found is None:
            found = Conversation(self.notebook, peer, self.fonts)
            self.conversations[key] = found
            self.notebook.add(found.frame, text=found.title)
        return found

    def find(self, peer: str) -> Conversation | None:
        return self.conversations.get(name_key(peer))

    @property
    def current(self) -> Conversation:
        selected = self.notebook.select()
        for conversation in self.conversations.values():
            if str(conversation.frame) == selected:
                return conversation
        return self.room

    def select(self, conversation: Conversation) -> None:
        self.notebook.select(conversation.frame)

    def close(self, conversation: Conversation) -> None:
        if conversation.peer is None:
            return  # The room stays.
        del self.conversations[name_key(conversation.peer)]
        self.notebook.forget(conversation.frame)
        conversation.frame.destroy()

    def rename(self, old: str, new: str) -> None:
        """A private conversation follows its peer's new name."""
        conversation = self.conversations.pop(name_key(old), None)
        if conversation is None:
            return
        conversation.peer = new
        self.conversations[name_key(new)] = conversation
        self._retitle(conversation)
        self._show_target()

    def add_line(self, conversation: Conversation, parts: list[tuple[str, tuple[str, ...]]], *,
                 line_tags: tuple[str, ...] = (), unread: bool = True, mention: bool = False) -> None:
        """Show a line; if its tab is not the one shown, count it as unread."""
        for _, tags in parts:
            for tag in tags:
                if tag.startswith("name-") and tag not in conversation.text.tag_names():
                    # name_key(name) is its own key: the tag gives the colour back.
                    conversation.text.tag_configure(tag, foreground=colour_for(tag[len("name-"):]))
        conversation.append(parts, line_tags)
        if unread and conversation is not self.current:
            conversation.unread += 1
            conversation.mentioned |= mention
            self._retitle(conversation)

    def _retitle(self, conversation: Conversation) -> None:
        dot = "" if not conversation.unread else "mention" if conversation.mentioned else "unread"
        self.notebook.tab(conversation.frame, text=conversation.title,
                          image=self._dots.get(dot, ""), compound="left")

    def tab_titles(self) -> list[str]:
        return [self.notebook.tab(tab, "text") for tab in self.notebook.tabs()]

    # -- who is online, and the status bar --------------------------------------

    def show_members(self, names: list[str], own: str | None) -> None:
        if list(self.members.get(0, "end")) == names:
            return
        self.members.delete(0, "end")
        for index, name in enumerate(names):
            self.members.insert("end", name)
            self.members.itemconfigure(index, foreground=colour_for(name))
            if name == own:
                self.members.itemconfigure(index, background="#f3f4f6")
        self.members_label.configure(text=f"{len(names)} online" if names else "nobody online")

    def show_status(self, text: str) -> None:
        self.status.configure(text=text)

    # -- the input line ------------------------------------------------------------

    def set_input(self, text: str, cursor: int | None = None) -> None:
        self.entry.delete(0, "end")
        self.entry.insert(0, text)
        self.entry.icursor(len(text) if cursor is None else cursor)

    def _enter(self, event: tk.Event) -> str:
        text = self.entry.get()
        if text.strip():
            self.editor.set(text)
            self.editor.submit()
            self.entry.delete(0, "end")
            self._on_enter(text, self.current.peer)
        return "break"

    def _complete(self, event: tk.Event) -> str:
        text, cursor = self._on_complete(self.entry.get(), self.entry.index("insert"))
        self.set_input(text, cursor)
        return "break"  # Not the focus traversal Tab does by default.

    def _browse(self, key: str) -> str:
        if self.entry.get() != self.editor.text:
            self.editor.set(self.entry.get())  # Edited since: browse from here.
        self.editor.edit(key)
        self.set_input(self.editor.text)
        return "break"

    def _tab_changed(self, event: tk.Event) -> None:
        conversation = self.current
        conversation.unread = 0
        conversation.mentioned = False
        self._retitle(conversation)
        self._show_target()
        self._on_select(conversation.peer)
        try:
            focused = self.root.focus_get()
        except KeyError:  # a widget being destroyed
            focused = None
        if focused is None or focused.winfo_toplevel() is self.root:
            self.entry.focus_set()  # but not away from an open dialog

    def _show_target(self) -> None:
        peer = self.current.peer
        self.target_label.configure(text="to room" if peer is None else f"to {peer}")

    def _cycle(self, step: int) -> str:
        tabs = self.notebook.tabs()
        index = (tabs.index(self.notebook.select()) + step) % len(tabs)
        self.notebook.select(tabs[index])
        return "break"

    def _close_current(self, event: tk.Event) -> str:
        peer = self.current.peer
        if peer is not None:
            self._on_close_tab(peer)
        return "break"

    def _member_chosen(self, event: tk.Event) -> None:
        selection = self.members.curselection()
        if selection:
            self._on_open(self.members.get(selection[0]))


def _make_fonts(root: tk.Tk) -> dict[str, tkfont.Font]:
    base = tkfont.nametofont("TkDefaultFont").actual()
    family = base["family"]
    return {
        "text": tkfont.Font(root, family=family, size=TEXT_SIZE),
        "bold": tkfont.Font(root, family=family, size=TEXT_SIZE, weight="bold"),
        "italic": tkfont.Font(root, family=family, size=TEXT_SIZE, slant="italic"),
        "small": tkfont.Font(root, family=family, size=TEXT_SIZE - 2),
        "fixed": tkfont.Font(root, family=tkfont.nametofont("TkFixedFont").actual()["family"],
                             size=TEXT_SIZE - 1),
    }


def _dot(root: tk.Tk, colour: str, size: int = 9) -> tk.PhotoImage:
    """A filled circle, for a tab's unread mark (a PhotoImage: no image files to ship)."""
    image = tk.PhotoImage(master=root, width=size + 3, height=size)
    centre = (size - 1) / 2
    for y in range(size):
        row = [colour if (x - centre) ** 2 + (y - centre) ** 2 <= (size / 2) ** 2 else ""
               for x in range(size)]
        for x, pixel in enumerate(row):
            if pixel:
                image.put(pixel, (x, y))
    return image
