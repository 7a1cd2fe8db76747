"""Regenerate sensor_linux/audit/msgtypes.py from the installed libaudit.

The names are the ones auditd itself writes in ``type=`` (libaudit's audit_msg_type_to_name),
so the parser and the LAUREL renderer agree with auditd's output. Run on Debian 12 with
libaudit1 installed: ``python3 packaging/dev/gen_msgtypes.py > sensor_linux/audit/msgtypes.py``.
"""

import ctypes
import ctypes.util

lib = ctypes.CDLL(ctypes.util.find_library("audit") or "libaudit.so.1")
lib.audit_msg_type_to_name.restype = ctypes.c_char_p
lib.audit_msg_type_to_name.argtypes = [ctypes.c_int]
names = {}
for number in range(1000, 3000):
    name = lib.audit_msg_type_to_name(number)
    if name:
        names[number] = name.decode()

print('"""Audit record types: number <-> name, as auditd writes them (generated; see')
print('packaging/dev/gen_msgtypes.py, from libaudit 1:3.0.9 on Debian 12)."""')
print()
print("NAMES: dict[int, str] = {")
for number, name in sorted(names.items()):
    print(f"    {number}: {name!r},")
print("}")
print()
print("NUMBERS: dict[str, int] = {name: number for number, name in NAMES.items()}")
