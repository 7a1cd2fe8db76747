"""The hot paths' modules that Cython compiles on request (TTPSENSOR_CYTHON=1,
common/compiled.py): all or none of them in this tree, none older than its source, and the very
bytes their sources give.

The sources are what every other test reads and what an install without the request runs, so
this builds a copy of the packages as ``TTPSENSOR_CYTHON=1`` builds them (setup.py, the C modules
too) and compares it with a copy of the sources alone (TTPSENSOR_PURE_PYTHON=1) on everything
recorded: every audit log of the corpus in each format (and ecs with this host's files), about
6,000 of their lines mutated as the fuzzer mutates them (what the parse-error log keeps is
compared too), and the recorded eBPF stream.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.compiled import CYTHON_MODULES, module_state
from sensor_linux.audit.fuzz import _mutate
from tests.compare_outputs import EBPF_REPLAYS, inputs, renumber, replay_ebpf
from tests.conftest import ROOT, require

# Replays the audit logs (argv[2]) into OUT (argv[1]), in one process (a process a replay, as
# compare_outputs.replay runs them, would take minutes): one file per replay, and modules.json
# naming the file each hot module was imported from. Run with PYTHONPATH set to the tree.
_REPLAY_ALL = r"""
import json, sys, threading
from pathlib import Path
from common.compiled import CYTHON_MODULES
from common.sinks import open_outputs
from sensor_linux.audit.replay import replay
from sensor_linux.runner import RunConfig
out, logs = Path(sys.argv[1]), json.loads(sys.argv[2])
for number, log in enumerate(logs):
    for fmt, here in (("ecs", False), ("qlog", False), ("laurel", False), ("ecs", True)):
        name = f"{number}-{fmt}-{'here' if here else 'elsewhere'}"
        config = RunConfig(source="audisp", fmt=fmt, parse_error_log=str(out / f"{name}.errors"))
        sink = open_outputs((str(out / f"{name}.jsonl"),), fmt, 1 << 30, 1).output
        replay(log, config, sink, threading.Event(), here)
modules = {}
for name in CYTHON_MODULES:
    __import__(name)
    modules[name] = sys.modules[name].__file__
(out / "modules.json").write_text(json.dumps(modules))
"""
MUTATED_RUNS = 300  # about 6,000 lines


def test_this_tree_runs_all_or_none_compiled_and_none_stale() -> None:
    state = module_state()
    assert state["compiled"] in ([], list(CYTHON_MODULES)), state
    assert state["stale"] == []


def test_a_stale_or_missing_extension_is_named(tmp_path: Path, monkeypatch) -> None:
    """module_state on a package made here: an extension is found by the import system's
    own rules (not loaded), and one older than its source is stale."""
    package = tmp_path / "hotpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for name in ("fresh", "old", "plain"):
        (package / f"{name}.py").write_text("VALUE = 1\n")
    for name, age in (("fresh", 1), ("old", -100)):   # seconds after the source
        extension = package / f"{name}{suffix}"
        extension.write_bytes(b"not loaded")
        when = os.stat(package / f"{name}.py").st_mtime_ns + age * 10**9
        os.utime(extension, ns=(when, when))
    monkeypatch.syspath_prepend(str(tmp_path))
    state = module_state(("hotpkg.fresh", "hotpkg.old", "hotpkg.plain"))
    assert state == {"compiled": ["hotpkg.fresh", "hotpkg.old"], "source": ["hotpkg.plain"],
                     "stale": ["hotpkg.old"]}


def _mutated_log(path: Path, logs: list[Path]) -> None:
    """Corpus records mutated as ``ttpsensor bench fuzz`` mutates them (seeded), in runs of
    twenty lines, as test_audit_hostile.py takes them."""
    lines = [line for log in logs for line in log.read_bytes().splitlines() if line.strip()]
    seeds = [b"\n".join(lines[i:i + 20]) for i in range(0, len(lines), 20)]
    rng = random.Random(14)
    path.write_bytes(b"\n".join(_mutate(rng.choice(seeds), seeds, rng)
                                for _ in range(MUTATED_RUNS)) + b"\n")


def _replay_all(tree: Path, out: Path, logs: list[Path], pure: bool,
                monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Every replay with the code in ``tree`` into ``out``: the audit logs (_REPLAY_ALL) and
    the recorded eBPF stream (compare_outputs.replay_ebpf); what modules.json says."""
    out.mkdir()
    monkeypatch.setenv("TTPSENSOR_PURE_PYTHON", "1" if pure else "")
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-c", _REPLAY_ALL, str(out),
                           json.dumps([str(log) for log in logs])],
                          cwd=out, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    for fmt, files in EBPF_REPLAYS:
        (out / f"ebpf-{fmt}-{files}.jsonl").write_bytes(replay_ebpf(tree, fmt, files, out))
    return json.loads((out / "modules.json").read_text())


def _source_copy(target: Path) -> Path:
    """The importable packages of the tree and setup.py, sources only."""
    for package in ("common", "sensor_linux"):
        shutil.copytree(ROOT / package, target / package,
                        ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copy(ROOT / "setup.py", target)
    return target


def _compiled_copy(target: Path) -> Path:
    """The same, built in place as TTPSENSOR_CYTHON=1 builds it (without pyproject.toml,
    whose metadata the build does not need)."""
    _source_copy(target)
    done = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "-j",
                           "2"], cwd=target, env=dict(os.environ, TTPSENSOR_CYTHON="1"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return target


@pytest.mark.timeout(1200)
def test_compiled_and_source_write_the_same_bytes(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    require(importlib.util.find_spec("Cython") is not None, "Cython (the test extra)")
    logs = inputs()
    require(bool(logs), "the corpus (shared/corpus) is needed")
    mutated = tmp_path / "mutated.log"
    _mutated_log(mutated, logs)
    logs = [*logs, mutated]
    compiled = _replay_all(_compiled_copy(tmp_path / "built"), tmp_path / "compiled", logs,
                           False, monkeypatch)
    source = _replay_all(_source_copy(tmp_path / "tree"), tmp_path / "source", logs, True,
                         monkeypatch)
    # Each side ran what it should: extensions on one, sources on the other.
    assert all(not path.endswith(".py") for path in compiled.values()), compiled
    assert all(path.endswith(".py") for path in source.values()), source
    names = sorted(p.name for p in (tmp_path / "compiled").iterdir() if p.name != "modules.json")
    assert names == sorted(p.name for p in (tmp_path / "source").iterdir()
                           if p.name != "modules.json")
    lines, errors, differ = 0, 0, []
    for name in names:
        mine = (tmp_path / "compiled" / name).read_bytes()
        theirs = (tmp_path / "source" / name).read_bytes()
        if renumber(mine) != renumber(theirs):
            differ.append(name)
        lines += mine.count(b"\n")
        errors += mine.count(b"\n") if name.endswith(".errors") else 0
    assert not differ, differ
    # Not an empty comparison: every log replayed, and the mutated one kept bad lines (some
    # 19,500 lines in all since records of a lingering event join it instead of being kept
    # as a finished event's duplicates; 20,000 and more before).
    assert lines > 15_000 and errors > 1000, (lines, errors)
