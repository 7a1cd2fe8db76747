"""Sigma rules, loaded with pySigma and compiled once into a predicate over our events.

pySigma parses each rule and applies its value modifiers (contains, startswith, endswith, all,
re, windash, base64offset, cidr, …): what reaches us is its condition tree, with `1 of`,
`all of`, `not` and the selections already expanded into AND/OR/NOT nodes over
field-equals-value expressions. This module turns that tree into nested Python closures,
evaluated per event: a Sigma string (wildcards `*` and `?`) becomes one compiled regular
expression, case-insensitive unless the rule asked for `cased`.

Why evaluate in Python rather than convert rules to SQL over the store: the store keeps each
event as one msgpack document, with no column per Sigma field, so SQL would need a JSON
extraction per field per row (and two dialects); a compiled closure tree costs a few
microseconds per rule and event (`ttpsensor bench ingest --sigma` measures it).

Only `category: process_creation` rules for `product: windows` or `linux` are kept. A rule
that cannot be evaluated faithfully (a field outside collector/sigma/fields.py, a value type we
do not evaluate) is reported with its file, id, title and why, never silently dropped; a file
with a YAML or Sigma error does not stop the others. Filters (``filter:``) are applied to the
rules they name across files; correlation rules are reported, not evaluated (see :func:`load`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import yaml
from sigma import conditions as sc
from sigma import types as st
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.filters import SigmaFilter
from sigma.rule import SigmaRule

from collector.sigma.fields import FIELDS
from common.schema import get_path

Event = dict[str, Any]
PRODUCTS = ("windows", "linux")


class Unsupported(ValueError):
    """A rule uses something this evaluator cannot honour; the message says what."""


class Fields(dict):
    """One event's Sigma field values, each computed on first use and kept: a rule set asks
    for the same few fields hundreds of times per event. ``folded`` holds them as case-folded
    text, for the case-insensitive comparisons that are most of Sigma."""

    __slots__ = ("event", "folded")

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event
        self.folded = _Folded(self)

    def __missing__(self, name: str) -> Any:
        value = self[name] = FIELDS[name](self.event)
        return value


class _Folded(dict):
    __slots__ = ("fields",)

    def __init__(self, fields: Fields) -> None:
        super().__init__()
        self.fields = fields

    def __missing__(self, name: str) -> str | None:
        value = self.fields[name]
        text = self[name] = None if value is None else str(value).casefold()
        return text


Test = Callable[[Fields], bool]
# What must hold for a rule to match, cheap to check first: one of these (field, case-folded
# literal) pairs occurs in the field's folded text; None when the rule has no such necessity
# (a regular expression, a negation, a number ...).
Needs = frozenset[tuple[str, str]] | None


@dataclass
class CompiledRule:
    id: str
    title: str
    level: str | None
    tags: list[str]
    product: str
    path: str
    test: Test
    needs: Needs = None

    def matches(self, event: Event) -> bool:
        """Whether this rule matches ``event`` (a rule set evaluates many at once: RuleSet)."""
        return self.test(Fields(event))


@dataclass
class Problem:
    path: str
    rule: str            # id or title ("" when the file itself could not be read)
    why: str


@dataclass
class Loaded:
    rules: list[CompiledRule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped: int = 0     # rules for other log sources (not process_creation on windows/linux)


class RuleSet:
    """Compiled rules evaluated together on one event at a time.

    Most rules cannot match most events, and say so cheaply: each rule's ``needs`` (a literal
    one of its fields must contain) is checked first, each distinct literal once per event, and
    only the rules whose literal occurs, plus those without one, are evaluated in full. A rule
    is evaluated only on events of its product (``host.os.type``; every rule when an event
    does not say)."""

    def __init__(self, rules: list[CompiledRule]) -> None:
        self.rules = rules
        # Evaluations that raised, by rule id: counted and taken as no match, since a frame
        # whose ingest failed would be refused and sent again for ever.
        self.errors: dict[str, int] = {}
        self._always: dict[str | None, list[int]] = {}
        # product -> field -> [(literal, indexes of the rules that need it)]
        self._needed: dict[str | None, dict[str, list[tuple[str, list[int]]]]] = {}
        for product in (*PRODUCTS, None):
            always: list[int] = []
            literals: dict[str, dict[str, list[int]]] = {}
            for index, compiled in enumerate(rules):
                if product is not None and compiled.product != product:
                    continue
                if compiled.needs is None:
                    always.append(index)
                    continue
                for name, literal in compiled.needs:
                    literals.setdefault(name, {}).setdefault(literal, []).append(index)
            self._always[product] = always
            self._needed[product] = {name: sorted(found.items())
                                     for name, found in literals.items()}

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, event: Event) -> list[CompiledRule]:
        """The rules ``event`` matches, in load order."""
        product = get_path(event, "host.os.type")
        if product not in PRODUCTS:
            product = None
        fields = Fields(event)
        candidates = set(self._always[product])
        for name, literals in self._needed[product].items():
            text = fields.folded[name]
            if text is None:
                continue
            for literal, indexes in literals:
                if literal in text:
                    candidates.update(indexes)
        rules = self.rules
        matched = []
        for index in sorted(candidates):
            rule = rules[index]
            try:
                if rule.test(fields):
                    matched.append(rule)
            except Exception:  # noqa: BLE001 - see self.errors
                name = rule.id or rule.title
                self.errors[name] = self.errors.get(name, 0) + 1
        return matched


def rule_files(paths: list[str]) -> list[str]:
    """YAML files named or found below the directories named, in a stable order."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            for root, _dirs, names in sorted(os.walk(path)):
                found += [os.path.join(root, n) for n in sorted(names)
                          if n.endswith((".yml", ".yaml"))]
        else:
            found.append(path)
    return found


def load(paths: list[str]) -> Loaded:
    """The rules of ``paths`` compiled, with what cannot be evaluated told in ``problems``.

    Read across all files, as SigmaHQ keeps them apart: a filter (Sigma's ``filter:``) is
    applied to the rules it names, wherever they are; a correlation rule (``correlation:``,
    a count or order over several events) is not evaluated, since each event is matched
    alone, and nor are the rules it names unless it says ``generate: true`` (Sigma's
    default: such rules are only parts of the correlation)."""
    loaded = Loaded()
    rules: list[tuple[str, SigmaRule]] = []
    filters: list[tuple[str, SigmaFilter]] = []
    correlations: list[tuple[str, SigmaCorrelationRule]] = []
    for path in rule_files(paths):
        collection = _read(path, loaded)
        if collection is None:
            continue
        filters += [(path, f) for f in collection.filters if not f.errors]
        for rule in collection.rules:
            if rule.errors:
                loaded.problems += [Problem(path, _name(rule), str(e)) for e in rule.errors]
            elif isinstance(rule, SigmaCorrelationRule):
                correlations.append((path, rule))
            else:
                rules.append((path, rule))
    parts = _correlation_parts(correlations, loaded)
    _apply_filters(rules, filters, loaded)
    for path, rule in rules:
        correlation = parts.get(str(rule.id)) or (parts.get(rule.name) if rule.name else None)
        if correlation is not None:
            loaded.problems.append(Problem(path, _name(rule), (
                f"part of correlation rule {correlation} only (it does not say generate: "
                "true), which is not evaluated")))
            continue
        source = rule.logsource
        if source.category != "process_creation" or source.product not in PRODUCTS:
            loaded.skipped += 1
            continue
        try:
            loaded.rules.append(compile_rule(rule, path))
        except (Unsupported, SigmaError) as exc:
            loaded.problems.append(Problem(path, _name(rule), str(exc)))
    return loaded


def _name(rule: SigmaRule | SigmaCorrelationRule | SigmaFilter) -> str:
    return str(rule.id or rule.title)


def _read(path: str, loaded: Loaded) -> SigmaCollection | None:
    """One file's rules, filters and correlations, nothing applied or resolved yet (that is
    done across files); what cannot be read is told in ``loaded.problems``."""
    try:
        with open(path, "rb") as f:
            collection = SigmaCollection.from_yaml(f.read(), collect_errors=True,
                                                   collect_filters=True,
                                                   resolve_references=False)
    except (OSError, SigmaError, ValueError, yaml.YAMLError) as exc:
        loaded.problems.append(Problem(path, "", f"{type(exc).__name__}: {exc}"))
        return None
    # pySigma lists a rule's error with the rule and again with the file: told once, with
    # the rule's name (a filter's with the file).
    of_rules = {str(e) for rule in collection.rules for e in rule.errors}
    for error in collection.errors:
        if str(error) not in of_rules:
            loaded.problems.append(Problem(path, "", str(error)))
    return collection


def _correlation_parts(correlations: list[tuple[str, SigmaCorrelationRule]],
                       loaded: Loaded) -> dict[str, str]:
    """Each correlation rule told as not evaluated; the rules only they use (by id or
    name) -> the correlation's name."""
    parts: dict[str, str] = {}
    for path, correlation in correlations:
        loaded.problems.append(Problem(path, _name(correlation), (
            f"a correlation rule ({correlation.type}: over several events) is not evaluated; "
            "each event is matched alone")))
        if not correlation.generate:
            for reference in correlation.rules:
                parts[str(reference.reference)] = _name(correlation)
    return parts


def _apply_filters(rules: list[tuple[str, SigmaRule]], filters: list[tuple[str, SigmaFilter]],
                   loaded: Loaded) -> None:
    """Each filter applied to the rules it names (pySigma rewrites their condition); one that
    names none of the rules loaded is told, not dropped silently."""
    for path, sigma_filter in filters:
        applied = False
        for _, rule in rules:
            before = list(rule.detection.condition)
            sigma_filter.apply_on_rule(rule)
            applied |= rule.detection.condition != before
        if not applied:
            loaded.problems.append(Problem(path, _name(sigma_filter), (
                "a filter that applies to none of the rules loaded (it names "
                f"{_filter_targets(sigma_filter)})")))


def _filter_targets(sigma_filter: SigmaFilter) -> str:
    targets = sigma_filter.filter.rules
    if isinstance(targets, str):
        return f"{targets} rule of its log source"
    return ", ".join(str(t.reference) for t in targets) or "no rule"


def load_rule_set(paths: list[str], say: Callable[[str], None]) -> RuleSet:
    """The rules for evaluation at ingest; each problem, and the count, told through ``say``
    (a rule that cannot be evaluated never stops the others, nor the collector)."""
    loaded = load(paths)
    for problem in loaded.problems:
        say(f"Sigma rule not used: {problem.path}: "
            f"{problem.rule + ': ' if problem.rule else ''}{problem.why}")
    say(f"Sigma rules: {len(loaded.rules)} evaluated at ingest, {loaded.skipped} for other "
        f"log sources, {len(loaded.problems)} not used")
    return RuleSet(loaded.rules)


def compile_rule(rule: SigmaRule, path: str = "") -> CompiledRule:
    compiled = [_compile(c.parsed) for c in rule.detection.parsed_condition]
    if len(compiled) == 1:
        test, needs = compiled[0]
    else:   # several conditions: any of them
        tests = tuple(t for t, _ in compiled)
        test, needs = (lambda f: any(t(f) for t in tests)), _union(n for _, n in compiled)
    return CompiledRule(
        id=str(rule.id or ""), title=rule.title, level=rule.level.name.lower()
        if rule.level else None, tags=[f"{t.namespace}.{t.name}" for t in rule.tags],
        product=str(rule.logsource.product), path=path, test=test, needs=needs)


def _union(needs: Iterable[Needs]) -> Needs:
    """Any of several must hold: the rule needs one of all their pairs (none if one has none)."""
    out: set[tuple[str, str]] = set()
    for need in needs:
        if need is None:
            return None
        out |= need
    return frozenset(out)


def _narrowest(needs: Iterable[Needs]) -> Needs:
    """All of several must hold: any one's needs are the rule's; the fewest and longest
    literals reject the most events."""
    known = [n for n in needs if n]
    if not known:
        return None
    return min(known, key=lambda n: (len(n), -min(len(lit) for _, lit in n)))


def _compile(node: Any) -> tuple[Test, Needs]:
    if isinstance(node, sc.ConditionAND):
        parts = [_compile(a) for a in node.args]
        tests = tuple(t for t, _ in parts)
        return (lambda f: all(t(f) for t in tests)), _narrowest(n for _, n in parts)
    if isinstance(node, sc.ConditionOR):
        parts = [_compile(a) for a in node.args]
        tests = tuple(t for t, _ in parts)
        return (lambda f: any(t(f) for t in tests)), _union(n for _, n in parts)
    if isinstance(node, sc.ConditionNOT):
        inner, _ = _compile(node.args[0])
        return (lambda f: not inner(f)), None
    if isinstance(node, sc.ConditionFieldEqualsValueExpression):
        if node.field not in FIELDS:
            raise Unsupported(f"field {node.field!r} is not in the process_creation fields "
                              f"this collector maps ({', '.join(sorted(FIELDS))})")
        return _value_test(node.field, node.value)
    if isinstance(node, sc.ConditionValueExpression):
        # A keyword: anywhere in the event's mapped fields.
        tests = tuple(_value_test(name, node.value)[0] for name in FIELDS)
        return (lambda f: any(t(f) for t in tests)), None
    raise Unsupported(f"condition element {type(node).__name__} is not supported")


def _value_test(name: str, value: Any) -> tuple[Test, Needs]:
    """How one Sigma value is compared with the field ``name`` of an event (whose value is
    None when the event has none)."""
    if isinstance(value, st.SigmaExpansion):            # windash, base64offset: any of them
        parts = [_value_test(name, v) for v in value.values]
        tests = tuple(t for t, _ in parts)
        return (lambda f: any(t(f) for t in tests)), _union(n for _, n in parts)
    if isinstance(value, st.SigmaString):
        return _string_test(name, value)
    needs: Needs = None
    if isinstance(value, st.SigmaRegularExpression):
        literal = required_literal(_regex_text(value)).casefold()
        needs = frozenset({(name, literal)}) if literal else None
    return _other_test(name, value), needs


def _other_test(name: str, value: Any) -> Test:
    if isinstance(value, st.SigmaRegularExpression):
        pattern = _regex(value)
        return lambda f: (v := f[name]) is not None and pattern.search(str(v)) is not None
    if isinstance(value, st.SigmaNumber):
        number = value.number
        return lambda f: (v := f[name]) is not None and _as_number(v) == number
    if isinstance(value, st.SigmaNull):
        return lambda f: (v := f[name]) is None or v == ""
    if isinstance(value, st.SigmaBool):
        wanted = value.boolean
        return lambda f: (v := f[name]) is wanted or str(v).lower() == str(wanted).lower()
    if isinstance(value, st.SigmaExists):
        exists = value.exists
        return lambda f: (f[name] is not None) is exists
    if isinstance(value, st.SigmaCIDRExpression):
        network = value.network
        return lambda f: _in_network(f[name], network)
    if isinstance(value, st.SigmaCompareExpression):
        limit, op = value.number.number, value.op
        compare = {st.SigmaCompareExpression.CompareOperators.LT: lambda a: a < limit,
                   st.SigmaCompareExpression.CompareOperators.LTE: lambda a: a <= limit,
                   st.SigmaCompareExpression.CompareOperators.GT: lambda a: a > limit,
                   st.SigmaCompareExpression.CompareOperators.GTE: lambda a: a >= limit}[op]
        return lambda f: (n := _as_number(f[name])) is not None and compare(n)
    if isinstance(value, st.SigmaFieldReference):
        if value.field not in FIELDS:
            raise Unsupported(f"fieldref to {value.field!r}, which is not mapped")
        other = value.field
        return lambda f: (v := f.folded[name]) is not None and v == f.folded[other]
    raise Unsupported(f"value type {type(value).__name__} is not supported")


def _regex_text(value: st.SigmaRegularExpression) -> str:
    return value.regexp.to_plain()


def _regex(value: st.SigmaRegularExpression) -> Any:
    """A rule's regular expression, compiled by RE2 (google-re2): matching takes time linear
    in the text, whatever the pattern, where Python's backtracking `re` can take minutes on a
    command line an attacker wrote. RE2 has no backreferences or lookaround; a rule that uses
    them is reported, not evaluated."""
    import re2
    text = _regex_text(value)
    inline = "".join({"IGNORECASE": "i", "MULTILINE": "m", "DOTALL": "s"}.get(flag.name, "")
                     for flag in value.flags)
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(f"(?{inline}){text}" if inline else text, options)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise Unsupported(f"regular expression {text!r} cannot be evaluated in linear time "
                          f"by RE2 ({detail}; no backreferences or lookaround)") from exc


def required_literal(pattern: str) -> str:
    """The longest run of characters that every match of ``pattern`` contains, read
    conservatively at its top level ("" when unsure: an alternation there, nothing plain).
    A regular expression rule is evaluated (RE2 costs microseconds a call) only on events
    whose text holds it. Groups, classes, escapes of letters and digits (\\d, \\x41 ...) and
    `.` end a run; a character made optional by `?`, `*` or `{0` is left out of it, one
    repeated by `+` or `{n` ends it."""
    runs: list[str] = []
    run: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "|":
            return ""
        if char in "([":
            i = _skip_group(pattern, i)
            runs.append("".join(run))
            run = []
            continue
        if char == "\\" and i + 1 < len(pattern) and not pattern[i + 1].isalnum():
            char, i = pattern[i + 1], i + 2
        elif char == "\\" or char in ".^$*+?{})]":
            runs.append("".join(run))
            run = []
            if char == "{":      # a repetition's bounds, not characters to match
                close = pattern.find("}", i)
                i = close + 1 if close >= 0 else len(pattern)
            else:
                i += 2 if char == "\\" else 1
            continue
        else:
            i += 1
        after = pattern[i:i + 1]
        if after in ("*", "?") or pattern.startswith("{0", i):
            runs.append("".join(run))
            run = []
        elif after in ("+", "{"):
            run.append(char)
            runs.append("".join(run))
            run = []
        else:
            run.append(char)
    runs.append("".join(run))
    return max(runs, key=len)


def _skip_group(pattern: str, i: int) -> int:
    """The index after the group or class opening at ``i`` (escapes and nesting honoured)."""
    depth = 0
    in_class = False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
                if depth == 0:
                    return i + 1
        elif char == "[":
            in_class = True
            if pattern[i + 1:i + 2] == "]":   # "[]...]": a ] first is literal
                i += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def _string_test(name: str, value: st.SigmaString) -> tuple[Test, Needs]:
    """Equality, contains, startswith and endswith (pySigma's `*` at either end) as plain
    string operations on the folded text; any other wildcard pattern by Glob (linear time)."""
    cased = isinstance(value, st.SigmaCasedString)
    parts = list(value.s)
    literals = [p for p in parts if isinstance(p, str) and p]
    longest = max(literals, key=len, default="").casefold()
    needs: Needs = frozenset({(name, longest)}) if longest else None
    star = st.SpecialChars.WILDCARD_MULTI
    lead = bool(parts) and parts[0] == star
    trail = len(parts) > 1 and parts[-1] == star
    middle = parts[int(lead):len(parts) - int(trail)]
    if len(middle) == 1 and isinstance(middle[0], str) and not cased:
        text = middle[0].casefold()
        if lead and trail:
            return (lambda f: (v := f.folded[name]) is not None and text in v), needs
        if lead:
            return (lambda f: (v := f.folded[name]) is not None and v.endswith(text)), needs
        if trail:
            return (lambda f: (v := f.folded[name]) is not None and v.startswith(text)), needs
        return (lambda f: f.folded[name] == text), needs
    glob = Glob(parts, cased)   # one piece without wildcards: equality
    if cased:
        return (lambda f: (v := f[name]) is not None and glob.matches(str(v))), needs
    return (lambda f: (v := f.folded[name]) is not None and glob.matches(v)), needs


class Glob:
    """A Sigma string with `*` and `?` wildcards, matched in time linear in the text for each
    piece: the pieces between `*`s are found left to right, each at its first place after the
    one before (which is where it must go, if anywhere). A backtracking regular expression
    takes cubic time on text an attacker writes: `*a*b*c*` against 8,000 bytes of "ab" took
    Python's `re` two minutes, in the collector's ingest."""

    def __init__(self, parts: list[Any], cased: bool) -> None:
        pieces: list[list[Any]] = [[]]
        for part in parts:
            if part == st.SpecialChars.WILDCARD_MULTI:
                pieces.append([])
            elif part == st.SpecialChars.WILDCARD_SINGLE:
                pieces[-1].append(None)           # any one character
            elif isinstance(part, str):
                pieces[-1].extend(part if cased else part.casefold())
            else:
                raise Unsupported(f"a placeholder in {parts!r} is not supported")
        self.single = len(pieces) == 1
        self.first, self.last = self._piece(pieces[0]), self._piece(pieces[-1])
        self.inner = [self._piece(p) for p in pieces[1:-1] if p]

    @staticmethod
    def _piece(chars: list[str | None]) -> tuple[str | re.Pattern[str], int]:
        """A literal string, or with `?` a pattern without repetition (linear to search),
        and the number of characters it matches."""
        if None not in chars:
            return "".join(c for c in chars if c is not None), len(chars)
        return re.compile("".join("." if c is None else re.escape(c) for c in chars),
                          re.DOTALL), len(chars)

    def matches(self, text: str) -> bool:
        (first, first_len), (last, last_len) = self.first, self.last
        if self.single:
            return len(text) == first_len and _at(first, text, 0)
        if not _at(first, text, 0):
            return False
        pos, end = first_len, len(text) - last_len
        if end < pos or not _at(last, text, end):
            return False
        for piece, length in self.inner:
            if isinstance(piece, str):
                found = text.find(piece, pos, end)
                if found < 0:
                    return False
                pos = found + length
            else:
                match = piece.search(text, pos, end)
                if match is None:
                    return False
                pos = match.end()
        return True


def _at(piece: str | re.Pattern[str], text: str, index: int) -> bool:
    """Whether ``piece`` matches ``text`` at ``index`` (an empty piece always does)."""
    if isinstance(piece, str):
        return text.startswith(piece, index)
    return piece.match(text, index) is not None


def _as_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return int(str(value), 0)
    except ValueError:
        try:
            return float(str(value))
        except ValueError:
            return None


def _in_network(value: Any, network: Any) -> bool:
    try:
        return ipaddress.ip_address(str(value)) in network
    except ValueError:
        return False
