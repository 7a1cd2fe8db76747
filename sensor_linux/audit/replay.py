"""``ttpsensor audisp FILE``: a recorded audit log through the pipeline, as fast as it reads.

Not a live source: nothing waits, nothing ticks in real time (a replay's events are complete
when their records are, not when a clock says so), and this host's /proc is never read (the
log's PIDs are not this host's processes), nor, unless the log is from this host, the files
it names.
"""

from __future__ import annotations

import os
import sys

from common.gcpolicy import steady_gc
from common.sinks import Output
from sensor_linux.audit.lines import read_line_batches
from sensor_linux.audit.pipeline import audit_pipeline, open_error_log
from sensor_linux.batching import StopFlag
from sensor_linux.runner import RunConfig


def replay(path: str, config: RunConfig, sink: Output, stop: StopFlag,
           from_this_host: bool = False, then_exit: bool = False) -> dict[str, object]:
    """Feed every line of ``path``; return the pipeline's summary. The sink is closed.
    ``then_exit``: the process ends after this, so the garbage collector is left as the
    replay tuned it (common/gcpolicy.py)."""
    enricher = None
    if config.fmt != "laurel":  # laurel does not enrich, nor import what does
        from sensor_linux.enrich import Enricher
        enricher = Enricher(live=False, host_files=from_this_host)
    error_log = open_error_log(config.parse_error_log, config.max_bytes, config.generations)
    pipeline = audit_pipeline(config.fmt, sink, enricher=enricher, error_log=error_log,
                              keep_exec_attempts=config.keep_exec_attempts)
    try:
        # A long replay keeps tables as a live sensor does: the garbage collector as in its
        # loop.
        with open(path, "rb") as f, steady_gc(restore=not then_exit):
            # A batch is what one read of the file completes: a stop is seen within about
            # 7,000 lines.
            for lines in read_line_batches(f):
                pipeline.feed_many(lines)
                if stop.is_set():
                    break
    except BrokenPipeError:
        # The reader went away (`ttpsensor audisp log | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        pipeline.close()
        sink.close()
        error_log.close()
    summary = pipeline.summary()
    if error_log.opened:
        summary["parse_error_log"] = error_log.path
    return summary
