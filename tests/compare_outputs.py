"""Replay recorded inputs through two commits and compare every output line.

A restructure must not change a byte of what the sensor writes. This replays every audit log
of the corpus (``shared/corpus``: LAUREL's and linux-audit-parser's) through ``ttpsensor audisp
FILE`` in all three formats (and ``ecs --from-this-host``, which hashes the files the logs
name and looks up their packages on this host), and a recorded eBPF stream (raw ring-buffer
records from a real kernel, ``tests/data/ebpf-stream.jsonl``, made by
``tests/record_ebpf.py``) through the eBPF pipeline in ecs and qlog (and in ecs with this
host's files, the stream fed twice), with the code of a base
commit and with the working tree, and compares the outputs. The only difference allowed is in
random event ids (uuid4), which are renumbered in order of first appearance on both sides
before comparing.

    python -m tests.compare_outputs BASE      # e.g. HEAD~3; exit 1 on any difference
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.test_audit_corpus import CORPUS

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("ecs", "qlog", "laurel")
EBPF_STREAM = ROOT / "tests" / "data" / "ebpf-stream.jsonl"
# The eBPF pipeline as a replay, in whichever shape the tree has it (before and after issue 13's
# one pipeline), with no /proc read. With "host", the executables the records name are this
# host's (hashed, looked up in its package database; what the live sensor does), and the
# stream is fed twice, as a host runs the same binaries again.
EBPF_REPLAY = """
import json, sys
from common.render import RENDERERS
from common.sinks import StreamSink
from sensor_linux.ebpf.probes import decode
from sensor_linux.enrich import Enricher
sink, fmt, host = StreamSink(sys.stdout), sys.argv[2], sys.argv[3] == "host"
enricher = Enricher(live=False, host_files=host)
try:
    from common.render import line_renderer
    from common.sinks import TextOutput
    from sensor_linux.ebpf.source import ebpf_pipeline
    pipeline = ebpf_pipeline(enricher, TextOutput(sink, line_renderer(fmt)), False)
    close = pipeline.close
except ImportError:
    from sensor_linux.ebpf.events import EbpfEventBuilder
    from sensor_linux.ebpf.source import EbpfPipeline
    pipeline = EbpfPipeline(EbpfEventBuilder(enricher), RENDERERS[fmt], sink)
    close = pipeline.finish
# The builder turns kernel time into wall time with an offset measured when it starts: fixed
# here, so that two runs give the same timestamps.
pipeline.builder._epoch_offset = 1_700_000_000.0
for _ in range(2 if host else 1):
    for line in open(sys.argv[1]):
        pipeline.feed(decode(bytes.fromhex(json.loads(line)["record"])))
close()
sink.flush()
"""
# (format, whose files): the records alone, or this host's files too.
EBPF_REPLAYS = (("ecs", "records"), ("qlog", "records"), ("ecs", "host"))
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def inputs() -> list[Path]:
    """Every recorded audit log of the corpus."""
    return sorted(p for p in CORPUS.rglob("*.txt") if p.is_file())


def renumber(output: bytes) -> bytes:
    """Random event ids replaced by their order of first appearance."""
    seen: dict[bytes, bytes] = {}
    return _UUID.sub(lambda m: seen.setdefault(m.group(0), b"id-%d" % len(seen)), output)


def replay(tree: Path, log: Path, fmt: str, scratch: Path, *extra: str) -> bytes:
    """``audisp`` of ``log`` with the code in ``tree`` (its packages first on the path)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    main = "import sys; from common.cli import main; sys.argv[0] = 'ttpsensor'; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", main, "audisp", str(log), "--format",
                           fmt, "--parse-error-log", str(scratch / "errors.log"), *extra],
                          capture_output=True, env=env, cwd=scratch, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: audisp {log.name} --format {fmt} failed: "
                           f"{done.stderr.decode()[-2000:]}")
    return renumber(done.stdout)


def replay_ebpf(tree: Path, fmt: str, files: str, scratch: Path) -> bytes:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-c", EBPF_REPLAY, str(EBPF_STREAM), fmt, files],
                          capture_output=True, env=env, cwd=scratch, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: eBPF replay --format {fmt} failed: "
                           f"{done.stderr.decode()[-2000:]}")
    return renumber(done.stdout)


def compare(base: str) -> tuple[list[str], int]:
    """The differences between ``base`` and the working tree, one line each, and how many
    output lines were compared."""
    differences, compared = [], 0
    with tempfile.TemporaryDirectory(prefix="ttpsensor-compare-") as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree),
                        base], check=True, capture_output=True)
        try:
            scratch = Path(tmp) / "scratch"
            scratch.mkdir()
            logs = inputs()
            for number, log in enumerate(logs, 1):
                # Also as if recorded here: the paths the logs name are hashed and looked up
                # in this host's package database (/usr/bin/ls is this machine's), which is
                # how the enrichment of image identity, digests and packages is compared.
                for fmt, *extra in (*((f,) for f in FORMATS), ("ecs", "--from-this-host")):
                    before = replay(base_tree, log, fmt, scratch, *extra)
                    after = replay(ROOT, log, fmt, scratch, *extra)
                    compared += before.count(b"\n")
                    if before != after:
                        differences.append(f"{log.relative_to(CORPUS)} --format {fmt} "
                                           + " ".join(extra))
                print(f"\r{number}/{len(logs)} logs compared", end="", file=sys.stderr)
            print(file=sys.stderr)
            for fmt, files in EBPF_REPLAYS:
                before = replay_ebpf(base_tree, fmt, files, scratch)
                compared += before.count(b"\n")
                if before != replay_ebpf(ROOT, fmt, files, scratch):
                    differences.append(f"{EBPF_STREAM.name} (eBPF) --format {fmt}, {files}")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(base_tree)], capture_output=True)
    return differences, compared


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    differences, compared = compare(sys.argv[1])
    for line in differences:
        print(f"differs: {line}")
    print(f"{len(inputs())} logs x {len(FORMATS) + 1} replays and a recorded eBPF stream x "
          f"{len(EBPF_REPLAYS)}, "
          f"{compared} output lines: "
          f"{'identical' if not differences else f'{len(differences)} differ'}")
    return 1 if differences or not compared else 0


if __name__ == "__main__":
    sys.exit(main())
