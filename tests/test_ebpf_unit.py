"""eBPF pieces that need no kernel: record decoding, image resolution, prerequisite messages."""

from __future__ import annotations

import os
import struct

import pytest

from sensor_linux.ebpf import probes
from sensor_linux.ebpf.events import resolve_image
from tests.conftest import require


def _record(args: list[bytes], argc: int, flags: int = 0, retval: int = 0) -> bytes:
    blob = b"".join(a + b"\0" for a in args)
    head = struct.pack("=QIIIIIiIIIII16s256s", 5, 10, 11, 9, 0, 0, retval, argc, len(args),
                       len(blob), flags, len(b"/bin/x") + 1, b"x", b"/bin/x")
    return head + blob


def test_decode_keeps_empty_and_binary_arguments_and_flags() -> None:
    record = probes.decode(_record([b"x", b"", b"\xff\xfe", b"a b"], 4))
    assert record.args == [b"x", b"", b"\xff\xfe", b"a b"]
    assert (record.pid, record.tid, record.ppid, record.filename) == (10, 11, 9, b"/bin/x")
    truncated = probes.decode(_record([b"x"] * 3, 300, probes.FLAG_TRUNC_ARGS))
    assert truncated.truncated and truncated.argc == 300 and len(truncated.args) == 3


def test_resolve_image_follows_links_and_shebangs(tmp_path) -> None:
    script = tmp_path / "s.sh"
    script.write_bytes(b"#!/bin/sh -e\necho\n")
    assert resolve_image(str(script).encode(), None) == os.path.realpath(b"/bin/sh")
    assert resolve_image(b"true", b"/usr/bin") == os.path.realpath(b"/usr/bin/true")
    assert resolve_image(b"/dev/fd/3", None, pid=None) is None  # not ours to resolve


def test_missing_headers_and_tracefs_are_explained(monkeypatch, tmp_path) -> None:
    try:
        import bcc  # noqa: F401
    except ImportError:
        require(False, "BCC (python3-bpfcc) is needed")
    real_uname = os.uname()

    class Uname:
        release = "0.0.0-no-such-kernel"
        machine = real_uname.machine

    monkeypatch.setattr(probes.os, "uname", lambda: Uname)
    monkeypatch.setattr(probes, "Path", lambda *a: tmp_path.joinpath(*(str(p).lstrip("/")
                                                                        for p in a)))
    with pytest.raises(probes.PrerequisiteError, match="linux-headers-amd64"):
        probes.check_prerequisites()
    (tmp_path / "lib/modules/0.0.0-no-such-kernel/build").mkdir(parents=True)
    with pytest.raises(probes.PrerequisiteError, match="mount -t tracefs"):
        probes.check_prerequisites()
