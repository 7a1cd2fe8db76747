"""eBPF pieces that need no BPF: record decoding, offsets from BTF (checked against pahole),
tty names, prerequisite messages."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from sensor_linux.ebpf import probes
from sensor_linux.ebpf.btf import VMLINUX, Btf, BtfError
from sensor_linux.procfs import kernel_tty_name
from sensor_linux.ebpf.offsets import OPTIONAL, REQUIRED, kernel_offsets
from tests.conftest import require


def _components(path: bytes) -> bytes:
    """A path as the probes write it: components leaf first, each NUL-terminated."""
    return b"".join(part + b"\0" for part in reversed(path.strip(b"/").split(b"/")) if part)


def _record(*, args: bytes = b"", argc: int = 0, flags: int = 0, retval: int = 0,
            exe: bytes = b"/usr/bin/x", cwd: bytes = b"/home/u", name: bytes = b"",
            fault_mask: int = 0, ctime_nsec: int = 7,
            task_start: int = 4_000_000_000) -> bytes:
    exe_blob, cwd_blob = _components(exe), _components(cwd)
    head = struct.pack(
        "=QQQQqqqIIIIIIII8IIIiIIIIIII16s32s",
        5_000_000_000, 77, task_start, 1234, 4096, 1700000000, 1700000001, 5, ctime_nsec,
        (8 << 20) | 1, 1, 10, 11, 9, 9, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007,
        1000, 3, retval, argc, flags | probes.FLAG_CREATOR_KNOWN, fault_mask, len(exe_blob),
        len(cwd_blob), len(name), len(args), b"x", b"pts3")
    return head + exe_blob + cwd_blob + name + args


def test_decode_a_successful_exec() -> None:
    record = probes.decode(_record(args=b"x\0\0\xff\xfe\0a b\0", argc=4))
    assert record.args == [b"x", b"", b"\xff\xfe", b"a b"]
    assert (record.pid, record.tid, record.ppid, record.creator) == (10, 11, 9, 9)
    assert record.executable == b"/usr/bin/x" and record.cwd == b"/home/u"
    # struct cred order (uid, gid, suid, sgid, euid, egid, fsuid, fsgid) to (real, eff, ...)
    assert record.uids == (1000, 1004, 1002, 1006) and record.gids == (1001, 1005, 1003, 1007)
    assert (record.login_uid, record.session, record.tty) == (1000, 3, b"pts3")
    ident = record.identity
    assert ident is not None and ident.dev == os.makedev(8, 1) and ident.ino == 1234
    assert (ident.mtime_ns, ident.ctime_ns) == (1700000000_000000005, 1700000001_000000007)
    assert record.filename is None and not record.truncated and record.arg_faults == 0


def test_a_task_without_an_audit_context_is_unaudited_only_when_read_reliably() -> None:
    record = probes.decode(_record(args=b"x\0", argc=1, flags=probes.FLAG_UNAUDITED,
                                   task_start=123))
    assert record.unaudited and record.task_start == 123
    assert not probes.decode(_record(args=b"x\0", argc=1)).unaudited
    # A failed kernel read leaves the context pointer null too: that says nothing.
    faulted = probes.decode(_record(args=b"x\0", argc=1,
                                    flags=probes.FLAG_UNAUDITED | probes.FLAG_FACT_FAULT))
    assert not faulted.unaudited


def test_only_sources_running_audit_mark_an_unaudited_exec() -> None:
    from sensor_linux.ebpf.events import EbpfEventBuilder
    from sensor_linux.enrich import Enricher

    record = probes.decode(_record(args=b"x\0", argc=1, flags=probes.FLAG_UNAUDITED,
                                   task_start=4_000_000_000))
    plain = EbpfEventBuilder(Enricher(live=False)).build(record)
    assert "unaudited_task" not in plain.get("ttpsensor", {})
    builder = EbpfEventBuilder(Enricher(live=False), mark_unaudited=True)
    builder._epoch_offset = 1_700_000_000.0
    marked = builder.build(record)["ttpsensor"]
    assert marked == {"unaudited_task": True, "task_start": "2023-11-14T22:13:24.000000Z"}


def test_multigrain_flag_in_ctime_nanoseconds_is_not_time() -> None:
    record = probes.decode(_record(args=b"x\0", argc=1, ctime_nsec=(1 << 31) | 7))
    assert record.identity is not None and record.identity.ctime_ns == 1700000001_000000007


def test_root_and_deep_paths() -> None:
    assert probes.decode(_record(cwd=b"/", args=b"x\0", argc=1)).cwd == b"/"
    deep = b"/" + b"/".join(b"d%d" % i for i in range(40))
    assert probes.decode(_record(cwd=deep, args=b"x\0", argc=1)).cwd == deep
    # A walk that did not reach the root is no path at all, never a partial one.
    cut = probes.decode(_record(cwd=deep, args=b"x\0", argc=1, flags=probes.FLAG_CWD_TRUNC))
    assert cut.cwd is None
    no_exe = probes.decode(_record(args=b"x\0", argc=1, flags=probes.FLAG_EXE_TRUNC))
    assert no_exe.executable is None and no_exe.identity is None


def test_unreliable_kernel_reads_give_no_facts() -> None:
    record = probes.decode(_record(args=b"x\0", argc=1, flags=probes.FLAG_FACT_FAULT))
    assert record.executable is None and record.cwd is None and record.identity is None


def test_truncated_argument_area_keeps_the_cut_argument_and_the_real_count() -> None:
    area = b"/bin/true\0" + b"L" * 100
    record = probes.decode(_record(args=area, argc=3, flags=probes.FLAG_TRUNC_ARGS))
    assert record.truncated and record.argc == 3
    assert record.args == [b"/bin/true", b"L" * 100]


def test_a_faulted_chunk_makes_null_arguments_never_empty_ones() -> None:
    # Three chunks: the middle one could not be read (its bytes are stale scratch memory).
    first = b"a\0" * 2048                      # 2048 arguments, exactly one chunk
    middle = b"\0garbage\0" * 455 + b"\0"      # not to be trusted, NULs included
    middle = middle[:4096]
    last = b"tail-of-something\0" + b"z\0" * 10
    area = first + middle + last
    record = probes.decode(_record(args=area, argc=2048 + 3 + 1 + 10, fault_mask=0b010,
                                   flags=probes.FLAG_ARG_FAULT))
    args = record.args
    assert args is not None
    assert args[:2048] == [b"a"] * 2048 and args[-10:] == [b"z"] * 10
    assert args[2048:-10] == [None] * 4 and record.arg_faults == 4
    assert b"" not in args[2048:-10]


def test_a_failed_exec_has_its_name_and_no_image() -> None:
    record = probes.decode(_record(name=b"./rel/path\0", retval=-2,
                                   flags=probes.FLAG_FAILED))
    assert record.failed and record.filename == b"./rel/path"
    assert record.executable is None and record.args is None and record.cwd == b"/home/u"


def test_tty_names_as_proc_writes_them() -> None:
    assert kernel_tty_name(b"pts3") == "pts/3" and kernel_tty_name(b"tty1") == "tty1"
    assert kernel_tty_name(None) is None and kernel_tty_name(b"") is None
    assert kernel_tty_name(b"(none)") is None


def _pahole_members(struct_name: str) -> dict[str, tuple[int, str]]:
    """``{member: (offset, type)}`` as pahole prints struct_name from the kernel's BTF, nested
    anonymous members included (pahole prints their offsets from the outer struct)."""
    out = subprocess.run(["pahole", "-F", "btf", "-C", struct_name, str(VMLINUX)],
                         capture_output=True, text=True, check=True).stdout
    members: dict[str, tuple[int, str]] = {}
    for line in out.splitlines():
        match = re.match(r"\s+(.+?)\s*\b(\w+)(\[\d+\])?;\s+/\*\s+(\d+)\s+\d+\s+\*/", line)
        if match and match.group(2) not in members:
            members[match.group(2)] = (int(match.group(4)), match.group(1))
    return members


def _pahole_offset(struct_name: str, path: str) -> int:
    total = 0
    for part in path.split("."):
        offset, type_name = _pahole_members(struct_name)[part]
        total += offset
        struct_name = type_name.replace("const ", "").replace("struct ", "").strip()
    return total


def test_offsets_agree_with_pahole_on_the_running_kernel() -> None:
    require(VMLINUX.exists(), "the running kernel exposes no BTF")
    require(shutil.which("pahole") is not None, "pahole (Debian package dwarves) is needed")
    btf = Btf.load()
    offsets = kernel_offsets(btf)
    for macro, struct_name, path in REQUIRED + OPTIONAL:
        assert offsets[macro] == _pahole_offset(struct_name, path), (macro, struct_name, path)
    inode = _pahole_members("inode")
    seconds = next(m for m in ("i_mtime_sec", "__i_mtime", "i_mtime") if m in inode)
    assert offsets["OFF_INODE_MTIME_SEC"] == inode[seconds][0]


def test_btf_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(BtfError, match="not BTF"):
        Btf(b"\0" * 64)
    with pytest.raises(BtfError, match="too short"):
        Btf(b"\x9f\xeb")
    with pytest.raises(BtfError, match="CONFIG_DEBUG_INFO_BTF"):
        Btf.load(tmp_path / "vmlinux")
    require(VMLINUX.exists(), "the running kernel exposes no BTF")
    btf = Btf.load()
    with pytest.raises(BtfError, match="no member nonexistent"):
        btf.member("task_struct", "nonexistent")
    with pytest.raises(BtfError, match="no struct no_such_struct"):
        btf.member("no_such_struct", "x")
    # A blob cut in the middle of its type section is refused, not half-read.
    data = VMLINUX.read_bytes()
    with pytest.raises(BtfError):
        Btf(data[:len(data) // 2])


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


class _Ring:
    """Stands in for the ring reader: delivers ``count`` records, failing after ``fail_at``."""

    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.count, self.fail_at = count, fail_at
        self.position = 0

    def read(self, deliver, timeout_ms: int = 0) -> int:  # noqa: ANN001
        for i in range(self.count):
            if i == self.fail_at:
                raise ValueError("a record that cannot be decoded")
            deliver(_record(args=b"/usr/bin/x\0%d\0" % i, argc=2))
            self.position += 1
        return self.count


def _batched(ring: _Ring, on_execs) -> probes.ExecProbes:  # noqa: ANN001
    loaded = probes.ExecProbes(on_execs=on_execs)
    loaded._ring = ring
    loaded._taken = lambda position: None  # no BPF table to tell
    return loaded


def test_a_polls_records_are_handed_over_in_bounded_lists_in_order() -> None:
    """With on_execs, a poll hands its records over together, at most HANDOVER_RECORDS in a
    list (a full ring is not held whole), the rest after the read."""
    handed: list[list] = []
    count = 2 * probes.HANDOVER_RECORDS + 7
    _batched(_Ring(count), handed.append).poll(0)
    assert [len(batch) for batch in handed] == [probes.HANDOVER_RECORDS] * 2 + [7]
    assert [r.args[1] for batch in handed for r in batch] == [b"%d" % i for i in range(count)]
    handed.clear()
    _batched(_Ring(0), handed.append).poll(0)
    assert handed == []  # an empty read hands over nothing


def test_a_read_that_fails_part_way_hands_over_what_came_before_and_raises() -> None:
    handed: list[list] = []
    with pytest.raises(ValueError, match="cannot be decoded"):
        _batched(_Ring(10, fail_at=6), handed.append).poll(0)
    assert [[r.args[1] for r in batch] for batch in handed] == [[b"%d" % i for i in range(6)]]


def test_a_handover_that_fails_is_raised_once_and_nothing_after_it_is_handed() -> None:
    calls: list[int] = []

    def full_disk(batch: list) -> None:
        calls.append(len(batch))
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        _batched(_Ring(probes.HANDOVER_RECORDS + 5), full_disk).poll(0)
    assert calls == [probes.HANDOVER_RECORDS]


def test_the_probes_deliver_one_way_and_say_so_otherwise() -> None:
    with pytest.raises(ValueError, match="one of them"):
        probes.ExecProbes()
    with pytest.raises(ValueError, match="one of them"):
        probes.ExecProbes(on_exec=lambda record: None, on_execs=lambda records: None)
