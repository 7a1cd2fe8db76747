"""The other way to evaluate Sigma: rules converted to SQL by pySigma's SQLite backend
(pySigma-backend-sqlite, installed with the test extras) and run over a table of events with
one column per Sigma field, as Zircolite does.

Not used at ingest: it is the second, independent evaluator the differential test compares our
rule set with, and the alternative `bench ingest --sigma` measures beside it (a frame of
events inserted into an in-memory table, every rule's query run over it).
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any, Iterable

from collector.sigma.fields import FIELDS


def queries(rule_texts: Iterable[str]) -> list[tuple[str, str]]:
    """(rule title, SQL selecting the matching rows' ``n``) for each rule's each query."""
    from sigma.backends.sqlite import sqliteBackend
    from sigma.collection import SigmaCollection
    backend = sqliteBackend()
    out = []
    for text in rule_texts:
        for rule in SigmaCollection.from_yaml(text).rules:
            out += [(rule.title, query.replace("SELECT *", "SELECT n", 1))
                    for query in backend.convert_rule(rule)]
    return out


def event_table() -> sqlite3.Connection:
    """An in-memory table ``logs`` (n, one column per Sigma field). Columns are COLLATE
    NOCASE, as Sigma compares case-insensitively (SQLite folds ASCII only); REGEXP is
    Python's ``re.search``, which the backend leaves to the connection."""
    db = sqlite3.connect(":memory:")
    db.create_function("regexp", 2, lambda pattern, value: value is not None
                       and re.search(pattern, str(value)) is not None, deterministic=True)
    columns = ", ".join(f'"{name}" COLLATE NOCASE' for name in FIELDS)
    db.execute(f"CREATE TABLE logs (n INTEGER PRIMARY KEY, {columns})")
    return db


def fill(db: sqlite3.Connection, events: list[dict[str, Any]]) -> None:
    """The table holds ``events`` (row ``n`` is ``events[n]``), and nothing else."""
    db.execute("DELETE FROM logs")
    db.executemany(f"INSERT INTO logs VALUES (?, {', '.join('?' * len(FIELDS))})",
                   [(n, *(get(event) for get in FIELDS.values()))
                    for n, event in enumerate(events)])


def selected(db: sqlite3.Connection, sql: str) -> set[int]:
    return {n for (n,) in db.execute(sql)}
