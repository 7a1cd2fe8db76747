"""Package provenance: which distribution package owns a file, and is it still as shipped.

:class:`PackageIndex` asks every package manager present on a root (dpkg, then rpm).

The dpkg database (``var/lib/dpkg/info/*.list`` for ownership, ``*.md5sums`` for the digests
dpkg recorded at install, ``status`` for versions) is indexed once and re-indexed when it changes.
Lookups go through usr-merge aliases (``/bin`` -> ``/usr/bin``), because the kernel reports the
canonical ``/usr/bin/ls`` while dpkg may still list ``/bin/ls``. The index can be rooted anywhere,
so tests point it at a copy of a real database.

The rpm database is read through the ``rpm`` command (its on-disk format is a private sqlite or
Berkeley DB of binary headers; the command is the supported reader), with ``--root`` and an
explicit ``--dbpath`` so a test root or a host's real database is what gets read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from common.filehash import FileDigests, FileHasher

DPKG_DIR = "var/lib/dpkg"
USRMERGE_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
DEFAULT_RECHECK_SECONDS = 5.0


@dataclass(frozen=True)
class Provenance:
    """Ownership of one file. ``verified`` is None when the package recorded no digest."""

    package: str
    version: str | None
    verified: bool | None
    manager: str = "dpkg"

    def as_field(self) -> dict[str, object]:
        field: dict[str, object] = {"name": self.package, "verified": self.verified}
        if self.version is not None:
            field["version"] = self.version
        return field


UNPACKAGED_FIELD = {"name": "", "verified": None}


class _RefreshingIndex:
    """An index rebuilt when its database changes, checked at most every ``recheck_seconds``.
    Subclasses say how to stamp the database (``_db_stamp``) and how to build (``_build``)."""

    def __init__(self, recheck_seconds: float) -> None:
        self.recheck_seconds = recheck_seconds
        self._stamp: object = None
        self._checked = 0.0
        self.builds = 0

    def _db_stamp(self) -> object:
        raise NotImplementedError

    def _build(self) -> None:
        raise NotImplementedError

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and self.builds and now - self._checked < self.recheck_seconds:
            return
        self._checked = now
        stamp = self._db_stamp()
        if force or not self.builds or stamp != self._stamp:
            self._build()
            self.builds += 1
            self._stamp = stamp


class DpkgIndex(_RefreshingIndex):
    """Path -> owning package for a root file system (``/`` by default)."""

    def __init__(self, root: str = "/", recheck_seconds: float = DEFAULT_RECHECK_SECONDS) -> None:
        super().__init__(recheck_seconds)
        self.root = root
        self.dpkg = os.path.join(root, DPKG_DIR)
        self._owners: dict[str, str] = {}
        self._versions: dict[str, str] = {}
        self._md5: dict[str, dict[str, str]] = {}   # package -> path -> md5, loaded lazily
        self._aliases: list[tuple[str, str]] = []

    @property
    def available(self) -> bool:
        return os.path.isdir(os.path.join(self.dpkg, "info"))

    def _db_stamp(self) -> tuple[int, int] | None:
        try:
            info = os.stat(os.path.join(self.dpkg, "info")).st_mtime_ns
            status = os.stat(os.path.join(self.dpkg, "status")).st_mtime_ns
        except OSError:
            return None
        return info, status

    def _build(self) -> None:
        owners: dict[str, str] = {}
        info = os.path.join(self.dpkg, "info")
        try:
            names = os.listdir(info)
        except OSError:
            names = []
        for name in names:
            if not name.endswith(".list"):
                continue
            package = name[:-5]
            with open(os.path.join(info, name), "rb") as f:
                for raw in f:
                    path = raw.rstrip(b"\n").decode("utf-8", "surrogateescape")
                    # Directories are listed by many packages; the first owner is as good as any.
                    owners.setdefault(path, package)
        self._owners = owners
        self._versions = self._read_versions()
        self._md5 = {}
        self._aliases = [
            (f"/{d}/", f"/usr/{d}/") for d in USRMERGE_DIRS
            if os.path.realpath(os.path.join(self.root, d))
            == os.path.realpath(os.path.join(self.root, "usr", d))
            and os.path.islink(os.path.join(self.root, d))]

    def _read_versions(self) -> dict[str, str]:
        versions: dict[str, str] = {}
        package = arch = None
        try:
            f = open(os.path.join(self.dpkg, "status"), encoding="utf-8", errors="replace")
        except OSError:
            return versions
        with f:
            for line in f:
                if line.startswith("Package: "):
                    package, arch = line[9:].strip(), None
                elif line.startswith("Architecture: "):
                    arch = line[14:].strip()
                elif line.startswith("Version: ") and package:
                    version = line[9:].strip()
                    versions.setdefault(package, version)
                    if arch:
                        versions[f"{package}:{arch}"] = version
        return versions

    def _candidates(self, path: str) -> list[str]:
        paths = [path]
        for short, full in self._aliases:
            if path.startswith(full):
                paths.append(short + path[len(full):])
            elif path.startswith(short):
                paths.append(full + path[len(short):])
        return paths

    def owner(self, path: str) -> tuple[str, str] | None:
        """``(package, path as dpkg lists it)`` or None when no package owns ``path``."""
        self.refresh()
        for candidate in self._candidates(path):
            package = self._owners.get(candidate)
            if package is not None:
                return package, candidate
        return None

    def recorded_md5(self, package: str, listed_path: str) -> str | None:
        sums = self._md5.get(package)
        if sums is None:
            sums = {}
            try:
                with open(os.path.join(self.dpkg, "info", f"{package}.md5sums"), "rb") as f:
                    for raw in f:
                        digest, _, rel = raw.rstrip(b"\n").partition(b"  ")
                        sums["/" + rel.decode("utf-8", "surrogateescape")] = digest.decode()
            except OSError:
                pass
            self._md5[package] = sums
        return sums.get(listed_path)

    def provenance(self, path: str | bytes, digests: FileDigests | None) -> Provenance | None:
        """Owner of ``path`` and whether the file as it ran matches dpkg's recorded MD5."""
        if isinstance(path, bytes):
            path = path.decode("utf-8", "surrogateescape")
        found = self.owner(path)
        if found is None:
            return None
        package, listed = found
        recorded = self.recorded_md5(package, listed)
        verified = (None if recorded is None or digests is None
                    else recorded.upper() == digests.md5)
        name = package.split(":", 1)[0]  # "libc6:amd64" -> "libc6"
        version = self._versions.get(package) or self._versions.get(name)
        return Provenance(name, version, verified)


# rpm's FILEDIGESTALGO values (PGP hash algorithm ids) for the digests FileDigests holds.
_RPM_DIGEST_ALGO = {1: "md5", 2: "sha1", 8: "sha256"}
RPM_DB_PATHS = ("usr/lib/sysimage/rpm", "var/lib/rpm")
_RPM_QUERY = ("[%{FILENAMES}\t%{FILEDIGESTS}\t%{=FILEDIGESTALGO}\t%{=NAME}\t"
              "%{=VERSION}-%{=RELEASE}\n]")


class RpmIndex(_RefreshingIndex):
    """Path -> owning rpm package, with the per-file digest rpm recorded."""

    def __init__(self, root: str = "/", recheck_seconds: float = DEFAULT_RECHECK_SECONDS,
                 rpm: str = "rpm") -> None:
        super().__init__(recheck_seconds)
        self.root = root
        self.rpm = shutil.which(rpm)
        self.dbpath = next((p for p in RPM_DB_PATHS
                            if os.path.isdir(os.path.join(root, p))
                            and any(n.startswith(("rpmdb", "Packages"))
                                    for n in os.listdir(os.path.join(root, p)))), None)
        self._files: dict[str, tuple[str, str, str, int]] = {}  # path -> (pkg, ver, digest, algo)

    @property
    def available(self) -> bool:
        return self.rpm is not None and self.dbpath is not None

    def _db_stamp(self) -> int:
        directory = os.path.join(self.root, self.dbpath or "")
        return max((os.stat(os.path.join(directory, n)).st_mtime_ns
                    for n in os.listdir(directory)), default=0)

    def _build(self) -> None:
        out = subprocess.run(
            [str(self.rpm), "--root", os.path.abspath(self.root), "--dbpath", "/" + str(self.dbpath),
             "-qa", "--qf", _RPM_QUERY], capture_output=True, check=True, timeout=300).stdout
        files: dict[str, tuple[str, str, str, int]] = {}
        for line in out.splitlines():
            parts = line.split(b"\t")
            if len(parts) != 5:
                continue
            path, digest, algo, name, version = parts
            files.setdefault(path.decode("utf-8", "surrogateescape"),
                             (name.decode(), version.decode(), digest.decode().upper(),
                              int(algo or 0)))
        self._files = files

    def provenance(self, path: str | bytes, digests: FileDigests | None) -> Provenance | None:
        if isinstance(path, bytes):
            path = path.decode("utf-8", "surrogateescape")
        self.refresh()
        found = self._files.get(path)
        if found is None:
            return None
        name, version, recorded, algo = found
        ours = getattr(digests, _RPM_DIGEST_ALGO.get(algo, ""), None) if digests else None
        verified = None if not recorded or ours is None else recorded == ours
        return Provenance(name, version, verified, manager="rpm")


class PackageIndex:
    """Every package manager present on ``root``, asked in turn (dpkg first). Answers are
    remembered by path and digests until an index is rebuilt: a host runs the same binaries
    again and again, and each answer is a few look-ups and the decoding of a path."""

    def __init__(self, root: str = "/", max_entries: int = 4096) -> None:
        candidates: list[DpkgIndex | RpmIndex] = [DpkgIndex(root), RpmIndex(root)]
        self.indexes = [index for index in candidates if index.available]
        self.max_entries = max_entries
        self._known: OrderedDict[tuple[str | bytes, FileDigests | None], Provenance | None] = \
            OrderedDict()
        self._builds: tuple[int, ...] = ()

    @property
    def available(self) -> bool:
        return bool(self.indexes)

    def provenance(self, path: str | bytes, digests: FileDigests | None) -> Provenance | None:
        for index in self.indexes:
            index.refresh()
        builds = tuple(index.builds for index in self.indexes)
        if builds != self._builds:  # a package was installed, removed or upgraded
            self._known.clear()
            self._builds = builds
        key = (path, digests)
        if key in self._known:
            return self._known[key]
        found = None
        for index in self.indexes:
            found = index.provenance(path, digests)
            if found is not None:
                break
        self._known[key] = found
        if len(self._known) > self.max_entries:
            self._known.popitem(last=False)
        return found


def describe_file(path: str, index: "PackageIndex", hasher: FileHasher,
                  root: str = "/") -> dict[str, Any]:
    """``ttpsensor whatis``: a file's digests, owning package and verdict (``status``:
    verified, MODIFIED, no recorded digest, unpackaged, or no package database). ``path`` is
    a file under ``root``, whose package database is ``index``. OSError when unreadable."""
    report: dict[str, Any] = {"path": path}
    digests = hasher.digests(path)
    report.update(digests.as_field())
    inside = os.path.abspath(path)
    root_abs = os.path.abspath(root)
    if root_abs != "/":
        inside = "/" + os.path.relpath(inside, root_abs)
    found = index.provenance(inside, digests) if index.available else None
    if not index.available:
        report["package"] = None
        status = "no package database"
    elif found is None:
        report["package"] = ""
        status = "unpackaged"
    else:
        report.update(package=found.package, manager=found.manager, version=found.version,
                      verified=found.verified)
        status = {True: "verified", False: "MODIFIED",
                  None: "no recorded digest"}[found.verified]
    report["status"] = status
    return report
