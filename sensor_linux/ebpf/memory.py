"""Give back the memory only BCC's compile needed, once the probes are loaded.

BCC compiles the program in this process with clang and LLVM. Afterwards the sensor kept what
the compile touched: the compiler's freed heap, which glibc holds on to (some 25 MiB), and the
code pages of libLLVM and libclang-cpp it ran through (some 70 MiB), all counted in the
sensor's resident memory for as long as it runs. Nothing calls the compiler again unless the
probes are loaded again, and then the pages come back from the page cache as any code does.

- The heap: glibc's ``malloc_trim(0)`` returns free memory at the heap's top and in its
  middle to the kernel. Without glibc (no ``malloc_trim``) the step is skipped.
- The code: ``madvise(MADV_DONTNEED)`` on the compiler libraries' read-only executable
  mappings (``r-xp``) only. Their pages are never written, so dropping them loses nothing and
  a later call maps them in again from the file; other mappings of those libraries (relocated
  data, read-only after relocation) hold written pages and are left alone.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass

MADV_DONTNEED = 4
# The compiler libraries BCC links (Debian 12: libLLVM-14.so.1, libclang-cpp.so.14).
COMPILER_LIBRARY = re.compile(r"/lib(LLVM|clang)[^/]*\.so[^/]*$")


@dataclass
class Released:
    """What :func:`release_compiler_memory` did."""
    code_mappings: int = 0
    code_bytes: int = 0           # the mappings' size, not only their resident part
    errors: int = 0               # madvise calls the kernel refused


def compiler_code(maps_text: str) -> list[tuple[int, int]]:
    """(start, length) of every ``r-xp`` mapping of a compiler library in a
    ``/proc/PID/maps`` text."""
    found = []
    for line in maps_text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[1] != "r-xp" or not COMPILER_LIBRARY.search(fields[5]):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        found.append((start, end - start))
    return found


def release_compiler_memory(maps_path: str = "/proc/self/maps") -> Released:
    """Trim the heap and drop the compiler libraries' code pages from this process."""
    done = Released()
    libc = ctypes.CDLL(None, use_errno=True)
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim(0)
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    try:
        with open(maps_path) as f:
            mappings = compiler_code(f.read())
    except OSError:
        return done
    for start, length in mappings:
        if madvise(start, length, MADV_DONTNEED) == 0:
            done.code_mappings += 1
            done.code_bytes += length
        else:
            done.errors += 1
    return done
