"""The contract, read out of SPEC.md: every requirement ID, its level and its sentence.

SPEC.md is the source of truth and the kit never keeps a copy of it: the
requirement sentences quoted in failure reports, the MUST/SHOULD/MAY level of
each ID and the list of IDs that must be covered are all parsed from the file
at run time, so the kit cannot drift from the document.

A requirement is a Markdown bullet that starts with its ID in brackets:

    - [FRAME-3] The server MUST terminate every line it sends with a single LF
      and never with CR LF.

Its text runs over the indented lines that follow. Its level is the strongest
RFC 2119 key word in capitals in that text (code spans in backticks excluded,
so `ERR PASSWORD_REQUIRED` is not the key word REQUIRED).

What must not live here: anything about sockets or cases. This module is pure.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

#: conformance/SPEC.md is a link to the repository's SPEC.md, and an installed
#: kit carries a copy there (pyproject.toml, package-data); a checkout without
#: the link falls back to the file one level up.
_HERE = Path(__file__).resolve().parent
DEFAULT_SPEC_PATH = _HERE / "SPEC.md" if (_HERE / "SPEC.md").exists() else _HERE.parent / "SPEC.md"

#: A requirement ID as SPEC.md section 1 defines it: `[AREA-N]`.
REQUIREMENT_ID = re.compile(r"[A-Z]+-[0-9]+")

_BULLET = re.compile(r"^- \[(?P<id>[A-Z]+-[0-9]+)\]\s*(?P<text>.*)$")
_SECTION = re.compile(r"^## (?P<title>.+?)\s*$")
_CODE_SPAN = re.compile(r"`[^`]*`")

# RFC 2119 / RFC 8174 key words, strongest level first. "MUST NOT" and
# "SHALL NOT" contain MUST and SHALL, so they need no entry of their own.
_LEVEL_WORDS = (
    ("MUST", re.compile(r"\b(MUST|REQUIRED|SHALL)\b")),
    ("SHOULD", re.compile(r"\b(SHOULD|RECOMMENDED)\b")),
    ("MAY", re.compile(r"\b(MAY|OPTIONAL)\b")),
)
#: The level of a requirement with no key word at all: it defines or explains
#: (e.g. [MSG-2] "The sender's own copy is the reply to its MSG.").
INFORMATIVE = "INFO"

#: SPEC.md section 1 names the requirements that bind clients, in a sentence
#: like "the few that bind clients ([GRAM-3], [PING-4], [ERR-1]) are checked by
#: the reference client's tests". A black-box kit cannot test a client, so
#: these are listed in the matrix but not counted as coverage. (The kit, being
#: a client, honours them: its HELLO parser ignores unknown parameters, its
#: Peers answer PING with PONG, and it matches ERR lines by code alone.)
_CLIENT_SENTENCE = re.compile(r"bind clients\s*\((?P<ids>[^)]*)\)")
#: SPEC.md section 1 also names the cluster's failures, "which a kit cannot
#: cause (...)": the reference server's tests check those (SPEC.md 11b), and
#: like the client ones they are listed in the matrix but not counted.
_SERVER_TESTS_SENTENCE = re.compile(r"which a kit cannot cause\s*\((?P<ids>[^)]*)\)")


@dataclasses.dataclass(frozen=True)
class Requirement:
    """One normative sentence of SPEC.md."""

    #: The stable ID, e.g. "FRAME-3".
    id: str
    #: "MUST", "SHOULD", "MAY", or INFORMATIVE.
    level: str
    #: The sentence(s) after the ID, whitespace collapsed, Markdown kept.
    text: str
    #: The section heading it stands under, e.g. "2. Transport and framing".
    section: str
    #: Its line number in SPEC.md (1-based).
    line: int
    #: True if SPEC.md says it binds clients, not the server.
    binds_client: bool = False
    #: True if SPEC.md says a kit cannot cause what it is about (a cluster's failures).
    beyond_kit: bool = False


@dataclasses.dataclass(frozen=True)
class Spec:
    """Every requirement of one SPEC.md, in document order."""

    path: str
    text: str
    requirements: dict[str, Requirement]

    def must_ids(self, *, server_only: bool = False) -> list[str]:
        """The MUST requirements; with server_only, those a server kit must cover."""
        return [r.id for r in self.requirements.values()
                if r.level == "MUST" and not (server_only and (r.binds_client or r.beyond_kit))]

    def sections(self) -> list[str]:
        """Section titles that hold requirements, in document order."""
        seen: dict[str, None] = {}
        for requirement in self.requirements.values():
            seen.setdefault(requirement.section, None)
        return list(seen)

    def quote(self, requirement_id: str) -> str:
        requirement = self.requirements.get(requirement_id)
        return requirement.text if requirement else "(not defined in SPEC.md)"


class SpecError(ValueError):
    """SPEC.md cannot be read as a list of requirements (e.g. an ID twice)."""


def requirement_level(text: str) -> str:
    """The strongest key word in `text`, ignoring code spans."""
    prose = _CODE_SPAN.sub("", text)
    for level, words in _LEVEL_WORDS:
        if words.search(prose):
            return level
    return INFORMATIVE


def normalize_space(text: str) -> str:
    return " ".join(text.split())


def parse_spec(text: str, path: str = "SPEC.md") -> Spec:
    """Find every `- [ID] ...` bullet outside code fences."""
    client_sentence = _CLIENT_SENTENCE.search(" ".join(text.split()))
    client_ids = set(REQUIREMENT_ID.findall(client_sentence.group("ids"))) if client_sentence else set()
    beyond = _SERVER_TESTS_SENTENCE.search(" ".join(text.split()))
    beyond_ids = set(REQUIREMENT_ID.findall(beyond.group("ids"))) if beyond else set()
    requirements: dict[str, Requirement] = {}
    section = ""
    in_fence = False
    current: dict | None = None

    def finish() -> None:
        nonlocal current
        if current is not None:
            body = normalize_space(" ".join(current["parts"]))
            requirements[current["id"]] = Requirement(
                id=current["id"], level=requirement_level(body), text=body,
                section=current["section"], line=current["line"],
                binds_client=current["id"] in client_ids, beyond_kit=current["id"] in beyond_ids)
            current = None

    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            finish()
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        heading = _SECTION.match(line)
        if heading:
            finish()
            section = heading.group("title")
            continue
        bullet = _BULLET.match(line)
        if bullet:
            finish()
            if bullet.group("id") in requirements:
                raise SpecError(f"{path}:{number}: requirement {bullet.group('id')} is defined twice")
            current = {"id": bullet.group("id"), "parts": [bullet.group("text")],
                       "section": section, "line": number}
        elif current is not None and line.startswith("  ") and line.strip():
            current["parts"].append(line.strip())
        else:
            finish()
    finish()
    return Spec(path=path, text=text, requirements=requirements)


def load_spec(path: str | Path | None = None) -> Spec:
    spec_path = Path(path) if path is not None else DEFAULT_SPEC_PATH
    return parse_spec(spec_path.read_text(encoding="utf-8"), str(spec_path))


def index_ranges(text: str) -> dict[str, int]:
    """The ranges of the requirement index (section 14): `FRAME-1 to FRAME-11`.

    Returns {"FRAME": 11, ...}. Used by a test that keeps the index honest.
    """
    start = text.find("## 14.")
    end = text.find("\n## ", start + 1)
    index = text[start:end if end > 0 else None] if start >= 0 else ""
    return {m.group(1): int(m.group(3))
            for m in re.finditer(r"\b([A-Z]+)-(1)\s+to\s+\1-([0-9]+)", index)}
