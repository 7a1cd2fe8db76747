"""QLOG's process-create JSON, both ways: read it into our schema, render our events as it.

QLOG (threathunters.io, 2021) was an ETW logger whose enriched events introduced the TTPHash;
its field names are what Windows hunters know. One mapping table, :data:`FIELDS`, drives both
directions so they cannot drift apart. Fields that only mean something for QLOG's own pipeline
(``isParent``) are rendered with QLOG's fixed value.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from common.percent import percent_encode
from common.schema import (ACTION_PROCESS_CREATE, Event, SchemaError, get_path, get_steps,
                           new_event, set_path, utc_timestamp)

QEVENT_PROCESS_CREATE = 100
QTYPE_PROCESS_CREATE = "Process Create"

# (QLOG name, our path relative to the process map). Username and StartTime need conversion and
# are handled beside the table.
FIELDS: tuple[tuple[str, str], ...] = (
    ("UsernameSID", "user.sid"),
    ("Imagefilename", "name"),
    ("KernelImagefilename", "kernel_image_name"),
    ("OriginalFilename", "pe.original_file_name"),
    ("Fullpath", "executable"),
    ("PID", "pid"),
    ("Commandline", "command_line"),
    ("Modulecount", "module_count"),
    ("Imphash", "pe.imphash"),
    ("sha256", "hash.sha256"),
    ("md5", "hash.md5"),
    ("sha1", "hash.sha1"),
    ("ProcessIntegrityLevel", "integrity_level"),
    ("isOndisk", "on_disk"),
    ("isRunning", "running"),
    ("Signed", "code_signature.status"),
    ("AuthenticodeHash", "code_signature.digest"),
)

# FIELDS with each path split once: two processes an event render every field.
_FIELD_STEPS = tuple((qname, tuple(path.split("."))) for qname, path in FIELDS)

# QLOG signature objects and ours (snake case, ECS-like).
SIGNATURE_FIELDS: tuple[tuple[str, str], ...] = (
    ("Subject", "subject_name"),
    ("Issuer", "issuer"),
    ("NotBefore", "not_before"),
    ("NotAfter", "not_after"),
    ("DigestAlgorithmName", "digest_algorithm"),
    ("Thumbprint", "thumbprint"),
    ("Timestamp", "timestamp"),
)

NOT_SIGNED = "Not signed"


def is_qlog(doc: Any) -> bool:
    """True when ``doc`` looks like a QLOG event rather than one of ours."""
    return isinstance(doc, dict) and "QType" in doc and "schema" not in doc


# --- reading ------------------------------------------------------------------------------------

def read_event(doc: dict[str, Any]) -> Event:
    """Turn one QLOG process-create event into a process-create event of our schema."""
    if not isinstance(doc, dict):
        raise SchemaError("a QLOG event is a JSON object")
    qtype = doc.get("QType")
    if qtype != QTYPE_PROCESS_CREATE:
        raise SchemaError(f"QType {qtype!r} is not a QLOG process-create event")
    start = _parse_time(doc.get("StartTime"))
    event = new_event(ACTION_PROCESS_CREATE, "etw", host={"os": {"type": "windows"}},
                      timestamp=start, event_id=doc.get("EventGuid") or None)
    event["event"]["module"] = "qlog"
    if doc.get("QEventID") is not None:
        event["event"]["code"] = str(doc["QEventID"])
    event["process"] = _read_process(doc)
    parent = doc.get("ParentProcess")
    if isinstance(parent, dict):
        event["process"]["parent"] = _read_process(parent)
    elif parent is not None:
        raise SchemaError("ParentProcess must be an object or null")
    return event


def _read_process(doc: dict[str, Any]) -> dict[str, Any]:
    process: dict[str, Any] = {}
    for qname, path in FIELDS:
        if qname in doc:
            set_path(process, path, doc[qname])
    username = doc.get("Username")
    if isinstance(username, str):
        domain, _, name = username.rpartition("\\")
        set_path(process, "user.name", name)
        if domain:
            set_path(process, "user.domain", domain)
    if doc.get("StartTime"):
        process["start"] = utc_timestamp(_parse_time(doc["StartTime"]))
    if doc.get("EventGuid"):
        process["event_id"] = doc["EventGuid"]
    signed = doc.get("Signed")
    if isinstance(signed, str):
        set_path(process, "code_signature.exists", signed != NOT_SIGNED)
    signatures = doc.get("Signatures")
    if isinstance(signatures, list) and signatures:
        ours = [_read_signature(s) for s in signatures if isinstance(s, dict)]
        set_path(process, "code_signature.signatures", ours)
        first = ours[0]
        for key in ("subject_name", "issuer", "thumbprint"):
            if key in first:
                set_path(process, f"code_signature.{key}", first[key])
    return process


def _read_signature(doc: dict[str, Any]) -> dict[str, Any]:
    sig = {ours: doc[theirs] for theirs, ours in SIGNATURE_FIELDS if theirs in doc}
    if isinstance(sig.get("digest_algorithm"), str):
        sig["digest_algorithm"] = sig["digest_algorithm"].lower()  # ours: "sha256"
    stamps = doc.get("TimestampSignatures")
    if isinstance(stamps, list):
        sig["timestamp_signatures"] = [_read_signature(s) for s in stamps if isinstance(s, dict)]
    return sig


def _parse_time(value: Any) -> _dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        # Python 3.11 accepts QLOG's 7-digit .NET fractions (it keeps microseconds).
        return _dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise SchemaError(f"StartTime {value!r} is not an ISO 8601 time") from exc


# --- rendering ----------------------------------------------------------------------------------

def render(event: Event) -> dict[str, Any]:
    """Our process-create event as a QLOG-shaped object (every QLOG field, parent nested)."""
    if get_path(event, "event.action") != ACTION_PROCESS_CREATE:
        raise SchemaError("only process_create events have a QLOG form")
    process = event.get("process") or {}
    doc = _render_process(process, event_guid=get_path(event, "event.id"),
                          start=process.get("start") or event.get("@timestamp"))
    doc["TTPHash"] = get_path(event, "ttphash.value", "")
    parent = process.get("parent")
    doc["ParentProcess"] = (
        _render_process(parent, event_guid=parent.get("event_id"), start=parent.get("start"))
        if isinstance(parent, dict) else None)
    if isinstance(doc["ParentProcess"], dict):
        doc["ParentProcess"]["TTPHash"] = ""
        doc["ParentProcess"]["ParentProcess"] = None
    return doc


def _render_process(process: dict[str, Any], *, event_guid: Any, start: Any) -> dict[str, Any]:
    user = process.get("user") or {}
    username = user.get("name")
    if username is not None and user.get("domain"):
        username = f"{user['domain']}\\{username}"
    doc: dict[str, Any] = {
        "EventGuid": event_guid,
        "StartTime": start,
        "QEventID": QEVENT_PROCESS_CREATE,
        "QType": QTYPE_PROCESS_CREATE,
        "Username": username,
    }
    for qname, steps in _FIELD_STEPS:
        doc[qname] = _qlog_value(get_steps(process, steps))
    # QLOG's order puts TTPHash after Modulecount; keep it for readers who diff by eye.
    ordered: dict[str, Any] = {}
    for key, value in doc.items():
        ordered[key] = value
        if key == "Modulecount":
            ordered["TTPHash"] = ""
    if ordered.get("Signed") is None:
        exists = get_path(process, "code_signature.exists")
        ordered["Signed"] = NOT_SIGNED if exists is False else ordered.get("Signed")
    ordered["Signatures"] = [_render_signature(s) for s in
                             get_path(process, "code_signature.signatures", None) or []]
    ordered["isParent"] = False
    return ordered


def _render_signature(sig: dict[str, Any]) -> dict[str, Any]:
    doc = {theirs: sig[ours] for theirs, ours in SIGNATURE_FIELDS if ours in sig}
    if isinstance(doc.get("DigestAlgorithmName"), str):
        doc["DigestAlgorithmName"] = doc["DigestAlgorithmName"].upper()  # QLOG's: "SHA256"
    if "timestamp_signatures" in sig:
        # QLOG gives the signing time in the countersignatures only.
        doc.pop("Timestamp", None)
        doc["TimestampSignatures"] = [_render_signature(s) for s in sig["timestamp_signatures"]]
    return doc


def _qlog_value(value: Any) -> Any:
    # QLOG is JSON: a Linux event's non-UTF-8 bytes appear in percent form.
    if isinstance(value, bytes):
        return percent_encode(value)
    if isinstance(value, list):
        return [_qlog_value(v) for v in value]
    return value
