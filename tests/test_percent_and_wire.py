"""Bytes that are not UTF-8 survive every form: percent text, msgpack, ECS JSON."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from common import ecs, wire
from common.percent import as_text, percent_decode, percent_encode
from common.schema import SchemaError, new_event, validate

HOSTILE_ARGV = [
    b"\xff\xfe", "100%", "", "new\nline", "quote\"s'", "tab\t", "\x00nul?",
    b"\xc3\xc3\xa4",            # an invalid byte before a valid two-byte sequence
    b"\xed\xa0\x80",            # an encoded surrogate: not valid UTF-8
    b"\xc0\xaf",                # overlong '/'
    "x" * 200_000,              # huge
    "café", "\u2028", "%FF",    # text that merely looks like an escape
]


@pytest.mark.parametrize("value, expected", [
    (b"a%\xff\xc3\xa9\n", "a%25%FFé\n"),
    (b"\xc3\xc3\xa4", "%C3ä"),
    (b"\xed\xa0\x80", "%ED%A0%80"),
    (b"\xc0\xaf", "%C0%AF"),
    ("plain", "plain"),
    ("%41", "%2541"),
])
def test_percent_form(value, expected) -> None:
    assert percent_encode(value) == expected
    assert percent_decode(expected) == as_text(value)


def test_lone_surrogate_from_hostile_json_is_escaped_not_crashing() -> None:
    assert percent_encode("a\ud800b") == "a%ED%A0%80b"


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_percent_form_round_trips_any_bytes(data: bytes) -> None:
    encoded = percent_encode(data)
    encoded.encode("utf-8")  # always valid UTF-8 text
    restored = percent_decode(encoded)
    assert (restored if isinstance(restored, bytes) else restored.encode()) == data


def _event(args) -> dict:
    event = new_event("process_create", "auditd", host={"name": "h", "os": {"type": "linux"}},
                      timestamp=0)
    event["process"] = {"pid": 7, "args": args, "executable": b"/tmp/\xe9", "name": "\xe9"}
    return event


def test_msgpack_round_trip_is_exact_with_hostile_argv() -> None:
    event = _event([as_text(a) if isinstance(a, bytes) else a for a in HOSTILE_ARGV])
    back = wire.unpack_event(wire.pack_event(event))
    assert back == event
    assert [type(a) for a in back["process"]["args"]] == [type(a) for a in event["process"]["args"]]
    assert wire.unpack_batch(wire.pack_batch([event, event])) == [event, event]


def test_ecs_json_round_trip_is_exact_and_marks_percent_fields() -> None:
    event = _event([as_text(a) if isinstance(a, bytes) else a for a in HOSTILE_ARGV])
    line = ecs.render(event)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["ttpsensor"]["percent_encoded"] == ["process.args", "process.executable"]
    assert doc["process"]["args"][0] == "%FF%FE"
    assert doc["process"]["name"] == "\xe9"  # valid text stays readable, unmarked
    assert ecs.parse(doc) == event


def test_ecs_json_of_a_plain_event_has_no_marker() -> None:
    event = _event(["ls", "-l"])
    event["process"]["executable"] = "/usr/bin/ls"
    doc = json.loads(ecs.render(event))
    assert "ttpsensor" not in doc
    assert ecs.parse(doc) == event


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", b"\x81\xa1a"[:2], b"\xdc\x00\x01"])
def test_wire_rejects_garbage_with_a_clear_error(data: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.unpack_event(data)


@pytest.mark.parametrize("doc, message", [
    ([], "JSON object"),
    ({"schema": "1"}, "schema"),
    ({"schema": 99, "@timestamp": "t", "event": {}, "host": {}}, "newer"),
    ({"schema": 1, "@timestamp": "t", "event": {"id": "i", "action": "process_create",
                                                "provider": "p"}, "host": {}}, "process"),
    ({"schema": 1, "@timestamp": "t", "event": {"id": "i", "action": "process_create",
                                                "provider": "p"}, "host": {},
      "process": {"pid": "12"}}, "pid"),
    ({"schema": 1, "@timestamp": "t", "event": {"id": "i", "action": "process_create",
                                                "provider": "p"}, "host": {},
      "process": {"args": "ls -l"}}, "args"),
])
def test_validate_names_the_problem(doc, message) -> None:
    with pytest.raises(SchemaError, match=message):
        validate(doc)


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text() | st.binary() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=5),
    max_leaves=30)


@settings(max_examples=400)
@given(st.dictionaries(st.text(max_size=12), _VALUES, max_size=8))
def test_wire_encoder_writes_what_msgpack_python_writes(event: dict) -> None:
    """pack_event and pack_batch use msgspec's encoder for speed: the bytes must be exactly
    msgpack-python's (a peer implementation), so old and new spools read alike."""
    import msgpack
    assert wire.pack_event(event) == msgpack.packb(event, use_bin_type=True)
    assert wire.pack_batch([event, event]) == msgpack.packb([event, event], use_bin_type=True)
    assert wire.unpack_event(wire.pack_event(event)) == event


# {"a": 1, "b": b"z"} written in wider forms than an encoder would choose (str 8 keys, an
# int 64, a bin 16): valid msgpack whose fresh encoding is other bytes.
_WIDE = b"\x82\xd9\x01a\xd3" + (1).to_bytes(8, "big") + b"\xd9\x01b\xc5\x00\x01z"


@settings(max_examples=300)
@given(st.lists(st.dictionaries(st.text(max_size=12), _VALUES, max_size=8), max_size=20),
       st.integers(min_value=0, max_value=20))
def test_a_batchs_documents_are_its_events_own_bytes(events: list, at: int) -> None:
    """The collector stores each event of a frame as the bytes it came in (not encoded
    again): each document is exactly its event's slice of the batch and reads back as the
    event. The batch is written by msgpack-python (a peer), with one event in wide forms
    among them, whose fresh encoding would be other bytes."""
    import msgpack
    at = min(at, len(events))
    parts = [msgpack.packb(e, use_bin_type=True) for e in events]
    parts.insert(at, _WIDE)
    events = events[:at] + [{"a": 1, "b": b"z"}] + events[at:]
    header = bytes([0x90 + len(parts)]) if len(parts) < 16 else b"\xdc" + len(parts).to_bytes(
        2, "big")
    decoded, documents = wire.unpack_batch_documents(header + b"".join(parts))
    assert decoded == events and documents is not None
    assert [bytes(d) for d in documents] == parts
    assert [wire.unpack_event(bytes(d)) for d in documents] == events
    assert wire.pack_event(events[at]) != _WIDE


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", b"\x91\x81\xa1a", b"\x91\x01"])
def test_a_batch_that_does_not_decode_gives_no_documents_but_an_error(data: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.unpack_batch_documents(data)


def test_wire_encoder_matches_msgpack_python_on_real_events() -> None:
    import msgpack

    from common.bench import varied_events
    for event in varied_events(200):
        assert wire.pack_event(event) == msgpack.packb(event, use_bin_type=True)


def test_event_ids_are_version_4_uuids_written_as_uuid_writes_them() -> None:
    import uuid

    from common.schema import new_event_id
    ids = {new_event_id() for _ in range(5000)}
    assert len(ids) == 5000
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


def test_a_batch_of_event_ids_is_the_random_bytes_as_uuid_writes_them(monkeypatch) -> None:
    """A batch is written column by column: each id must be uuid's text of its own 16 bytes
    with the version and variant set, in order."""
    import uuid

    from common import schema
    data = bytes(range(256)) * 3 + bytes(255 - b for b in range(256)) * 2
    monkeypatch.setattr(schema.os, "urandom", lambda n: data[:n])
    made = schema._made_ids(80)
    assert len(made) == 80
    for number, text in enumerate(made):
        want = uuid.UUID(bytes=data[16 * number:16 * number + 16], version=4)
        assert text == str(want)


def test_a_forked_child_does_not_repeat_its_parents_event_ids() -> None:
    """Ids are made in batches; a child forked with part of a batch left must not hand out
    the ids its parent hands out next."""
    from common.schema import new_event_id
    new_event_id()  # a batch is made, most of it left
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # never back into pytest, whatever happens here
        try:
            os.write(writer, "".join(new_event_id() for _ in range(10)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    with os.fdopen(reader) as f:
        theirs = f.read()
    ours = [new_event_id() for _ in range(10)]
    assert len(theirs) == 360
    assert not any(i in theirs for i in ours)


def test_timestamps_are_written_as_strftime_writes_them() -> None:
    """utc_timestamp formats floats the fast way (isoformat) for years from 1000 on; the bytes
    must stay strftime's, across the whole range a float time can take."""
    import datetime as dt
    import random

    from common.schema import utc_timestamp
    rng = random.Random(3)
    times = [0.0, 1.5, 1796199948.123456, 253402300799.0, 999999.9999995, -30610224000.5]
    # Fractions at and around half a microsecond, where rounding decides, and many times of
    # one second (its date and time of day are remembered, the microseconds are not).
    times += [base + k * 5e-7 + nudge for base in (0.0, -1.0, 1796199948.0, 1e9)
              for k in range(-4, 5) for nudge in (0.0, 1e-9, -1e-9)]
    times += [1796199948.0 + rng.random() for _ in range(5000)]
    for when in times + [rng.uniform(-6e10, 2.5e11) for _ in range(20000)]:
        want = dt.datetime.fromtimestamp(when, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert utc_timestamp(when) == want


_ARGUMENT = st.one_of(
    st.text(alphabet="ab/._-=:,@+%", max_size=6),  # mostly what needs no quoting
    st.text(alphabet="ab/._-=:,@+%'\" \t\n\\$é\u2028\x00\udcff", max_size=8),
    st.sampled_from(["", "-l", "/bin/true", "100%", "a b", "ça"]),
    st.binary(max_size=4), st.none())


@given(st.lists(_ARGUMENT, max_size=6))
def test_command_line_is_the_quoted_percent_form_of_each_argument(args) -> None:
    """command_line's whole-line shortcut gives what quoting each argument's percent form
    gives (shlex.quote), for any arguments: empty, lost (None), bytes, "%", non-ASCII."""
    import shlex

    from sensor_linux.enrich import command_line

    want = " ".join(shlex.quote(percent_encode(a if a is not None else "")) for a in args)
    assert command_line(args) == want
    assert command_line(["/bin/true", "ttplab-x", "--flag", "v=1,2:3@4+5"]) == \
        "/bin/true ttplab-x --flag v=1,2:3@4+5"
    assert command_line(["ls", ""]) == "ls ''"
    assert command_line(["echo", "100%"]) == "echo 100%25"


def test_a_file_line_is_the_text_line_encoded_for_every_event() -> None:
    """ecs.render_line (what a file output writes) is render's text as the line sink encoded
    it, newline included: for a plain event (orjson's bytes as they are) and for one with
    bytes that are not UTF-8 and a lone surrogate (the standard library's path)."""
    plain = _event(["ls", "-l"])
    hostile = _event([as_text(a) if isinstance(a, bytes) else a for a in HOSTILE_ARGV])
    escaped = _event(["\udcff", "ok"])
    for event in (plain, hostile, escaped):
        line = ecs.render(event)
        assert ecs.render_line(event) == line.encode("utf-8", "surrogateescape") + b"\n"
