"""Which compiled code runs: the C modules beside their pure-Python twins, and the hot paths'
modules that Cython compiles on request, as they are written.

The C modules (setup.py: the audit parser's split path, the eBPF record decoding) are used
where they were built, unless TTPSENSOR_PURE_PYTHON is set (to run and test the pure-Python
twins on a host that has both; the benchmarks say which path they measured): :func:`compiled`.

``TTPSENSOR_CYTHON=1`` at install (setup.py, packaging/dev/bootstrap.sh) asks for the hot
modules (:data:`CYTHON_MODULES`); it is not the default, as issue 14 allows compiled code for
one narrow step (docs/overhead.md has what it buys: a quarter of the eBPF pipeline's CPU, a
sixth of the audit path's). Each stays the Python you read and test: Cython turns the same
source into a C extension that does the same steps without the interpreter's dispatch between
them, so no second implementation is kept in step. Where they are not built (the default, no
compiler, Windows), Python runs the sources, and ``tests/test_compiled_modules.py`` builds them
as the request does and checks that both give the same bytes on every recorded input.

Python imports an extension module before a source file of the same name, so an extension
built from an older source would hide an edit: :func:`module_state` names those *stale*, the
test suite refuses to start while there is one (``tests/conftest.py``), and
``packaging/dev/bootstrap.sh`` rebuilds whenever one of these sources changes (and removes
them when they are not asked for).

This module imports nothing of the project: ``setup.py`` and the build scripts read the list
with ``runpy`` before anything is installed.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
from types import ModuleType


def compiled(name: str) -> ModuleType | None:
    """The C module ``name``, or None where it is not built or TTPSENSOR_PURE_PYTHON is set."""
    if os.environ.get("TTPSENSOR_PURE_PYTHON"):
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# The C modules, each a narrow step with a pure-Python twin (setup.py builds them from the
# ``.c`` file of the same name): the audit parser's split path and EXECVE typing, the eBPF
# record's decoding.
C_MODULES: tuple[str, ...] = ("sensor_linux.audit._split", "sensor_linux.ebpf._decode")

# The modules of the hot paths (sources, assembly, enrichment, fingerprint, renderers, sinks),
# by import name. The CLI, the collector and the Windows twin stay source: they are not per
# event on Linux, or the MSI ships source anyway.
CYTHON_MODULES: tuple[str, ...] = (
    "common.ecs",
    "common.percent",
    "common.pipeline",
    "common.process_event",
    "common.proctable",
    "common.schema",
    "common.sinks",
    "common.ttphash",
    "sensor_linux.attempts",
    "sensor_linux.enrich",
    "sensor_linux.image",
    "sensor_linux.procfs",
    "sensor_linux.audit.assemble",
    "sensor_linux.audit.decode",
    "sensor_linux.audit.events",
    "sensor_linux.audit.fields",
    "sensor_linux.audit.laurel",
    "sensor_linux.audit.lines",
    "sensor_linux.audit.pipeline",
    "sensor_linux.audit.records",
    "sensor_linux.ebpf.events",
)

# How Cython reads them: Python 3 semantics, and type annotations left as documentation (with
# them as C types, an ``int`` argument would refuse a bool and a ``float`` one would round).
CYTHON_DIRECTIVES: dict[str, object] = {"language_level": 3, "annotation_typing": False}


def source_path(module: str, suffix: str = ".py") -> str:
    """The source file of ``module`` relative to the project's root (``.c`` for a C module)."""
    return module.replace(".", "/") + suffix


def module_state(modules: tuple[str, ...] = CYTHON_MODULES) -> dict[str, list[str]]:
    """Which of ``modules`` this process would import compiled, which as source, and which
    compiled but *stale* (the extension is older than the source beside it), found without
    importing them."""
    state: dict[str, list[str]] = {"compiled": [], "source": [], "stale": []}
    for module in modules:
        spec = importlib.util.find_spec(module)
        origin = spec.origin if spec is not None and spec.origin else ""
        if not isinstance(spec.loader if spec else None, importlib.machinery.ExtensionFileLoader):
            state["source"].append(module)
            continue
        state["compiled"].append(module)
        source = os.path.join(os.path.dirname(origin), module.rsplit(".", 1)[-1] + ".py")
        try:
            if os.stat(source).st_mtime_ns > os.stat(origin).st_mtime_ns:
                state["stale"].append(module)
        except OSError:
            pass  # an installation without sources: nothing to be out of date with
    return state


def summary() -> str:
    """``"21 of 21"``: how many of the hot modules run compiled (the sensors' summaries)."""
    state = module_state()
    stale = f", {len(state['stale'])} stale" if state["stale"] else ""
    return f"{len(state['compiled'])} of {len(CYTHON_MODULES)}{stale}"
