"""Audit events to common-schema events: argv and parents on the corpus's process traces."""

from __future__ import annotations

import json
import os
import subprocess

from common import ecs, ttphash
from common.schema import validate
from sensor_linux.audit.events import AuditEventBuilder
from sensor_linux.enrich import Enricher
from tests.conftest import run_cli
from tests.test_audit_corpus import LAUREL_DIR, assemble_file


def _process_events(name: str) -> dict[int, dict]:
    builder = AuditEventBuilder(Enricher(live=False))
    events, _, errors = assemble_file(LAUREL_DIR / name)
    assert errors == []
    built = [builder.build(e) for e in events]
    for event in built:
        validate(event)
    return {e["process"]["pid"]: e for e in built
            if e["event"]["action"] == "process_create"}


def _trace_expectations(by_pid: dict[int, dict]) -> None:
    script, grep, echo, sed = (by_pid[p]["process"] for p in (71505, 71507, 71508, 71509))
    assert script["executable"] == "/usr/bin/dash"
    assert script["parent"]["pid"] == 71432
    assert script["parent"]["executable"] == "/usr/bin/bash"
    assert script["args"] == ["/bin/sh", "./src/testdata/double-fork/test-script.sh"]
    assert grep["args"] == ["grep", "baz"]
    assert grep["parent"]["pid"] == 71505 and grep["parent"]["executable"] == "/usr/bin/dash"
    assert grep["parent"]["args"] == script["args"]
    # echo and sed run in the subshell 71506, a fork of the script: its image is the script's.
    assert echo["args"] == ["/bin/echo", "foo"] and sed["args"] == ["/bin/sed", "-e", "s/foo/bar/"]
    for child in (echo, sed):
        assert child["parent"]["pid"] == 71506
        assert child["parent"]["executable"] == "/usr/bin/dash"
        assert child["parent"]["args"] == script["args"]


def test_shell_trace_argv_and_parents() -> None:
    _trace_expectations(_process_events("shell-proc-trace.txt"))


def test_reordered_shell_trace_gives_the_same_parents() -> None:
    _trace_expectations(_process_events("shell-proc-trace-reordered.txt"))


def test_pid_reuse_trace_gives_the_forked_shell_not_the_stale_process() -> None:
    by_pid = _process_events("shell-proc-trace-confusion.txt")
    event = by_pid[2656]
    assert event["event"]["original_id"] == "1697091526.357:2638035"
    assert event["process"]["args"] == ["id"]
    parent = event["process"]["parent"]
    assert parent["pid"] == 2655
    assert parent["executable"] == "/bin/tcsh"  # the fork of tcsh (2542), not the old rm
    assert parent["executable"] != "/usr/bin/rm"


def test_orphan_trace_keeps_empty_argv0_and_init_as_parent() -> None:
    event = _process_events("fork-sleep-exec.txt")[1578540]
    assert event["process"]["args"] == [""]
    assert event["process"]["executable"] == "/usr/bin/true"
    assert event["process"]["parent"] == {"pid": 1}
    assert event["ttphash"]["complete"] is False  # replayed: no image could be checked


def test_tree_is_one_apt_run_whose_execs_all_descend_from_apt_get() -> None:
    builder = AuditEventBuilder(Enricher(live=False))
    execs = []
    for n in range(17):  # one apt-get run, split into 17 files: replay them as one stream
        events, _, errors = assemble_file(LAUREL_DIR / "tree" / f"{n:02d}.txt")
        assert errors == []
        execs += [e for e in map(builder.build, events) if e["event"]["action"] == "process_create"]
    assert len(execs) == 17
    root = execs[0]
    assert root["process"]["args"] == ["apt-get", "update"]
    assert root["audit"]["key"] == "software_mgmt"
    parents = {e["process"]["pid"]: e["process"]["parent"]["pid"] for e in execs}
    for event in execs[1:]:
        pid, seen = event["process"]["pid"], set()
        while pid != root["process"]["pid"]:
            assert pid not in seen and pid in parents, f"{event['audit']['id']} not under apt-get"
            seen.add(pid)
            pid = parents[pid]
        assert event["audit"]["records"][0].startswith("type=")
    direct = [e for e in execs[1:] if e["process"]["parent"]["pid"] == root["process"]["pid"]]
    assert direct and all(e["process"]["parent"]["args"] == ["apt-get", "update"] for e in direct)


def test_audisp_cli_replays_a_file_in_every_format(tmp_path) -> None:
    trace = str(LAUREL_DIR / "shell-proc-trace.txt")
    errors = tmp_path / "errors.log"
    ecs_run = run_cli("audisp", trace, "--parse-error-log", str(errors))
    assert ecs_run.returncode == 0, ecs_run.stderr
    events = [ecs.parse(json.loads(line)) for line in ecs_run.stdout.splitlines()]
    assert len(events) == 9
    creates = [e for e in events if e["event"]["action"] == "process_create"]
    assert len(creates) == 4
    for event in creates:
        assert event["ttphash"] == ttphash.compute(event).as_field()
    # The trace's comment lines are not records: kept verbatim in the error log, and counted.
    comments = [line for line in open(trace, "rb").read().splitlines()
                if line.strip() and not line.startswith(b"type=")]
    assert errors.read_bytes().splitlines() == comments
    summary = json.loads(ecs_run.stderr.strip().splitlines()[-1].split(": ", 1)[1])
    assert summary["parse_errors"] == len(comments) and summary["events"] == 9
    laurel_run = run_cli("audisp", "--format", "laurel",
                         str(LAUREL_DIR / "record-perl-reverse-shell.txt"))
    assert laurel_run.stdout == (LAUREL_DIR / "record-perl-reverse-shell.json").read_text()
    qlog_run = run_cli("audisp", "--format", "qlog", trace, "--parse-error-log", str(errors))
    assert [json.loads(x)["QType"] for x in qlog_run.stdout.splitlines()] == ["Process Create"] * 4


def test_audisp_reads_stdin_like_an_auditd_plugin(tmp_path) -> None:
    data = (LAUREL_DIR / "record-execve.txt").read_bytes()
    proc = subprocess.run(run_cli.__globals__["ttpsensor_command"]() + [
        "audisp", "--output", f"jsonl:{tmp_path}/out.jsonl", "--parse-error-log",
        str(tmp_path / "e.log")], input=data, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    [line] = (tmp_path / "out.jsonl").read_text().splitlines()
    event = ecs.parse(json.loads(line))
    assert event["process"]["executable"] == "/usr/bin/whoami"
    assert event["audit"]["node"] == "work"
    assert not (tmp_path / "e.log").exists()  # created only when needed


def test_audisp_plugin_entry_point_reads_its_settings_from_toml(tmp_path) -> None:
    from pathlib import Path
    from tests.conftest import ttpsensor_command
    plugin = Path(ttpsensor_command()[0]).with_name("ttpsensor-audisp")
    out = tmp_path / "out.jsonl"
    config = tmp_path / "audisp.toml"
    config.write_text(f'format = "laurel"\noutputs = ["jsonl:{out}"]\n'
                      f'parse-error-log = "{tmp_path}/e.log"\n')
    data = (LAUREL_DIR / "record-execve.txt").read_bytes()
    done = subprocess.run([str(plugin), "--config", str(config)], input=data,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == (LAUREL_DIR / "record-execve.json").read_text()
    config.write_text('colour = "blue"\n')
    bad = subprocess.run([str(plugin), "--config", str(config)], input="",
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown settings colour" in bad.stderr


def test_sockaddr_decoding_on_real_records() -> None:
    from sensor_linux.audit.decode import sockaddr
    builder = AuditEventBuilder(Enricher(live=False))
    events, _, _ = assemble_file(LAUREL_DIR / "record-connect.txt")
    built = [builder.build(e) for e in events]
    assert [e["destination"] for e in built] == [{"ip": "127.0.0.1", "port": 11211},
                                                 {"ip": "::1", "port": 11211}]
    [nscd] = [builder.build(e) for e in assemble_file(LAUREL_DIR / "record-nscd.txt")[0]]
    assert nscd["audit"]["sockaddr"]["path"] == "/var/run/nscd/socket"
    # ppc64 is big-endian: the family is too (LAUREL's golden says port 55555 on 0.0.0.0).
    [bind] = assemble_file(LAUREL_DIR / "record-bind-ipv4-bigendian.txt")[0]
    assert builder.build(bind)["source"] == {"ip": "0.0.0.0", "port": 55555}  # bind: this end
    record = next(r for r in bind.records if r.type_name == "SOCKADDR")
    assert sockaddr(record.get("saddr"), 0x80000015) == {
        "family": "inet", "port": 55555, "address": "0.0.0.0"}


def test_an_image_deleted_while_it_ran_is_named_as_the_ebpf_source_names_it(tmp_path) -> None:
    # d_path() appends " (deleted)"; audit hex-encodes a value with a space in it.
    text = (LAUREL_DIR / "record-execve.txt").read_text()
    deleted = b"/usr/bin/whoami (deleted)".hex().upper()
    record = tmp_path / "deleted.txt"
    record.write_text(text.replace('exe="/usr/bin/whoami"', f"exe={deleted}"))
    builder = AuditEventBuilder(Enricher(live=False))
    [event] = [builder.build(e) for e in assemble_file(record)[0]]
    assert event["process"]["executable"] == "/usr/bin/whoami"
    assert event["process"]["on_disk"] is False


def test_audisp_plugin_reads_what_auditd_hands_over_after_sigterm(tmp_path) -> None:
    """auditd sends SIGTERM before it closes the pipe: records written after the signal are
    still read (until EOF), and events still open are flushed, none lost."""
    import signal
    import time

    from tests.conftest import ttpsensor_command
    data = (LAUREL_DIR / "record-execve.txt").read_bytes()
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(ttpsensor_command() + [
        "audisp", "--output", f"jsonl:{out}", "--parse-error-log", str(tmp_path / "e.log")],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = data.splitlines(keepends=True)
    proc.stdin.write(b"".join(lines[:1]))
    proc.stdin.flush()
    time.sleep(3)                       # the plugin is up and waiting on its pipe
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    proc.stdin.write(b"".join(lines[1:]))
    proc.stdin.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    [line] = out.read_text().splitlines()
    assert json.loads(line)["process"]["executable"] == "/usr/bin/whoami"
    summary = json.loads(err.decode().strip().splitlines()[-1].split(": ", 1)[1])
    assert summary["records"] == len([x for x in lines if x.strip()])


def _exec_of(path: str, serial: int, inode: int, dev: int) -> str:
    """An exec of ``path`` as audit records it (its PATH item naming ``inode`` on ``dev``)."""
    stamp = f"msg=audit(1700000000.{serial % 1000:03d}:{serial})"
    return (f'type=SYSCALL {stamp}: arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 '
            f'a3=4 items=1 ppid=1 pid={1000 + serial} auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 '
            f'egid=0 sgid=0 fsgid=0 tty=(none) ses=1 comm="tool" exe="{path}" key=(null)\n'
            f'type=EXECVE {stamp}: argc=1 a0="tool"\n'
            f'type=CWD {stamp}: cwd="/"\n'
            f'type=PATH {stamp}: item=0 name="{path}" inode={inode} '
            f'dev={os.major(dev):02x}:{os.minor(dev):02x} mode=0100755 ouid=0 ogid=0 '
            f'rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0\n'
            f'type=PROCTITLE {stamp}: proctitle="tool"\n'
            f'type=EOE {stamp}: \n')


def test_an_audit_exec_takes_its_image_version_from_a_look_confirmed_by_its_path_record(
        tmp_path, monkeypatch) -> None:
    """Audit names the executed file (PATH: device and inode) but not its version: a stat of
    the path that finds that inode stands in for the version the eBPF probes read, and keys
    the kept enrichment. Every answer must be what the look-up without it gives: the same
    binary again, the file rewritten in place (same inode, new content), replaced by a rename
    (another inode: not the file that ran)."""
    import hashlib

    from sensor_linux.image import RecentLooks

    tool = tmp_path / "tool"
    tool.write_bytes(b"\x7fELF one")
    st = os.stat(tool)

    def replay(builder: AuditEventBuilder, serial: int, inode: int) -> dict:
        log = tmp_path / f"exec-{serial}.log"
        log.write_text(_exec_of(str(tool), serial, inode, st.st_dev))
        [audit] = assemble_file(log)[0]
        return builder.build(audit)["process"]

    def plain_builder() -> AuditEventBuilder:
        return AuditEventBuilder(Enricher(live=False, host_files=True))

    with_look, without = plain_builder(), plain_builder()
    steps = []
    for serial in (1, 2, 3, 4):
        if serial == 3:  # rewritten in place: the inode stays, the version does not
            with open(tool, "r+b") as f:
                f.write(b"\x7fELF two!")
            os.utime(tool, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        if serial == 4:  # replaced: the path holds another inode than the one that ran
            (tmp_path / "new").write_bytes(b"\x7fELF three")
            os.replace(tmp_path / "new", tool)
        got = replay(with_look, serial, st.st_ino)
        with monkeypatch.context() as patched:
            patched.setattr(RecentLooks, "identity_at", lambda *_: None)
            want = replay(without, serial, st.st_ino)
        for process in (got, want):
            process.pop("pid")
            process.pop("start")
        assert got == want
        steps.append(got)
    one, again, rewritten, replaced = steps
    assert one["hash"]["sha256"] == hashlib.sha256(b"\x7fELF one").hexdigest().upper()
    assert one["on_disk"] is True and again == one
    assert rewritten["hash"]["sha256"] == hashlib.sha256(b"\x7fELF two!").hexdigest().upper()
    assert rewritten["on_disk"] is True
    assert replaced["on_disk"] is False and "hash" not in replaced
    assert with_look.enricher._stable, "the enrichment of a known version was not kept"
