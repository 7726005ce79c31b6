"""The full-screen terminal of the CLI, with the standard library's curses.

    +--------------------------------------------------+
    | 12:01 * bob joined                               |  the conversation:
    | 12:02 <bob> hi alice                             |  wrapped, newest at the
    | 12:02 <alice> hello  [pending]                   |  bottom, PageUp/PageDown
    | alice | in the room | lag 0.01 s | 2 online: ... |  the status line
    | alice> what I am typi_ng                         |  the input line
    +--------------------------------------------------+

The whole screen is drawn from the state after every change, so an incoming
line can never leave the input line garbled, whatever the cursor position or
the input's length (it scrolls sideways rather than wrapping). curses sends
only what changed. Only the main thread (Session.run) calls in here.

Keys: Enter sends; Left/Right, Home/End (Ctrl-A/Ctrl-E), Backspace/Delete,
Ctrl-U/Ctrl-K/Ctrl-W delete before/after the cursor/a word; Up/Down history;
Tab completes names; PageUp/PageDown scroll; Ctrl-L redraws; Ctrl-D on an
empty line leaves. A paste (bracketed paste, or several lines arriving at
once) goes to the core as one input: it splits long lines and asks before
sending many.
"""

from __future__ import annotations

import collections
import curses
import locale
import os
import sys
import time

from chat import client_core as core_events
from chat.cli import (
    SCROLLBACK_MAX,
    Entry,
    History,
    LineEditor,
    Session,
    colours_wanted,
    entry_for,
    name_colour,
    text_width,
    wrap,
)
from chat.client_core import ClientCore, Effect

#: Terminal sequences that make a paste arrive between markers (xterm, tmux,
#: and most terminals since 2010), so that it can be told from typing.
BRACKETED_PASTE_ON = "\x1b[?2004h"
BRACKETED_PASTE_OFF = "\x1b[?2004l"
PASTE_START = "\x1b[200~"
PASTE_END = "\x1b[201~"
#: Colours for names (curses colour numbers), and how many.
NAME_COLOURS = (curses.COLOR_RED, curses.COLOR_GREEN, curses.COLOR_YELLOW, curses.COLOR_BLUE,
                curses.COLOR_MAGENTA, curses.COLOR_CYAN)
#: Colour pairs after the name colours.
_PAIR_ERROR, _PAIR_MENTION, _PAIR_PRIVATE = (len(NAME_COLOURS) + number for number in (1, 2, 3))

_EDIT_KEYS = {
    curses.KEY_LEFT: "left", curses.KEY_RIGHT: "right", curses.KEY_HOME: "home", curses.KEY_END: "end",
    curses.KEY_BACKSPACE: "backspace", curses.KEY_DC: "delete", curses.KEY_UP: "up",
    curses.KEY_DOWN: "down",
    "\x7f": "backspace", "\x08": "backspace", "\x01": "home", "\x05": "end", "\x02": "left",
    "\x06": "right", "\x15": "kill-start", "\x0b": "kill-end", "\x17": "kill-word", "\x10": "up",
    "\x0e": "down",
}


class ScreenUI:
    """The full-screen front end; see the module docstring."""

    def __init__(self, stdscr, core: ClientCore, host: str, colours: bool) -> None:
        self.stdscr = stdscr
        self.core = core
        self.host = host
        self.stdin_fd = sys.stdin.fileno()
        self.entries: collections.deque[Entry] = collections.deque(maxlen=SCROLLBACK_MAX)
        self._own: dict[int, Entry] = {}
        self._own_texts: dict[int, str] = {}
        self._history = History(core.name) if core.name else None
        self.editor = LineEditor(self._history.load() if self._history else [])
        self._intents: list[tuple[str, object]] = []
        self.asking: str | None = None   # "name", "password" or "paste"
        self._paste_question = ""
        self.scroll = 0                  # rows scrolled up from the newest
        self.unread = 0
        self.private_from: dict[str, None] = {}
        self.connection = "connecting"
        self.lag_text = ""
        self._escape = ""                # an escape sequence being read
        self._pasting: list[str] | None = None
        self._dirty = True
        self.colours = colours
        curses.noecho()
        curses.cbreak()
        stdscr.keypad(True)
        stdscr.nodelay(True)
        try:
            curses.curs_set(1)
        except curses.error:
            pass  # A terminal without a visible cursor.
        if colours:
            curses.start_color()
            try:
                curses.use_default_colors()
                background = -1
            except curses.error:
                background = curses.COLOR_BLACK
            for number, colour in enumerate(NAME_COLOURS, start=1):
                curses.init_pair(number, colour, background)
            curses.init_pair(_PAIR_ERROR, curses.COLOR_RED, background)
            curses.init_pair(_PAIR_MENTION, curses.COLOR_YELLOW, background)
            curses.init_pair(_PAIR_PRIVATE, curses.COLOR_MAGENTA, background)
        sys.stdout.write(BRACKETED_PASTE_ON)
        sys.stdout.flush()

    # -- what Session calls ------------------------------------------------------

    def wants_input(self, core: ClientCore) -> bool:
        return True

    def take_intents(self) -> list[tuple[str, object]]:
        intents, self._intents = self._intents, []
        return intents

    def ask(self, effect: Effect) -> bool:
        if isinstance(effect, core_events.AskName):
            self.asking = "name"
            if effect.reason:
                self.say(effect.reason, conversation=False)
        else:
            self.asking = "password"
        self._saved_draft = self.editor.text
        self.editor.set("")
        self._dirty = True
        return True

    def confirm_paste(self, effect: core_events.ConfirmPaste) -> bool:
        self.asking = "paste"
        self._paste_question = f"send these {effect.count} lines? (y/n) "
        self.say(f"* a paste of {effect.count} lines: y sends them, n drops them", conversation=False)
        return True

    def show(self, effect: Effect) -> None:
        self._dirty = True
        if isinstance(effect, core_events.Acked):
            entry = self._own.pop(effect.id, None)
            if entry is not None:
                entry.status = ""
            self.lag_text = f"lag {effect.lag:.2f} s"
            return
        if isinstance(effect, (core_events.Failed, core_events.Lost)):
            entry = self._own.pop(effect.id, None)
            if entry is not None:
                entry.status = (f"not sent: {effect.code}" if isinstance(effect, core_events.Failed)
                                else "may be lost")
            if isinstance(effect, core_events.Failed):
                self._add(Entry([("error", f"! {effect.code} {effect.text}".rstrip())]))
            return
        if isinstance(effect, core_events.Lag):
            self.lag_text = (f"lag {effect.seconds:.0f} s, no answer" if effect.stalled
                             else f"lag {effect.seconds:.2f} s")
            return
        self._follow_connection(effect)
        entry = entry_for(effect, self._own_texts)
        if entry is None:
            return
        if entry.id is not None:
            self._own[entry.id] = entry
            self._own_texts[entry.id] = getattr(effect, "text", "")
        if isinstance(effect, core_events.Private) and not effect.own:
            self.private_from[effect.sender] = None
        if entry.bell:
            try:
                curses.beep()
            except curses.error:
                pass
        self._add(entry)

    def _follow_connection(self, effect: Effect) -> None:
        """The connection part of the status line."""
        if isinstance(effect, core_events.Connected):
            self.connection = f"connected to {self.host}"
        elif isinstance(effect, core_events.Joined) and effect.own:
            self.connection = "in the room"
        elif isinstance(effect, core_events.Disconnected):
            self.connection = "disconnected"
        elif isinstance(effect, core_events.Reconnecting):
            self.connection = f"reconnecting (attempt {effect.attempt})"
        elif isinstance(effect, core_events.Notice) and effect.text == "* connecting...":
            self.connection = "connecting"

    def _add(self, entry: Entry) -> None:
        entry.stamp = time.strftime("%H:%M ")
        self.entries.append(entry)
        if self.scroll:
            self.unread += 1

    def say(self, text: str, conversation: bool = True) -> None:
        self._add(Entry([("info", text)], conversation=conversation))
        self._dirty = True

    def restore_draft(self, text: str) -> None:
        if not self.editor.text:
            self.editor.set(text)
        self._dirty = True

    def clear(self) -> None:
        self.entries.clear()
        self.scroll = self.unread = 0
        self._dirty = True

    def close(self) -> None:
        sys.stdout.write(BRACKETED_PASTE_OFF)
        sys.stdout.flush()
        if self._history is not None:
            self._history.save(self.editor.history)

    # -- keys ----------------------------------------------------------------------------

    def read(self) -> None:
        while True:
            try:
                key = self.stdscr.get_wch()
            except curses.error:
                break
            self._key(key)
        self._dirty = True

    def _key(self, key) -> None:
        if self._pasting is not None:
            self._pasting.append(key if isinstance(key, str) else "")
            if "".join(self._pasting[-len(PASTE_END):]) == PASTE_END:
                text = "".join(self._pasting)[:-len(PASTE_END)]
                self._pasting = None
                self._paste(text)
            return
        if self._escape or key == "\x1b":
            self._escape += key if isinstance(key, str) else ""
            if self._escape == PASTE_START:
                self._escape, self._pasting = "", []
            elif not PASTE_START.startswith(self._escape):
                self._escape = ""  # Alt+key or an unknown sequence: ignored.
            return
        if self.asking == "paste":
            if isinstance(key, str) and key.lower() in ("y", "n"):
                self.asking = None
                self._intents.append(("paste", key.lower() == "y"))
            return
        if key == curses.KEY_RESIZE:
            curses.update_lines_cols()
        elif key in ("\n", "\r", curses.KEY_ENTER):
            self._enter()
        elif key == "\t":
            self.editor.set(*self.core.complete(self.editor.text, self.editor.cursor))
        elif key == curses.KEY_PPAGE:
            self.scroll += max(1, self._conversation_rows() - 1)
        elif key == curses.KEY_NPAGE:
            self.scroll = max(0, self.scroll - max(1, self._conversation_rows() - 1))
            if not self.scroll:
                self.unread = 0
        elif key == "\x0c":
            self.stdscr.clearok(True)
        elif key == "\x04" and not self.editor.text:
            self._intents.append(("quit", None))
        elif key == "\x04":
            self.editor.edit("delete")
        elif key in _EDIT_KEYS:
            self.editor.edit(_EDIT_KEYS[key])
        elif isinstance(key, str) and key.isprintable():
            self.editor.insert(key)

    def _paste(self, text: str) -> None:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text.strip("\n"):
            self.editor.insert(text.strip("\n").replace("\t", " " * 8))
            return
        # Several lines: the input so far and the paste go to the core as one.
        self.editor.insert(text)
        self._enter()

    def _enter(self) -> None:
        self.scroll = self.unread = 0
        self.private_from.clear()
        if self.asking in ("name", "password"):
            asking, self.asking = self.asking, None
            answer = self.editor.text
            self.editor.set(getattr(self, "_saved_draft", ""))
            self._intents.append((asking, answer))
            return
        text = self.editor.submit()
        if self._history is None and self.core.name:
            self._history = History(self.core.name)
        if self._history is not None and text.strip():
            self._history.save(self.editor.history)
        self._intents.append(("text", text))

    # -- drawing ------------------------------------------------------------------------------

    def _conversation_rows(self) -> int:
        return max(1, curses.LINES - 2)

    def redraw(self, core: ClientCore) -> None:
        if not self._dirty:
            return
        self._dirty = False
        height, width = self.stdscr.getmaxyx()
        self.stdscr.erase()
        rows = max(1, height - 2)
        for row, pieces in enumerate(self._visible_rows(rows, width)):
            column = 0
            for attr, text in pieces:
                self._put(row, column, text, attr)
                column += text_width(text)
        self._put(height - 2, 0, self._status_text().ljust(width)[:width - 1] + " ", curses.A_REVERSE)
        prompt = self._prompt()
        shown, cursor = self.editor.view(width - text_width(prompt) - 1)
        if self.asking == "password":
            shown = "*" * len(shown)
        self._put(height - 1, 0, prompt, curses.A_BOLD)
        self._put(height - 1, text_width(prompt), shown, curses.A_NORMAL)
        try:
            self.stdscr.move(height - 1, min(width - 1, text_width(prompt) + cursor))
        except curses.error:
            pass
        self.stdscr.refresh()

    def _put(self, row: int, column: int, text: str, attr: int) -> None:
        try:
            self.stdscr.addstr(row, column, text, attr)
        except curses.error:
            pass  # Writing the very last cell of the screen; the text is there.

    def _prompt(self) -> str:
        if self.asking == "paste":
            return self._paste_question
        if self.asking in ("name", "password"):
            return f"{self.asking}: "
        target = f" -> {self.core.query}" if self.core.query else ""
        return f"{self.core.name or ''}{target}> "

    def _status_text(self) -> str:
        members = self.core.members
        parts = [self.core.name or "(no name)", self.connection]
        if self.lag_text:
            parts.append(self.lag_text)
        parts.append(f"{len(members)} online: {' '.join(members)}" if members else "nobody online")
        if self.core.query:
            parts.append(f"query: {self.core.query}")
        if self.unread:
            parts.append(f"{self.unread} unread below")
        if self.private_from:
            parts.append("PM from " + ", ".join(self.private_from))
        return " " + " | ".join(parts)

    def _visible_rows(self, rows: int, width: int) -> list[list[tuple[int, str]]]:
        """The rows of the conversation to show, oldest first, `scroll` rows up."""
        wanted = rows + self.scroll
        collected: list[list[tuple[int, str]]] = []
        for entry in reversed(self.entries):
            collected[:0] = self._entry_rows(entry, width)
            if len(collected) >= wanted:
                break
        self.scroll = max(0, min(self.scroll, len(collected) - rows))
        end = len(collected) - self.scroll
        return collected[max(0, end - rows):end]

    def _entry_rows(self, entry: Entry, width: int) -> list[list[tuple[int, str]]]:
        pieces = [(self._attr("time"), entry.stamp)]
        pieces += [(self._attr(style), text) for style, text in entry.pieces]
        if entry.status:
            style = "pending" if entry.status == "pending" else "error"
            pieces.append((self._attr(style), f"  [{entry.status}]"))
        if entry.status == "pending":
            pieces = [(attr | curses.A_DIM, text) for attr, text in pieces]
        # One attribute per character, then cut into rows of `width` columns.
        chars = [(attr, char) for attr, text in pieces for char in text]
        text = "".join(char for _, char in chars)
        rows = []
        for start, end in wrap(text, max(1, width - 1)):
            row: list[tuple[int, str]] = []
            for attr, char in chars[start:end]:
                if row and row[-1][0] == attr:
                    row[-1] = (attr, row[-1][1] + char)
                else:
                    row.append((attr, char))
            rows.append(row)
        return rows

    def _attr(self, style: str) -> int:
        colours = self.colours
        if style.startswith("nick:"):
            pair = name_colour(style[5:], len(NAME_COLOURS)) + 1
            return curses.A_BOLD | (curses.color_pair(pair) if colours else 0)
        if style == "mention":
            return curses.A_BOLD | (curses.color_pair(_PAIR_MENTION) if colours else curses.A_REVERSE)
        if style == "error":
            return curses.A_BOLD | (curses.color_pair(_PAIR_ERROR) if colours else 0)
        if style == "private":
            return curses.color_pair(_PAIR_PRIVATE) if colours else curses.A_UNDERLINE
        if style in ("time", "info", "pending"):
            return curses.A_DIM
        return curses.A_NORMAL


def run_screen(core: ClientCore, link, first_stream, host: str) -> int:
    """Run the session full-screen; what was said last stays printed after it.

    Not curses.wrapper: it calls start_color(), after which even a terminal
    told NO_COLOR gets explicit white-on-black instead of its own colours.
    """
    locale.setlocale(locale.LC_ALL, "")
    os.environ.setdefault("ESCDELAY", "25")  # Esc alone is not waited for long.
    farewell: list[str] = []
    stdscr = curses.initscr()
    try:
        ui = ScreenUI(stdscr, core, host, colours_wanted() and curses.has_colors())
        try:
            status = Session(core, link, ui, first_stream).run()
        finally:
            farewell.extend(entry.text() for entry in list(ui.entries)[-3:])
    finally:
        stdscr.keypad(False)
        curses.echo()
        curses.nocbreak()
        curses.endwin()
    for line in farewell:
        print(line)
    return status
