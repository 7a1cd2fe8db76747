"""The pipeline builds what a batch of input completes in runs (common/pipeline.py:
BUILD_BATCH): a run's items are decoded first and then built, in order, with nothing held back
after the batch, a failing item kept and counted alone, and the same bytes written as when each
line is fed by itself."""

from __future__ import annotations

import io
from typing import Any

import pytest

from common.pipeline import BUILD_BATCH, Keeper, Pipeline
from common.render import line_renderer
from common.sinks import StreamSink, TextOutput
from sensor_linux.audit.pipeline import audit_pipeline
from sensor_linux.enrich import Enricher
from tests.compare_outputs import inputs, renumber
from tests.test_windows_session import ListSink


class Logged:
    """A decoder of items that are their input, logging each step."""

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log

    def decode(self, raw: Any) -> list[Any]:
        self.log.append(("decode", raw))
        return [raw]

    def tick(self) -> list[Any]:
        return []

    def flush(self) -> list[Any]:
        return []

    def originals(self, item: Any, reason: str) -> list[bytes | str]:
        return [f"item {item}"]

    def summary(self) -> dict[str, object]:
        return {}


def _logged_pipeline(fail_on: int | None = None) -> tuple[Pipeline, list, ListSink, ListSink]:
    log: list[tuple[str, Any]] = []
    out, errors = ListSink(), ListSink()

    def render(item: int) -> str:
        if item == fail_on:
            raise ValueError("a bug")
        log.append(("render", item))
        return f"line {item}"

    pipeline = Pipeline(Logged(log), TextOutput(out, str),  # type: ignore[arg-type]
                        render_item=render, keeper=Keeper(errors, io.StringIO()))
    return pipeline, log, out, errors


def test_a_batch_is_decoded_a_run_at_a_time_then_built_and_nothing_is_held_back() -> None:
    pipeline, log, out, _ = _logged_pipeline()
    count = 2 * BUILD_BATCH + 7
    pipeline.feed_many(range(count))
    # Every item written, in order, by the time feed_many returns (the last, short run too).
    assert out.lines == [f"line {i}" for i in range(count)]
    # The first item is rendered only after a run of BUILD_BATCH items was decoded.
    first_render = log.index(("render", 0))
    assert log[:first_render] == [("decode", i) for i in range(BUILD_BATCH)]
    assert [step for step in log if step[0] == "render"] == [("render", i) for i in range(count)]
    assert pipeline.stats.events == pipeline.stats.output_lines == count


def test_an_item_that_fails_in_a_run_is_kept_alone_and_the_rest_are_written() -> None:
    pipeline, _, out, errors = _logged_pipeline(fail_on=5)
    pipeline.feed_many(range(20))
    assert out.lines == [f"line {i}" for i in range(20) if i != 5]
    assert pipeline.stats.internal_errors == 1
    assert errors.lines == ["item 5"]
    assert pipeline.stats.events == 20 and pipeline.stats.output_lines == 19


def _written(lines: list[bytes], fmt: str, whole: bool) -> bytes:
    """``lines`` through the audit pipeline in ``fmt``: fed whole, or one at a time."""
    stream = io.StringIO()
    output = TextOutput(StreamSink(stream), line_renderer(fmt))  # type: ignore[arg-type]
    enricher = None if fmt == "laurel" else Enricher(live=False, host_files=False)
    pipeline = audit_pipeline(fmt, output, enricher=enricher, messages=io.StringIO())
    if whole:
        pipeline.feed_many(lines)
    else:
        for line in lines:
            pipeline.feed(line)
    pipeline.close()
    return renumber(stream.getvalue().encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("fmt", ["laurel", "ecs"])
def test_every_corpus_log_fed_whole_writes_what_it_writes_line_by_line(fmt: str) -> None:
    logs = inputs()
    assert logs, "the corpus (shared/corpus) is missing"
    every: list[bytes] = []
    for log in logs:
        lines = log.read_bytes().splitlines(keepends=True)
        assert _written(lines, fmt, whole=True) == _written(lines, fmt, whole=False), log.name
        every += lines
    # All of them in one stream: runs of BUILD_BATCH items, and a short run at the end.
    line_by_line = _written(every, fmt, whole=False)
    assert _written(every, fmt, whole=True) == line_by_line
    assert line_by_line.count(b"\n") > 2 * BUILD_BATCH
