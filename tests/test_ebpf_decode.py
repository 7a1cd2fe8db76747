"""The eBPF record decoding in C (sensor_linux/ebpf/_decode.c) against its pure-Python
reference (probes.decode_python), both ways: the same record for every recorded one, for
mutated and cut records and for the edges, what C leaves to Python, and no memory held per
call. test_ebpf_unit.py decodes through probes.decode (the C path where it is built)."""

from __future__ import annotations

import json
import os
import random
import struct
from pathlib import Path

import pytest

from sensor_linux.ebpf import probes
from sensor_linux.image import FileIdentity
from tests.conftest import heap_growth, pure_python_says, require
from tests.test_ebpf_unit import _record

STREAM = Path(__file__).parent / "data" / "ebpf-stream.jsonl"
FLAGS = [1 << bit for bit in range(14)]


def _built() -> None:
    require(probes.decode_c is not None,
            "the eBPF record decoding in C is not built (pip install -e . compiles setup.py's "
            "extensions: it needs gcc and python3-dev)")


def _recorded() -> list[bytes]:
    return [bytes.fromhex(json.loads(line)["record"])
            for line in STREAM.read_text().splitlines() if line.strip()]


def _both(data: bytes) -> tuple[object, object]:
    """What each path makes of ``data``: the record, or the error's type (a record shorter
    than its head)."""
    results: list[object] = []
    for decode in (probes.decode, probes.decode_python):
        try:
            results.append(decode(data))
        except struct.error:
            results.append(struct.error)
    return results[0], results[1]


def _same(data: bytes) -> None:
    compiled, python = _both(data)
    assert compiled == python, data.hex()
    if isinstance(python, probes.ExecRecord):
        assert type(compiled.identity) is type(python.identity)  # type: ignore[union-attr]
        assert [type(a) for a in compiled.args or []] == \
            [type(a) for a in python.args or []]  # type: ignore[union-attr]


def test_the_c_decoding_is_built_and_decode_uses_it() -> None:
    _built()
    import sensor_linux.ebpf._decode as compiled
    assert compiled.HEAD_SIZE == probes._HEAD.size  # the head as probes._HEAD reads it
    record = _record(args=b"x\0", argc=1)
    assert probes.decode_c(record, probes.ExecRecord, FileIdentity) is not None  # type: ignore
    if not os.environ.get("TTPSENSOR_PURE_PYTHON"):
        assert probes.decode is not probes.decode_python and probes.decode_path() == "C"
    # TTPSENSOR_PURE_PYTHON turns it off for a process, and the benchmarks say so.
    for pure, expected in ((True, "None pure Python"), (False, "decode C")):
        assert pure_python_says("from sensor_linux.ebpf import probes; print(getattr("
                                "probes.decode_c, '__name__', None), probes.decode_path())",
                                pure) == expected


def test_both_decodings_agree_on_every_recorded_record() -> None:
    _built()
    records = _recorded()
    assert len(records) > 50
    for data in records:
        assert probes.decode_c(data, probes.ExecRecord, FileIdentity) is not None  # type: ignore
        _same(data)


def _mutated_head(rng: random.Random, data: bytes) -> bytes:
    """A head field changed: a flag flipped, a size, the return value, times, ids."""
    fields = list(probes._HEAD.unpack_from(data))
    tail = data[probes._HEAD.size:]
    at = rng.randrange(len(fields))
    if at == 27:  # flags: the ones decoding reads
        fields[at] ^= rng.choice(FLAGS)
    elif 29 <= at <= 32:  # a blob's size: within, past or short of the data
        fields[at] = rng.choice([0, 1, fields[at] + rng.randint(-8, 8), len(tail) + 50,
                                 rng.randrange(1 << 32)]) % (1 << 32)
    elif at in (5, 6):  # file times: past 64 bits of nanoseconds too
        fields[at] = rng.choice([0, -1, 1 << 40, -(1 << 40), 9_000_000_000, 9_000_000_001])
    elif at == 25:  # retval
        fields[at] = rng.choice([0, -2, -13, 1, -(1 << 31)])
    elif at in (33, 34):  # comm, tty
        fields[at] = bytes(rng.choice(b"\0ab/") for _ in range(rng.randint(0, 20)))
    elif isinstance(fields[at], int):
        fields[at] = rng.choice([0, 1, (1 << 31) - 1, 1 << 31])
    return probes._HEAD.pack(*fields) + tail


def _mutated_tail(rng: random.Random, data: bytes) -> bytes:
    """The blobs' bytes: NULs put in, taken out or doubled; the record cut short."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(probes._HEAD.size, len(out) + 1)
        roll = rng.random()
        if roll < 0.4:
            out[at:at] = bytes([rng.choice(b"\0\0/a\xff")])
        elif at < len(out):
            if roll < 0.7:
                del out[at]
            else:
                out[at] = rng.choice(b"\0a")
    if rng.random() < 0.1:
        out = out[:rng.randrange(len(out) + 1)]  # cut, the head too at times
    return bytes(out)


def test_both_decodings_agree_on_mutated_records() -> None:
    _built()
    records = _recorded() + [
        _record(args=b"x\0\0\xff\xfe\0a b\0", argc=4),
        _record(args=b"ab", argc=1, flags=probes.FLAG_TRUNC_ARGS),
        _record(retval=-2, flags=probes.FLAG_FAILED, name=b"/nope\0", args=b""),
    ]
    rng = random.Random(31)
    left = taken = 0
    for _ in range(20000):
        data = rng.choice(records)
        data = _mutated_head(rng, data) if rng.random() < 0.5 else _mutated_tail(rng, data)
        _same(data)
        if probes.decode_c(data, probes.ExecRecord, FileIdentity) is None:  # type: ignore
            left += 1
        else:
            taken += 1
    assert taken > 10000 and left > 500  # both ways were exercised


@pytest.mark.parametrize("kwargs", [
    {"args": b"", "argc": 0},
    {"args": b"", "argc": 0, "flags": probes.FLAG_TRUNC_ARGS},
    {"args": b"\0", "argc": 1},
    {"args": b"\0\0\0", "argc": 3},
    {"args": b"a", "argc": 1},                                  # no NUL, not cut
    {"args": b"a\0b", "argc": 2, "flags": probes.FLAG_TRUNC_ARGS},
    {"exe": b"/", "cwd": b"/"},                                 # no components
    {"exe": b"/a//b/", "cwd": b"/x"},
    {"flags": probes.FLAG_EXE_TRUNC},
    {"flags": probes.FLAG_NO_EXE},
    {"flags": probes.FLAG_CWD_TRUNC},
    {"flags": probes.FLAG_FACT_FAULT},
    {"flags": probes.FLAG_ARG_FAULT, "fault_mask": 0},           # no chunk named: C decodes
    {"flags": probes.FLAG_ARG_FAULT, "fault_mask": 2, "args": b"a\0" * 5000, "argc": 5000},
    {"flags": probes.FLAG_FAILED, "retval": -2, "name": b"/x\0"},
    {"flags": probes.FLAG_FAILED, "retval": -2, "name": b"/x"},
    {"flags": probes.FLAG_FAILED, "retval": -13, "name": b""},
    {"retval": -(1 << 31)},
    {"ctime_nsec": (1 << 31) | 9},                              # multigrain's flag bit
])
def test_both_decodings_agree_on_the_edges(kwargs: dict) -> None:
    _built()
    _same(_record(**kwargs))


def test_what_c_leaves_to_python_is_decoded_there() -> None:
    _built()
    faulted = _record(flags=probes.FLAG_ARG_FAULT, fault_mask=1, args=b"a\0" * 3000,
                      argc=3000)
    short = _record()[:probes._HEAD.size - 1]
    for data in (faulted, short, bytearray(_record())):
        assert probes.decode_c(data, probes.ExecRecord, FileIdentity) is None  # type: ignore
    assert probes.decode(faulted).arg_faults > 0
    with pytest.raises(struct.error):
        probes.decode(short)
    head = list(probes._HEAD.unpack_from(_record()))
    head[5] = 1 << 40  # seconds whose nanoseconds pass 64 bits: Python's integers hold them
    far = probes._HEAD.pack(*head) + _record()[probes._HEAD.size:]
    assert probes.decode_c(far, probes.ExecRecord, FileIdentity) is None  # type: ignore
    assert probes.decode(far).identity.mtime_ns == (1 << 40) * 10**9 + 5  # type: ignore


def test_the_c_decoding_refuses_wrong_arguments() -> None:
    _built()
    for args in ((_record(), None, FileIdentity), (_record(), probes.ExecRecord),
                 (_record(), probes.ExecRecord, 3)):
        with pytest.raises(TypeError):
            probes.decode_c(*args)  # type: ignore[misc]


def test_the_c_decoding_holds_no_memory_per_call() -> None:
    """Reference counting in C is by hand: a reference leaked per call (a field, the
    identity, an argument, a record left to Python) would grow the heap with every exec."""
    _built()
    samples = _recorded()[:40] + [
        _record(flags=probes.FLAG_FAILED, retval=-2, name=b"/x\0"),
        _record(flags=probes.FLAG_ARG_FAULT, fault_mask=1, args=b"a\0" * 3000, argc=3000),
        _record()[:100],
    ]

    def run() -> None:
        for data in samples:
            probes.decode_c(data, probes.ExecRecord, FileIdentity)  # type: ignore[misc]
    grown = heap_growth(run, 200)
    assert grown < 64 * 1024, f"{grown} bytes held after {200 * len(samples)} calls"
