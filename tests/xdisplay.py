"""An X display for the GUI tests: a private Xvfb, started and stopped by the tests themselves.

private_display() (for a session fixture) starts Xvfb on a display number it picks
itself (-displayfd: no guessing, no clash with other test runs on the same
machine), sets DISPLAY for the session, and stops Xvfb at the end; where
there is no Xvfb, an existing DISPLAY is used. Without either, or without
tkinter, the tests that need it skip, with the reason shown; but on CI
(CI=true) they fail instead, so that a missing package cannot turn the GUI
tests off unnoticed (.ci/run installs xvfb).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import subprocess
import tempfile

import pytest

#: Seconds Xvfb has to say which display it took. It starts in well under a
#: second; the margin is for a loaded machine.
XVFB_START_TIMEOUT = 20.0
#: The screen: larger than any window the tests open, 24-bit colour so that
#: screenshots show the colours as users see them.
SCREEN = "1280x900x24"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true, and the GUI tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"GUI tests need a display: {reason}")


def _start_xvfb(xvfb: str) -> tuple[subprocess.Popen, str]:
    # Its messages go to a file, not a pipe nobody reads (a full pipe would stop it).
    log = tempfile.TemporaryFile()
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            [xvfb, "-displayfd", str(write_end), "-screen", "0", SCREEN, "-nolisten", "tcp"],
            pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=log)
    finally:
        os.close(write_end)
    number = b""
    with selectors.DefaultSelector() as selector, os.fdopen(read_end, "rb", buffering=0) as pipe:
        selector.register(pipe, selectors.EVENT_READ)
        while not number.endswith(b"\n"):
            if not selector.select(XVFB_START_TIMEOUT):
                break
            chunk = pipe.read(16)
            if not chunk:
                break
            number += chunk
    if not number.strip().isdigit():
        process.kill()
        process.wait()
        log.seek(0)
        raise RuntimeError(f"Xvfb did not start: {log.read().decode(errors='replace')[-300:]}")
    log.close()
    return process, f":{number.strip().decode()}"


@contextlib.contextmanager
def private_display():
    """The DISPLAY for GUI tests (see the module docstring), set in os.environ
    while the context lasts. Call from a session fixture."""
    try:
        import tkinter
    except ImportError as error:
        _unavailable(f"this Python has no tkinter ({error})")
    xvfb = shutil.which("Xvfb")
    process = None
    saved = os.environ.get("DISPLAY")
    if xvfb is not None:
        try:
            process, display = _start_xvfb(xvfb)
        except (OSError, RuntimeError) as error:
            _unavailable(str(error))
        os.environ["DISPLAY"] = display
    elif not saved:
        _unavailable("no Xvfb on PATH (Debian: apt-get install xvfb) and no DISPLAY")
    try:
        try:
            probe = tkinter.Tk()
            probe.destroy()
        except tkinter.TclError as error:
            _unavailable(f"Tk cannot open {os.environ.get('DISPLAY')}: {error}")
        yield os.environ["DISPLAY"]
    finally:
        if process is not None:
            process.terminate()
            process.wait()
            if saved is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = saved
