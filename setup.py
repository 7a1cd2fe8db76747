"""The two compiled modules, each for one narrow step of a hot path, each with a pure-Python
twin that gives the same results: the audit parser's split path and EXECVE typing
(sensor_linux/audit/_split.c), and the eBPF exec record's decoding
(sensor_linux/ebpf/_decode.c).

Optional: where they cannot be built (no compiler or Python headers), the install goes on and
the pure-Python paths run. TTPSENSOR_PURE_PYTHON=1 leaves them out of the build
(packaging/build.sh makes a wheel for every platform that way, and compiles them for the Linux
packages itself). Everything else is in pyproject.toml.
"""

import os

from setuptools import Extension, setup

SPLIT = Extension("sensor_linux.audit._split", ["sensor_linux/audit/_split.c"], optional=True)
DECODE = Extension("sensor_linux.ebpf._decode", ["sensor_linux/ebpf/_decode.c"], optional=True)

setup(ext_modules=[] if os.environ.get("TTPSENSOR_PURE_PYTHON") else [SPLIT, DECODE])
