"""The ``ttpsensor`` command: its top-level group and nothing else.

Every command (``hash``, ``spool``, ``pki`` and ``forward`` from common/commands/; ``run``,
``collect``, ``windows`` … from the platform packages and the collector) is found through the
``ttpsensor.commands`` entry-point group and imported only when invoked, so ``common`` never
imports a platform package and a Linux-only dependency cannot break ``ttpsensor hash`` on
Windows. ``ttpsensor bench`` does the same with ``ttpsensor.bench``.
"""

from __future__ import annotations

import configparser
import functools
import os
import pkgutil
import sys
from typing import Any, Callable

import click

from common import __version__

ENTRY_POINT_GROUP = "ttpsensor.commands"
BENCH_ENTRY_POINT_GROUP = "ttpsensor.bench"


def self_command() -> list[str]:
    """How to run this installation's ``ttpsensor`` as a child process (benchmarks, the lab,
    tests): the script beside this interpreter, else ``python -m common.cli``."""
    import shutil
    from pathlib import Path
    script = shutil.which("ttpsensor", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "common.cli"]


def _plugins(group: str) -> dict[str, Callable[[], Any]]:
    """Every installed distribution's entry points of ``group``: name -> its loader."""
    from importlib.metadata import entry_points
    return {ep.name: ep.load for ep in entry_points(group=group)}


def _own_plugin(group: str, name: str) -> Callable[[], Any] | None:
    """The loader of ``name`` in this distribution's own entry points of ``group``, read from
    its ``entry_points.txt`` (the first ``ttpsensor-VERSION.dist-info`` on sys.path, this
    code's own version); None when it has no such entry or is not installed.

    Why by hand: importing importlib.metadata (its email parser) and scanning every installed
    distribution cost every command about 13 ms of CPU in a development install and 29 ms in
    the .deb (docs/overhead.md, ninth session), paid again by every replay and every short
    command. Another distribution's commands are still found, through _plugins, when ours has
    no entry of that name.
    """
    dist_info = os.path.join(f"ttpsensor-{__version__}.dist-info", "entry_points.txt")
    found = next((path for path in (os.path.join(entry or ".", dist_info) for entry in sys.path)
                  if os.path.isfile(path)), None)
    if found is None:
        return None
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # names keep case
    try:
        parser.read(found, encoding="utf-8")
    except configparser.Error:
        return None  # unreadable: let importlib.metadata judge it
    target = parser.get(group, name, fallback=None)
    # "module:attr", as an entry point's value is written (resolved as importlib.metadata does)
    return functools.partial(pkgutil.resolve_name, target.strip()) if target else None


class PluginGroup(click.Group):
    """A click group that adds commands registered by the installed platform packages under
    the entry-point group ``plugin_group``."""

    plugin_group = ENTRY_POINT_GROUP

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_plugins(self.plugin_group)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        load = _own_plugin(self.plugin_group, cmd_name) or \
            _plugins(self.plugin_group).get(cmd_name)
        if load is None:
            return None
        try:
            return load()
        except ImportError as exc:
            # e.g. a Linux-only module on another OS: say so instead of a traceback.
            message = f"'{cmd_name}' is not available here: {exc}"

            @click.command(cmd_name, help=message)
            def unavailable() -> None:
                raise click.ClickException(message)
            return unavailable


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ttpsensor")
def main() -> None:
    """Endpoint process telemetry with a deterministic fingerprint (TTPHash) per event.

    \b
    Start here:
      ttpsensor run                 run the Linux sensor with its defaults
      ttpsensor hash events.jsonl   TTPHash of ECS or QLOG events
      ttpsensor whatis /usr/bin/ls  digests and owning package of files
    """


# --- bench: its commands are entry points of their own group ----------------------------

class BenchGroup(PluginGroup):
    plugin_group = BENCH_ENTRY_POINT_GROUP


@main.group("bench", cls=BenchGroup)
def bench() -> None:
    """Benchmarks of the hot paths; each prints figures and a ratio against a reference."""


if __name__ == "__main__":  # `python -m common.cli`, as self_command() falls back to
    sys.exit(main())
