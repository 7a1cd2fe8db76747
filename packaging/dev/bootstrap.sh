#!/usr/bin/env bash
# Install what ttpsensor needs on Debian 12 and (re)create the virtual environment in .venv.
# Idempotent: apt-get runs only when a package is missing; pip only when pyproject.toml changed.
# Usage: packaging/dev/bootstrap.sh [run|test]
set -euo pipefail
cd "$(dirname "$0")/../.."

mode=${1:-run}
apt_packages=(python3 python3-venv python3-dev gcc)
if [ "$mode" = test ]; then
  apt_packages+=(dpkg-dev)
fi

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's own python3 (not a pyenv or other interpreter on PATH), with the system site-packages
# visible so that Debian's python3-bpfcc (BCC) can be imported by the eBPF source.
py=/usr/bin/python3
stamp=.venv/.installed-$mode
want="$(sha256sum pyproject.toml | cut -c1-16)-$mode"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv --system-site-packages .venv
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  extra=""
  [ "$mode" = test ] && extra="[test]"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extra"
  echo "$want" > "$stamp"
fi
