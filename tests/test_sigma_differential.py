"""Differential check of our Sigma evaluator: the same rules converted by pySigma's SQLite
backend (pySigma-backend-sqlite, a second, independent implementation of every modifier and
condition) and run as SQL over a table of the same events must select the same events.

The table (collector/sigma/sqlpath.py) has one column per Sigma field, filled by
collector/sigma/fields.py (the mapping is tested on its own in test_sigma.py); what is compared
is how values, modifiers and conditions are evaluated. SQLite folds ASCII case only, so the
events' non-ASCII text is not compared across case.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sigma.collection import SigmaCollection

from collector.sigma import sqlpath
from collector.sigma.generate import generate
from collector.sigma.rules import RuleSet, compile_rule
from common import bench
from tests.sigma_rules import rule_yaml
from tests.test_sigma import CASES, linux, windows

HANDWRITTEN_WINDOWS = [
    "    sel:\n        Image|endswith: '\\powershell.exe'\n"
    "        CommandLine|windash|contains: ' -enc '\n    condition: sel",
    "    sel:\n        OriginalFileName: Cmd.Exe\n    filter:\n"
    "        CommandLine|contains: '/c echo'\n    condition: sel and not filter",
    "    sel:\n        CommandLine|startswith: 'powershell'\n"
    "        CommandLine|endswith: 'AAAA'\n    condition: sel",
    "    sel:\n        CommandLine|contains|all:\n            - '/enc'\n            - 'AAAA'\n"
    "    condition: sel",
    "    sel:\n        OriginalFileName: notepad.exe\n    condition: sel",   # NOTEPAD.EXE
    "    sel:\n        CommandLine|cased: 'cmd /k dir'\n    condition: sel",
    "    sel:\n        Image|re|i: 'SYSTEM32\\\\CMD'\n    condition: sel",
]


def rule_text(n: int, product: str, detection: str) -> str:
    return rule_yaml(f"differential {n}", detection, product=product, level="medium")


def all_rules() -> list[str]:
    texts = [rule_text(n, "linux", case[1]) for n, case in enumerate(CASES)
             if case[0] != "cidr"]   # the backend writes cidr as LIKE prefixes of the text
    texts += [rule_text(100 + n, "windows", d) for n, d in enumerate(HANDWRITTEN_WINDOWS)]
    texts += [text for _, text in generate(160, seed=23)]
    return texts


def all_events() -> list[dict]:
    events = bench.varied_events(400, seed=23)
    for case in CASES:
        events += [case[2], case[3]]
    ps = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
    events += [windows("powershell /enc AAAA", ps), windows("POWERSHELL -ENC aaaa", ps),
               windows("powershell -nop", ps), windows("cmd /c echo AAAA"),
               windows("cmd /k dir")]
    return events


def test_sqlite_backend_selects_the_same_events() -> None:
    events = all_events()
    db = sqlpath.event_table()
    sqlpath.fill(db, events)
    compared = hits = 0
    for text in all_rules():
        [rule] = SigmaCollection.from_yaml(text).rules
        by_sql: set[int] = set()
        converted = sqlpath.queries([text])
        for _, query in converted:
            by_sql |= sqlpath.selected(db, query)
        compiled = compile_rule(rule)
        ours = {n for n, event in enumerate(events) if compiled.matches(event)}
        assert ours == by_sql, f"{rule.title}: {converted}"
        compared += 1
        hits += len(ours)
    assert compared > 150 and hits > 50   # the comparison was not of empty sets


@pytest.mark.parametrize("product", ["linux", "windows"])
def test_a_rule_set_selects_what_each_rule_alone_does_on_its_product(product) -> None:
    """The rule set's literal pre-check and product filter lose no match."""
    compiled = [compile_rule(r) for t in all_rules()
                for r in SigmaCollection.from_yaml(t).rules]
    rules = RuleSet(compiled)
    for event in all_events():
        if event["host"]["os"]["type"] != product:
            continue
        assert rules.match(event) == [r for r in compiled
                                      if r.product == product and r.matches(event)]


# Random rules against random events, both evaluators: values drawn from characters that are
# special somewhere (Sigma's * ? \, LIKE's % _, GLOB's [ ]), in both cases of two letters.
_CHARS = "aAbB%_*?[] /\\"
_MODIFIERS = ["", "|contains", "|startswith", "|endswith", "|contains|all", "|cased",
              "|contains|cased", "|windash|contains"]
_FIELDS = ["Image", "CommandLine", "ParentImage", "CurrentDirectory"]


def _sigma_value(text: str) -> str:
    """``text`` as a single-quoted YAML scalar (Sigma reads \\ * ? in it)."""
    return "'" + text.replace("'", "''") + "'"


@st.composite
def _detections(draw) -> str:
    selections = []
    for n in range(draw(st.integers(1, 3))):
        lines = []
        for field in draw(st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=2,
                                   unique=True)):
            modifier = draw(st.sampled_from(_MODIFIERS))
            values = draw(st.lists(st.text(_CHARS, min_size=1, max_size=4), min_size=1,
                                   max_size=3))
            lines.append(f"        {field}{modifier}:\n" + "".join(
                f"            - {_sigma_value(v)}\n" for v in values))
        selections.append(f"    sel{n}:\n" + "".join(lines))
    names = [f"sel{n}" for n in range(len(selections))]
    condition = draw(st.sampled_from(
        ["1 of sel*", "all of sel*", names[0], f"not {names[0]}"]
        + ([f"{names[0]} and not {names[1]}", f"{names[0]} or {names[1]}"]
           if len(names) > 1 else [])))
    return "".join(selections) + f"    condition: {condition}"


def _random_event(values: list[str]) -> dict:
    image, command, parent, cwd = values
    return linux(image, command.split(" "), parent=parent, working_directory=cwd)


@settings(max_examples=300, deadline=None)
@given(_detections(), st.lists(st.lists(st.text(_CHARS, max_size=8), min_size=4, max_size=4),
                               min_size=1, max_size=6))
def test_random_rules_select_the_same_events_both_ways(detection, raw_events) -> None:
    text = rule_text(0, "linux", detection)
    [rule] = SigmaCollection.from_yaml(text).rules
    events = [_random_event(v) for v in raw_events]
    db = sqlpath.event_table()
    sqlpath.fill(db, events)
    by_sql: set[int] = set()
    for _, query in sqlpath.queries([text]):
        by_sql |= sqlpath.selected(db, query)
    compiled = compile_rule(rule)
    ours = {n for n, event in enumerate(events) if compiled.matches(event)}
    assert ours == by_sql, (detection, [list(v) for v in raw_events])
