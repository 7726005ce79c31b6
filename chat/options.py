"""Command-line option types shared by chat-server and chat-client.

A bad option is the person's mistake, not the program's: it gets one line that
names the option and says what is wrong, and exit status 2 (argparse's own
convention for usage errors), never a traceback. The argparse `type=`
functions here check a value when it is parsed; `OneLineParser` makes
argparse's own errors one line. Checks that need several options at once
(a key that does not match its certificate) are the program's, through
`fail()`.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from chat.limits import NUMBER_MAX

#: The exit status of every usage error (argparse uses 2, and so do we).
USAGE_ERROR = 2


def port(text: str) -> int:
    """A TCP port, 0 to 65535 (0: the system picks a free one)."""
    value = _integer(text, "a port")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (0 to 65535)")
    return value


def connect_port(text: str) -> int:
    """A TCP port to connect to: 1 to 65535."""
    value = _integer(text, "a port")
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port to connect to (1 to 65535)")
    return value


def whole_number(text: str) -> int:
    """A limit: a whole number from 0 (off) to the largest HELLO can carry."""
    value = _integer(text, "a whole number")
    if not 0 <= value <= NUMBER_MAX:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number from 0 to {NUMBER_MAX}")
    return value


def readable_file(path: str) -> str:
    """A file that exists and can be read now, so that a typo fails at start-up."""
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {error.strerror}") from None
    return path


def _integer(text: str, what: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: `prog: argument --x: what is wrong`.

    argparse prints the whole usage first, which for a server with twenty
    options pushes the one line that matters off the screen; --help has it.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: {message} (see --help)\n")


def fail(prog: str, message: str) -> NoReturn:
    """A usage error found after parsing: one line on stderr, exit status 2."""
    print(f"{prog}: {message}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)
