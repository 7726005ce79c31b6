"""How a case ends other than by passing: one small family of exceptions.

- CheckFailed: the server did not do what a requirement says. Carries the
  h2spec-style pair Expected / Actual, and optionally the requirement IDs the
  failed check is about (otherwise the case's own `covers` list is used).
- NotApplicable: the server does not advertise what the case needs (or
  advertises a limit too large to test). Not a failure, unless the person
  running the kit said the feature is expected (`--expect-feature`).
- CaseCancelled: the runner stopped the case (its hard time cap ran out).

Any other exception out of a case is a bug in the kit, and is reported as one.
"""

from __future__ import annotations


class CheckFailed(AssertionError):
    def __init__(self, expected: str, actual: str, *, ids: tuple[str, ...] | list[str] = (),
                 who: str | None = None, detail: str = "") -> None:
        super().__init__(f"expected {expected}; actual {actual}")
        self.expected = expected
        self.actual = actual
        self.ids = tuple(ids)
        #: The client that saw it, e.g. "alice".
        self.who = who
        #: Anything more a person needs to understand the failure.
        self.detail = detail
        #: Filled in by replay.py: the transcript step that failed.
        self.step: str | None = None


class NotApplicable(Exception):
    def __init__(self, reason: str, feature: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        #: The HELLO parameter (or "tls") whose absence made the case not apply.
        self.feature = feature


class CaseCancelled(Exception):
    """Raised inside a case's threads once the runner has given up on it."""


class Inconclusive(Exception):
    """The kit saw something that may be the network's doing, or a limit of what
    SPEC.md lets it assume, rather than the server's: neither pass nor fail.

    Not a failure (the exit code stays 0), but the report says what was seen
    and why the kit cannot tell, so a person can look.
    """

    def __init__(self, expected: str, actual: str, why: str, *, ids: tuple[str, ...] | list[str] = (),
                 who: str | None = None) -> None:
        super().__init__(f"inconclusive: expected {expected}; actual {actual} ({why})")
        self.expected = expected
        self.actual = actual
        #: Why this cannot be blamed on the server.
        self.why = why
        self.ids = tuple(ids)
        self.who = who
