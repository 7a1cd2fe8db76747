"""``ttpsensor windows replay``: recorded ETW events plus a description of their world.

JSON lines, in order; each is one of::

    {"devices": {"\\\\Device\\\\HarddiskVolume3": "C:"}}
    {"process": {"pid": 7008, "create_time": "2021-12-29T11:22:13.617516Z",
                 "image": "C:\\\\WINDOWS\\\\Explorer.EXE", "command_line": "...",
                 "user_sid": "S-1-5-21-...", "user_name": "TESTPC\\\\TestUser",
                 "integrity_level": "Medium", "working_directory": "...",
                 "module_count": 356, "running": true}}
    {"file": {"path": "C:\\\\WINDOWS\\\\Explorer.EXE", "local": "relative/or/absolute.exe"}}
    {"etw": [1, {...a pywintrace event dictionary...}]}

Descriptions stand for what Win32 calls would answer at that moment, so a process described
later (the same pid, another create time) is a reused pid. This drives everything after the
ETW session on any OS, through the same pipeline as the live sensor: normalization,
enrichment, PE facts, parents, TTPHash, rendering.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any

from common.sinks import Output
from sensor_windows.enrich import (CachedInspector, ProcessInfo, StartTime, WindowsEnricher,
                                    same_process)
from sensor_windows.pipeline import EtwDecodeStats, windows_pipeline


def _time(value: Any) -> _dt.datetime | None:
    if not value:
        return None
    moment = _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


@dataclass
class ReplayWorld:
    """The described processes and files, as an inspector and a file source."""

    base: str
    processes: dict[int, list[ProcessInfo]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def add_process(self, doc: dict[str, Any]) -> None:
        info = ProcessInfo(
            image=doc.get("image"), command_line=doc.get("command_line"),
            user_sid=doc.get("user_sid"), user_name=doc.get("user_name"),
            integrity_level=doc.get("integrity_level"),
            working_directory=doc.get("working_directory"),
            module_count=doc.get("module_count"), running=bool(doc.get("running", True)),
            create_time=_time(doc.get("create_time")))
        self.processes.setdefault(int(doc["pid"]), []).append(info)

    def describe(self, pid: int, when: StartTime | None) -> ProcessInfo | None:
        """As Windows answers: whoever has the pid now (the latest description), if it is
        the process ``when`` speaks of (:func:`same_process`, the rule the live inspector
        applies); an exited process still described (``"running": false``) is one whose
        handle someone holds."""
        known = self.processes.get(pid) or []
        if not known:
            return None
        return known[-1] if same_process(known[-1].create_time, when) else None

    def running(self, pid: int, when: StartTime | None) -> bool:
        info = self.describe(pid, when)
        return info is not None and info.running

    def _local(self, path: str) -> str | None:
        """The file on this machine that stands for the host's ``path``."""
        local = self.files.get(path.upper())
        return None if local is None else os.path.join(self.base, local)

    def identity(self, path: str) -> tuple[int, int] | None:
        local = self._local(path)
        try:
            st = os.stat(local) if local else None
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns) if st else None

    def read(self, path: str) -> bytes | None:
        local = self._local(path)
        if local is None:
            return None
        try:
            with open(local, "rb") as f:
                return f.read()
        except OSError:
            return None


@dataclass
class ReplayResult:
    summary: dict[str, object]
    failed: list[tuple[int, str]]        # (line number, why) of every line that failed


def replay(path: str, enricher_host: dict[str, Any], sink: Output,
           roots: list[Any] | None = None) -> ReplayResult:
    """Every ETW line of ``path`` through the pipeline (sensor_windows/pipeline.py) into
    ``sink``, in the world the other lines describe; the sink is flushed, not closed."""
    world = ReplayWorld(os.path.dirname(os.path.abspath(path)))
    devices: dict[str, str] = {}
    enricher = WindowsEnricher(CachedInspector(world), world, enricher_host, roots=roots)
    pipeline = windows_pipeline(enricher, sink, device_map=lambda: devices,
                                messages=io.StringIO())  # failures are said by line below
    decoded: EtwDecodeStats = pipeline.decoder.stats  # type: ignore[attr-defined]
    failed: list[tuple[int, str]] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                if "devices" in doc:
                    devices.update(doc["devices"])
                elif "process" in doc:
                    world.add_process(doc["process"])
                elif "file" in doc:
                    world.files[doc["file"]["path"].upper()] = doc["file"]["local"]
                elif "etw" in doc:
                    event_id, event = doc["etw"]
                    before = (decoded.rejected, pipeline.stats.internal_errors)
                    pipeline.feed((event_id, event))
                    if decoded.rejected > before[0]:
                        failed.append((number, "rejected: not a usable process start"))
                    elif pipeline.stats.internal_errors > before[1]:
                        failed.append((number, "internal error (see the summary)"))
                else:
                    failed.append((number, "not a devices, process, file or etw line"))
            except (ValueError, KeyError, TypeError) as exc:
                failed.append((number, f"{type(exc).__name__}: {exc}"))
    pipeline.close()
    return ReplayResult(pipeline.summary(), failed)
