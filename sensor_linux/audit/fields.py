"""How audit field values are encoded, by field name.

From the Linux audit project's field dictionary (audit-specs ``field-dictionary.csv``): which
fields are hexadecimal, decimal or octal numbers. Every other field is "encoded": a double-quoted
string, an unquoted hex blob (the kernel hex-encodes strings with spaces, quotes or controls),
``(null)``/``?`` for none, or a bare token. Names ending in ``uid``/``gid`` are decimal ids.
"""

HEX = frozenset({
    "arch", "cap_fi", "cap_fp", "cap_fver", "cap_pa", "cap_pe", "cap_pi", "cap_pp", "code",
    "flags", "fi", "fp", "fver", "ioctlcmd", "old_pa", "old_pe", "old_pi", "old_pp", "pa", "pe",
    "pi", "pp", "per", "qbytes",
})

DEC = frozenset({
    "argc", "audit_backlog_limit", "audit_backlog_wait_time", "audit_enabled", "audit_failure",
    "capability", "cap_fe", "changed", "compat", "dport", "enforcing", "entries", "errno", "exit",
    "family", "fd", "fe", "ino", "inode", "ipid", "item", "items", "len", "lport", "list", "major",
    "minor", "nargs", "new-enabled", "new_lock", "new-log_passwd", "nlnk-pid", "old-enabled",
    "old_enforcing", "old_lock", "old-log_passwd", "old_prom", "old-ses", "old_val", "opid",
    "oses", "permissive", "pid", "ppid", "prog-id", "prom", "proto", "res", "rport", "seqno",
    "ses", "sig", "sigev_signo", "spid", "sport", "syscall", "uring_op", "val", "vm-pid",
})

OCT = frozenset({"mode"})

# Fields whose unquoted even-length hex values are hex-encoded strings (the "encoded" format);
# LAUREL also tries hex first for fields the dictionary does not know, and so do we, for
# byte-for-byte compatibility.
NOT_ENCODED = HEX | DEC | OCT
