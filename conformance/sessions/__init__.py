"""Conformance transcripts in the format of SPEC.md Appendix A (data, not code).

Each *.session file is one case; session.py parses them, replay.py runs them.
This file only makes the folder a package, so the files install with the kit.
"""
