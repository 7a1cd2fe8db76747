"""``--config FILE``: a command's options from a TOML file.

auditd passes a plugin at most two arguments and a systemd unit is easier to read with one, so
every long-running command takes ``--config FILE`` whose settings are named like its long
options (``parse-error-log = "..."``, ``outputs = [...]``); options given on the command line
still win. Unknown settings are an error, not silently ignored.
"""

from __future__ import annotations

from typing import Any, Callable

import click


def _load(ctx: click.Context, _param: click.Parameter, path: str | None) -> None:
    if path is None:
        return
    import tomllib
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}") from exc
    # default_map is keyed by click's parameter names; settings may use either the long option
    # ("output", "parse-error-log") or the parameter's name with dashes ("outputs").
    by_option = {}
    for param in ctx.command.params:
        for opt in getattr(param, "opts", []):
            if opt.startswith("--"):
                by_option[opt[2:]] = param.name
        by_option[str(param.name).replace("_", "-")] = param.name
    unknown = sorted(k for k in values if k not in by_option or k == "config")
    if unknown:
        raise click.BadParameter(f"{path}: unknown settings {', '.join(unknown)}")
    settings = {by_option[k]: v for k, v in values.items()}
    for name, value in settings.items():
        param = next(p for p in ctx.command.params if p.name == name)
        if getattr(param, "multiple", False) and isinstance(value, str):
            settings[name] = [value]
    ctx.default_map = {**(ctx.default_map or {}), **settings}


def config_option(example: str) -> Callable[[Any], Any]:
    """The ``--config`` option; ``example`` names a shipped file with every setting."""
    return click.option("--config", type=click.Path(dir_okay=False), is_eager=True,
                        expose_value=False, callback=_load,
                        help=f"Settings from a TOML file, named like the long options "
                             f"(see {example}); command-line options win.")
