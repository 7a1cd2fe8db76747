#!/usr/bin/python3.11 -I
# ttpsensor's launcher (installed as /usr/bin/@NAME@). The sensor's Python packages live in a
# private directory built from PyPI wheels for CPython 3.11; the system's own packages stay
# visible after it (python3-bpfcc, for the eBPF source). -I: no PYTHONPATH, no user site.
import sys

sys.path.insert(0, "/usr/lib/ttpsensor/site-packages")
from @MODULE@ import @FUNCTION@  # noqa: E402

sys.exit(@FUNCTION@())
