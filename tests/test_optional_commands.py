"""The kit's cases for the optional commands (SPEC.md 6.8: NICK, ACT) against a
reference server that does not offer them: the feature's own cases do not
apply (their `needs:`), and the case for CMD-5 checks that server itself."""

from __future__ import annotations

import pytest

from chat.server import build_parser, limits_from_args
from conformance.case import Target
from conformance.report import NOT_APPLICABLE, PASS, format_failure
from conformance.runner import Runner, all_cases
from conformance.selfhost import RunningServer
from conformance.spec import load_spec

SPEC = load_spec()
CASES = {case.name: case for case in all_cases(SPEC)}


@pytest.fixture(scope="module")
def older_server():
    server = RunningServer(nick=0, action=0)
    yield server
    server.shutdown()


def run(server: RunningServer, name: str):
    runner = Runner([Target("older room", *server.address)], SPEC, exclusive=True)
    assert runner.probe() is None
    return runner.run_case(CASES[name])


@pytest.mark.parametrize("name", ["nick-change", "nick-refused", "act-to-everyone"])
def test_a_feature_case_does_not_apply_where_the_feature_is_not_advertised(older_server, name):
    result = run(older_server, name)
    assert result.verdict == NOT_APPLICABLE, result.reason


def test_not_advertised_commands_are_unknown_on_that_server(older_server):
    result = run(older_server, "optional-commands-not-advertised")
    assert result.verdict == PASS, format_failure(result, SPEC) if result.failures else result.reason


def test_the_server_leaves_out_an_optional_command_when_told():
    limits = limits_from_args(build_parser().parse_args(["--without", "nick"]))
    assert (limits.nick, limits.action) == (0, 1)
    assert limits.optional_verbs() == frozenset({"ACT"})
    assert limits_from_args(build_parser().parse_args([])).optional_verbs() == frozenset({"NICK", "ACT"})
