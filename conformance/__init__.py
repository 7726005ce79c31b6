"""The chat/1 conformance kit: a black-box test of any chat/1 server.

    python -m conformance HOST:PORT     run every case against a server
    python -m conformance               ... against the reference server, started here
    python -m conformance --list        which case checks which requirement of SPEC.md
    pytest -p conformance.plugin --server HOST:PORT     the same cases as pytest tests

The layers, from data to sockets:

    spec.py      SPEC.md -> requirement IDs, levels, sentences         (pure)
    session.py   .session transcripts (SPEC.md Appendix A) -> steps     (pure)
    grammar.py   server-line grammar and HELLO parameters               (pure)
    peer.py      one client connection: send, expect, log, check        (sockets)
    case.py      Case, and the CaseContext a case runs in
    replay.py    runs a transcript's steps on Peers
    cases.py     the cases transcripts cannot express (Python)
    runner.py    runs cases, judges verdicts, the command line
    report.py    failure reports, summary, --list, JUnit XML, JSON
    selfhost.py  starts the reference server when no address is given
    plugin.py    the pytest plugin
    sessions/    the transcripts (data)

The kit needs the standard library only; it imports chat/ only to start the
reference server when no address is given.
"""
