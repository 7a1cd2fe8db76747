"""Package provenance against a test root holding a copy of this machine's real dpkg database
and real package files, and against the live system."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from common.filehash import FileHasher
from sensor_linux.packages import DpkgIndex, PackageIndex, RpmIndex
from tests.conftest import require, run_cli

REAL_DPKG = "/var/lib/dpkg"


def _real_owner(path: str) -> str:
    out = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True)
    return out.stdout.split(":")[0] if out.returncode == 0 else ""


@pytest.fixture
def root(tmp_path):
    """A root with coreutils' and bash's real database entries and real files, usr-merged."""
    require(os.path.isdir(f"{REAL_DPKG}/info"), "a dpkg system is needed")
    require(os.path.exists(f"{REAL_DPKG}/info/coreutils.list"), "coreutils must be installed")
    dpkg = tmp_path / "var/lib/dpkg"
    (dpkg / "info").mkdir(parents=True)
    shutil.copy(f"{REAL_DPKG}/status", dpkg / "status")
    for package in ("coreutils", "bash"):
        for suffix in (".list", ".md5sums"):
            shutil.copy(f"{REAL_DPKG}/info/{package}{suffix}", dpkg / "info")
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/local/bin").mkdir(parents=True)
    os.symlink("usr/bin", tmp_path / "bin")
    for name in ("ls", "cat", "true", "bash"):
        shutil.copy2(f"/usr/bin/{name}", tmp_path / "usr/bin" / name)
    # Tamper with one packaged file, and add a file no package owns.
    with open(tmp_path / "usr/bin/cat", "ab") as f:
        f.write(b"\0trojan")
    shutil.copy2("/usr/bin/true", tmp_path / "usr/local/bin/tool")
    return tmp_path


def _digests(path):
    return FileHasher().digests(str(path))


def test_verified_modified_and_unpackaged(root) -> None:
    index = DpkgIndex(str(root))
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "coreutils"],
                             capture_output=True, text=True, check=True).stdout
    ls = index.provenance("/usr/bin/ls", _digests(root / "usr/bin/ls"))
    assert (ls.package, ls.version, ls.verified) == ("coreutils", version, True)
    cat = index.provenance("/usr/bin/cat", _digests(root / "usr/bin/cat"))
    assert (cat.package, cat.verified) == ("coreutils", False)
    assert index.provenance("/usr/local/bin/tool", _digests(root / "usr/local/bin/tool")) is None
    # dpkg lists /bin/bash; the kernel reports /usr/bin/bash: the usr-merge alias finds it.
    assert index.owner("/usr/bin/bash") == ("bash", "/bin/bash")
    assert index.provenance("/bin/bash", _digests(root / "usr/bin/bash")).verified is True


def test_index_refreshes_when_the_database_changes(root) -> None:
    index = DpkgIndex(str(root), recheck_seconds=0)
    assert index.owner("/usr/local/bin/tool") is None
    info = root / "var/lib/dpkg/info"
    (info / "localtool.list").write_text("/usr/local/bin/tool\n")
    os.utime(info, ns=(1, os.stat(info).st_mtime_ns + 10**9))  # as dpkg's rename would
    assert index.owner("/usr/local/bin/tool") == ("localtool", "/usr/local/bin/tool")
    assert index.builds == 2
    # A package that recorded no digest for the file: owned, verification unknown.
    assert index.provenance("/usr/local/bin/tool",
                            _digests(root / "usr/local/bin/tool")).verified is None


def test_remembered_answers_follow_the_digests_and_a_changed_database(root) -> None:
    """PackageIndex remembers answers by path and digests: the same path with other contents
    is asked again, and an answer is forgotten when the database is re-indexed."""
    index = PackageIndex(str(root))
    index.indexes[0].recheck_seconds = 0
    ls, cat = _digests(root / "usr/bin/ls"), _digests(root / "usr/bin/cat")
    for _ in range(2):
        assert index.provenance("/usr/bin/ls", ls).verified is True
        assert index.provenance("/usr/bin/ls", cat).verified is False  # not what dpkg shipped
        assert index.provenance("/usr/local/bin/tool", _digests(root / "usr/bin/true")) is None
    info = root / "var/lib/dpkg/info"
    (info / "localtool.list").write_text("/usr/local/bin/tool\n")
    os.utime(info, ns=(1, os.stat(info).st_mtime_ns + 10**9))
    found = index.provenance("/usr/local/bin/tool", _digests(root / "usr/bin/true"))
    assert found is not None and found.package == "localtool"


def test_whatis_command_on_the_test_root(root) -> None:
    paths = [str(root / "usr/bin/ls"), str(root / "usr/bin/cat"), str(root / "usr/local/bin/tool")]
    result = run_cli("whatis", "--json", "--root", str(root), *paths)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in rows] == ["verified", "MODIFIED", "unpackaged"]
    assert rows[0]["package"] == "coreutils" and rows[2]["package"] == ""
    assert rows[0]["sha256"] == FileHasher().digests(paths[0]).sha256
    text = run_cli("whatis", "--root", str(root), paths[1]).stdout
    assert "coreutils" in text and "MODIFIED" in text


def test_whatis_unreadable_file_exits_1() -> None:
    result = run_cli("whatis", "/nonexistent/file")
    assert result.returncode == 1 and "cannot read" in result.stderr


def test_live_system_agrees_with_dpkg_query() -> None:
    require(os.path.isdir(f"{REAL_DPKG}/info"), "a dpkg system is needed")
    index = DpkgIndex()
    for path in ("/usr/bin/ls", "/usr/bin/bash", "/usr/bin/dpkg", "/usr/bin/python3.11"):
        found = index.provenance(path, _digests(path))
        owner = _real_owner(path) or _real_owner(path.replace("/usr/bin/", "/bin/"))
        assert found is not None and found.package == owner.split(":")[0]
        assert found.verified is True


RPM_SPEC = """\
Name: ttptool
Version: 1.2
Release: 3
Summary: ttpsensor provenance test package
License: MIT
%description
A copy of /usr/bin/true and /usr/bin/ls, packaged to test rpm provenance.
%install
mkdir -p %{buildroot}/usr/bin
cp /usr/bin/true %{buildroot}/usr/bin/ttptool
cp /usr/bin/ls %{buildroot}/usr/bin/ttpls
%files
/usr/bin/ttptool
/usr/bin/ttpls
"""


@pytest.fixture
def rpm_root(tmp_path):
    """A root whose rpm database holds a real package built and installed by rpm itself."""
    require(bool(shutil.which("rpmbuild")) and bool(shutil.which("rpm")),
            "rpm and rpmbuild are needed (apt-get install rpm)")
    top = tmp_path / "rpmbuild"
    (top / "SPECS").mkdir(parents=True)
    (top / "SPECS/ttptool.spec").write_text(RPM_SPEC)
    subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {top}",
                    "--define", "__os_install_post %{nil}", "--define", "debug_package %{nil}",
                    "--define", "_build_id_links none", str(top / "SPECS/ttptool.spec")],
                   check=True, capture_output=True)
    [package] = list((top / "RPMS").rglob("*.rpm"))
    root = tmp_path / "root"
    root.mkdir()
    for args in (["--initdb"], ["-i", "--nodeps", "--noscripts", str(package)]):
        subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", *args],
                       check=True, capture_output=True)
    return root


def test_rpm_verified_modified_and_unpackaged(rpm_root) -> None:
    index = RpmIndex(str(rpm_root))
    assert index.available
    tool = index.provenance("/usr/bin/ttptool", _digests(rpm_root / "usr/bin/ttptool"))
    assert (tool.package, tool.version, tool.verified, tool.manager) == (
        "ttptool", "1.2-3", True, "rpm")
    with open(rpm_root / "usr/bin/ttpls", "ab") as f:
        f.write(b"tampered")
    assert index.provenance("/usr/bin/ttpls", _digests(rpm_root / "usr/bin/ttpls")).verified \
        is False
    assert index.provenance("/usr/bin/other", None) is None
    # PackageIndex finds the rpm database when there is no dpkg one.
    assert [type(i) for i in PackageIndex(str(rpm_root)).indexes] == [RpmIndex]
    result = run_cli("whatis", "--json", "--root", str(rpm_root),
                     str(rpm_root / "usr/bin/ttptool"), str(rpm_root / "usr/bin/ttpls"))
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["manager"], r["status"]) for r in rows] == [("rpm", "verified"), ("rpm", "MODIFIED")]
