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
with a YAML or Sigma error does not stop the others.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml
from sigma import conditions as sc
from sigma import types as st
from sigma.collection import SigmaCollection
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

from collector.sigma.fields import FIELDS

Event = dict[str, Any]
Predicate = Callable[[Event], bool]
PRODUCTS = ("windows", "linux")


class Unsupported(ValueError):
    """A rule uses something this evaluator cannot honour; the message says what."""


@dataclass
class CompiledRule:
    id: str
    title: str
    level: str | None
    tags: list[str]
    product: str
    path: str
    matches: Predicate


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
    loaded = Loaded()
    for path in rule_files(paths):
        try:
            with open(path, "rb") as f:
                collection = SigmaCollection.from_yaml(f.read(), collect_errors=True)
        except (OSError, SigmaError, ValueError, yaml.YAMLError) as exc:
            loaded.problems.append(Problem(path, "", f"{type(exc).__name__}: {exc}"))
            continue
        for error in collection.errors:
            loaded.problems.append(Problem(path, "", str(error)))
        for rule in collection.rules:
            name = str(rule.id or rule.title)
            if rule.errors:
                loaded.problems += [Problem(path, name, str(e)) for e in rule.errors]
                continue
            source = rule.logsource
            if source.category != "process_creation" or source.product not in PRODUCTS:
                loaded.skipped += 1
                continue
            try:
                loaded.rules.append(compile_rule(rule, path))
            except (Unsupported, SigmaError) as exc:
                loaded.problems.append(Problem(path, name, str(exc)))
    return loaded


def compile_rule(rule: SigmaRule, path: str = "") -> CompiledRule:
    conditions = [_compile(c.parsed) for c in rule.detection.parsed_condition]
    return CompiledRule(
        id=str(rule.id or ""), title=rule.title, level=rule.level.name.lower()
        if rule.level else None, tags=[f"{t.namespace}.{t.name}" for t in rule.tags],
        product=str(rule.logsource.product), path=path,
        matches=conditions[0] if len(conditions) == 1
        else (lambda e, cs=tuple(conditions): any(c(e) for c in cs)))


def _compile(node: Any) -> Predicate:
    if isinstance(node, sc.ConditionAND):
        parts = tuple(_compile(a) for a in node.args)
        return lambda e: all(p(e) for p in parts)
    if isinstance(node, sc.ConditionOR):
        parts = tuple(_compile(a) for a in node.args)
        return lambda e: any(p(e) for p in parts)
    if isinstance(node, sc.ConditionNOT):
        inner = _compile(node.args[0])
        return lambda e: not inner(e)
    if isinstance(node, sc.ConditionFieldEqualsValueExpression):
        if node.field not in FIELDS:
            raise Unsupported(f"field {node.field!r} is not in the process_creation fields "
                              f"this collector maps ({', '.join(sorted(FIELDS))})")
        get = FIELDS[node.field]
        test = _value_test(node.value)
        return lambda e: test(get(e), e)
    if isinstance(node, sc.ConditionValueExpression):
        # A keyword: anywhere in the event's mapped text fields.
        test = _value_test(node.value)
        getters = tuple(FIELDS.values())
        return lambda e: any(test(g(e), e) for g in getters)
    raise Unsupported(f"condition element {type(node).__name__} is not supported")


ValueTest = Callable[[Any, Event], bool]


def _value_test(value: Any) -> ValueTest:
    """How one Sigma value is compared with a field's value (None: the event has none)."""
    if isinstance(value, st.SigmaExpansion):            # windash, base64offset: any of them
        tests = tuple(_value_test(v) for v in value.values)
        return lambda v, e: any(t(v, e) for t in tests)
    if isinstance(value, st.SigmaRegularExpression):
        flags = 0
        for flag in value.flags:
            flags |= {"IGNORECASE": re.IGNORECASE, "MULTILINE": re.MULTILINE,
                      "DOTALL": re.DOTALL}.get(flag.name, 0)
        pattern = re.compile(value.regexp.to_plain() if hasattr(value.regexp, "to_plain")
                             else str(value.regexp), flags)
        return lambda v, e: v is not None and pattern.search(str(v)) is not None
    if isinstance(value, st.SigmaString):
        return _string_test(value)
    if isinstance(value, st.SigmaNumber):
        number = value.number
        return lambda v, e: v is not None and _as_number(v) == number
    if isinstance(value, st.SigmaNull):
        return lambda v, e: v is None or v == ""
    if isinstance(value, st.SigmaBool):
        return lambda v, e: v is value.boolean or str(v).lower() == str(value.boolean).lower()
    if isinstance(value, st.SigmaExists):
        wanted = value.exists
        return lambda v, e: (v is not None) is wanted
    if isinstance(value, st.SigmaCIDRExpression):
        network = value.network
        return lambda v, e: _in_network(v, network)
    if isinstance(value, st.SigmaCompareExpression):
        limit, op = value.number.number, value.op
        compare = {st.SigmaCompareExpression.CompareOperators.LT: lambda a: a < limit,
                   st.SigmaCompareExpression.CompareOperators.LTE: lambda a: a <= limit,
                   st.SigmaCompareExpression.CompareOperators.GT: lambda a: a > limit,
                   st.SigmaCompareExpression.CompareOperators.GTE: lambda a: a >= limit}[op]
        return lambda v, e: (n := _as_number(v)) is not None and compare(n)
    if isinstance(value, st.SigmaFieldReference):
        if value.field not in FIELDS:
            raise Unsupported(f"fieldref to {value.field!r}, which is not mapped")
        other = FIELDS[value.field]
        return lambda v, e: v is not None and str(v).lower() == str(other(e)).lower()
    raise Unsupported(f"value type {type(value).__name__} is not supported")


def _string_test(value: st.SigmaString) -> ValueTest:
    cased = isinstance(value, st.SigmaCasedString)
    if not value.contains_special():
        plain = value.to_plain()
        if cased:
            return lambda v, e: v is not None and str(v) == plain
        folded = plain.casefold()
        return lambda v, e: v is not None and str(v).casefold() == folded
    pattern = re.compile(_wildcards(value), 0 if cased else re.IGNORECASE | re.DOTALL)
    return lambda v, e: v is not None and pattern.fullmatch(str(v)) is not None


def _wildcards(value: st.SigmaString) -> str:
    """A Sigma string with `*` and `?` as a regular expression (everything else literal)."""
    out = []
    for part in value.s:
        if part == st.SpecialChars.WILDCARD_MULTI:
            out.append(".*")
        elif part == st.SpecialChars.WILDCARD_SINGLE:
            out.append(".")
        elif isinstance(part, str):
            out.append(re.escape(part))
        else:
            raise Unsupported(f"a placeholder in {value!s} is not supported")
    return "".join(out)


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
