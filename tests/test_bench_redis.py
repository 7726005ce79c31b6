"""The RESP reader of bench/redis_pubsub.py, on reads split anywhere (no Redis needed)."""

from __future__ import annotations

from bench.redis_pubsub import CHANNEL, PUBLISH, RespReader, parse_value
from bench.stats import message_text


def resp(value) -> bytes:
    """RESP2 encoding of bytes, int, str ("+OK", "-ERR ...") and lists of them."""
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, str):
        return value.encode() + b"\r\n"
    return b"*%d\r\n" % len(value) + b"".join(resp(item) for item in value)


PAYLOADS = [message_text(k, 1_000_000 + k) for k in range(5)] + [b"binary\r\n$3\r\n*1\r\n", b""]
VALUES = (
    [[b"subscribe", CHANNEL, 1]]
    + [[b"message", CHANNEL, payload] for payload in PAYLOADS[:3]]
    + [[b"pong", b"drain-7"], [b"message", b"elsewhere", b"x"], 3, "-ERR no", "+OK"]
    + [[b"message", CHANNEL, payload] for payload in PAYLOADS[3:]]
)
STREAM = b"".join(resp(value) for value in VALUES)


def read_all(parts: list[bytes]) -> list:
    reader = RespReader()
    values = []
    for part in parts:
        values += reader.feed(part)
    assert reader.pending == b""
    return values


def test_the_message_fast_path_gives_what_the_general_parser_gives():
    general, pos = [], 0
    while pos < len(STREAM):
        value, pos = parse_value(STREAM, pos)
        general.append(value)
    assert general == VALUES
    assert read_all([STREAM]) == VALUES


def test_every_value_once_wherever_a_read_ends():
    for cut in range(len(STREAM) + 1):
        assert read_all([STREAM[:cut], STREAM[cut:]]) == VALUES, cut
    for cut in range(len(STREAM) - 6):
        parts = [STREAM[:cut], STREAM[cut : cut + 7], STREAM[cut + 7 :]]
        assert read_all(parts) == VALUES, cut


def test_one_byte_per_read():
    assert read_all([STREAM[i : i + 1] for i in range(len(STREAM))]) == VALUES


def test_incomplete_values_wait_and_null_bulk_is_none():
    assert parse_value(b"*3\r\n$7\r\nmessage\r\n$4\r\nro", 0) is None
    assert parse_value(b"$5\r\nhello", 0) is None
    assert parse_value(b"$-1\r\n", 0) == (None, 5)


def test_publish_command_is_a_three_item_array():
    payload = message_text(1, 2)
    command = PUBLISH % (len(payload), payload)
    assert parse_value(command, 0) == ([b"PUBLISH", CHANNEL, payload], len(command))
