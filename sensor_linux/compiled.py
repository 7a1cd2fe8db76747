"""Which compiled modules run: the one choice between each C module (setup.py) and its
pure-Python twin, made the same way for all of them.

A module is used when it was built, unless TTPSENSOR_PURE_PYTHON is set (to run and test the
pure-Python paths on a host that has both; the benchmarks say which path they measured).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def compiled(name: str) -> ModuleType | None:
    """The compiled module ``name``, or None where it is not built or not wanted."""
    if os.environ.get("TTPSENSOR_PURE_PYTHON"):
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
