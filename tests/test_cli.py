"""The CLI's pure parts (chat/cli.py): how effects look, the input line, the
history's place on disk. No terminal, no socket."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat import client_core as effects
from chat.cli import (
    History,
    LineEditor,
    colours_wanted,
    entry_for,
    name_colour,
    state_dir,
    text_width,
    wrap,
)


@pytest.mark.parametrize("effect, text", [
    (effects.Message("bob", "hi"), "<bob> hi"),
    (effects.Message("alice", "hi", own=True, pending=True, id=1), "<alice> hi  [pending]"),
    (effects.Action("bob", "waves"), "* bob waves"),
    (effects.Private("bob", "alice", "psst"), "[bob -> alice] psst"),
    (effects.Joined("bob"), "* bob joined"),
    (effects.Left("bob", "timeout"), "* bob left (timeout)"),
    (effects.NickChanged("bob", "rob"), "* bob is now known as rob"),
    (effects.Names(("alice", "bob")), "* online (2): alice, bob"),
    (effects.Error("NO_SUCH_USER", "zed is not online"), "! NO_SUCH_USER zed is not online"),
    (effects.Failed(1, "NO_SUCH_USER", "zed"), "! not sent (NO_SUCH_USER): hello"),
    (effects.Lost(1), "! may be lost (the connection ended before its echo): hello"),
    (effects.Notice("usage"), "usage"),
    (effects.Disconnected("the server closed the connection"),
     "* disconnected: the server closed the connection"),
    (effects.Reconnecting(2, 1.5), "* reconnecting in 1.5 s (attempt 2)"),
    (effects.QueryOpened("bob"), "* talking privately with bob; /query alone goes back to the room"),
    (effects.QueryClosed("bob"), "* back to the room (was talking with bob)"),
])
def test_effects_are_shown_as(effect, text):
    assert entry_for(effect, {1: "hello"}).text() == text


def test_status_effects_add_no_line():
    assert entry_for(effects.Lag(0.1), {}) is None
    assert entry_for(effects.Acked(1, 0.1), {}) is None


def test_mentions_and_incoming_private_messages_ring_the_bell():
    assert entry_for(effects.Message("bob", "hi alice", mention=True), {}).bell
    assert entry_for(effects.Private("bob", "alice", "psst"), {}).bell
    assert not entry_for(effects.Private("alice", "bob", "psst", own=True), {}).bell
    assert not entry_for(effects.Message("bob", "hi"), {}).bell


def test_wide_and_combining_characters_take_their_columns():
    assert text_width("ab") == 2 and text_width("漢字") == 4 and text_width("e\u0301") == 1
    assert wrap("abcdef", 4) == [(0, 4), (4, 6)]
    assert wrap("漢字漢", 4) == [(0, 2), (2, 3)]
    assert wrap("", 4) == [(0, 0)]


# -- the input line --------------------------------------------------------------------


def test_typing_in_the_middle_of_the_line():
    editor = LineEditor()
    editor.insert("abcdef")
    for _ in range(3):
        editor.edit("left")
    editor.insert("X")
    assert (editor.text, editor.cursor) == ("abcXdef", 4)
    editor.edit("backspace")
    editor.edit("delete")
    assert (editor.text, editor.cursor) == ("abcef", 3)


@pytest.mark.parametrize("action, text, cursor", [
    ("home", "one two three", 0), ("end", "one two three", 13), ("right", "one two three", 9),
    ("kill-start", "three", 0), ("kill-end", "one two ", 8), ("kill-word", "one three", 4),
])
def test_editing_keys(action, text, cursor):
    editor = LineEditor()
    editor.set("one two three", 8)
    editor.edit(action)
    assert (editor.text, editor.cursor) == (text, cursor)


def test_kill_word_at_the_first_word_and_backspace_at_the_start():
    editor = LineEditor()
    editor.set("one", 3)
    editor.edit("kill-word")
    assert editor.text == ""
    editor.edit("backspace")
    editor.edit("left")
    assert (editor.text, editor.cursor) == ("", 0)


def test_history_browsing_keeps_the_draft():
    editor = LineEditor(["first", "second"])
    editor.edit("down")  # Nothing newer than the draft.
    editor.insert("draft")
    editor.edit("up")
    assert editor.text == "second"
    editor.edit("up")
    editor.edit("up")
    assert editor.text == "first"
    editor.edit("down")
    editor.edit("down")
    assert editor.text == "draft"
    assert LineEditor().edit("up") is None


def test_submit_adds_to_history_once():
    editor = LineEditor()
    for text in ("hello", "hello", "  "):
        editor.set(text)
        assert editor.submit() == text
    assert editor.history == ["hello"] and editor.text == ""


def test_a_line_wider_than_the_terminal_scrolls_sideways_around_the_cursor():
    editor = LineEditor()
    editor.insert("x" * 30 + "END")
    shown, column = editor.view(10)
    assert shown == "xxxxxxEND" and column == 9  # The cursor at the end, on screen.
    editor.edit("home")
    shown, column = editor.view(10)
    assert shown == "x" * 10 and column == 0
    for _ in range(15):
        editor.edit("right")
    shown, column = editor.view(10)
    assert len(shown) == 10 and 0 <= column < 10
    editor.set("short")
    assert editor.view(10) == ("short", 5)


# -- where things are kept ----------------------------------------------------------------


def test_state_folder_per_platform(tmp_path):
    home = Path("/home/alice")
    assert state_dir("linux", {}, home) == home / ".local/state/chat1"
    assert state_dir("linux", {"XDG_STATE_HOME": "/var/state"}, home) == Path("/var/state/chat1")
    assert state_dir("linux", {"XDG_STATE_HOME": "relative"}, home) == home / ".local/state/chat1"
    assert state_dir("darwin", {}, home) == home / "Library/Application Support/chat1"
    assert state_dir("win32", {"LOCALAPPDATA": str(tmp_path)}, home) == tmp_path / "chat1"
    assert state_dir("win32", {}, home) == home / "AppData/Local/chat1"


def test_history_is_saved_per_name_and_survives(tmp_path):
    History("Alice", tmp_path).save(["one", "two"])
    assert History("alice", tmp_path).load() == ["one", "two"]
    assert History("bob", tmp_path).load() == []
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    History("carol", blocked).save(["x"])  # Cannot be written: no error, no history.
    assert History("carol", blocked).load() == []


def test_no_color_and_name_colours():
    assert colours_wanted({}) and not colours_wanted({"NO_COLOR": "1"}) and colours_wanted({"NO_COLOR": ""})
    assert name_colour("Alice", 6) == name_colour("alice", 6)
