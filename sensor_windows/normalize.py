"""pywintrace's ProcessStart dictionaries (Microsoft-Windows-Kernel-Process, event 1) as facts.

pywintrace 0.2.0 delivers every value as a string ("4242", or "0x1a2b" for hex-formatted
fields); its unreleased master delivers ints. Event versions differ: v0 (Windows 7) has
ProcessID, CreateTime, ParentProcessID, SessionID, ImageName; v1 adds Flags; v2 adds
ImageChecksum, TimeDateStamp, PackageFullName, PackageRelativeAppId; v3 adds
ProcessSequenceNumber, ParentProcessSequenceNumber, ProcessTokenElevationType,
ProcessTokenIsElevated and MandatoryLabel. ImageName is an NT device path, mapped with the
host's device map (injectable). The header's ProcessId is the real creator, which differs from
ParentProcessID under PPID spoofing; both are kept.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

from common.ttphash import map_nt_path

PROCESS_START = 1
_FILETIME_EPOCH = _dt.datetime(1601, 1, 1, tzinfo=_dt.timezone.utc)
INTEGRITY_BY_RID = {0x0000: "Untrusted", 0x1000: "Low", 0x2000: "Medium", 0x2100: "Medium Plus",
                    0x3000: "High", 0x4000: "System", 0x5000: "Protected"}


class NormalizeError(ValueError):
    """An event dictionary that is not a usable ProcessStart."""


@dataclass
class ProcessStart:
    pid: int
    ppid: int
    creator_pid: int | None         # EventHeader.ProcessId: who really created it
    create_time: _dt.datetime | None  # CreateTime: the kernel's creation time
    session: int | None
    image_nt: str                   # \\Device\\HarddiskVolume3\\Windows\\notepad.exe
    image: str                      # C:\\Windows\\notepad.exe when the device map knows it
    version: int
    flags: int | None = None
    sequence: int | None = None
    parent_sequence: int | None = None
    integrity_level: str | None = None
    elevated: bool | None = None
    package: str | None = None
    logged_time: _dt.datetime | None = None  # the header's TimeStamp: when it was written

    @property
    def ppid_spoofed(self) -> bool:
        return self.creator_pid is not None and self.creator_pid != self.ppid


def to_int(value: Any) -> int | None:
    """An int from pywintrace: int, "123", "0x7b"; None for empty or absent."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not text:
        return None
    try:
        return int(text, 0)
    except ValueError:
        try:
            return int(text)  # "0123": int(x, 0) refuses leading zeros
        except ValueError as exc:
            raise NormalizeError(f"not a number: {value!r}") from exc


def filetime(value: Any) -> _dt.datetime | None:
    """FILETIME (100 ns since 1601-01-01 UTC) to an aware UTC datetime."""
    ticks = to_int(value)
    if ticks is None or ticks <= 0:
        return None
    return _FILETIME_EPOCH + _dt.timedelta(microseconds=ticks // 10)


# TdhFormatProperty's text of a FILETIME (pywintrace 0.2.0 hands it over as such): ISO 8601
# in UTC with up to 100 ns, its date parts between left-to-right marks (U+200E), e.g.
# "\u200e2021\u200e-\u200e12\u200e-\u200e30T08:13:38.086774600Z".
_MARKS = dict.fromkeys(map(ord, "\u200e\u200f\u202a\u202b\u202c\u202d\u202e"))


def event_time(value: Any) -> _dt.datetime | None:
    """A time of an ETW event as pywintrace gives it: a FILETIME (int or its digits) or
    TdhFormatProperty's ISO 8601 text; None when absent or not understood (the caller then
    has only the header's time)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        return filetime(value)
    try:
        moment = _dt.datetime.fromisoformat(str(value).translate(_MARKS).strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc)


def integrity_level(label: Any) -> str | None:
    """A MandatoryLabel (S-1-16-8192, or "Mandatory Label\\\\Medium Mandatory Level") as QLOG's
    ProcessIntegrityLevel word."""
    if not label:
        return None
    text = str(label)
    if text.upper().startswith("S-1-16-"):
        rid = to_int(text[7:])
        return INTEGRITY_BY_RID.get(rid or 0, f"RID 0x{rid:X}" if rid is not None else None)
    for word in ("Untrusted", "Low", "Medium Plus", "Medium", "High", "System", "Protected"):
        if f"\\{word} Mandatory Level".lower() in text.lower():
            return word
    return text


def normalize(event_id: Any, event: dict[str, Any],
              device_map: dict[str, str] | None = None) -> ProcessStart:
    """A ProcessStart from one ``(event_id, event)`` pair as pywintrace hands it over."""
    if to_int(event_id) != PROCESS_START:
        raise NormalizeError(f"event {event_id!r} is not ProcessStart (1)")
    header = event.get("EventHeader") or {}
    descriptor = header.get("EventDescriptor") or {}
    pid, ppid = to_int(event.get("ProcessID")), to_int(event.get("ParentProcessID"))
    image_nt = event.get("ImageName")
    if pid is None or ppid is None or not image_nt:
        raise NormalizeError("ProcessStart without ProcessID, ParentProcessID or ImageName")
    created = event_time(event.get("CreateTime"))
    elevated = to_int(event.get("ProcessTokenIsElevated"))
    return ProcessStart(
        pid=pid, ppid=ppid, creator_pid=to_int(header.get("ProcessId")), create_time=created,
        session=to_int(event.get("SessionID")), image_nt=str(image_nt),
        image=map_nt_path(str(image_nt), device_map), version=to_int(descriptor.get("Version"))
        or 0, flags=to_int(event.get("Flags")), sequence=to_int(event.get(
            "ProcessSequenceNumber")), parent_sequence=to_int(event.get(
                "ParentProcessSequenceNumber")),
        integrity_level=integrity_level(event.get("MandatoryLabel")),
        elevated=None if elevated is None else bool(elevated),
        package=event.get("PackageFullName") or None,
        logged_time=event_time(header.get("TimeStamp")))
