"""The audit path's shortcuts for the usual records give what the general code gives.

Each shortcut (the usual EXECVE's arguments, a PROCTITLE without empty arguments, a SYSCALL
argument as the kernel writes it, a PATH record's facts remembered by its text) is compared
with the code it stands in for, on the usual inputs and on the edge cases around them.
"""

from __future__ import annotations

import random

from common.pipeline import Keeper
from sensor_linux.audit import laurel
from sensor_linux.audit.decode import execve_argv, whole_args
from sensor_linux.audit.events import AuditEventBuilder
from sensor_linux.audit.pipeline import AuditDecoder
from sensor_linux.audit.records import EXECVE, SYSCALL, Hex, ParseError, field_value, parse
from sensor_linux.enrich import Enricher

EXECVE_BODIES = [
    b'argc=3 a0="ls" a1="-l" a2="/tmp"',                      # the usual record
    b'argc=1 a0=(null)',                                      # a NULL argument
    b'argc=2 a0="ls" a1=2D6C0A',                               # hex-encoded
    b'argc=4 a0="ls" a1="-l"',                                 # fewer than argc (cut)
    b'argc=1 a0="ls" a1="-l"',                                 # more than argc
    b'argc=2 a1="-l" a0="ls"',                                 # out of order
    b'argc=2 a0="ls" a1_len=4 a1[0]=2D6C a1[1]=2D61',          # an argument in chunks
    b'argc=0',
    b'a0="ls" argc=1',                                         # argc not first
    b'argc=x a0="ls"',                                         # argc not a number
    b'argc=2 a0="ls" a01="-l"',                                # a key that is no index
]


def _execve(body: bytes):
    return parse(b"type=EXECVE msg=audit(1.002:3): " + body)


def test_whole_arguments_read_as_the_general_argv_reader_reads_them() -> None:
    taken = 0
    for body in EXECVE_BODIES:
        fields = _execve(body).body
        # An iterator is not a list: execve_argv then reads it the general way.
        assert execve_argv(list(fields)) == execve_argv(iter(fields)), body
        taken += whole_args(fields) is not None
    assert taken == 4  # the shortcut takes the first three and argc=0, declines the rest
    assert whole_args(_execve(b"argc=0").body) == []


def test_the_usual_execve_renders_as_the_general_laurel_code_renders_it(monkeypatch) -> None:
    shortcut = [laurel.LaurelRenderer()._execve([_execve(body)]) for body in EXECVE_BODIES]
    monkeypatch.setattr(laurel, "whole_args", lambda body: None)
    general = [laurel.LaurelRenderer()._execve([_execve(body)]) for body in EXECVE_BODIES]
    assert shortcut == general
    assert shortcut[0] == ['"argc":3', '"ARGV":["ls","-l","/tmp"]']


def _proctitle_by_byte(value: bytes) -> list[bytes]:
    """LAUREL's split, a byte at a time: a NUL ends the argument only if it is not empty (an
    empty argument's NUL becomes part of the next one)."""
    argv: list[bytes] = []
    current = b""
    for byte in value:
        if byte == 0 and current:
            argv.append(current)
            current = b""
        else:
            current += bytes([byte])
    if current:
        argv.append(current)
    return argv


def test_proctitle_splits_as_laurel_splits_it() -> None:
    rng = random.Random(7)
    values = [b"", b"\0", b"a", b"a\0", b"a\0b", b"a\0b\0", b"a\0\0b", b"\0a", b"\0\0"]
    values += [bytes(rng.choice(b"ab\0") for _ in range(rng.randrange(12)))
               for _ in range(3000)]
    for value in values:
        assert laurel.laurel_proctitle_argv(value) == _proctitle_by_byte(value), value


def test_a_syscall_argument_renders_as_its_typed_value_does() -> None:
    line = b"type=SYSCALL msg=audit(1.002:3): a0=0"
    for raw in (b"0", b"7fa078303500", b"ffffffffffffffff", b"00", b"0a", b"7FA0", b"1" * 17,
                b"", b"xyz", b"-1", b"(null)", b'"q"'):
        value = field_value(SYSCALL, "a0", raw, line)
        general = '"0x%x"' % value if type(value) is Hex else laurel._value(value)
        assert laurel._syscall_arg(b"a0=" + raw, line) == general, raw


def test_path_facts_remembered_by_text_are_those_of_the_record() -> None:
    lines = [b'type=PATH msg=audit(1.002:%d): item=0 name="/bin/ls" inode=12 dev=fe:01 '
             b'mode=0100755' % serial for serial in (3, 4)]
    lines += [b'type=PATH msg=audit(1.002:5): item=0 name="/bin/ls" inode=13 dev=fe:01',
              b'type=PATH msg=audit(1.002:6): item=0 name=(null) inode=12 dev=zz:01',
              b'type=PATH msg=audit(1.002:7): item=0 name="/bin/ls" inode=12 dev=fe:01  ']
    builder = AuditEventBuilder(Enricher(live=False))
    for line in lines:
        record = parse(line)
        first, again = builder._path_facts(record), builder._path_facts(parse(line))
        assert first == again
        dev = record.get("dev")
        major, _, minor = dev.partition(b":")
        try:
            device = __import__("os").makedev(int(major, 16), int(minor, 16))
        except ValueError:
            device = None
        inode = record.get("inode")
        assert first == (None if device is None else (device, inode), record.get("name"))
    assert len(builder._paths) == 4  # the two texts of inode 12 on fe:01 differ by a space


def test_an_exec_of_many_execve_records_reads_its_arguments_whole() -> None:
    """An argument in chunks over two EXECVE records: the general reader joins them."""
    decoder = AuditDecoder(Keeper(None))
    text = (b'type=SYSCALL msg=audit(1.002:3): arch=c000003e syscall=59 success=yes exit=0 '
            b'items=1 ppid=1 pid=2 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 '
            b'comm="x" exe="/bin/x"\n'
            b'type=EXECVE msg=audit(1.002:3): argc=2 a0="x" a1_len=4 a1[0]=2D6C\n'
            b'type=EXECVE msg=audit(1.002:3): a1[1]=2D61\n'
            b'type=EOE msg=audit(1.002:3): \n')
    items = [item for line in text.splitlines(keepends=True) for item in decoder.decode(line)]
    assert [r.rtype for r in items[0].records].count(EXECVE) == 2
    facts = AuditEventBuilder(Enricher(live=False)).exec_facts(items[0], items[0].records[0])
    assert facts.args == ["x", "-l-a"]


def test_an_enriched_record_takes_the_split_path_and_reads_as_the_general_parser() -> None:
    """auditd's ENRICHED format (its default) puts \\x1d before the names it adds: a separator
    as a space is. Such records go the split path (the general one costs several times more)
    and read the same; a \\x1d inside a quoted value is declined."""
    from sensor_linux.audit.fuzz import parsers_disagree
    line = (b'type=SYSCALL msg=audit(1615114232.375:15558): arch=c000003e syscall=59 '
            b'success=yes exit=0 a0=63b2 items=2 ppid=10883 pid=10884 auid=1000 uid=0 '
            b'comm="whoami" exe="/usr/bin/whoami" key=(null)\x1dARCH=x86_64 SYSCALL=execve '
            b'AUID="user" UID="root"\n')
    record = parse(line)
    assert record.is_plain and parsers_disagree(line) is None
    assert record.get("SYSCALL") == b"execve" and record.get("key") is None
    assert record.values(("AUID", "pid")) == [b"user", 10884]
    for odd in (line.replace(b'"whoami"', b'"who\x1dami"'), line.replace(b"x86_64", b"x86\x1d64"),
                line.replace(b"\x1dARCH", b"\x1d\x1d ARCH"), line.rstrip(b"\n") + b"\x1d"):
        assert parsers_disagree(odd) is None, odd
    assert not parse(line.replace(b'"whoami"', b'"who\x1dami"')).is_plain


SYSCALL_HEAD = (b"arch=c000003e syscall=59 success=yes exit=0 a0=55d1 a1=55d2 a2=55d3 a3=8 "
                b"items=2 ppid=%s pid=%s ")
SYSCALL_TAILS = [
    b'auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts1 ses=3 '
    b'comm="ls" exe="/usr/bin/ls" key=(null)',
    b'auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) '
    b'ses=4294967295 comm="true" exe="/usr/bin/true" key="exec"',
    # auditd's ENRICHED part: more fields after the kernel's
    b'auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 '
    b'comm="id" exe="/usr/bin/id" key=(null)\x1dARCH=x86_64 SYSCALL=execve AUID="root" '
    b'UID="root"',
    # an image deleted while it ran (a value with a space is hex-encoded)
    b'auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 '
    b'comm="x" exe=' + b"/tmp/x (deleted)".hex().upper().encode() + b' key=(null)',
    # an id missing, an id repeated (the first wins), an id that is not a number
    b'auid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 comm="a" '
    b'exe="/a" key=(null)',
    b'auid=0 uid=5 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=ttyS0 ses=1 '
    b'comm="b" exe="/b"',
    b'auid=x uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=-1 '
    b'comm=(null) exe=(null)',
    b'',
]
# The first tail again with one field changed at a time: a tail is remembered whole.
SYSCALL_TAILS += [b" ".join((part[:-1] + b'1"' if part.endswith(b'"') else part + b"1")
                            if n == changed else part
                            for n, part in enumerate(SYSCALL_TAILS[0].split(b" ")))
                  for changed in range(len(SYSCALL_TAILS[0].split(b" ")))]
SYSCALL_PIDS = [(b"1", b"2"), (b"0", b"77"), (b"-1", b"x"), (b"9" * 19, b"0012"),
                (b"(null)", b"?")]


def _syscall_lines() -> list[bytes]:
    """SYSCALL records: the kernel's head with unusual pids before each tail, heads not in the
    kernel's layout, and every SYSCALL record of the corpus."""
    from tests.test_audit_corpus import CORPUS
    lines = []
    for n, tail in enumerate(SYSCALL_TAILS):
        for ppid, pid in SYSCALL_PIDS:
            lines.append(b"type=SYSCALL msg=audit(1.002:%d): " % n + SYSCALL_HEAD % (ppid, pid)
                         + tail)
        body = (SYSCALL_HEAD % (b"1", b"2") + tail).split(b" ")
        body[9], body[10] = body[10], body[9]  # pid before ppid: not the kernel's layout
        lines.append(b"type=SYSCALL msg=audit(1.002:%d): " % n + b" ".join(body))
        lines.append(b"type=SYSCALL msg=audit(1.002:%d): items=2 ppid=1 pid=2 " % n + tail)
    for path in sorted(CORPUS.glob("**/*.txt")):
        lines += [line for line in path.read_bytes().splitlines()
                  if line.startswith(b"type=SYSCALL ") or b" type=SYSCALL " in line[:40]]
    return lines


def test_syscall_facts_remembered_after_the_head_are_those_of_the_record() -> None:
    """AuditEventBuilder._facts reads pid and ppid from the kernel's head and remembers the
    rest by the text after it: for every record it must give what reading each field gives
    (no head), the first time and when remembered."""
    import types

    from sensor_linux.audit.events import _kernel_head

    lines = _syscall_lines()
    assert len(lines) > 80
    audit = types.SimpleNamespace(sec=1, msec=2)
    builder = AuditEventBuilder(Enricher(live=False))
    remembered = [[builder._facts(audit, record, _kernel_head(record))
                   for record in map(parse, lines)] for _ in range(2)]
    assert builder._stable, "no record took the remembered path"
    general = [AuditEventBuilder(Enricher(live=False))._facts(audit, parse(line), None)
               for line in lines]
    for line, first, again, want in zip(lines, *remembered, general):
        assert first == want, line
        assert again == want, line


def test_syscall_name_and_outcome_read_from_the_head_are_those_of_the_record() -> None:
    """The system call's name remembered by the text of arch and syscall, and success read at
    its place, give what reading the fields gives: known and unknown numbers (then auditd's
    ENRICHED name), another architecture, and success written other ways."""
    from sensor_linux.audit.events import _enriched_name, _kernel_head, _known_name, _succeeded

    def read_from_fields(record) -> str | None:  # noqa: ANN001 - what _name stands in for
        return _known_name(record) or _enriched_name(record)

    variants = []
    for line in _syscall_lines():
        variants.append(line)
        for old, new in ((b"syscall=59 ", b"syscall=999 "), (b"syscall=59 ", b"syscall=56 "),
                         (b"arch=c000003e ", b"arch=40000003 "),
                         (b"arch=c000003e ", b"arch=zz "),
                         (b"success=yes ", b"success=no "),
                         (b"success=yes ", b'success="yes" '),
                         (b"success=yes ", b"success=796573 ")):
            if old in line:
                variants.append(line.replace(old, new))
    variants.append(b"type=SYSCALL msg=audit(1.002:3): arch=c000003e syscall=999 success=yes "
                    b"exit=0 pid=1\x1dARCH=x86_64 SYSCALL=frobnicate")
    builder = AuditEventBuilder(Enricher(live=False))
    for _ in range(2):  # the second time remembered
        for line in variants:
            record = parse(line)
            head = _kernel_head(record)
            assert builder._name(record, head) == read_from_fields(record), line
            assert _succeeded(record, head) == (record.get("success") == b"yes"), line
    assert builder._names
    assert {read_from_fields(parse(v)) for v in variants} >= {
        "execve", "clone", "frobnicate", None}


def test_rule_key_and_exit_read_from_the_head_are_those_of_the_record() -> None:
    """The audit map's rule key is remembered by the text after the kernel's head, and an
    exec's exit code read at its place in the head: both must be what reading the field
    gives, for every SYSCALL record of the corpus and for keys and exit codes written other
    ways (quoted, hex, null, absent; negative, large), the first time and when remembered."""
    from common.percent import as_text
    from sensor_linux.audit.events import _EXIT, _head_decimal, _kernel_head

    def key_of(record) -> str | None:  # noqa: ANN001 - what _rule_key stands in for
        key = record.get("key")
        return as_text(key) if isinstance(key, bytes) else None

    variants = []
    for line in _syscall_lines():
        variants.append(line)
        for old, new in ((b"key=(null)", b'key="software_mgmt"'), (b"key=(null)", b"key=6B6579"),
                         (b"key=(null)", b""), (b"exit=0 ", b"exit=-2 "),
                         (b"exit=0 ", b"exit=1234567890123456789 ")):
            if old in line:
                variants.append(line.replace(old, new))
    # (a variant of a made-up line may not parse: "key=(null)1" becomes garbage)
    variants = [v for v in variants if _parses(v)]
    builder = AuditEventBuilder(Enricher(live=False))
    heads = 0
    for _ in range(2):  # the second time remembered
        for line in variants:
            record = parse(line)
            head = _kernel_head(record)
            assert builder._rule_key(record, head) == key_of(record), line
            if head is not None:
                heads += 1
                assert _head_decimal(head[_EXIT], record) == record.get("exit"), line
    assert heads and builder._keys
    assert {key_of(parse(v)) for v in variants} >= {"software_mgmt", "key", None}
    assert {parse(v).get("exit") for v in variants} >= {0, -2, 1234567890123456789}


def _parses(line: bytes) -> bool:
    try:
        parse(line).get("exit")
    except ParseError:
        return False
    return True


def test_the_kernels_syscall_layout_is_checked_by_its_own_pattern_and_split_alike() -> None:
    """A SYSCALL body in the kernel's layout is checked by records._KERNEL_SYSCALL instead of
    _PLAIN. It must take the usual records (RAW and ENRICHED, from the corpus and from the
    kernel's layouts above), and whatever it takes, _PLAIN must take with the same parts:
    checked on those bodies and on random changes of them."""
    from sensor_linux.audit.fuzz import parsers_disagree
    from sensor_linux.audit.records import _KERNEL_SYSCALL, _split_plain, _split_syscall
    bodies = [line.split(b"): ", 1)[1].rstrip(b"\r\n").replace(b"\x1d", b" ")
              for line in _syscall_lines() if b"): " in line]
    taken = [body for body in bodies if _KERNEL_SYSCALL.fullmatch(body)]
    assert len(taken) >= 20 and any(b" ARCH=" in body for body in taken)
    rng = random.Random(314)
    odd = [b" ", b"  ", b'"', b"'", b"{", b"}", b"\t", b"\n", b"=", b"subj=", b"SADDR=", b"a",
           b"Z", b"-", b"(", b"\x1d", b"\x00", b"\xff", b"[1]", b"0"]
    changed = 0
    for _ in range(20000):
        body = bytearray(rng.choice(taken))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(body) + 1)
            if rng.random() < 0.3 and at < len(body):
                del body[at:at + rng.randint(1, 4)]
            else:
                body[at:at] = rng.choice(odd)
        body = bytes(body)
        if _KERNEL_SYSCALL.fullmatch(body):
            changed += 1
            assert _split_plain(body) == _split_syscall(body) == tuple(body.split()), body
            line = b"type=SYSCALL msg=audit(1.002:3): " + body
            assert parsers_disagree(line) is None, line
        else:
            assert _split_syscall(body) == _split_plain(body), body
    assert changed > 400  # the changes it still takes were compared, not only the declined


def test_syscall_arguments_and_a_proctitle_of_the_execs_arguments_render_as_in_general(
        monkeypatch) -> None:
    """Two shortcuts of the LAUREL renderer: SYSCALL's a0-a3 taken at their places in the
    kernel's layout (and remembered), and PROCTITLE's ARGV taken from the EXECVE arguments it
    joins. Every event of the corpus, of the kernel layouts above, and of records changed
    where the shortcuts could go wrong (an argument after the head or out of place, an empty
    argument, a title that differs by a byte, a PROCTITLE before its EXECVE, one renderer for
    the whole stream) renders as with both shortcuts off."""
    from sensor_linux.audit.assemble import Assembler
    from tests.test_audit_corpus import CORPUS
    streams = [path.read_bytes() for path in sorted(CORPUS.rglob("*.txt"))]
    execs = []
    for n, (args, title) in enumerate([
            ([b"ls", b"-l"], b"ls\0-l"), ([b"ls", b""], b"ls\0"), ([b"ls", b"-l"], b"ls\0-L"),
            ([b"", b"x"], b"\0x"), ([b"a"], b"a\0"), ([b"a b", b"c"], b"a b\0c"),
            ([b"x"] * 3, b"x\0x\0x"), ([b"ls"], b"ls")]):
        stamp = b"msg=audit(1.%03d:%d): " % (n, n + 1)
        head = (b"arch=c000003e syscall=59 success=yes exit=0 a0=%x a1=55d2 a2=55d3 a3=8 "
                b"items=1 ppid=1 pid=%d " % (n % 3, n))
        tails = [b"", b"a4=9 ", b"a0=77 "]
        execve = b"argc=%d " % len(args) + b" ".join(  # quoted as the kernel does, or hex
            b"a%d=%s" % (i, a.hex().upper().encode() if b" " in a else b'"%s"' % a)
            for i, a in enumerate(args))
        records = [b"type=SYSCALL " + stamp + head + tails[n % 3] + b'comm="x" exe="/x" key=(null)',
                   b"type=EXECVE " + stamp + execve,
                   b"type=PROCTITLE " + stamp + b"proctitle=" + title.hex().upper().encode(),
                   b"type=EOE " + stamp]
        if n in (2, 7):
            records[1], records[2] = records[2], records[1]  # PROCTITLE first
        execs.append(b"\n".join(records) + b"\n")
    moved = execs[0].replace(b"arch=c000003e syscall=59", b"syscall=59 arch=c000003e")
    streams += [b"".join(execs), moved, b"\n".join(_syscall_lines()) + b"\n"]

    def rendered(stream: bytes, renderer) -> list[str]:
        assembler = Assembler()
        events = [e for line in stream.splitlines(keepends=True) if line.strip()
                  for e in _added(assembler, line)] + assembler.flush()
        return [renderer(event) for event in events]

    shared = laurel.LaurelRenderer()  # one renderer for every stream, as a long replay has
    with_shortcuts = [rendered(stream, shared) for stream in streams]
    original = laurel.LaurelRenderer._execve

    def execve_forgetting(self, records):  # noqa: ANN001, ANN202
        members = original(self, records)
        self._argv = None  # no title takes the arguments' strings
        return members
    monkeypatch.setattr(laurel.LaurelRenderer, "_execve", execve_forgetting)
    monkeypatch.setattr(laurel, "in_kernel_layout", lambda parts: False)
    general = laurel.LaurelRenderer()
    without = [rendered(stream, general) for stream in streams]
    assert with_shortcuts == without
    assert sum(map(len, without)) > 100


def _added(assembler, line: bytes) -> list:
    from sensor_linux.audit.records import ParseError
    try:
        return assembler.add(parse(line))
    except ParseError:
        return []


def test_the_laurel_renderers_memories_stay_bounded_and_render_as_without_limits(
        monkeypatch) -> None:
    """Every memory of the renderer (members, SYSCALL members and arguments, whole records)
    starts a new generation when full: with tiny limits over the whole corpus, none holds
    more than its limit and every line is what a renderer with the usual limits writes."""
    from sensor_linux.audit.assemble import Assembler
    from tests.test_audit_corpus import CORPUS
    events = []
    for path in sorted(CORPUS.rglob("*.txt")):
        assembler = Assembler()
        events += [e for line in path.read_bytes().splitlines(keepends=True) if line.strip()
                   for e in _added(assembler, line)] + assembler.flush()
    usual = laurel.LaurelRenderer()
    expected = [usual(event) for event in events]
    monkeypatch.setattr(laurel, "MAX_REMEMBERED", 3)
    monkeypatch.setattr(laurel, "MAX_RECORDS", 2)
    bounded, lines = laurel.LaurelRenderer(), []
    for event in events:
        lines.append(bounded(event))
        assert len(bounded._members) <= 3 and len(bounded._syscall_members) <= 3
        assert len(bounded._arguments) <= 3 and len(bounded._records) <= 2
    assert lines == expected and len(events) > 100
    assert len(usual._members) > 3 and len(usual._records) > 2  # the limits were reached


def test_texts_decoded_together_are_each_as_text_alone() -> None:
    """as_texts (an event's records and arguments in one pass) gives what as_text gives each,
    also when one of them is not UTF-8 (then every one is looked at alone)."""
    from common.percent import as_text, as_texts
    rng = random.Random(7)
    pieces = [b"", b"/bin/true", "é".encode(), b"\xff\xfe", b"a\x00b", "\udcff".encode(
        "utf-8", "surrogatepass"), None]
    for _ in range(2000):
        values = [rng.choice(pieces) for _ in range(rng.randrange(0, 6))]
        assert as_texts(values) == [None if v is None else as_text(v) for v in values]
        assert [type(t) for t in as_texts(values)] == \
            [type(None if v is None else as_text(v)) for v in values]


def test_a_record_of_the_split_path_is_the_record_init_makes() -> None:
    """parse's split path sets every slot as Record.__init__ does (a slot added to one and not
    the other fails here)."""
    from sensor_linux.audit.records import SPLIT_TYPES, Record, split_record_python
    line = (b"type=SYSCALL msg=audit(1700000000.123:42): arch=c000003e syscall=59 "
            b"success=yes exit=0 a0=1 a1=2 a2=3 a3=4 items=1 ppid=1 pid=2 comm=\"x\"\n")
    split = split_record_python(line, SPLIT_TYPES)
    assert split is not None
    fast = parse(line)
    rtype, sec, msec, serial, plain, parts = split
    made = Record(None, rtype, sec, msec, serial, None, line, plain, parts)
    for slot in Record.__slots__:
        assert getattr(fast, slot) == getattr(made, slot), slot
    assert fast.body == made.body and fast.get("pid") == 2
