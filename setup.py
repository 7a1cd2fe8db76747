"""The one compiled module: the audit parser's split path and EXECVE typing in C
(sensor_linux/audit/_split.c).

Optional: where it cannot be built (no compiler or Python headers), the install goes on and
the pure-Python path runs, with the same results. TTPSENSOR_PURE_PYTHON=1 leaves it out of
the build (packaging/build.sh makes a wheel for every platform that way, and compiles it for
the Linux packages itself). Everything else is in pyproject.toml.
"""

import os

from setuptools import Extension, setup

SPLIT = Extension("sensor_linux.audit._split", ["sensor_linux/audit/_split.c"], optional=True)

setup(ext_modules=[] if os.environ.get("TTPSENSOR_PURE_PYTHON") else [SPLIT])
