"""`make packages`: the .deb, .rpm and .msi built from this tree, inspected, linted, and the .deb
installed into a fresh Debian 12 root, used, and purged.

The build runs once per session (it downloads wheels from PyPI and takes minutes). Every check
uses the distributions' own tools: dpkg-deb, rpm, lintian, rpmlint, systemd-analyze, msiinfo,
msiextract, mmdebstrap, dpkg.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from common.compiled import CYTHON_MODULES
from tests.compare_outputs import renumber
from tests.conftest import require

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
DEB = ROOT / "dist" / f"ttpsensor_{VERSION}_amd64.deb"
RPM = ROOT / "dist" / f"ttpsensor-{VERSION}.x86_64.rpm"
MSI = ROOT / "dist" / f"ttpsensor-{VERSION}-x64.msi"
CORPUS = ROOT.parent / "shared" / "corpus" / "laurel" / "record-execve.txt"

pytestmark = pytest.mark.packages


def _run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def packages() -> dict[str, Path]:
    require(os.geteuid() == 0, "building and installing packages needs root")
    for tool in ("make", "dpkg-deb", "rpmbuild"):
        require(shutil.which(tool) is not None, f"{tool} is needed (bootstrap.sh test installs it)")
    for old in (DEB, RPM, MSI):
        old.unlink(missing_ok=True)
    built = _run("make", "packages", cwd=ROOT, timeout=1800)
    assert built.returncode == 0, built.stderr[-4000:]
    for path in (DEB, RPM, MSI):
        assert path.is_file() and path.stat().st_size > 1_000_000, path
    return {"deb": DEB, "rpm": RPM, "msi": MSI}


def test_deb_metadata_and_contents(packages) -> None:
    info = _run("dpkg-deb", "-I", str(packages["deb"]), check=True).stdout
    assert f"Version: {VERSION}" in info and "Architecture: amd64" in info
    depends = _run("dpkg-deb", "-f", str(packages["deb"]), "Depends", check=True).stdout
    assert "python3.11" in depends and "adduser" in depends
    suggests = _run("dpkg-deb", "-f", str(packages["deb"]), "Suggests", check=True).stdout
    assert "python3-bpfcc" in suggests                       # BCC: optional, for --source ebpf
    listing = _run("dpkg-deb", "-c", str(packages["deb"]), check=True).stdout.splitlines()
    entries = {line.split()[-1].lstrip("."): line for line in listing}
    for path in ("/usr/bin/ttpsensor", "/usr/bin/ttpsensor-audisp",
                 "/lib/systemd/system/ttpsensor.service",
                 "/lib/systemd/system/ttpsensor-collector.service",
                 "/etc/ttpsensor/config.toml", "/etc/audit/plugins.d/ttpsensor.conf",
                 "/usr/lib/ttpsensor/site-packages/common/cli.py",
                 "/usr/lib/ttpsensor/site-packages/sensor_linux/audit/"
                 "_split.cpython-311-x86_64-linux-gnu.so",     # the C split path
                 "/usr/lib/ttpsensor/site-packages/sensor_linux/ebpf/"
                 "_decode.cpython-311-x86_64-linux-gnu.so",    # the eBPF record decoding
                 "/usr/share/doc/ttpsensor/copyright"):
        assert path in entries, path
    assert all(" root/root " in line for line in listing)
    assert entries["/etc/audit/plugins.d/ttpsensor.conf"].startswith("-rw-r-----")
    assert entries["/usr/bin/ttpsensor"].startswith("-rwxr-xr-x")
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in entries)
    assert not any("/site-packages/bin/" in p for p in entries)   # build-host interpreter paths
    work = Path(_run("mktemp", "-d").stdout.strip())
    try:
        _run("dpkg-deb", "-e", str(packages["deb"]), str(work), check=True)
        conffiles = (work / "conffiles").read_text().split()
        assert set(conffiles) == {"/etc/ttpsensor/config.toml", "/etc/ttpsensor/audisp.toml",
                                  "/etc/ttpsensor/collector.toml",
                                  "/etc/audit/plugins.d/ttpsensor.conf"}
        postinst = (work / "postinst").read_text()
        assert "deb-systemd-helper enable ttpsensor.service" in postinst
        assert "deb-systemd-invoke start ttpsensor.service" in postinst
        assert "rm -rf /var/lib/ttpsensor" in (work / "postrm").read_text()
        assert "stop ttpsensor.service" in (work / "prerm").read_text()
    finally:
        shutil.rmtree(work)


def test_rpm_metadata_contents_and_scripts(packages) -> None:
    rpm = str(packages["rpm"])
    files = _run("rpm", "-qlp", rpm, check=True).stdout.split()
    for path in ("/usr/bin/ttpsensor", "/usr/lib/systemd/system/ttpsensor.service",
                 "/etc/audit/plugins.d/ttpsensor.conf",
                 "/usr/lib/ttpsensor/site-packages/sensor_linux/cli.py"):
        assert path in files, path
    requires = _run("rpm", "-qp", "--requires", rpm, check=True).stdout.splitlines()
    assert "python3.11" in requires
    # No requirement leaked from the build host or the bundled wheels' private libraries.
    assert not [r for r in requires if ".so" in r or r.startswith("/") and "python" in r]
    configs = _run("rpm", "-qp", "--configfiles", rpm, check=True).stdout.split()
    assert "/etc/ttpsensor/config.toml" in configs
    scripts = _run("rpm", "-qp", "--scripts", rpm, check=True).stdout
    assert "useradd -r" in scripts and "systemctl enable --now ttpsensor.service" in scripts
    assert "disable --now ttpsensor.service" in scripts
    for section in scripts.split("scriptlet (using /bin/sh):")[1:]:
        body = section.split("\n", 1)[1]
        body = body.rsplit("\npre", 1)[0].rsplit("\npost", 1)[0]
        assert _run("bash", "-n", input=body).returncode == 0, body


def test_lintian_and_rpmlint_report_no_error(packages) -> None:
    for tool in ("lintian", "rpmlint"):
        require(shutil.which(tool) is not None, f"{tool} is needed")
    lint = _run("lintian", "--fail-on", "error", "--no-tag-display-limit", str(packages["deb"]),
                timeout=900)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert not [line for line in lint.stdout.splitlines() if line.startswith("E:")]
    rpmlint = _run("rpmlint", "-r", str(ROOT / "packaging" / "rpm" / "rpmlintrc"),
                   str(packages["rpm"]), timeout=900)
    errors = [line for line in rpmlint.stdout.splitlines() if ": E: " in line]
    assert not errors, rpmlint.stdout
    assert " 0 errors" in rpmlint.stdout, rpmlint.stdout


def test_systemd_units_verify(packages, tmp_path) -> None:
    _run("dpkg-deb", "-x", str(packages["deb"]), str(tmp_path), check=True)
    units = tmp_path / "lib" / "systemd" / "system"
    # The units' ExecStart must exist in the root verified, so the extracted package is the
    # root; it has no systemd of its own, so the host's targets and slices are copied in.
    for unit in Path("/lib/systemd/system").iterdir():
        if unit.suffix in (".target", ".slice") and not (units / unit.name).exists():
            shutil.copy(unit, units / unit.name)
    for unit in ("ttpsensor.service", "ttpsensor-collector.service"):
        verify = _run("systemd-analyze", "verify", f"--root={tmp_path}",
                      f"/lib/systemd/system/{unit}")
        assert verify.returncode == 0, verify.stdout + verify.stderr
    (units / "broken.service").write_text("[Service]\nExecStart=/usr/bin/ttpsensor-missing\n")
    broken = _run("systemd-analyze", "verify", f"--root={tmp_path}",
                  "/lib/systemd/system/broken.service")
    assert broken.returncode != 0 and "not executable" in broken.stderr


def test_msi_tables_service_and_files(packages) -> None:
    msi = str(packages["msi"])
    tables = _run("msiinfo", "tables", msi, check=True).stdout.split()
    for table in ("File", "Component", "ServiceInstall", "ServiceControl", "Registry",
                  "Upgrade", "LaunchCondition"):
        assert table in tables, table
    service = _run("msiinfo", "export", msi, "ServiceInstall", check=True).stdout.splitlines()
    row = next(line.split("\t") for line in service[3:] if line.startswith("ttpsensor"))
    assert row[1] == "ttpsensor" and row[3] == "16" and row[4] == "2"   # own process, auto
    control = _run("msiinfo", "export", msi, "ServiceControl", check=True).stdout
    # msidbServiceControlEvent: 1 start on install, 2+32 stop on both, 128 delete on uninstall
    assert "\tttpsensor\t163\t" in control
    summary = _run("msiinfo", "suminfo", msi, check=True).stdout
    assert "x64;1033" in summary
    condition = _run("msiinfo", "export", msi, "LaunchCondition", check=True).stdout
    assert "PYTHONEXE" in condition and "Python 3.12" in condition
    # NSSM runs the sensor on the service's own ETW session: with the console's default, a
    # `windows run` in a console would stop the service's session as a stale one.
    registry = _run("msiinfo", "export", msi, "Registry", check=True).stdout
    parameters = next(line for line in registry.splitlines() if "AppParameters" in line)
    assert "windows run --session ttpsensor-process --output" in parameters
    # The data folder (every command line) is SYSTEM's and the Administrators' alone: a
    # protected DACL, nothing inherited from ProgramData (where every user may read), the
    # same rights `windows service install` gives it with icacls (service.DATA_ACL).
    from sensor_windows.service import DATA_ACL
    locks = _run("msiinfo", "export", msi, "MsiLockPermissionsEx", check=True).stdout
    lock = next(line.split("\t") for line in locks.splitlines()[3:])
    assert lock[1:4] == ["DATADIR", "CreateFolder", "D:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"]
    assert DATA_ACL == ["/inheritance:r", "/grant:r", "*S-1-5-18:(OI)(CI)F",
                        "*S-1-5-32-544:(OI)(CI)F"]     # SY and BA, as in the SDDL above
    assert "LockPermissions" not in tables   # never both tables (error 1941)
    files = _run("msiextract", "-l", msi, check=True).stdout.replace("\\", "/").splitlines()
    names = {f.split("ttpsensor/", 1)[-1] for f in files}
    for name in ("nssm.exe", "ttpsensor.py", "site-packages/sensor_windows/etw_source.py",
                 "site-packages/etw/etw.py", "site-packages/pefile.py"):
        assert name in names, name
    # The Windows wheels, not Linux ones: compiled modules are .pyd files.
    assert any(n.startswith("site-packages/msgpack/") and n.endswith(".pyd") for n in names)
    assert not any(n.endswith(".so") for n in names)


class DebianRoot:
    """A minimal Debian 12 root with the .deb's dependencies (mmdebstrap), made once for the
    module: each test installs a package into it, uses it and purges it again."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def chroot(self, command: str) -> subprocess.CompletedProcess:
        # A private mount namespace: /proc is mounted for the command and gone with it.
        return _run("unshare", "--mount", "--fork", "sh", "-c",
                    f"mount -t proc proc {self.path}/proc && chroot {self.path} sh -c '{command}'",
                    timeout=600)

    def files(self) -> set[str]:
        return {str(p.relative_to(self.path)) for p in self.path.rglob("*")
                # /run is a tmpfs on a booted system (adduser leaves its lock there).
                if not str(p.relative_to(self.path)).startswith(("proc/", "dev/", "sys/",
                                                                 "tmp/", "run/"))}


@pytest.fixture(scope="module")
def debian_root(packages, tmp_path_factory) -> DebianRoot:
    require(shutil.which("mmdebstrap") is not None, "mmdebstrap is needed")
    root = tmp_path_factory.mktemp("debian") / "root"
    depends = _run("dpkg-deb", "-f", str(packages["deb"]), "Depends", check=True).stdout
    include = ",".join(d.split("(")[0].strip() for d in depends.split(","))
    strap = _run("mmdebstrap", "--variant=minbase", f"--include={include}", "--quiet",
                 "--skip=cleanup/apt/lists", "bookworm", str(root), timeout=1200)
    assert strap.returncode == 0, strap.stderr[-3000:]
    return DebianRoot(root)


def test_deb_installs_into_a_fresh_debian_root_runs_and_purges_clean(packages,
                                                                     debian_root) -> None:
    root, chroot = debian_root.path, debian_root.chroot
    before = debian_root.files()
    shutil.copy(packages["deb"], root / "tmp" / "ttpsensor.deb")
    shutil.copy(CORPUS, root / "tmp" / "corpus.log")
    installed = chroot("dpkg -i /tmp/ttpsensor.deb")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert _run("chroot", str(root), "getent", "passwd", "ttpsensor").returncode == 0
    version = chroot("ttpsensor --version")
    assert version.returncode == 0 and VERSION in version.stdout, version.stderr
    audisp = chroot("ttpsensor audisp /tmp/corpus.log --parse-error-log /tmp/errors.log")
    assert audisp.returncode == 0, audisp.stderr
    events = [json.loads(line) for line in audisp.stdout.splitlines()]
    assert events and any(e.get("event", {}).get("action") == "process_create" for e in events)
    assert all(len(e["ttphash"]["value"]) == 64 for e in events
               if e.get("event", {}).get("action") == "process_create")
    # The C split path loads on the distribution's Python (else the pure-Python one runs).
    (root / "tmp" / "split.py").write_text(
        "import sys\nsys.path.insert(0, '/usr/lib/ttpsensor/site-packages')\n"
        "from sensor_linux.audit import records\nprint(records.split_record)\n")
    split = chroot("python3.11 /tmp/split.py")
    assert "built-in function split_record" in split.stdout, split.stdout + split.stderr
    plugin = chroot("/usr/bin/ttpsensor-audisp --help")
    assert plugin.returncode == 0 and "--config" in plugin.stdout
    assert chroot("test -d /usr/lib/ttpsensor/site-packages/common/__pycache__").returncode == 0

    purged = chroot("dpkg --purge ttpsensor")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    left = sorted(debian_root.files() - before)
    # What policy allows to stay: the system user (and the backups of the files naming it),
    # dpkg's own records and logs, debconf's cache (adduser asks debconf).
    allowed = ("etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-", "var/lib/dpkg/",
               "var/log/", "var/cache/debconf/")
    assert [p for p in left if not p.startswith(allowed)] == []
    assert not (root / "usr" / "lib" / "ttpsensor").exists()
    assert not (root / "etc" / "ttpsensor").exists()


COMPILED_DEB = ROOT / "dist" / "compiled" / f"ttpsensor_{VERSION}_amd64.deb"
COMPILED_RPM = ROOT / "dist" / "compiled" / f"ttpsensor-{VERSION}.x86_64.rpm"
SITE = "/usr/lib/ttpsensor/site-packages"


def _replays(root: DebianRoot, deb: Path) -> dict[str, str]:
    """The .deb installed into ``root``; ``ttpsensor audisp`` of the corpus log in each
    format there (stdout, and the summary it says last), then purged again."""
    shutil.copy(deb, root.path / "tmp" / "ttpsensor.deb")
    installed = root.chroot("dpkg -i /tmp/ttpsensor.deb")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    out = {}
    try:
        for fmt in ("ecs", "qlog", "laurel"):
            done = root.chroot(f"ttpsensor audisp /tmp/all.log --format {fmt} "
                               "--parse-error-log /tmp/errors.log")
            assert done.returncode == 0, done.stderr
            out[fmt] = renumber(done.stdout.encode()).decode()
            out[f"{fmt} summary"] = done.stderr.strip().splitlines()[-1]
    finally:
        purged = root.chroot("dpkg --purge ttpsensor")
        assert purged.returncode == 0, purged.stdout + purged.stderr
    return out


def test_compiled_packages_on_request_run_the_hot_modules_compiled_alike(
        packages, debian_root) -> None:
    """TTPSENSOR_CYTHON=1 packaging/build.sh: a .deb and an .rpm in dist/compiled/ whose hot
    modules (common/compiled.py) are extensions beside their sources, built with the
    distribution's hardening flags, lint-clean; installed, the sensor runs them all and writes
    what the default package writes, in every format, on every log of the LAUREL corpus."""
    for old in (COMPILED_DEB, COMPILED_RPM):
        old.unlink(missing_ok=True)
    built = _run("bash", "packaging/build.sh", cwd=ROOT, timeout=1800,
                 env=dict(os.environ, TTPSENSOR_CYTHON="1"))
    assert built.returncode == 0, built.stderr[-4000:]
    assert COMPILED_DEB.is_file() and COMPILED_RPM.is_file()
    assert packages["deb"].is_file() and packages["msi"].is_file()   # left as they were

    suffix = ".cpython-311-x86_64-linux-gnu.so"
    listing = {line.split()[-1].lstrip(".") for line in
               _run("dpkg-deb", "-c", str(COMPILED_DEB), check=True).stdout.splitlines()}
    rpm_files = set(_run("rpm", "-qlp", str(COMPILED_RPM), check=True).stdout.split())
    for module in CYTHON_MODULES:
        path = f"{SITE}/{module.replace('.', '/')}"
        for files in (listing, rpm_files):
            assert {path + ".py", path + suffix} <= files, module
    lint = _run("lintian", "--fail-on", "error", str(COMPILED_DEB), timeout=900)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rpmlint = _run("rpmlint", "-r", str(ROOT / "packaging" / "rpm" / "rpmlintrc"),
                   str(COMPILED_RPM), timeout=900)
    assert " 0 errors" in rpmlint.stdout, rpmlint.stdout

    logs = sorted(CORPUS.parent.glob("*.txt"))
    assert len(logs) > 20
    (debian_root.path / "tmp" / "all.log").write_bytes(b"".join(p.read_bytes() for p in logs))
    compiled = _replays(debian_root, COMPILED_DEB)
    default = _replays(debian_root, packages["deb"])
    hot = len(CYTHON_MODULES)
    for fmt in ("ecs", "qlog", "laurel"):
        assert f'"compiled_modules": "{hot} of {hot}"' in compiled[f"{fmt} summary"], compiled
        assert f'"compiled_modules": "0 of {hot}"' in default[f"{fmt} summary"], default
        # (qlog has the process creations alone: 28 of them)
        assert compiled[fmt].count("\n") >= 28, compiled[fmt][:2000]
        assert compiled[fmt] == default[fmt], fmt
