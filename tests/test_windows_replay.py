"""`ttpsensor windows replay`: recorded ETW events enriched on Linux, rendered as QLOG."""

from __future__ import annotations

import json
import os
import shutil

from tests.conftest import run_cli
from tests.test_pe import LAUNCHERS
from tests.test_qlog import QLOG_FIELDS

T_EXPLORER = "2021-12-29T11:22:13.617516Z"
# Notepad's creation time: the kernel's, in clock ticks (GetProcessTimes gives the same).
T_NOTEPAD = "2021-12-30T08:13:38.086774Z"
# As pywintrace 0.2.0 hands CreateTime over: TdhFormatProperty's text.
CREATE_TIME_TEXT = "\u200e2021\u200e-\u200e12\u200e-\u200e30T08:13:38.086774600Z"
# The header's TimeStamp: when the event was written, 4.2 ms after the creation (a FILETIME,
# as a string).
LOGGED = str(132853256180867746 + 42_000)


def _etw(version: int, creator, fields: dict, stamp: str = LOGGED) -> dict:
    return {"etw": [str(1), {"EventHeader": {"ProcessId": creator, "TimeStamp": stamp,
                                             "EventDescriptor": {"Id": 1, "Version": version}},
                             **fields}]}


def test_replay_enriches_like_qlog_with_the_right_parents(tmp_path) -> None:
    explorer_exe = tmp_path / "explorer.exe"
    notepad_exe = tmp_path / "notepad.exe"
    shutil.copy(next(p for p in LAUNCHERS if p.endswith("t64.exe")), explorer_exe)
    shutil.copy(next(p for p in LAUNCHERS if p.endswith("w64.exe")), notepad_exe)
    sid = "S-1-5-21-2182592019-244663482-1304351122-1001"
    lines = [
        {"devices": {"\\Device\\HarddiskVolume3": "C:"}},
        {"file": {"path": "C:\\WINDOWS\\Explorer.EXE", "local": "explorer.exe"}},
        {"file": {"path": "C:\\Program Files\\Notepad\\Notepad.exe", "local": "notepad.exe"}},
        {"process": {"pid": 7008, "create_time": T_EXPLORER, "image": "C:\\WINDOWS\\Explorer.EXE",
                     "command_line": "C:\\WINDOWS\\Explorer.EXE ", "user_sid": sid,
                     "user_name": "TESTPC\\TestUser", "integrity_level": "Medium",
                     "module_count": 356}},
        {"process": {"pid": 11272, "create_time": T_NOTEPAD,
                     "image": "C:\\Program Files\\Notepad\\Notepad.exe",
                     "command_line": "\"C:\\Program Files\\Notepad\\Notepad.exe\" ",
                     "user_sid": sid, "user_name": "TESTPC\\TestUser",
                     "integrity_level": "Medium", "module_count": 53}},
        # v0, every value a string, as pywintrace 0.2.0 delivers it
        _etw(0, "7008", {"ProcessID": "11272", "ParentProcessID": "7008", "SessionID": "1",
                         "CreateTime": CREATE_TIME_TEXT,
                         "ImageName": "\\Device\\HarddiskVolume3\\Program Files\\Notepad\\"
                                      "Notepad.exe"}),
        # a parent that has exited by the time its child is enriched (v3, ints)
        {"process": {"pid": 500, "create_time": "2021-12-30T08:00:00Z", "running": False,
                     "image": "C:\\WINDOWS\\Explorer.EXE", "user_sid": sid}},
        _etw(3, 500, {"ProcessID": 501, "ParentProcessID": 500,
                      "ImageName": "\\Device\\HarddiskVolume3\\Program Files\\Notepad\\"
                                   "Notepad.exe", "MandatoryLabel": "S-1-16-8192"}),
        # a reused pid: 600 now belongs to a process created after its "child"
        {"process": {"pid": 600, "create_time": "2021-12-31T00:00:00Z",
                     "image": "C:\\WINDOWS\\Explorer.EXE"}},
        _etw(3, 600, {"ProcessID": 601, "ParentProcessID": 600,
                      "ImageName": "\\Device\\HarddiskVolume3\\Program Files\\Notepad\\"
                                   "Notepad.exe"}),
        # a child of Notepad, whose start the sensor saw
        {"process": {"pid": 11300, "create_time": "2021-12-30T08:14:00Z",
                     "image": "C:\\WINDOWS\\Explorer.EXE", "user_sid": sid}},
        _etw(3, 11272, {"ProcessID": 11300, "ParentProcessID": 11272,
                        "ImageName": "\\Device\\HarddiskVolume3\\WINDOWS\\Explorer.EXE"}),
        {"nonsense": True},
    ]
    replay = tmp_path / "replay.jsonl"
    replay.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = run_cli("windows", "replay", "--format", "qlog", str(replay))
    assert result.returncode == 2 and f"line {len(lines)}:" in result.stderr
    docs = {d["PID"]: d for d in map(json.loads, result.stdout.splitlines())}
    assert set(docs) == {11272, 501, 601, 11300}
    notepad = docs[11272]
    assert list(notepad) == QLOG_FIELDS and list(notepad["ParentProcess"]) == QLOG_FIELDS
    assert notepad["Fullpath"] == "C:\\Program Files\\Notepad\\Notepad.exe"
    assert notepad["KernelImagefilename"] == "NOTEPAD.EXE"
    assert notepad["Username"] == "TESTPC\\TestUser" and notepad["UsernameSID"] == sid
    assert notepad["ProcessIntegrityLevel"] == "Medium" and notepad["Modulecount"] == 53
    assert notepad["OriginalFilename"] == "w64.exe"
    assert notepad["Signed"] == "Not signed" and notepad["AuthenticodeHash"] == ""
    assert notepad["StartTime"] == T_NOTEPAD and len(notepad["TTPHash"]) == 64
    parent = notepad["ParentProcess"]
    assert parent["PID"] == 7008 and parent["Fullpath"] == "C:\\WINDOWS\\Explorer.EXE"
    assert parent["OriginalFilename"] == "t64.exe" and parent["isRunning"] is True
    assert parent["Commandline"] == "C:\\WINDOWS\\Explorer.EXE "
    # As QLOG writes a parent: no image names, whether the sensor saw it start (Notepad, for
    # its child) or found it running (Explorer); so the TTPHash cannot depend on which.
    assert parent["Imagefilename"] == "" and parent["KernelImagefilename"] == ""
    seen = docs[11300]["ParentProcess"]
    assert seen["PID"] == 11272 and seen["Fullpath"] == notepad["Fullpath"]
    assert seen["Imagefilename"] == "" and seen["KernelImagefilename"] == ""
    ecs = run_cli("windows", "replay", "--format", "ecs", str(replay))
    complete = {e["process"]["pid"]: e["ttphash"]["complete"]
                for e in map(json.loads, ecs.stdout.splitlines())}
    assert complete[11272] is True        # nothing of Notepad's or its parent's is unknown
    assert docs[501]["ParentProcess"]["isRunning"] is False
    assert docs[501]["ProcessIntegrityLevel"] == "Medium"  # from the v3 MandatoryLabel
    assert docs[601]["ParentProcess"]["PID"] == 600
    assert docs[601]["ParentProcess"]["Fullpath"] is None  # not the later process on pid 600
    assert os.path.exists(explorer_exe)
