"""The conformance cases as pytest tests: one test per case, named after it.

    pytest -p conformance.plugin --server HOST:PORT
    pytest -p conformance.plugin --server HOST:PORT,HOST:PORT  # a cluster (SPEC.md 11b)
    pytest -p conformance.plugin                    # the reference server on port 0
    pytest -p conformance.plugin -k names           # the cases whose name has "names"
    pytest -p conformance.plugin --conformance-only # in a repository with tests of its own

Each case becomes a test `conformance[<case name>]`. A failure shows the same
report as `python -m conformance` (requirement, Expected / Actual, transcript,
reproduction); a case that does not apply is skipped with its reason; a SHOULD
not met passes with a warning (fails with --conformance-strict), and so does an
inconclusive case.

The servers (self-hosted or not) and the HELLO probe are set up once, on the
first case that runs, and stopped at the end of the session.
"""

from __future__ import annotations

import os
import ssl
import warnings

import pytest

from conformance.case import Case, Target
from conformance.peer import DEFAULT_TIMEOUT
from conformance.report import FAIL, INCONCLUSIVE, NOT_APPLICABLE, WARN, format_failure
from conformance.runner import DEFAULT_CASE_CAP, Runner, all_cases, parse_addresses
from conformance.spec import Spec, load_spec


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "chat/1 conformance kit")
    group.addoption("--server", metavar="HOST:PORT[,HOST:PORT...]", default=None,
                    help="the chat/1 server to test, or a cluster's servers, each case's clients spread "
                         "over them as `python -m conformance` does (default: start the reference server "
                         "on port 0)")
    group.addoption("--conformance-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                    help=f"seconds to wait for one line (default {DEFAULT_TIMEOUT:g})")
    group.addoption("--conformance-password", default=os.environ.get("CHAT_PASSWORD"),
                    help="the room password, if the server has one (default: $CHAT_PASSWORD)")
    group.addoption("--conformance-tls", action="store_true", help="connect to --server with TLS")
    group.addoption("--conformance-cafile", default=None, help="CA file for --conformance-tls")
    group.addoption("--conformance-strict", action="store_true", help="a SHOULD not met is a failure")
    group.addoption("--conformance-spec", default=None, help="SPEC.md to read")
    group.addoption("--conformance-only", action="store_true",
                    help="run the conformance cases only, not the other tests pytest collected")


class ConformanceFailure(Exception):
    """A case failed; its message is the kit's full failure report."""


class ConformanceRun:
    """The Runner and the servers of one pytest session, made on first use."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.spec: Spec = load_spec(config.getoption("--conformance-spec"))
        self._runner: Runner | None = None
        self._servers = None

    def runner(self) -> Runner:
        if self._runner is None:
            self._runner = self._make_runner()
        return self._runner

    def _make_runner(self) -> Runner:
        option = self.config.getoption
        private_servers = None
        address = option("--server")
        if address is None:
            from conformance.selfhost import SelfHostedServers

            self._servers = SelfHostedServers()
            targets = self._servers.targets()
            private_servers = self._servers.private_server
            rerun = ""
        else:
            (host, port), *others = parse_addresses(address)
            context = (ssl.create_default_context(cafile=option("--conformance-cafile"))
                       if option("--conformance-tls") else None)
            targets = [Target("server", host, port, ssl_context=context, server_hostname=host,
                              password=option("--conformance-password"), others=tuple(others))]
            rerun = address
        runner = Runner(targets, self.spec, timeout=option("--conformance-timeout"),
                        strict=option("--conformance-strict"), private_servers=private_servers,
                        exclusive=self._servers is not None, rerun_args=rerun,
                        cafile=option("--conformance-cafile"))
        runner.probe()
        return runner

    def close(self) -> None:
        if self._servers is not None:
            self._servers.shutdown()
            self._servers = None


_RUN = pytest.StashKey[ConformanceRun]()


class ConformanceItem(pytest.Item):
    """One case, run as one test."""

    def __init__(self, *, case: Case, **kwargs) -> None:
        super().__init__(**kwargs)
        self.case = case
        for requirement_id in case.covers:
            self.user_properties.append(("requirement", requirement_id))

    def runtest(self) -> None:
        run = self.config.stash[_RUN]
        runner = run.runner()
        if runner.preflight_failure is not None:
            raise ConformanceFailure(format_failure(runner.preflight_failure, run.spec))
        result = runner.run_case(self.case)
        if result.verdict == NOT_APPLICABLE:
            pytest.skip(f"not applicable: {result.reason}")
        if result.verdict == FAIL:
            raise ConformanceFailure(format_failure(result, run.spec) if result.failures else result.reason)
        if result.verdict == WARN:
            warnings.warn(f"{self.case.name}: a SHOULD is not met\n{format_failure(result, run.spec)}",
                          stacklevel=1)
        if result.verdict == INCONCLUSIVE:
            warnings.warn(f"{self.case.name}: inconclusive (not a failure)\n"
                          f"{format_failure(result, run.spec)}",
                          stacklevel=1)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ConformanceFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"conformance case {self.case.name} [{' '.join(self.case.covers)}]"


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RUN] = ConformanceRun(config)


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect items
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    run = config.stash[_RUN]
    if config.getoption("--conformance-only"):
        items.clear()
    has_timeout_plugin = config.pluginmanager.hasplugin("timeout")
    for case in all_cases(run.spec):
        item = ConformanceItem.from_parent(session, name=f"conformance[{case.name}]", case=case)
        if has_timeout_plugin:
            # pytest-timeout as a last resort above the kit's own hard cap.
            item.add_marker(pytest.mark.timeout(DEFAULT_CASE_CAP + 30))
        items.append(item)


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(_RUN, None)
    if run is not None:
        run.close()



