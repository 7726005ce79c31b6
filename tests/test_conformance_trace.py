"""Traceability: every server MUST of SPEC.md has a case, every case cites real
requirements and quotes SPEC.md truly, and every example of SPEC.md runs.

These tests read SPEC.md as it is now, so a requirement added to the spec
without a case, or a case left citing a renumbered ID, fails here."""

from __future__ import annotations

import io

import pytest

from conformance.report import coverage
from conformance.runner import all_cases, main
from conformance.session import extract_session_blocks, spec_sessions
from conformance.spec import index_ranges, load_spec, normalize_space

SPEC = load_spec()
CASES = all_cases(SPEC)


def test_every_server_must_requirement_has_a_case():
    cited = coverage(CASES, SPEC)
    uncovered = [rid for rid in SPEC.must_ids(server_only=True) if not cited[rid]]
    assert not uncovered, f"MUST requirements with no case: {uncovered}"


def test_the_spec_has_musts_and_names_the_client_ones():
    assert len(SPEC.must_ids(server_only=True)) >= 50
    client = [r.id for r in SPEC.requirements.values() if r.binds_client]
    assert client, "SPEC.md section 1 should name the requirements that bind clients"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case_cites_only_requirements_the_spec_defines(case):
    unknown = [rid for rid in case.covers if rid not in SPEC.requirements]
    assert not unknown, f"{case.name} ({case.source}) cites {unknown}, which SPEC.md does not define"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case_quotes_are_sentences_of_the_requirements_it_covers(case):
    texts = [normalize_space(SPEC.requirements[rid].text) for rid in case.covers if rid in SPEC.requirements]
    for quote in case.quotes:
        assert any(normalize_space(quote) in text for text in texts), \
            f"{case.name}: quote {quote!r} is not in the text of {' '.join(case.covers)}"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case_quotes_its_requirement_unless_it_is_a_spec_example(case):
    if case.source.startswith("SPEC.md"):
        return
    assert case.quotes, f"{case.name} ({case.source}) quotes no requirement"


def test_case_names_are_unique():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))


def test_every_spec_example_is_a_case():
    blocks = extract_session_blocks(SPEC.text)
    examples = spec_sessions(SPEC.text)
    assert len(blocks) == len(examples) >= 1
    names = {case.name for case in CASES}
    assert {example.name for example in examples} <= names
    for case in CASES:
        if case.name in {example.name for example in examples}:
            assert case.kind == "session" and case.source.startswith("SPEC.md")


def test_requirement_index_matches_the_requirements_defined():
    defined: dict[str, int] = {}
    for rid in SPEC.requirements:
        area, number = rid.rsplit("-", 1)
        defined[area] = max(defined.get(area, 0), int(number))
    assert index_ranges(SPEC.text) == defined


def test_list_prints_every_requirement_and_a_summary():
    out = io.StringIO()
    assert main(["--list"], out=out) == 0
    text = out.getvalue()
    for rid in SPEC.requirements:
        assert f"  {rid} " in text
    summary = text.strip().splitlines()[-1]
    server_musts = len(SPEC.must_ids(server_only=True))
    assert f"{server_musts} of {server_musts} server MUSTs covered" in summary
    assert f"{len(CASES)} cases" in summary
