#!/usr/bin/env bash
# The README's two commands. On Debian 12 as root: install what ttpsensor needs, (re)create the
# virtual environment in .venv, then run the sensor or the whole test suite.
#
#   bash packaging/dev/bootstrap.sh run [ttpsensor run options]   the sensor, embedded defaults
#   bash packaging/dev/bootstrap.sh test [pytest options]          the whole test suite
#   bash packaging/dev/bootstrap.sh setup                          install only
#
# Idempotent: apt-get runs only when a package is missing, pip only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
. packaging/dev/apt.sh

mode=${1:-run}
shift || true
case "$mode" in run|test|setup) ;; *) echo "usage: $0 run|test|setup [args]" >&2; exit 2;; esac

# python3-bpfcc (BCC; never PyPI's unrelated "bcc") and a kernel header tree for the eBPF source.
apt_packages=(python3 python3-venv python3-dev gcc python3-bpfcc bpfcc-tools linux-headers-amd64)
if [ "$mode" = test ]; then
  # rpm: rpmbuild and rpm build and install a real package for the rpm provenance test.
  # auditd: auditctl, the independent reader of audit state, and the daemon of the LAUREL
  # differential test; laurel: the peer that test and the audit benchmark compare with;
  # time: GNU time, which measures a benchmarked child's own peak memory.
  # valgrind: counts the instructions of a replay (ttpsensor bench instructions).
  # postgresql, nats-server: the collector tests run private servers they start and stop.
  # osslsigncode, shim-signed: an independent Authenticode signer, a Microsoft-signed binary;
  # mingw-w64: compiles a PE with imports and a version resource the test chooses.
  # dwarves: pahole, the independent reader of kernel BTF our struct offsets are checked with.
  # chromium, chromium-driver: the real browser the console's tests drive (Selenium).
  # make, dpkg-dev, wixl, msitools: `make packages`; lintian, rpmlint, systemd (for
  # systemd-analyze) and mmdebstrap (a fresh Debian root to install the .deb into) check them.
  apt_packages+=(rpm auditd laurel time valgrind postgresql nats-server osslsigncode shim-signed
                 gcc-mingw-w64-x86-64 binutils-mingw-w64-x86-64
                 make dpkg-dev wixl msitools lintian rpmlint systemd mmdebstrap dwarves
                 chromium chromium-driver)
fi

apt_install "${apt_packages[@]}"

# BCC compiles against /lib/modules/$(uname -r)/build. When the running kernel has no header
# package of its own (a VM kernel), point it at Debian's header tree: the probes use
# tracepoints, whose layout comes from the running kernel, so the version difference is safe.
release=$(uname -r)
if [ ! -e "/lib/modules/$release/build" ]; then
  headers=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
  common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$headers" ]; then
    mkdir -p "/lib/modules/$release"
    ln -sfn "$headers" "/lib/modules/$release/build"
    [ -n "$common" ] && ln -sfn "$common" "/lib/modules/$release/source"
  fi
fi
# Tracepoints are found through tracefs.
if [ ! -d /sys/kernel/tracing/events/sched ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi

# The unprivileged user the sensor becomes once its audit sockets are open.
if ! getent passwd ttpsensor >/dev/null; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ttpsensor
fi

# Debian's own python3 (not a pyenv or other interpreter on PATH), with the system site-packages
# visible so that Debian's python3-bpfcc (BCC) can be imported by the eBPF source.
extra=""
[ "$mode" = test ] && extra="[test,lab]"
# The install also builds the compiled modules (setup.py): it is redone when their sources
# change. TTPSENSOR_CYTHON=1 asks for the hot paths' Python modules compiled too
# (common/compiled.py; not the default): Cython is then installed first and the build sees it
# (no build isolation), and every source it compiles is in the hash, as an extension built from
# an older source would run instead of the source.
cython="${TTPSENSOR_CYTHON:-0}"
cythonized=$(/usr/bin/python3 -c 'import runpy; m = runpy.run_path("common/compiled.py")
print(" ".join(m["source_path"](n) for n in m["CYTHON_MODULES"]))')
if [ "$cython" != 1 ]; then
  # Built by an earlier TTPSENSOR_CYTHON=1: they would still be imported before the sources.
  for source in $cythonized; do rm -f "${source%.py}".*.so; done
  cythonized=""
fi
# shellcheck disable=SC2086 # the paths are words
want="$(cat pyproject.toml setup.py sensor_linux/audit/_split.c sensor_linux/ebpf/_decode.c \
  $cythonized | sha256sum | cut -c1-16)-cython$cython$extra"
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
installed=$(cat .venv/.installed 2>/dev/null || true)
# run and setup need no extras: an environment set up for the tests already serves them.
if [ "$installed" != "$want" ] && ! { [ "$mode" != test ] && [ "${installed%%\[*}" = "$want" ]; }; then
  echo "bootstrap: pip install -e .$extra" >&2
  build=()
  [ "$cython" = 1 ] && build=(--no-build-isolation)
  # pip's build warnings go to a log, shown only when the install fails.
  if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
         { [ "$cython" != 1 ] || .venv/bin/python -m pip install --disable-pip-version-check \
             "Cython>=3.0" "setuptools>=77" wheel; } &&
         TTPSENSOR_CYTHON="$cython" .venv/bin/python -m pip install \
           --disable-pip-version-check "${build[@]}" -e ".$extra"; } > .venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    echo "bootstrap: pip install failed (log above, also in .venv/pip.log)" >&2
    exit 1
  fi
  if [ "$cython" = 1 ]; then
    .venv/bin/python -c 'import sys; from common.compiled import module_state
left = module_state()["source"]
sys.exit("bootstrap: not compiled: " + " ".join(left) if left else 0)'
  fi
  echo "$want" > .venv/.installed
fi

case "$mode" in
  run) exec .venv/bin/ttpsensor run "$@" ;;
  test) exec tests/run.sh "$@" ;;
esac
