"""QLOG events in and out: the seed example survives reading and rendering field for field."""

from __future__ import annotations

import json

from common import qlog, ttphash
from common.render import RENDERERS
from common.schema import validate

QLOG_FIELDS = ["EventGuid", "StartTime", "QEventID", "QType", "Username", "UsernameSID",
               "Imagefilename", "KernelImagefilename", "OriginalFilename", "Fullpath", "PID",
               "Commandline", "Modulecount", "TTPHash", "Imphash", "sha256", "md5", "sha1",
               "ProcessIntegrityLevel", "isOndisk", "isRunning", "Signed", "AuthenticodeHash",
               "Signatures", "isParent", "ParentProcess"]


def test_reader_maps_the_seed_event_into_our_schema(notepad: dict) -> None:
    event = qlog.read_event(notepad)
    validate(event)
    p = event["process"]
    assert event["event"]["id"] == notepad["EventGuid"]
    assert event["host"]["os"]["type"] == "windows"
    assert p["user"] == {"sid": notepad["UsernameSID"], "name": "TestUser", "domain": "TESTPC"}
    assert p["executable"] == notepad["Fullpath"]
    assert p["pe"]["imphash"] == notepad["Imphash"]
    assert p["hash"]["sha256"] == notepad["sha256"]
    assert p["code_signature"]["exists"] is False
    assert p["parent"]["code_signature"]["exists"] is True
    assert p["parent"]["code_signature"]["subject_name"].startswith("CN=Microsoft Windows,")
    assert p["parent"]["running"] is True
    assert event["@timestamp"] == "2021-12-30T08:13:38.086774Z"  # converted to UTC


def test_renderer_reproduces_every_qlog_field_of_the_seed(notepad: dict) -> None:
    event = qlog.read_event(notepad)
    ttphash.attach(event)
    doc = json.loads(RENDERERS["qlog"](event))
    assert list(doc) == QLOG_FIELDS
    assert list(doc["ParentProcess"]) == QLOG_FIELDS
    for key in QLOG_FIELDS:
        if key in ("TTPHash", "StartTime", "ParentProcess"):
            continue
        assert doc[key] == notepad[key], key
    for key in QLOG_FIELDS:
        if key in ("StartTime",):
            continue
        assert doc["ParentProcess"][key] == notepad["ParentProcess"][key], key
    # Times are normalized to UTC; the TTPHash is ours (the post's cannot be reproduced).
    assert doc["StartTime"] == "2021-12-30T08:13:38.086774Z"
    assert doc["TTPHash"] == event["ttphash"]["value"]
    # Rendering then reading again gives the same TTPHash.
    assert ttphash.compute(qlog.read_event(doc)).value == event["ttphash"]["value"]


def test_linux_event_renders_as_qlog_with_non_utf8_in_percent_form() -> None:
    event = {"schema": 1, "@timestamp": "2026-01-01T00:00:00.000000Z",
             "event": {"id": "x", "action": "process_create", "provider": "auditd"},
             "host": {"os": {"type": "linux"}},
             "process": {"pid": 3, "executable": b"/tmp/\xff", "command_line": "a b",
                         "user": {"id": "0", "name": "root"}}}
    doc = json.loads(RENDERERS["qlog"](event))
    assert doc["Fullpath"] == "/tmp/%FF"
    assert doc["Username"] == "root"
    assert doc["ParentProcess"] is None
