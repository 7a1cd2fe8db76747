"""Audit and eBPF describe every everyday exec shape the same way, on a busy machine.

One workload of exec shapes (tests/shapes.py) runs under `--source audit` and `--source ebpf`
at once while tests/busy.sh execs in the background; each exec must have the same executable,
argv, ids, digests, on_disk, attempts and TTPHash from both sources.
"""

from __future__ import annotations

import json
import os

import pytest

from common import ttphash
from tests.live import ebpf_and_audit, stop_all, summary
from tests.shapes import cleanup, events_of, run_shapes
from tests.test_audit_live import audit_guard  # noqa: F401  (the fixture)

pytestmark = pytest.mark.kernel

COMPARED = ("executable", "args", "real_user", "user", "saved_user", "group", "hash",
            "on_disk", "working_directory")


def _view(event: dict) -> dict:
    process = event["process"]
    view = {k: process.get(k) for k in COMPARED}
    view["exec_attempts"] = (process.get("exec_attempts") or {}).get("count")
    view["ttphash"] = event["ttphash"]["value"]
    view["complete"] = event["ttphash"]["complete"]
    return view


def test_audit_and_ebpf_agree_on_every_exec_shape(audit_guard, busy_machine,
                                                  tmp_path) -> None:
    ebpf, audit = ebpf_and_audit(tmp_path)
    try:
        shapes = run_shapes()
        try:
            for sensor in (ebpf, audit):
                sensor.wait_for(lambda s=sensor: all(
                    len(found) == shapes.expected[shape]
                    for shape, found in events_of(s.events(), shapes).items()),
                    "every shape's events", timeout=120)
        finally:
            cleanup(shapes)
    finally:
        stop_all(audit, ebpf)
    from_ebpf = events_of(ebpf.events(), shapes)
    from_audit = events_of(audit.events(), shapes)
    for shape, expected in shapes.expected.items():
        mine, theirs = from_ebpf[shape], from_audit[shape]
        assert len(mine) == len(theirs) == expected, shape
        for a, b in zip(mine, theirs):
            assert a["ttphash"] == ttphash.compute(a).as_field()
            assert _view(a) == _view(b), (shape, json.dumps(
                [ttphash.compute(a).input, ttphash.compute(b).input]))
            assert a["ttphash"]["complete"], (shape, json.dumps(ttphash.compute(a).input))
    # The shapes say what they are: spot checks against what this test knows.
    root = str(shapes.root)
    true = os.path.realpath("/bin/true")
    assert from_ebpf["relative"][0]["process"]["executable"] == f"{root}/bin/prog"
    assert from_ebpf["relative"][0]["process"]["args"][0] == "./bin/prog"
    assert from_ebpf["symlink"][0]["process"]["executable"] == true
    script = from_ebpf["script"][0]["process"]
    assert script["executable"] == os.path.realpath("/bin/sh")
    assert script["args"][:2] == ["/bin/sh", f"{root}/script.sh"]
    assert from_ebpf["script-arg"][0]["process"]["args"][:3] == [
        "/bin/sh", "-e", f"{root}/script-arg.sh"]
    setuid = from_ebpf["setuid"][0]["process"]
    assert (setuid["real_user"]["id"], setuid["user"]["id"]) == ("65534", "0")
    assert from_ebpf["fexecve"][0]["process"]["executable"] == true
    walk = from_ebpf["path-walk"][0]["process"]["exec_attempts"]
    assert walk["count"] == 2 and walk["errors"] == {"ENOENT": 1, "ENOTDIR": 1}
    orphan = from_ebpf["orphan"][0]["process"]["parent"]
    assert orphan["running"] is True and orphan["executable"] == os.path.realpath(
        "/proc/self/exe")
    # No attempt of the PATH walk is an event of its own.
    for sensor in (ebpf, audit):
        failed = [e for e in sensor.events() if e["event"].get("outcome") == "failure"
                  and str(e["process"].get("executable", "")).startswith(root)]
        assert failed == [], failed
    assert summary(ebpf)["internal_errors"] == 0  # (drops are the machine's, not attributable)
