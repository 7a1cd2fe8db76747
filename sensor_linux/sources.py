"""The registry of live sources: ``--source NAME`` -> the class that reads it.

Adding a source is one module with a class that has the shape of runner.Source (a constructor
``(config, sink, say)``) and one line here. Classes are named by import path and loaded only
when chosen, so that BCC is imported only by the sources that need it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from common.sinks import Output
from sensor_linux.runner import RunConfig, Source


@dataclass(frozen=True)
class SourceEntry:
    path: str                      # "package.module:Class"
    formats: tuple[str, ...]       # output formats it can write
    help: str

    def create(self, config: RunConfig, sink: Output, say: Callable[[str], None]) -> Source:
        module, _, name = self.path.partition(":")
        return getattr(importlib.import_module(module), name)(config, sink, say)


AUDIT_FORMATS = ("ecs", "laurel", "qlog")
EVENT_FORMATS = ("ecs", "qlog")

SOURCES: dict[str, SourceEntry] = {
    "auto": SourceEntry("sensor_linux.audit.source:AuditSource", AUDIT_FORMATS,
                        "audit unicast when no audit daemon is registered, else multicast"),
    "audit": SourceEntry("sensor_linux.audit.source:AuditSource", AUDIT_FORMATS,
                         "be the audit daemon (enables audit, loads exec rules, restores "
                         "everything on exit)"),
    "audit-multicast": SourceEntry("sensor_linux.audit.source:AuditSource", AUDIT_FORMATS,
                                   "read-only beside auditd"),
    "ebpf": SourceEntry("sensor_linux.ebpf.source:EbpfSource", EVENT_FORMATS,
                        "BCC tracepoint probes on exec"),
    "hybrid": SourceEntry("sensor_linux.combined:CombinedSource", ("ecs",),
                          "exec from eBPF, the rest of the --rules from audit (exec rules "
                          "left out)"),
    "cross-check": SourceEntry("sensor_linux.combined:CombinedSource", ("ecs",),
                               "both exec streams; every exec seen by one and not the other "
                               "is reported"),
    "procfs": SourceEntry("sensor_linux.procscan:ProcfsSource", EVENT_FORMATS,
                          "scan /proc (an inventory of running processes, ECS event.kind "
                          "'state')"),
}


def sources_help(registry: dict[str, SourceEntry]) -> str:
    """The ``--source`` help text, one sentence per source."""
    return " ".join(f"{name}: {entry.help}." for name, entry in registry.items())
