"""Property tests for the invariants of docs/ttphash.md §7."""

from __future__ import annotations

import copy
import json
import random

import jcs  # two independent RFC 8785 implementations, as peers
import rfc8785
from hypothesis import HealthCheck, given, settings, strategies as st

from common import ecs, ttphash
from common.schema import get_path, set_path

text = st.text(st.characters(codec="utf-8"), max_size=20)
raw = st.one_of(text, st.binary(max_size=20))
maybe = lambda s: st.one_of(st.none(), s)  # noqa: E731
hexdigest = st.text("0123456789abcdefABCDEF", min_size=64, max_size=64)


def _event(provider: str, os_type: str, process: dict, parent: dict) -> dict:
    """The envelope both platforms' generated events share."""
    return {
        "schema": 1, "@timestamp": "2026-01-01T00:00:00.000000Z",
        "event": {"id": "e", "action": "process_create", "provider": provider},
        "host": {"name": "h", "os": {"type": os_type}},
        "process": {**process, "parent": parent},
    }


@st.composite
def linux_events(draw) -> dict:
    def process(parent: bool) -> dict:
        p = {
            "pid": draw(st.integers(1, 2**22)),
            "executable": draw(maybe(raw)),
            "args": draw(maybe(st.lists(raw, max_size=5))),
            "real_user": {"id": str(draw(st.integers(0, 65535))), "name": draw(maybe(text))},
            "user": {"id": str(draw(st.integers(0, 65535))), "name": draw(maybe(text))},
            "hash": {"sha256": draw(maybe(hexdigest))},
            "on_disk": draw(maybe(st.booleans())),
            "start": "2026-01-01T00:00:00.000000Z",
        }
        if parent:
            p["running"] = draw(maybe(st.booleans()))
        else:
            p["package"] = {"name": draw(maybe(text))}
        return p

    return _event("auditd", "linux", process(False), process(True))


@st.composite
def windows_events(draw) -> dict:
    def process(parent: bool) -> dict:
        p = {
            "pid": draw(st.integers(1, 2**22)),
            "user": {"sid": draw(maybe(text))},
            "kernel_image_name": draw(maybe(text)),
            "pe": {"original_file_name": draw(maybe(text)), "imphash": draw(maybe(hexdigest))},
            "executable": draw(maybe(text)),
            "command_line": draw(maybe(text)),
            "hash": {"sha256": draw(maybe(hexdigest))},
            "integrity_level": draw(maybe(st.sampled_from(["Low", "Medium", "High"]))),
            "on_disk": draw(maybe(st.booleans())),
            "code_signature": {"digest": draw(maybe(hexdigest))},
            "module_count": draw(st.integers(0, 500)),
        }
        if parent:
            p["name"] = draw(maybe(text))
            p["running"] = draw(maybe(st.booleans()))
        return p

    return _event("etw", "windows", process(False), process(True))


events = st.one_of(linux_events(), windows_events())
VOLATILE = ["@timestamp", "event.id", "event.original_id", "host.name", "host.id",
            "process.pid", "process.start", "process.parent.pid", "process.parent.start",
            "process.module_count", "process.parent.module_count", "process.entity_id",
            "process.parent.event_id", "process.working_directory"]
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(events, st.lists(st.tuples(st.sampled_from(VOLATILE), st.text(max_size=8)), max_size=6))
def test_volatile_fields_never_change_the_hash(event: dict, changes: list) -> None:
    before = ttphash.compute(event).value
    other = copy.deepcopy(event)
    for path, value in changes:
        set_path(other, path, value)
    assert ttphash.compute(other).value == before


def _stable_sources(event: dict) -> list[tuple[str, object]]:
    """(our path, a replacement value) for every source of a stable TTPHash member."""
    linux = event["host"]["os"]["type"] == "linux"
    own = ttphash.LINUX_PROCESS if linux else ttphash.WINDOWS_PROCESS
    par = ttphash.LINUX_PARENT if linux else ttphash.WINDOWS_PARENT
    out = []
    for prefix, table in (("process", own), ("process.parent", par)):
        for name, paths, _ in table:
            out.append((f"{prefix}.{paths[0]}", name))
    return out


def _different(value: object, member: str) -> object:
    if isinstance(value, bool):
        return not value
    if value is None:
        return True if member.startswith("is") else ["x"] if member == "Argv" else "X"
    if isinstance(value, list):
        return value + ["extra"]
    if isinstance(value, bytes):
        return value + b"\xff"
    return "Z" + str(value) if member in ("sha256", "Imphash", "AuthenticodeHash") else str(
        value) + "\x01z"


@SETTINGS
@given(events, st.data())
def test_changing_any_stable_field_changes_the_hash(event: dict, data) -> None:
    path, member = data.draw(st.sampled_from(_stable_sources(event)))
    before = ttphash.compute(event)
    other = copy.deepcopy(event)
    old = get_path(other, path)
    if path.endswith("real_user.name") or path.endswith("user.name"):
        # Names fall back to ids when null: change both so the member really changes.
        set_path(other, path.rsplit(".", 1)[0] + ".id", "424242")
    set_path(other, path, _different(old, member))
    after = ttphash.compute(other)
    assert after.input != before.input
    assert after.value != before.value


@SETTINGS
@given(events, st.randoms(use_true_random=False), st.sampled_from([None, 0, 2, 5]))
def test_key_order_and_white_space_of_json_input_never_matter(event: dict, rnd: random.Random,
                                                              indent) -> None:
    def shuffled(node):
        if isinstance(node, dict):
            items = list(node.items())
            rnd.shuffle(items)
            return {k: shuffled(v) for k, v in items}
        if isinstance(node, list):
            return [shuffled(v) for v in node]
        return node

    line = ecs.render(event)
    reordered = json.dumps(shuffled(json.loads(line)), indent=indent, ensure_ascii=rnd.random() < .5)
    a = ttphash.compute(ecs.parse(json.loads(line)))
    b = ttphash.compute(ecs.parse(json.loads(reordered)))
    assert a.canonical == b.canonical
    assert a.value == ttphash.compute(event).value


@SETTINGS
@given(events)
def test_canonical_bytes_agree_with_independent_jcs_implementations(event: dict) -> None:
    hash_input = ttphash.build_input(event)
    ours = ttphash.canonical_bytes(hash_input)
    assert ours == jcs.canonicalize(hash_input)
    assert ours == rfc8785.dumps(hash_input)


@SETTINGS
@given(st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp", "Co", "Lo",
                                                         "So", "Po"]), max_size=30))
def test_canonical_escapes_of_any_text_agree_with_rfc8785(value: str) -> None:
    hash_input = {"TTPHashVersion": 1, "Commandline": value, "Argv": [value, None, ""]}
    assert ttphash.canonical_bytes(hash_input) == rfc8785.dumps(hash_input)


def test_lone_surrogate_is_a_hash_error_not_a_crash() -> None:
    import pytest
    with pytest.raises(ttphash.TTPHashError, match="not valid Unicode"):
        ttphash.canonical_bytes({"Commandline": "a\ud800"})


@SETTINGS
@given(events, st.data())
def test_an_unknown_stable_field_makes_the_hash_incomplete(event: dict, data) -> None:
    path, _ = data.draw(st.sampled_from(_stable_sources(event)))
    other = copy.deepcopy(event)
    set_path(other, path, None)
    if path.endswith("user.name"):
        set_path(other, path.rsplit(".", 1)[0] + ".id", None)  # no name and no id
    assert ttphash.compute(other).complete is False


def test_a_fully_known_event_is_complete() -> None:
    proc = {"executable": "/bin/x", "args": ["x"], "real_user": {"id": "0"}, "user": {"id": "0"},
            "hash": {"sha256": "A" * 64}, "on_disk": True}
    event = {"host": {"os": {"type": "linux"}},
             "process": dict(proc, package={"name": ""}, parent=dict(proc, running=False))}
    assert ttphash.compute(event).complete is True


def test_the_memo_gives_what_compute_gives_and_tells_values_of_another_type_apart() -> None:
    """ttphash.Memo remembers hashes by the raw values they come from: every answer must be
    compute()'s own, for repeated events, changed fields, and values equal in Python but
    normalized differently (1 and True, a list and its elements' types)."""
    from common.bench import varied_events
    events = varied_events(120)
    memo = ttphash.Memo(max_entries=200)
    for event in events + events[:60]:  # the second pass hits
        assert memo.compute(event) == ttphash.compute(event)
    assert memo.hits >= 60
    small = ttphash.Memo(max_entries=50)
    for event in events + events:  # evicting all along
        assert small.compute(event) == ttphash.compute(event)
    assert len(small._known) == 50
    memo = ttphash.Memo()
    base = events[0]
    variants = []
    # Text and null stand in the key as themselves, other values with their type; a tuple
    # (which a typed part would look like) has no key at all.
    for change in ({"on_disk": 1}, {"on_disk": True}, {"args": [1]}, {"args": [True]},
                   {"args": ["1"]}, {"pid": 99}, {"executable": "/usr/bin/x"},
                   {"executable": b"/usr/bin/x"}, {"executable": None},
                   {"on_disk": (bool, True)}, {"args": ("a",)}, {"args": [None, b"a"]}):
        event = copy.deepcopy(base)
        event["process"].update(change)
        variants.append(event)
    for event in variants + variants:
        _assert_memo_agrees(memo, event)


def test_the_memo_keys_nested_values_by_type_as_compute_reads_them() -> None:
    """The memo keys a process map by whole values packed with their types (real_user, not
    real_user.name): values a packer could confuse (0, 0.0, False and "0"; NaN and null; text
    and bytes; a str subclass; an int past 64 bits; a lone surrogate; the same map in
    another order) must each get compute()'s answer or its error, in either order, for the
    process and for its parent."""
    from common.bench import varied_events
    base = varied_events(1)[0]
    values = (0, 0.0, False, "0", None, float("nan"), 2 ** 70, -1, "\ud800",
              type("Text", (str,), {})("root"), "root", b"root", ["root"], ("root",))
    places = (("real_user", "id"), ("real_user", "name"), ("hash", "sha256"),
              ("package", "name"))
    variants = []
    for where in ("process", "parent"):
        for outer, inner in places:
            for value in values:
                event, target = _copy_with_side(base, where)
                target[outer] = dict(target.get(outer) or {}, **{inner: value})
                variants.append(event)
        for args in (["a", "b"], ("a", "b"), ["a", b"b"], [type("Text", (str,), {})("a"), "b"]):
            event, target = _copy_with_side(base, where)
            target["args"] = args
            variants.append(event)
        event, target = _copy_with_side(base, where)
        target["real_user"] = dict(reversed(list((target.get("real_user") or {"id": 1,
                                                                          "name": "x"}).items())))
        variants.append(event)
    for order in (variants, variants[::-1]):
        memo = ttphash.Memo()
        for event in order + order:
            _assert_memo_agrees(memo, event)


def _copy_with_side(event: dict, where: str) -> tuple[dict, dict]:
    """A deep copy of ``event`` and, in it, its process map or (``where == "parent"``) its
    parent map, made when it has none."""
    copied = copy.deepcopy(event)
    process = copied["process"]
    return copied, process if where == "process" else process.setdefault("parent", {})


def _assert_memo_agrees(memo: ttphash.Memo, event: dict) -> None:
    """The memo's answer for ``event`` is compute()'s, or the same error."""
    import pytest
    try:
        want = ttphash.compute(event)
    except ttphash.TTPHashError:
        with pytest.raises(ttphash.TTPHashError):
            memo.compute(event)
        return
    assert memo.compute(event) == want


def test_the_memo_refuses_unhashable_list_items_as_compute_does_also_of_a_subclass() -> None:
    """The memo's key checks the item types of a list once per distinct type: a dict or list
    subclass inside args (an OrderedDict, a list subclass) must still go to compute() and give
    its TTPHashError, not a TypeError from hashing the key."""
    import collections

    import pytest

    from common.bench import varied_events
    base = varied_events(1)[0]
    memo = ttphash.Memo()
    odd_list = type("OddList", (list,), {})
    for args in (["a", collections.OrderedDict(k=1)], [odd_list(["x"])], ["a", ["b"]],
                 [collections.OrderedDict()]):
        event = copy.deepcopy(base)
        event["process"]["args"] = args
        with pytest.raises(ttphash.TTPHashError):
            ttphash.compute(event)
        with pytest.raises(ttphash.TTPHashError):
            memo.compute(event)


def test_the_memo_normalizes_a_parent_once_and_never_mixes_parents_up() -> None:
    """A miss of the whole hash reuses the parent's part when the parent's raw values were seen
    before: children of one parent, one child under parents that differ in one field, a parent
    with nothing stable (hashes as no parent), and no parent must all be compute()'s answer."""
    from common.bench import varied_events
    events = varied_events(40)
    parent = events[0]["process"]["parent"]
    variants = []
    for number, event in enumerate(events):
        child = copy.deepcopy(event)
        child["process"]["parent"] = copy.deepcopy(parent)  # one parent, many children
        variants.append(child)
        for change in ({"args": ["sh", "-c", f"x{number}"]}, {"on_disk": False},
                       {"running": None}, {"executable": None}):
            other = copy.deepcopy(child)
            other["process"]["parent"].update(change)
            variants.append(other)
    bare = copy.deepcopy(events[1])
    bare["process"]["parent"] = {"pid": 7}
    orphan = copy.deepcopy(events[1])
    orphan["process"].pop("parent", None)
    variants += [bare, orphan]
    memo = ttphash.Memo(max_entries=30)
    for event in variants + variants[::-1]:
        assert memo.compute(event) == ttphash.compute(event)
    assert len(memo._parents) <= 30 and len(memo._known) <= 30


def test_children_of_one_table_entry_hash_as_compute_says_whatever_the_parent_state() -> None:
    """process_create hands the memo the parent's table entry, whose values are read once
    for all its children: each child's hash must still be compute()'s, when the parent is
    seen running and not (a platform that checks), when a platform adds fields to the parent
    (Windows' fixed names), and for a parent replaced by a new exec of the same pid."""
    from common.bench import varied_events
    from common.process_event import process_create
    from common.proctable import Entry, ProcessTable

    class Flipping:
        """A platform that sees the parent running, then gone, then running..."""
        def __init__(self) -> None:
            self.calls = 0

        def running(self, entry: Entry) -> bool:
            self.calls += 1
            return self.calls % 2 == 1

        def unknown(self, ppid: int, child_start: float | None) -> None:
            return None

    events = varied_events(30)
    host = {"name": "h", "os": {"type": "linux"}}
    table = ProcessTable()
    memo = ttphash.Memo()
    platform = Flipping()
    parent_pid = 4000
    made = []
    for number, event in enumerate(events[:2] * 20):  # children that repeat: the memo hits
        if number % 10 == 0:  # a new exec of the parent's pid: another image
            image = copy.deepcopy(events[10 + number // 10]["process"])
            table.record(Entry(parent_pid, 1.0, image))
        process = {k: v for k, v in copy.deepcopy(event["process"]).items() if k != "parent"}
        extra = {"executable": "/opt/fixed/parent"} if number % 3 == 0 else None
        made.append(process_create(table, host, "test", process, pid=100 + number,
                                   start_key=2.0, ppid=parent_pid, parents=platform,
                                   memo=memo, record=False, parent_fields=extra))
    assert table.get(parent_pid).hash_parts.keys() == {True, False}
    for event in made:
        value = event.pop("ttphash")
        assert value == ttphash.compute(event).as_field()
        assert event["process"]["parent"]["running"] in (True, False)
    assert memo.hits > 0


@given(st.text())
def test_ascii_upper_changes_a_to_z_only_whatever_the_text(value: str) -> None:
    """The ASCII shortcut (str.upper of ASCII text) gives what a table of a-z gives."""
    table = {code: code - 32 for code in range(ord("a"), ord("z") + 1)}
    assert ttphash.ascii_upper(value) == value.translate(table)
    ascii_text = value.encode("ascii", "ignore").decode("ascii")
    assert ttphash.ascii_upper(ascii_text) == ascii_text.translate(table)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(linux_events(), st.lists(maybe(st.lists(st.one_of(raw, st.none()), max_size=5)),
                                min_size=1, max_size=6))
def test_the_memo_gives_compute_s_answer_for_every_command_line_of_a_known_rest(
        event: dict, command_lines: list) -> None:
    """A new command line of a known binary, user and parent takes the memo's remembered
    rest (everything but Argv, normalized and serialized once) and Argv alone: the answer
    must be compute()'s, bytes, input and completeness, or compute()'s error; also for
    Argv lost (null), with lost items, bytes, "%" and text no codec writes."""
    memo = ttphash.Memo()
    for args in [event["process"]["args"], *command_lines, "\ud800 lone"]:
        changed = copy.deepcopy(event)
        changed["process"]["args"] = [args] if isinstance(args, str) else args
        _assert_memo_agrees(memo, changed)
    # Another rest (a field but Argv changed) is never mixed up with the first.
    other = copy.deepcopy(event)
    other["process"]["on_disk"] = not event["process"]["on_disk"]
    other["process"]["args"] = ["after", "a", "change"]
    assert memo.compute(other) == ttphash.compute(other)
