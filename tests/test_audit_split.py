"""The audit parser's split path in C (sensor_linux/audit/_split.c) against its pure-Python
reference (records.split_record_python), both ways: the same tuple for every corpus line, for
hostile shapes and for mutated lines, and the same LAUREL output from either.

The corpus and mutation checks in test_audit_hostile.py also compare the two (through
fuzz.parsers_disagree); these add a mutation engine aimed at the bytes the split path decides
on, and the end-to-end runs.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from sensor_linux.audit import laurel, records
from sensor_linux.audit.records import SPLIT_TYPES, split_record_c, split_record_python
from tests.compare_outputs import renumber
from tests.conftest import heap_growth, pure_python_says, require, ttpsensor_command
from tests.test_audit_corpus import ALL_TXT, GOLDEN, assemble_file

# The bytes the split path decides on: separators, quotes, braces, brackets, the enriched
# separator, whitespace it declines, NUL, high bytes, and what keys and stamps are made of.
DECISIVE = b" \"'=[]{}\x1d\t\r\n\x0b\x0c\x1c\x00\x80\xffaZ09_-.:()"


def _built() -> None:
    require(split_record_c is not None,
            "the C split path is not built (pip install -e . compiles setup.py's extension: "
            "it needs gcc and python3-dev)")


def _corpus_lines() -> list[bytes]:
    return [line for path in ALL_TXT for line in path.read_bytes().splitlines(keepends=True)]


def test_the_c_split_path_is_built_and_parse_uses_it() -> None:
    _built()
    if not os.environ.get("TTPSENSOR_PURE_PYTHON"):
        assert records.split_record is split_record_c and records.split_path() == "C"
    # TTPSENSOR_PURE_PYTHON turns it off for a process, and the benchmarks say so.
    for pure, path in ((True, "pure Python"), (False, "C")):
        said = pure_python_says("from sensor_linux.audit import records; "
                                "print(records.split_path(), records.split_record.__name__)",
                                pure).split()
        assert said[:-1] == path.split()
        assert said[-1] == ("split_record_python" if pure else "split_record")


def test_both_split_paths_agree_on_every_corpus_line() -> None:
    _built()
    lines = _corpus_lines()
    assert len(lines) > 500
    taken = 0
    for line in lines:
        got = split_record_c(line, SPLIT_TYPES)  # type: ignore[misc]
        assert got == split_record_python(line, SPLIT_TYPES), line
        taken += got is not None
    assert taken > len(lines) // 2  # most real records take the split path


def test_both_split_paths_agree_on_mutated_lines() -> None:
    _built()
    lines = _corpus_lines()
    rng = random.Random(24)
    taken = declined = 0
    for _ in range(60000):
        line = bytearray(rng.choice(lines))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(line) + 1)
            roll = rng.random()
            if roll < 0.4:
                line[at:at] = bytes([rng.choice(DECISIVE)])
            elif at < len(line):
                if roll < 0.7:
                    del line[at]
                else:
                    line[at] = rng.choice(DECISIVE)
        got = split_record_c(bytes(line), SPLIT_TYPES)  # type: ignore[misc]
        assert got == split_record_python(bytes(line), SPLIT_TYPES), bytes(line)
        taken += got is not None
        declined += got is None
    assert taken > 3000 and declined > 10000  # both outcomes were exercised


@pytest.mark.parametrize("line", [
    b"type=EOE msg=audit(1.002:3): ",
    b"type=EOE msg=audit(1.002:3):",
    b"type=EOE msg=audit(1.002:3):  ",
    b"type=CWD msg=audit(1.002:3): cwd=\"/\"\x1d",
    b"type=CWD msg=audit(1.002:3):  cwd=\"/\"   \r\n",
    b"type=PATH msg=audit(12345678901.123:99999999999999999999): item=0",
    b"type=PATH msg=audit(123456789012.123:1): item=0",     # 12 digits of seconds
    b"type=PATH msg=audit(1.1234:1): item=0",               # 4 of milliseconds
    b"type=PATH msg=audit(1.1:123456789012345678901): item=0",
    b"type=PATH msg=audit(1.1:1):x item=0",
    b"type=PATH msg=audit(.1:1): item=0",
    b"type=PATH msg=audit(1.1:1) item=0",
    b"type=NOPE msg=audit(1.1:1): item=0",
    b"type=AVC msg=audit(1.1:1): avc:  denied  { read } for pid=1",
    b"node=h type=PATH msg=audit(1.1:1): item=0",
    b"type=PATH msg=audit(1.1:1): subj=x item=0",
    b"type=PATH msg=audit(1.1:1): subj[1]=x SADDR[2]=y subject=z",
    b"type=PATH msg=audit(1.1:1): SADDR=unknown family(0)",
    b"type=PATH msg=audit(1.1:1): a=\"b c\"",
    b"type=PATH msg=audit(1.1:1): a=\"b\"c",
    b"type=PATH msg=audit(1.1:1): a=b\"c\" d=",
    b"type=PATH msg=audit(1.1:1): a='b'",
    b"type=PATH msg=audit(1.1:1): a={ b }",
    b"type=PATH msg=audit(1.1:1): a[]=1",
    b"type=PATH msg=audit(1.1:1): a[12]=1 9a=2",
    b"type=PATH msg=audit(1.1:1): a=\x00\x80\xff\x1c",
    b"type=PATH msg=audit(1.1:1): a=1\tb=2",
    b"type=PATH msg=audit(1.1:1): " + b" ".join(b"k%d=v" % i for i in range(300)),
])
def test_both_split_paths_agree_on_the_edges(line: bytes) -> None:
    _built()
    compiled = split_record_c(line, SPLIT_TYPES)  # type: ignore[misc]
    assert compiled == split_record_python(line, SPLIT_TYPES)


def test_a_one_byte_body_leaves_the_interpreters_shared_bytes_alone() -> None:
    """A one-byte bytes object made from text is the interpreter's shared one: a body of just
    the separator \\x1d, read as a space, must come out as a new object, not by changing that
    one (it did, and every b"\\x1d" of the process read b" " after it)."""
    _built()
    got = split_record_c(b"type=EOE msg=audit(1.002:3): \x1d", SPLIT_TYPES)  # type: ignore[misc]
    assert got is not None and got[4] == b" " and got[5] == ()
    # bytes([n]) is that shared object: its byte must still be 0x1d.
    assert bytes([0x1D])[0] == 0x1D and b"a\x1db".count(bytes([0x1D])) == 1


def test_the_c_split_path_refuses_what_is_not_bytes_and_a_dict() -> None:
    _built()
    for args in (("type=EOE", SPLIT_TYPES), (b"type=EOE", []), (b"type=EOE",)):
        with pytest.raises(TypeError):
            split_record_c(*args)  # type: ignore[misc]


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_the_pure_python_path_matches_laurels_golden_files(path: Path, monkeypatch) -> None:
    """The corpus goldens (test_audit_corpus.py runs them with the C path) through the
    pure-Python one, as a host without a compiler runs it."""
    monkeypatch.setattr(records, "split_record", split_record_python)
    events, assembler, errors = assemble_file(path)
    assert errors == [] and assembler.rejected == []
    want = path.with_suffix(".json").read_bytes().decode("utf-8").splitlines()
    assert [laurel.render(e) for e in events] == want


@pytest.mark.parametrize("fmt", ["laurel", "ecs", "qlog"])
def test_audisp_writes_the_same_bytes_with_either_path(fmt: str, tmp_path: Path) -> None:
    """The whole replay, as a user runs it, with TTPSENSOR_PURE_PYTHON set and without (the
    ecs and qlog event ids are random: renumbered in order of appearance on both sides)."""
    _built()
    log = tmp_path / "corpus.log"
    log.write_bytes(b"\n".join(path.read_bytes() for path in ALL_TXT))
    outputs = []
    for pure in ("", "1"):
        env = dict(os.environ, TTPSENSOR_PURE_PYTHON=pure)
        done = subprocess.run(
            ttpsensor_command() + ["audisp", "--format", fmt, "--parse-error-log",
                                   str(tmp_path / f"errors{pure}.log"), str(log)],
            capture_output=True, env=env, timeout=300, check=True)
        outputs.append(renumber(done.stdout))
        # The run's summary says which path parsed.
        summary = json.loads(done.stderr.decode().splitlines()[-1].split(": ", 1)[1])
        assert summary["split_path"] == ("pure Python" if pure else "C")
    assert outputs[0].count(b"\n") > 40
    assert outputs[0] == outputs[1]


def test_the_c_split_path_holds_no_memory_per_call() -> None:
    """Reference counting in C is by hand: a leaked reference per call (a number, a part, the
    body, a declined line's objects) would grow the heap with every record. Many calls over a
    fixed set of lines (bodies remembered, bodies not plain, stamps refused, 20-digit serials)
    must end with the heap where it was after the first pass."""
    _built()
    lines = _corpus_lines()[:200] + [
        b"type=PATH msg=audit(1.1:123456789012345678901): item=0",
        b"type=PATH msg=audit(1.1:12345678901234567890): item=0 name=\"/x\"",
        b"type=PATH msg=audit(1.1:1): a=\"b c\"",
        b"type=CWD msg=audit(1.002:3): cwd=\"/\"\x1d",
        b"type=NOPE msg=audit(1.1:1): item=0",
        b"type=PATH msg=audit(x.1:1): item=0",
    ]
    def run() -> None:
        for line in lines:
            split_record_c(line, SPLIT_TYPES)  # type: ignore[misc]
    grown = heap_growth(run, 100)  # after a first pass fills what the module remembers
    assert grown < 64 * 1024, f"{grown} bytes held after {100 * len(lines)} calls"
    # A reference to a record type's number held per call costs no memory to see: counted.
    number = SPLIT_TYPES[b"type=PATH"]
    held = sys.getrefcount(number)
    for _ in range(1000):
        split_record_c(b"type=PATH msg=audit(1.1:1): a=\"b c\"", SPLIT_TYPES)  # declined
        split_record_c(b"type=PATH msg=audit(x.1:1): item=0", SPLIT_TYPES)  # refused stamp
        split_record_c(b"type=PATH msg=audit(1.1:1): item=0", SPLIT_TYPES)  # taken
    assert sys.getrefcount(number) == held


# EXECVE typing in C (typed_execve in _split.c) against records.typed_execve_python.

def _typed_both(parts: tuple[bytes, ...]) -> tuple[object, object]:
    """What each path makes of ``parts``: the typed list, or the error raised (the parse
    error's kind; a key no split path gives, not ASCII, fails alike on both)."""
    results: list[object] = []
    for typed in (records._typed_execve_compiled, records.typed_execve_python):
        try:
            results.append(typed(parts))
        except records._BadField as exc:
            results.append(("refused", exc.kind))
        except UnicodeDecodeError as exc:
            results.append(("not ASCII", str(exc)))
    return results[0], results[1]


def _execve_parts(lines: list[bytes]) -> list[tuple[bytes, ...]]:
    out = []
    for line in lines:
        split = split_record_python(line, SPLIT_TYPES)
        if split is not None and split[0] == records.EXECVE:
            out.append(split[5])
    return out


def test_both_execve_typings_agree_on_every_corpus_record() -> None:
    _built()
    every = _execve_parts(_corpus_lines())
    assert len(every) > 40
    for parts in every:
        compiled, python = _typed_both(parts)
        assert compiled == python, parts
        assert [type(value) for _, value in compiled] == [type(value) for _, value in python]


# What an argument's decoding decides on: quotes, hex digits of both cases, what is neither,
# the bytes either side of the quoted range, brackets, digits and the "_len" of keys.
EXECVE_DECISIVE = b"\"09afAFgG !~\x7f\x00\x80\xff()?[]_=ln"


def test_both_execve_typings_agree_on_mutated_records() -> None:
    """EXECVE lines mutated, then split (only what the split path takes is ever typed this
    way: its keys start with a letter and are ASCII)."""
    _built()
    lines = [line for line in _corpus_lines() if line.startswith(b"type=EXECVE ")] + [
        b'type=EXECVE msg=audit(1.1:1): argc=4 a0="/bin/sh" a1=2D63 a2=(null) a3=?',
        b'type=EXECVE msg=audit(1.1:1): argc=2 a0_len=12 a0[0]="abc" a0[1]=646566 a1=""',
    ]
    rng = random.Random(25)
    typed = refused = 0
    for _ in range(40000):
        line = bytearray(rng.choice(lines))
        body = line.index(b"): ") + 3
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(body, len(line) + 1)
            roll = rng.random()
            if roll < 0.4:
                line[at:at] = bytes([rng.choice(EXECVE_DECISIVE)])
            elif at < len(line):
                if roll < 0.7:
                    del line[at]
                else:
                    line[at] = rng.choice(EXECVE_DECISIVE)
        split = split_record_python(bytes(line), SPLIT_TYPES)
        if split is None:
            continue
        compiled, python = _typed_both(split[5])
        assert compiled == python, bytes(line)
        if isinstance(python, list):
            typed += 1
            assert [type(v) for _, v in compiled] == [type(v) for _, v in python]  # type: ignore
        else:
            refused += 1
    assert typed > 5000 and refused > 5000  # both outcomes were exercised


@pytest.mark.parametrize("part", [
    b"a0=\"\"", b"a0=\"", b"a0=\"\"\"", b"a0=\"a b\"", b"a0=\"a\x7f\"", b"a0=\"~!#\"",
    b"a0=(null)", b"a0=?", b"a0=", b"a0", b"a0==", b"a1=ABC", b"a1=abcd", b"a1=aBcD",
    b"a1=0g", b"a1=00", b"a01=\"x\"", b"a00=\"x\"", b"a255=\"x\"", b"a256=\"x\"",
    b"a999999999=\"x\"", b"a1234567890=\"x\"", b"a1[2]=\"x\"", b"a1[]=\"x\"",
    b"a1[1234567890]=\"x\"", b"a1[2]x=\"x\"", b"a1_len=3", b"a1_len=x", b"a=\"x\"",
    b"b1=\"x\"", b"argc=x", b"argc=3", b"A1=\"x\"", b"a\xff=\"x\"", b"a1=\"\xff\"",
])
def test_both_execve_typings_agree_on_the_edges(part: bytes) -> None:
    _built()
    compiled, python = _typed_both((b"argc=1", part))
    assert compiled == python
    assert repr(compiled) == repr(python)  # the same types too: bytes, None, text, numbers


def test_execve_typing_in_c_refuses_what_is_not_a_tuple_of_bytes() -> None:
    _built()
    other = records._typed_execve_other
    for args in (([b"a0=\"x\""], other), ((b"a0=\"x\"",), None), ((1, b"a0"), other),
                 ((b"a0=\"x\"",),)):
        with pytest.raises(TypeError):
            records.typed_execve_c(*args)  # type: ignore[misc]


def test_execve_typing_in_c_holds_no_memory_per_call() -> None:
    """As for the split path: typed, refused, named beyond the kept names, an error of the
    Python part in between; the heap where it was after the first pass."""
    _built()
    samples = _execve_parts(_corpus_lines())[:100] + [
        (b"argc=2", b"a0=\"x\"", b"a1=zz"),                  # refused at its second argument
        (b"argc=2", b"a0_len=x", b"a0[0]=\"x\""),            # the Python part raises
        (b"argc=1", b"a300=414243", b"a1[7]=\"y\"", b"a01=(null)"),
    ]

    def run() -> None:
        for parts in samples:
            try:
                records._typed_execve_compiled(parts)
            except records._BadField:
                pass
    grown = heap_growth(run, 100)
    assert grown < 64 * 1024, f"{grown} bytes held after {100 * len(samples)} calls"
