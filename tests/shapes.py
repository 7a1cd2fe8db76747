"""Everyday exec shapes, each marked by an argument of its own, for the source-parity tests.

Every exec the workload makes carries a marker ``ttps-<token>-<shape>`` as one whole argument,
so its events can be found in a sensor's output on a busy machine without knowing its pid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

NOBODY = 65534


@dataclass
class Shapes:
    token: str
    root: Path
    # shape -> how many exec events carry its marker (a script through env is two execs)
    expected: dict[str, int] = field(default_factory=dict)

    def marker(self, shape: str) -> str:
        return f"ttps-{self.token}-{shape}"


def _as_nobody() -> None:
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def run_shapes() -> Shapes:
    """Run each shape once; return the markers. Files live in a directory every user can
    read (the set-uid shape runs as nobody)."""
    shapes = Shapes(uuid.uuid4().hex[:10], Path(tempfile.mkdtemp(prefix="ttps-shapes-")))
    root = shapes.root
    os.chmod(root, 0o755)
    true = os.path.realpath("/bin/true")
    (root / "bin").mkdir()
    shutil.copy(true, root / "bin" / "prog")
    (root / "link").symlink_to(true)
    script = root / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script_arg = root / "script-arg.sh"
    script_arg.write_text("#!/bin/sh -e\nexit 0\n")
    env_script = root / "env-script.sh"
    env_script.write_text("#!/usr/bin/env sh\nexit 0\n")
    for path in (script, script_arg, env_script):
        path.chmod(0o755)
    setuid = root / "setuid-true"
    shutil.copy(true, setuid)
    os.chown(setuid, 0, 0)
    setuid.chmod(0o4755)
    other = Path(tempfile.mkdtemp(prefix="ttps-cwd-"))  # a cwd that is neither root nor ours

    def run(shape: str, argv: list[str], events: int = 1, **kwargs) -> None:
        shapes.expected[shape] = events
        subprocess.run(argv + [shapes.marker(shape)], check=True, stdout=subprocess.DEVNULL,
                       **kwargs)

    run("absolute", [true])
    run("relative", ["./bin/prog"], cwd=root)
    run("symlink", [str(root / "link")], cwd=other)
    run("script", [str(script)], cwd=other)
    run("script-arg", [str(script_arg)])
    run("env-script", [str(env_script)], events=2)      # env, then sh found through PATH
    run("setuid", [str(setuid)], preexec_fn=_as_nobody, cwd=root)
    # execvp's PATH walk: two misses (ENOENT, ENOTDIR), then the exec.
    (root / "afile").write_text("")
    run("path-walk", ["true"], env={"PATH": f"{root}/missing:{root}/afile:/usr/bin:/bin"})
    # fexecve: execveat(fd, "", AT_EMPTY_PATH); the kernel names it /dev/fd/N.
    marker = shapes.marker("fexecve")
    shapes.expected["fexecve"] = 1
    subprocess.run([sys.executable, "-c", "import os; fd = os.open('/bin/true', os.O_RDONLY); "
                    f"os.execve(fd, ['true', {marker!r}], {{}})"], check=True)
    # A parent that exits right after its child's exec. (Not at once: posix_spawn returns
    # when the child's old memory is released, midway through its exec, so a parent that
    # exits then may be gone before the exec completes, and the kernel names the adopter.)
    marker = shapes.marker("orphan")
    shapes.expected["orphan"] = 1
    subprocess.run([sys.executable, "-c", "import os, time; os.posix_spawn('/bin/sh', "
                    f"['sh', '-c', 'sleep 0.3', {marker!r}], {{}}); time.sleep(0.1); "
                    "os._exit(0)"], check=True)
    shutil.rmtree(other)
    return shapes


def cleanup(shapes: Shapes) -> None:
    shutil.rmtree(shapes.root, ignore_errors=True)


def events_of(events: list[dict], shapes: Shapes) -> dict[str, list[dict]]:
    """Successful exec events by shape, in stream order."""
    out: dict[str, list[dict]] = {shape: [] for shape in shapes.expected}
    for event in events:
        if event["event"]["action"] != "process_create" or \
                event["event"].get("outcome") != "success":
            continue
        args = event["process"].get("args") or []
        for shape in shapes.expected:
            if shapes.marker(shape) in args:
                out[shape].append(event)
    return out
