"""Which mappings the eBPF source gives back after its compile (sensor_linux/ebpf/memory.py):
the compiler libraries' code, and nothing else. The live effect is checked in
tests/test_ebpf_live.py (test_the_load_gives_back_the_compilers_memory)."""

from __future__ import annotations

from sensor_linux.ebpf.memory import compiler_code, release_compiler_memory

MAPS = """\
55d0c0000000-55d0c0100000 r--p 00000000 fe:00 123 /usr/bin/python3.11
55d0c0100000-55d0c0400000 r-xp 00100000 fe:00 123 /usr/bin/python3.11
7f0000000000-7f0001000000 r--p 00000000 fe:00 77 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
7f0001000000-7f0005000000 r-xp 01000000 fe:00 77 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
7f0005000000-7f0005100000 r--p 05000000 fe:00 77 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
7f0005100000-7f0005200000 rw-p 05100000 fe:00 77 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
7f0006000000-7f0007000000 r-xp 00400000 fe:00 78 /usr/lib/llvm-14/lib/libclang-cpp.so.14 (deleted)
7f0008000000-7f0008100000 r-xp 00000000 fe:00 79 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0009000000-7f0009100000 r-xp 00000000 fe:00 80 /opt/a dir with spaces/libLLVMish/tool.so
7f000a000000-7f000a100000 rw-p 00000000 00:00 0
7f000b000000-7f000b001000 r-xp 00000000 fe:00 81 /usr/lib/x86_64-linux-gnu/libbcc.so.0.26.0
"""


def test_only_the_compiler_libraries_code_is_chosen() -> None:
    assert compiler_code(MAPS) == [(0x7f0001000000, 0x4000000), (0x7f0006000000, 0x1000000)]


def test_nothing_to_release_is_no_error(tmp_path) -> None:
    maps = tmp_path / "maps"
    maps.write_text(MAPS.splitlines()[0] + "\n")
    done = release_compiler_memory(str(maps))
    assert (done.code_mappings, done.code_bytes, done.errors) == (0, 0, 0)
    assert release_compiler_memory(str(tmp_path / "gone")).code_mappings == 0
