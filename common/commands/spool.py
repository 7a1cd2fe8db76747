"""``ttpsensor spool inspect|verify``: look into a spool, read-only."""

from __future__ import annotations

import json
import sys

import click


@click.group("spool")
def spool_group() -> None:
    """Look into a spool directory (the sensor's durable local queue)."""


def _open_spool(directory: str):  # type: ignore[no-untyped-def]
    """The spool, read-only: looking must never change it (no recovery, no new identity),
    even beside a sensor that is writing to it."""
    from common.spool import Spool, SpoolError
    try:
        return Spool(directory, readonly=True)
    except SpoolError as exc:
        raise click.ClickException(str(exc)) from exc


@spool_group.command("inspect")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True)
def spool_inspect(directory: str, as_json: bool) -> None:
    """Segments, frames, sequence ranges, what is acknowledged, compression."""
    spool = _open_spool(directory)
    rows = []
    for segment in spool.segments():
        frames = list(spool.frames(segment))
        if frames:
            rows.append({"segment": segment, "frames": len(frames),
                         "first_seq": frames[0].first_seq,
                         "end_seq": frames[-1].first_seq + frames[-1].count,
                         "bytes": sum(len(f.payload) for f in frames)})
        else:
            rows.append({"segment": segment, "frames": 0})
    summary = spool.summary()
    if as_json:
        click.echo(json.dumps({"summary": summary, "segments": rows}))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"spool {summary['spool_id']}: acked < {summary['acked']}, "
                        f"next {summary['next_seq']}, {summary['bytes']} bytes")
    for column in ("segment", "frames", "first_seq", "end_seq", "bytes"):
        table.add_column(column, justify="left" if column == "segment" else "right")
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in ("segment", "frames", "first_seq",
                                                       "end_seq", "bytes")))
    Console().print(table)


@spool_group.command("verify")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
def spool_verify(directory: str) -> None:
    """Read every unacknowledged frame (read-only); report corrupt frames, garbage, an
    unreadable cursor, stray seg-… entries, and sequence ranges that no frame holds.

    Exit code 1 when anything is wrong: missing events count as wrong unless a spool_gap
    event of the sensor accounts for them (it dropped them knowingly: spool full, disk full).
    A torn tail of the newest segment is reported but not wrong: a writer may be at work,
    or crashed mid-frame, and the frame was never committed."""
    spool = _open_spool(directory)
    events = frames = 0
    explained: list[tuple[int, int]] = []
    for _, batch in spool.read():
        frames += 1
        events += len(batch)
        for event in batch:
            gap = (event.get("ttpsensor") or {}).get("spool_gap")
            if isinstance(gap, dict) and isinstance(gap.get("first_seq"), int) \
                    and isinstance(gap.get("end_seq"), int):
                explained.append((gap["first_seq"], gap["end_seq"]))
    stats = spool.stats
    unexplained = sum(_uncovered(r, explained) for r in spool.missing_ranges)
    # Past the first 1,000 ranges only the count is kept: none of that is explained.
    unexplained += stats.missing_events - sum(e - s for s, e in spool.missing_ranges)
    report = {"frames": frames, "events": events}
    report.update({k: getattr(stats, k) for k in (
        "corrupt_frames", "garbage_bytes", "torn_tails", "missing_events", "cursor_invalid",
        "stray_entries") if getattr(stats, k)})
    if unexplained:
        report["unexplained_missing_events"] = unexplained
    click.echo(json.dumps(report))
    if unexplained or stats.corrupt_frames or stats.garbage_bytes or stats.cursor_invalid \
            or stats.stray_entries:
        sys.exit(1)


def _uncovered(missing: tuple[int, int], covered: list[tuple[int, int]]) -> int:
    """How many sequence numbers of ``missing`` no ``covered`` range contains."""
    points = set(range(*missing)) if missing[1] - missing[0] <= 1_000_000 else None
    if points is None:
        return missing[1] - missing[0]  # too large to account for piece by piece
    for start, end in covered:
        points.difference_update(range(max(start, missing[0]), min(end, missing[1])))
    return len(points)
