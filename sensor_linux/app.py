"""The application layer of the Linux sensor: a chosen source, its outputs and the embedded
collector, wired together and handed to the runner.

The sources know nothing of outputs beyond a sink, the runner nothing of the collector; this
is the one place that knows all three (and the only sensor module that imports
``collector/``).
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Sequence

from common.sinks import OutputError, Outputs, is_spool_target, open_outputs
from sensor_linux import runner
from sensor_linux.runner import RunConfig
from sensor_linux.sources import SOURCES, SourceEntry


class UsageProblem(ValueError):
    """Options that do not go together; the message says which."""


def local_collector(outputs: Outputs, store: str, sigma: Sequence[str] = (),
                    say: Callable[[str], None] = print) -> Any:
    """The embedded collector for the first spool output (collector.deliver.LocalDelivery),
    evaluating the Sigma rules in ``sigma`` as it stores; or None."""
    if not store or not outputs.spools:
        return None
    from collector.deliver import LocalDelivery
    from collector.store import Store, StoreError
    rules = None
    if sigma:
        from collector.sigma.rules import load_rule_set
        rules = load_rule_set(list(sigma), say)
    try:
        opened = Store(store, rules=rules)
    except StoreError as exc:
        raise OutputError(f"--store: {exc}") from exc
    return LocalDelivery(outputs.spools[0], opened, socket.gethostname())


def run_sensor(config: RunConfig, outputs: tuple[str, ...] | list[str], store: str,
               say: Callable[[str], None],
               registry: dict[str, SourceEntry] = SOURCES,
               sigma: Sequence[str] = ()) -> dict[str, object]:
    """Open the outputs and the embedded collector, run the chosen source through the runner
    until a signal (or until it is done), deliver what is left; return the final summary.
    Raises UsageProblem, common.sinks.OutputError, runner.SourceError or
    privileges.PrivilegeError."""
    entry = registry[config.source]
    if sigma and (not store or not any(map(is_spool_target, outputs))):
        raise UsageProblem("--sigma rules are evaluated by the embedded collector, which "
                           "reads the spool output into --store: give both")
    if config.fmt not in entry.formats:
        raise UsageProblem(f"--source {config.source} writes {', '.join(entry.formats)} only, "
                           f"not --format {config.fmt}")
    opened = open_outputs(outputs, config.fmt, config.max_bytes, config.generations)
    sink = opened.output
    try:
        collector = local_collector(opened, store, sigma, say)
    except BaseException:
        sink.close()  # (a store that cannot be opened: the outputs opened are closed)
        raise
    written = opened.files + ([collector.store.path] if collector else [])
    try:
        try:
            source = entry.create(config, sink, say)
        except BaseException:
            sink.close()
            raise
        return runner.run(source, sink, config, runner.install_stop_handlers(),
                          written=written,
                          periodic=[collector.deliver] if collector is not None else [],
                          say=say)
    finally:
        if collector is not None:
            collector.deliver()
            collector.store.close()
