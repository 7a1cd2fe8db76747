"""pywintrace ProcessStart dictionaries of every shape, normalized (runs on Linux)."""

from __future__ import annotations

import datetime as dt

import pytest

from sensor_windows.normalize import (NormalizeError, filetime, integrity_level, normalize,
                                      to_int)

DEVICES = {"\\Device\\HarddiskVolume3": "C:"}
# 2021-12-30T08:13:38.0867746Z (the Notepad event of the TTPHash post) as a FILETIME
# (1640852018 s since 1970 + 11644473600 s from 1601 to 1970) in 100 ns units, + 0.0867746 s
NOTEPAD_FILETIME = 132853256180867746


def _header(creator, version, stamp=NOTEPAD_FILETIME, as_str=True):
    convert = str if as_str else (lambda v: v)
    return {"EventHeader": {"ProcessId": convert(creator), "ThreadId": convert(11),
                            "TimeStamp": stamp,
                            "EventDescriptor": {"Id": 1, "Version": version, "Opcode": 1}},
            "Task Name": "PROCESSSTART"}


def test_v0_all_strings_as_pywintrace_0_2_0_delivers_them() -> None:
    event = {**_header(7008, 0), "ProcessID": "11272", "CreateTime": "30.12.2021 09:13:38",
             "ParentProcessID": "7008", "SessionID": "1",
             "ImageName": "\\Device\\HarddiskVolume3\\Program Files\\Notepad\\Notepad.exe"}
    start = normalize("1", event, DEVICES)
    assert (start.pid, start.ppid, start.creator_pid, start.session) == (11272, 7008, 7008, 1)
    assert start.image == "C:\\Program Files\\Notepad\\Notepad.exe"
    # A CreateTime in a locale's words (no zone, whole seconds) is not the kernel's value:
    # only the header's time is known, as the time the event was written.
    assert start.create_time is None
    assert start.logged_time == dt.datetime(2021, 12, 30, 8, 13, 38, 86774,
                                            tzinfo=dt.timezone.utc)
    assert start.version == 0 and start.integrity_level is None and not start.ppid_spoofed


NOTEPAD_CREATED = dt.datetime(2021, 12, 30, 8, 13, 38, 86774, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("text, expected", [
    # TdhFormatProperty's form: ISO 8601 UTC to 100 ns, date parts between U+200E marks.
    ("\u200e2021\u200e-\u200e12\u200e-\u200e30T08:13:38.086774600Z", NOTEPAD_CREATED),
    ("2021-12-30T08:13:38.0867746Z", NOTEPAD_CREATED),
    ("2021-12-30T09:13:38.0867746+01:00", NOTEPAD_CREATED),
    (str(NOTEPAD_FILETIME), NOTEPAD_CREATED),        # the FILETIME's digits
    (NOTEPAD_FILETIME, NOTEPAD_CREATED),             # unreleased pywintrace: an int
    ("30.12.2021 09:13:38", None), ("2021-13-45T00:00:00Z", None), ("", None), (None, None),
])
def test_create_time_in_every_form_pywintrace_gives(text, expected) -> None:
    event = {**_header(7008, 0, stamp=NOTEPAD_FILETIME + 40_000), "ProcessID": "11272",
             "CreateTime": text, "ParentProcessID": "7008",
             "ImageName": "\\Device\\HarddiskVolume3\\x.exe"}
    start = normalize(1, event, DEVICES)
    assert start.create_time == expected
    assert start.logged_time == NOTEPAD_CREATED + dt.timedelta(milliseconds=4)


def test_v3_with_ints_hex_and_a_spoofed_parent() -> None:
    event = {**_header(4444, 3, as_str=False), "ProcessID": 6612, "ParentProcessID": "0x1900",
             "SessionID": 1, "Flags": "0x0", "ImageName": "\\??\\C:\\Windows\\System32\\cmd.exe",
             "ProcessSequenceNumber": "0x1a2b", "ParentProcessSequenceNumber": "4242",
             "ProcessTokenElevationType": "2", "ProcessTokenIsElevated": "1",
             "MandatoryLabel": "S-1-16-12288", "PackageFullName": ""}
    start = normalize(1, event)
    assert (start.pid, start.ppid, start.creator_pid) == (6612, 0x1900, 4444)
    assert start.ppid_spoofed  # the header's creator is not the claimed parent (DET0489)
    assert start.image == "C:\\Windows\\System32\\cmd.exe"  # \??\ needs no device map
    assert (start.sequence, start.parent_sequence) == (0x1A2B, 4242)
    assert start.integrity_level == "High" and start.elevated is True
    assert start.package is None and start.version == 3


def test_unmapped_device_paths_stay_as_they_are() -> None:
    event = {**_header(1, 1), "ProcessID": "5", "ParentProcessID": "1",
             "ImageName": "\\Device\\HarddiskVolume9\\x.exe"}
    assert normalize(1, event, DEVICES).image == "\\Device\\HarddiskVolume9\\x.exe"


@pytest.mark.parametrize("label, word", [
    ("S-1-16-8192", "Medium"), ("S-1-16-4096", "Low"), ("S-1-16-16384", "System"),
    ("S-1-16-8448", "Medium Plus"), ("Mandatory Label\\High Mandatory Level", "High"),
    (None, None), ("", None)])
def test_integrity_levels(label, word) -> None:
    assert integrity_level(label) == word


def test_conversions_and_bad_events() -> None:
    assert to_int("0x10") == 16 and to_int("0010") == 10 and to_int(7) == 7
    assert to_int("") is None and to_int(None) is None
    assert filetime("0") is None and filetime(str(NOTEPAD_FILETIME)).year == 2021
    with pytest.raises(NormalizeError):
        to_int("twelve")
    with pytest.raises(NormalizeError, match="not ProcessStart"):
        normalize(2, {})
    with pytest.raises(NormalizeError, match="without"):
        normalize(1, {"ProcessID": "1"})
