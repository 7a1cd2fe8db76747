"""The spool corruption matrix: every kind of byte-level damage at the head, in the middle and
at the tail, read with and without a live writer. Every intact frame is delivered exactly once,
every event lost is counted; and looking at a spool beside its writer changes nothing."""

from __future__ import annotations

import json
import multiprocessing
import os
import struct
from pathlib import Path

import google_crc32c
import pytest

from common.spool import MAGIC, Spool
from tests.conftest import require, run_cli

FRAMES_PER_SEGMENT = 6
EVENTS_PER_FRAME = 10
SEGMENTS = 3


def _events(n: int, start: int = 0) -> list[dict]:
    return [{"schema": 1, "@timestamp": "2026-01-01T00:00:00.000000Z",
             "event": {"id": f"e{i}", "action": "process_create", "provider": "ebpf"},
             "host": {"name": "h"}, "process": {"pid": i, "args": ["x", "y" * (i % 7)]}}
            for i in range(start, start + n)]


def _build(directory: Path) -> tuple[Spool, dict[str, list[tuple[int, int, bytes]]]]:
    """A spool of SEGMENTS segments; returns it and {segment: [(offset, first seq, raw)]}."""
    spool = Spool(str(directory), batch_events=EVENTS_PER_FRAME, segment_bytes=1 << 30)
    seq = 0
    for _ in range(SEGMENTS):
        for _ in range(FRAMES_PER_SEGMENT):
            for event in _events(EVENTS_PER_FRAME, seq):
                spool.append(event)
            seq += EVENTS_PER_FRAME
        spool.flush()
        spool._close_segment()  # the next frame starts a new segment
    spool.close()
    layout: dict[str, list[tuple[int, int, bytes]]] = {}
    for name in spool.segments():
        data = (directory / name).read_bytes()
        frames, offset = [], 0
        while offset < len(data):
            length = struct.unpack_from("<I", data, offset + 4)[0]
            first = struct.unpack_from("<Q", data, offset + 12)[0]
            end = offset + 24 + length
            frames.append((offset, first, data[offset:end]))
            offset = end
        layout[name] = frames
    return spool, layout


def _lying_frame(raw: bytes) -> bytes:
    """The same frame with a count that disagrees with its events, and a CRC that fits."""
    first, count = struct.unpack_from("<QI", raw, 12)
    tail = struct.pack("<QI", first, count - 3) + raw[24:]
    return MAGIC + struct.pack("<II", len(raw) - 24, google_crc32c.value(tail)) + tail


def _damage(data: bytearray, offset: int, raw: bytes, kind: str) -> None:
    end = offset + len(raw)
    if kind == "payload-bit":
        data[offset + 40] ^= 0x10
    elif kind == "length-bit":
        data[offset + 6] ^= 0x01            # the length's third byte: 64 KiB more or less
    elif kind == "length-low":
        data[offset + 4] ^= 0x07
    elif kind == "magic":
        data[offset] ^= 0xFF
    elif kind == "count":
        data[offset + 20] ^= 0x01           # covered by the CRC
    elif kind == "zero-header":
        data[offset:offset + 24] = bytes(24)
    elif kind == "truncate":
        del data[offset + len(raw) // 2:]
    elif kind == "garbage":
        data[offset:offset] = b"\xde\xad" * 50 + MAGIC + b"\x00" * 3
    elif kind == "delete":
        del data[offset + 10:end - 10]
    elif kind == "lying-count":
        data[offset:end] = _lying_frame(raw)
    else:
        raise AssertionError(kind)


KINDS = ["payload-bit", "length-bit", "length-low", "magic", "count", "zero-header", "truncate",
         "garbage", "delete", "lying-count"]


@pytest.mark.parametrize("writer", [False, True], ids=["read", "live-writer"])
@pytest.mark.parametrize("where", ["head", "middle", "tail"])
@pytest.mark.parametrize("kind", KINDS)
def test_damage_loses_only_what_it_hit_and_counts_it(tmp_path, kind, where, writer) -> None:
    _, layout = _build(tmp_path)
    names = sorted(layout)
    name, index = {"head": (names[0], 0), "middle": (names[1], FRAMES_PER_SEGMENT // 2),
                   "tail": (names[-1], FRAMES_PER_SEGMENT - 1)}[where]
    path = tmp_path / name
    data = bytearray(path.read_bytes())
    offset, hit_first, raw = layout[name][index]
    _damage(data, offset, raw, kind)
    path.write_bytes(bytes(data))
    total = SEGMENTS * FRAMES_PER_SEGMENT * EVENTS_PER_FRAME
    # Frames whose bytes are still whole somewhere in their segment must all be delivered.
    intact = {first for seg, frames in layout.items() for _, first, frame_raw in frames
              if frame_raw in (tmp_path / seg).read_bytes()}
    assert hit_first not in intact or kind in ("garbage", "truncate") and where != "tail" \
        or kind == "garbage"
    if writer:  # a sensor starts on the damaged spool and keeps writing
        live = Spool(str(tmp_path), batch_events=EVENTS_PER_FRAME)
        for event in _events(20, 10_000):
            live.append(event)
        live.close()
    reader = Spool(str(tmp_path), readonly=True)
    delivered: list[int] = []
    gaps: set[int] = set()
    for frame, events in reader.read():
        assert len(events) == frame.count
        for i, event in enumerate(events):
            if event["event"]["action"] == "spool_gap":  # a writer's account of a loss
                gap = event["ttpsensor"]["spool_gap"]
                gaps |= set(range(gap["first_seq"], gap["end_seq"]))
                continue
            if event["process"]["pid"] >= 10_000:  # written after the damage
                continue
            assert event["process"]["pid"] == frame.first_seq + i  # the right sequence number
            delivered.append(frame.first_seq + i)
    assert len(delivered) == len(set(delivered)), "an event was delivered twice"
    for first in intact:
        assert set(range(first, first + EVENTS_PER_FRAME)) <= set(delivered), first
    lost = set(range(total)) - set(delivered)
    missing = set().union(*(range(s, e) for s, e in reader.missing_ranges)) | gaps
    stats = reader.stats
    hit = set(range(hit_first, hit_first + EVENTS_PER_FRAME))
    if kind == "garbage":  # bytes before a frame: skipped and counted, nothing lost
        assert lost == set() and stats.garbage_bytes > 0
    elif where == "tail" and kind in ("truncate", "length-bit", "delete"):
        # The newest segment ends inside the damaged frame: a torn tail (a crash mid-write, so
        # never delivered). A reader reports it; a writer cuts it and reuses its numbers.
        if writer:
            assert lost == hit and stats.torn_tails == 0  # cut by the writer, not read
        else:
            assert lost == hit and stats.torn_tails == 1
    elif where == "tail" and kind == "zero-header" and not writer:
        # Header gone and nothing after it: how many events it held cannot be known; the
        # bytes are counted (a writer starting here skips numbers instead, see above).
        assert lost == hit and stats.garbage_bytes > 0
    else:
        assert lost <= missing, sorted(lost - missing)[:10]
        assert stats.corrupt_frames + stats.garbage_bytes > 0


def test_a_cursor_that_lies_delivers_everything_again_and_says_so(tmp_path) -> None:
    spool, _ = _build(tmp_path)
    total = SEGMENTS * FRAMES_PER_SEGMENT * EVENTS_PER_FRAME
    for bad in ({"acked": 10**12}, {"acked": "40"}, {"acked": 40.5}, {"acked": -1},
                {"acked": True}, {"nothing": 1}, [1, 2]):
        (tmp_path / "cursor.json").write_text(json.dumps(bad))
        reader = Spool(str(tmp_path), readonly=True)
        seqs = [f.first_seq for f, _ in reader.read()]
        assert seqs[0] == 0 and len(seqs) == total // EVENTS_PER_FRAME, bad
        assert reader.stats.cursor_invalid >= 1, bad
    # A sensor restarting on a cursor past its end does not jump ahead either.
    (tmp_path / "cursor.json").write_text(json.dumps({"acked": 10**12}))
    assert Spool(str(tmp_path)).next_seq == total


def test_a_deleted_unacknowledged_segment_is_missing_and_verify_fails(tmp_path) -> None:
    spool, layout = _build(tmp_path)
    spool.ack(30)
    first = sorted(layout)[0]
    os.unlink(tmp_path / first)  # still holds 30..59, unacknowledged
    reader = Spool(str(tmp_path), readonly=True)
    list(reader.read())
    assert reader.missing_ranges == [(30, 60)]
    done = run_cli("spool", "verify", str(tmp_path))
    assert done.returncode == 1
    assert json.loads(done.stdout)["unexplained_missing_events"] == 30


def test_stray_segment_names_are_ignored_and_reported(tmp_path) -> None:
    _build(tmp_path)
    (tmp_path / "seg-not-a-number").write_text("x")
    (tmp_path / ("seg-" + "9" * 20 + ".d")).mkdir()
    (tmp_path / ("seg-" + "8" * 20)).mkdir()        # a directory with a segment's name
    (tmp_path / ("seg-" + "7" * 20)).symlink_to("/etc/passwd")
    reader = Spool(str(tmp_path), readonly=True)
    assert len(list(reader.read())) == SEGMENTS * FRAMES_PER_SEGMENT
    assert reader.stats.stray_entries == 4
    inspect = run_cli("spool", "inspect", "--json", str(tmp_path))
    assert inspect.returncode == 0, inspect.stderr
    verify = run_cli("spool", "verify", str(tmp_path))
    assert verify.returncode == 1 and json.loads(verify.stdout)["stray_entries"] == 4


def test_reading_never_writes(tmp_path) -> None:
    """Read-only means it: a torn tail stays, spool.json stays, even when unreadable."""
    _build(tmp_path)
    newest = sorted(p for p in tmp_path.iterdir() if p.name.startswith("seg-"))[-1]
    newest.write_bytes(newest.read_bytes()[:-7])
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    for command in (("spool", "inspect", "--json"), ("spool", "verify")):
        run_cli(*command, str(tmp_path))
    (tmp_path / "spool.json").write_text("{broken")
    broken = run_cli("spool", "verify", str(tmp_path))
    assert broken.returncode == 1 and "spool.json is unreadable" in broken.stderr
    assert "Traceback" not in broken.stderr
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    assert {k: v for k, v in after.items() if k != "spool.json"} == {
        k: v for k, v in before.items() if k != "spool.json"}
    assert (tmp_path / "spool.json").read_text() == "{broken"


def _write_continuously(directory: str, count: int) -> None:
    spool = Spool(directory, batch_events=25, segment_bytes=64 << 10)
    for event in _events(count):
        spool.append(event)
    spool.close()


def test_looking_beside_a_live_writer_loses_nothing(tmp_path) -> None:
    """1,000 read-only opens and full reads (what inspect and verify do), and some runs of the
    real commands, while another process writes 20,000 events: all of them are readable
    afterwards, each once."""
    directory = str(tmp_path / "spool")
    Spool(directory).close()
    writer = multiprocessing.get_context("spawn").Process(
        target=_write_continuously, args=(directory, 20_000))
    writer.start()
    looks = during_write = 0
    try:
        while looks < 1000:
            during_write += writer.is_alive()
            reader = Spool(directory, readonly=True)
            for _ in reader.read():
                pass
            reader.summary()
            looks += 1
            if looks % 200 == 0:
                assert run_cli("spool", "inspect", "--json", directory).returncode == 0
                run_cli("spool", "verify", directory)
    finally:
        writer.join(timeout=300)
    assert writer.exitcode == 0
    final = Spool(directory, readonly=True)
    seqs = [f.first_seq + i for f, events in final.read(0) for i in range(len(events))]
    assert seqs == list(range(20_000))
    assert final.stats.torn_tails == 0 and final.stats.garbage_bytes == 0
    assert during_write >= 100, during_write  # the looking did happen beside the writing


# --- a hostile or careless directory ----------------------------------------------------------

def test_a_spool_directory_of_another_user_or_open_to_others_is_refused(tmp_path) -> None:
    from common.spool import SpoolError
    require(os.geteuid() == 0, "root is needed to give a directory to another user")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(SpoolError, match=f"{theirs} belongs to uid 65534"):
        Spool(str(theirs))
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(SpoolError, match=f"{shared} is writable by group or others"):
        Spool(str(shared))
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    with pytest.raises(SpoolError, match="is not a directory"):
        Spool(str(link))
    # The command says so in one line, without a traceback.
    done = run_cli("run", "--source", "procfs", "--once", "--store", "",
                   "--output", f"spool:{shared}")
    assert done.returncode != 0 and "writable by group or others" in done.stderr
    assert "Traceback" not in done.stderr


def test_planted_links_in_a_spool_are_never_written_through(tmp_path) -> None:
    from common.spool import SpoolError
    spool_dir = tmp_path / "spool"
    spool = Spool(str(spool_dir), batch_events=50)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    victim.chmod(0o644)
    # The temporary file of an atomic replace, and the name of the next segment.
    (spool_dir / "cursor.json.tmp").symlink_to(victim)
    spool.ack(0)
    (spool_dir / "seg-00000000000000000000").symlink_to(victim)
    for event in _events(5):
        spool.append(event)
    with pytest.raises(SpoolError, match="is a symbolic link"):
        spool.flush()
    assert victim.read_text() == "precious" and victim.stat().st_mode & 0o777 == 0o644
    for name in ("spool.json", "cursor.json"):
        assert (spool_dir / name).stat().st_mode & 0o777 == 0o600, name
