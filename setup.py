"""The compiled modules.

Two are C, each for one narrow step of a hot path, each with a pure-Python twin that gives the
same results: the audit parser's split path and EXECVE typing (sensor_linux/audit/_split.c),
and the eBPF exec record's decoding (sensor_linux/ebpf/_decode.c).

On request only (TTPSENSOR_CYTHON=1, with Cython installed and no build isolation:
packaging/dev/bootstrap.sh does both), the hot paths' own Python modules too, compiled by
Cython as they are written (common/compiled.py lists them): the same source, run without the
interpreter's dispatch. Not by default: issue 14 allows compiled code for one narrow step.

Optional: where they cannot be built (no compiler, no Python headers), the install goes on and
the source runs. TTPSENSOR_PURE_PYTHON=1 leaves them all out of the build (packaging/build.sh
makes a wheel for every platform that way, and compiles the C ones for the Linux packages
itself). Everything else is in pyproject.toml.
"""

import os
import runpy

from setuptools import Extension, setup

# common/compiled.py lists the compiled modules (it imports nothing of the project).
LISTED = runpy.run_path(os.path.join("common", "compiled.py"))


def c_modules() -> list[Extension]:
    """The C modules, each from the ``.c`` file of its name."""
    return [Extension(name, [LISTED["source_path"](name, ".c")], optional=True)
            for name in LISTED["C_MODULES"]]


def cython_modules() -> list[Extension]:
    """common/compiled.py's hot modules as extensions, when TTPSENSOR_CYTHON=1 asks for them."""
    if os.environ.get("TTPSENSOR_CYTHON") != "1":
        return []
    from Cython.Build import cythonize  # asked for: an ImportError says what is missing
    modules = [Extension(name, [LISTED["source_path"](name)], optional=True)
               for name in LISTED["CYTHON_MODULES"]]
    # The generated C goes to build/, out of the tree.
    return cythonize(modules, compiler_directives=LISTED["CYTHON_DIRECTIVES"],
                     build_dir=os.path.join("build", "cython"), quiet=True)


setup(ext_modules=[] if os.environ.get("TTPSENSOR_PURE_PYTHON")
      else [*c_modules(), *cython_modules()])
