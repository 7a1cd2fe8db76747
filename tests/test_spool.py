"""The spool: round trips, acknowledgement, the size cap's exact gaps, corruption, full disks."""

from __future__ import annotations

import os
import subprocess

import pytest
import zstandard

from common import wire
from common.spool import SEGMENT_PREFIX, Spool
from tests.conftest import require


def _events(n: int, start: int = 0) -> list[dict]:
    return [{"schema": 1, "@timestamp": "2026-01-01T00:00:00.000000Z",
             "event": {"id": f"e{i}", "action": "process_create", "provider": "ebpf"},
             "host": {"name": "h"},
             "process": {"pid": i, "args": ["x", b"\xff" * (i % 3), "%" * (i % 5)]}}
            for i in range(start, start + n)]


def _read_all(spool: Spool, from_seq: int = 0) -> list[tuple[int, dict]]:
    out = []
    for frame, events in spool.read(from_seq):
        out += [(frame.first_seq + i, e) for i, e in enumerate(events)]
    return out


def _gaps(events: list[tuple[int, dict]]) -> list[dict]:
    return [e["ttpsensor"]["spool_gap"] for _, e in events
            if e["event"]["action"] == "spool_gap"]


def test_round_trip_survives_reopen_with_contiguous_sequence_numbers(tmp_path) -> None:
    spool = Spool(str(tmp_path), batch_events=100, segment_bytes=8192)
    sent = _events(1234)
    for event in sent:
        spool.append(event)
    spool.close()
    again = Spool(str(tmp_path))
    got = _read_all(again)
    assert [e for _, e in got] == sent  # exact, bytes included
    assert [s for s, _ in got] == list(range(1234))
    assert again.next_seq == 1234 and len(again.segments()) > 1
    assert again.spool_id == spool.spool_id
    for name in os.listdir(tmp_path):
        if name.startswith(SEGMENT_PREFIX):
            assert os.stat(tmp_path / name).st_mode & 0o777 == 0o600


def test_a_spool_written_at_an_older_zstd_level_reads_on_after_the_level_changed(
        tmp_path, monkeypatch) -> None:
    """Frames were zstd level 3 until the writer moved to common.spool.LEVEL: a spool left
    on disk by the older writer, appended to by the newer one, reads back whole and in
    order."""
    import common.spool
    from common.bench import varied_events
    # Events that differ as real ones do: the tiny ones above compress to the same bytes at
    # either level.
    sent, more = varied_events(250, seed=1), varied_events(250, seed=2)
    monkeypatch.setattr(common.spool, "LEVEL", 3)
    old = Spool(str(tmp_path), batch_events=100)
    for event in sent:
        old.append(event)
    old.close()
    monkeypatch.undo()
    assert common.spool.LEVEL != 3
    new = Spool(str(tmp_path), batch_events=100)
    for event in more:
        new.append(event)
    new.close()
    got = _read_all(Spool(str(tmp_path)))
    assert [e for _, e in got] == sent + more
    assert [s for s, _ in got] == list(range(500))
    # Each writer compressed at the level it was given: the older frames at 3, the newer at
    # LEVEL (each frame's payload is that level's compression of its events, and not the
    # other level's).
    for frame, events in Spool(str(tmp_path)).read():
        level, other = (3, common.spool.LEVEL) if frame.first_seq < 250 else (
            common.spool.LEVEL, 3)
        raw = wire.pack_batch(events)
        assert frame.payload == zstandard.ZstdCompressor(level=level).compress(raw)
        assert frame.payload != zstandard.ZstdCompressor(level=other).compress(raw)


def test_ack_moves_the_cursor_and_deletes_acknowledged_segments(tmp_path) -> None:
    spool = Spool(str(tmp_path), batch_events=50, segment_bytes=4096)
    for event in _events(600):
        spool.append(event)
    spool.flush()
    before = len(spool.segments())
    spool.ack(400)
    assert Spool(str(tmp_path)).acked() == 400
    assert len(spool.segments()) < before
    assert [s for s, _ in _read_all(spool, 400)] == list(range(400, 600))
    assert not (tmp_path / "cursor.json.tmp").exists()


def test_size_cap_drops_oldest_and_gap_events_count_exactly(tmp_path) -> None:
    spool = Spool(str(tmp_path), batch_events=20, segment_bytes=2048, max_bytes=8192)
    for event in _events(3000):
        spool.append(event)
    spool.close()
    got = _read_all(spool)
    gaps = _gaps(got)
    assert gaps and spool.stats.segments_dropped > 0
    assert gaps[-1]["total_events_dropped"] == spool.stats.events_dropped
    present = {s for s, _ in got}
    # Every sequence number is either still readable or inside a reported gap.
    covered = set().union(*(range(g["first_seq"], g["end_seq"]) for g in gaps))
    assert present | covered >= set(range(min(present), spool.next_seq))
    assert not present & covered


def _frame_offsets(path) -> list[int]:
    data = path.read_bytes()
    offsets, i = [], data.find(b"TTPF")
    while i >= 0:
        offsets.append(i)
        i = data.find(b"TTPF", i + 1)
    return offsets


@pytest.mark.parametrize("damage", ["flip", "zero-length", "truncate"])
def test_corruption_is_counted_skipped_and_reading_goes_on(tmp_path, damage) -> None:
    spool = Spool(str(tmp_path), batch_events=10)
    for event in _events(50):
        spool.append(event)
    spool.close()
    [segment] = [tmp_path / n for n in spool.segments()]
    offsets = _frame_offsets(segment)
    data = bytearray(segment.read_bytes())
    if damage == "flip":
        data[offsets[1] + 40] ^= 0x01
    elif damage == "zero-length":
        data[offsets[1] + 4:offsets[1] + 8] = b"\0\0\0\0"
    else:
        del data[offsets[-1] + 30:]
    segment.write_bytes(bytes(data))
    reader = Spool(str(tmp_path))
    got = [s for s, _ in _read_all(reader)]
    if damage == "truncate":
        assert got == list(range(40)) and reader.stats.torn_tails == 1
        assert reader.next_seq == 40  # the torn tail was cut: new frames follow cleanly
        reader.append(_events(1)[0])
        reader.close()
        assert [s for s, _ in _read_all(Spool(str(tmp_path)))][-1] == 40
    else:
        assert got == list(range(10)) + list(range(20, 50))
        assert reader.stats.corrupt_frames + (reader.stats.garbage_bytes > 0) >= 1
        assert reader.stats.missing_events == 10


def test_deleted_cursor_and_missing_segment(tmp_path) -> None:
    spool = Spool(str(tmp_path), batch_events=10, segment_bytes=1024)
    for event in _events(200):
        spool.append(event)
    spool.close()
    spool.ack(100)
    os.unlink(tmp_path / "cursor.json")
    reader = Spool(str(tmp_path))
    assert reader.acked() == 0  # from the start again: the collector deduplicates
    segments = reader.segments()
    i = len(segments) // 2
    os.unlink(tmp_path / segments[i])
    hole = int(segments[i + 1][4:]) - int(segments[i][4:])
    got = [s for s, _ in _read_all(reader)]
    assert reader.stats.missing_events == hole > 0
    assert len(got) + hole == 200 - int(segments[0][4:])


def test_full_disk_keeps_running_drops_oldest_and_counts_exactly(tmp_path) -> None:
    require(os.geteuid() == 0, "root is needed to mount a small tmpfs")
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    require(done.returncode == 0, f"mounting a tmpfs failed: {done.stderr}")
    try:
        spool = Spool(str(mount), batch_events=20, segment_bytes=32768, max_bytes=1 << 30)
        for event in _events(20000):
            spool.append(event)  # never raises, though the disk fills many times over
        spool.close()
        assert spool.stats.write_errors > 0 and spool.stats.segments_dropped > 0
        got = _read_all(spool)
        gaps = _gaps(got)
        present = {s for s, _ in got}
        covered = set().union(*(range(g["first_seq"], g["end_seq"]) for g in gaps))
        assert gaps[-1]["total_events_dropped"] == spool.stats.events_dropped
        assert present | covered >= set(range(min(present), spool.next_seq - 1))
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_spool_inspect_and_verify_commands(tmp_path) -> None:
    import json as _json

    from tests.conftest import run_cli
    spool = Spool(str(tmp_path), batch_events=10)
    for event in _events(30):
        spool.append(event)
    spool.close()
    inspect = _json.loads(run_cli("spool", "inspect", "--json", str(tmp_path)).stdout)
    assert inspect["summary"]["next_seq"] == 30 and inspect["segments"][0]["frames"] == 3
    good = run_cli("spool", "verify", str(tmp_path))
    assert good.returncode == 0 and _json.loads(good.stdout)["events"] == 30
    [segment] = [tmp_path / n for n in spool.segments()]
    data = bytearray(segment.read_bytes())
    data[60] ^= 0xFF
    segment.write_bytes(bytes(data))
    bad = run_cli("spool", "verify", str(tmp_path))
    assert bad.returncode == 1 and "corrupt_frames" in bad.stdout
    assert run_cli("spool", "verify", str(tmp_path / "nope")).returncode == 2
