"""``ttpsensor sigma``: Sigma process-creation rules (collector/sigma/rules.py)."""

from __future__ import annotations

import json
import sys

import click


@click.group("sigma")
def sigma_group() -> None:
    """Sigma process_creation rules: check what of them the collector can evaluate.

    Rules are evaluated at ingest by a collector or the sensor's embedded one, given
    --sigma; their matches are read with 'hunt sigma' or on the console's Sigma page.

    \b
      ttpsensor sigma check rules/
      ttpsensor collect … --sigma rules/
      ttpsensor hunt sigma --level high
    """


@sigma_group.command("check")
@click.argument("rules", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per rule and problem.")
def sigma_check(rules: tuple[str, ...], as_json: bool) -> None:
    """Load RULES (YAML files, or directories of them in SigmaHQ's layout) and report:
    the process_creation rules for windows and linux that will be evaluated, the rules for
    other log sources (skipped), and every rule or file that cannot be used, with why (a
    YAML error, a field or value this collector does not map). Exit code 1 when there is
    any such problem."""
    from collector.sigma.rules import load
    loaded = load(list(rules))
    if as_json:
        for rule in loaded.rules:
            click.echo(json.dumps({"rule": rule.id, "title": rule.title, "level": rule.level,
                                   "product": rule.product, "tags": rule.tags,
                                   "path": rule.path}))
        for problem in loaded.problems:
            click.echo(json.dumps({"problem": problem.why, "rule": problem.rule,
                                   "path": problem.path}))
    else:
        for rule in loaded.rules:
            click.echo(f"ok       {rule.product:7} {rule.level or '-':8} {rule.title} "
                       f"({rule.path})")
        for problem in loaded.problems:
            click.echo(f"PROBLEM  {problem.path}: {problem.rule + ': ' if problem.rule else ''}"
                       f"{problem.why}")
    click.echo(f"{len(loaded.rules)} rules to evaluate, {loaded.skipped} for other log "
               f"sources, {len(loaded.problems)} problems", err=True)
    if loaded.problems:
        sys.exit(1)


@sigma_group.command("generate")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--count", default=200, show_default=True, help="How many rules.")
@click.option("--seed", default=7, show_default=True, help="The same seed writes the same rules.")
def sigma_generate(directory: str, count: int, seed: int) -> None:
    """Write COUNT generated Linux process_creation rules into DIRECTORY, for measuring the
    cost of Sigma at ingest ('ttpsensor bench ingest --sigma DIRECTORY'). Their literals come
    from the benchmark's own events, so some of them match; they detect nothing real."""
    from collector.sigma.generate import write
    paths = write(directory, count, seed)
    click.echo(f"wrote {len(paths)} rules to {directory}", err=True)
