"""What ``ttpsensor`` imports before it runs a command, which every replay and every short
command pays: its own commands are found without importlib.metadata (common/cli.py), and a
replay in LAUREL's format imports no enrichment (sensor_linux/audit/pipeline.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import distribution
from pathlib import Path

import pytest

from common import __version__, cli

GROUPS = (cli.ENTRY_POINT_GROUP, cli.BENCH_ENTRY_POINT_GROUP)
ROOT = Path(__file__).resolve().parent.parent


def test_our_entry_points_load_what_importlib_metadata_loads() -> None:
    entries = distribution("ttpsensor").entry_points
    for group in GROUPS:
        ours = [entry for entry in entries if entry.group == group]
        assert len(ours) >= 10, group
        for entry in ours:
            load = cli._own_plugin(group, entry.name)
            assert load is not None, (group, entry.name)
            assert load() is entry.load(), (group, entry.name)
    assert cli._own_plugin(cli.ENTRY_POINT_GROUP, "no-such-command") is None
    assert cli._own_plugin("no.such.group", "run") is None


def test_the_first_dist_info_of_this_version_on_the_path_is_read(tmp_path: Path,
                                                                 monkeypatch) -> None:
    dist_info = tmp_path / f"ttpsensor-{__version__}.dist-info"
    dist_info.mkdir()
    (dist_info / "entry_points.txt").write_text(
        f"[{cli.ENTRY_POINT_GROUP}]\nHash = os.path:join\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    load = cli._own_plugin(cli.ENTRY_POINT_GROUP, "Hash")   # names keep their case
    assert load is not None and load() is os.path.join
    assert cli._own_plugin(cli.ENTRY_POINT_GROUP, "hash") is None
    # A file configparser cannot read is left to importlib.metadata, not a crash.
    (dist_info / "entry_points.txt").write_text("no section header\n")
    assert cli._own_plugin(cli.ENTRY_POINT_GROUP, "hash") is None


def test_another_distributions_command_is_still_found(tmp_path: Path) -> None:
    """A command registered by another installed distribution is found through
    importlib.metadata, as before, and listed by --help."""
    dist_info = tmp_path / "greeter-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: greeter\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        f"[{cli.ENTRY_POINT_GROUP}]\ngreet = greeter_cli:greet\n")
    (tmp_path / "greeter_cli.py").write_text(textwrap.dedent("""\
        import click

        @click.command("greet")
        def greet():
            "Say hello."
            click.echo("hello from greeter")
        """))
    env = dict(os.environ, PYTHONPATH=str(tmp_path))

    def ttpsensor(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "common.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)

    greeted = ttpsensor("greet")
    assert greeted.returncode == 0, greeted.stderr
    assert greeted.stdout == "hello from greeter\n"
    listed = ttpsensor("--help")
    assert "greet" in listed.stdout and "audisp" in listed.stdout
    assert ttpsensor("no-such-command").returncode == 2


def _imported(fmt: str, log: Path) -> set[str]:
    """The modules ``ttpsensor audisp --format FMT LOG`` imports (``-X importtime``)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "common.cli", "audisp",
                           "--format", fmt, "--parse-error-log", str(log.with_suffix(".err")),
                           str(log)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}


@pytest.mark.parametrize("fmt", ["laurel", "ecs"])
def test_a_replay_imports_what_its_format_needs(tmp_path: Path, fmt: str) -> None:
    log = tmp_path / "empty.log"
    log.write_bytes(b"")
    imported = _imported(fmt, log)
    assert "sensor_linux.audit.laurel" in imported    # the list is read right
    assert "importlib.metadata" not in imported
    enrichment = {"sensor_linux.enrich", "common.ttphash", "sensor_linux.audit.events",
                  "common.filehash", "sensor_linux.packages"}
    if fmt == "laurel":
        assert not imported & enrichment
    else:
        assert enrichment <= imported
