#!/usr/bin/env bash
# Installs what the platform and its tests need on a fresh Debian 12 machine, as root.
# Idempotent and quick on the second run: apt only for missing packages, pip only when
# pyproject.toml, setup.py or zlh.proxy changed, npm only when portal/package.json changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  ca-certificates curl xz-utils zstd git make
  python3-venv                              # the .venv below, and the tests' clean-venv installs
  build-essential python3-dev libkrb5-dev   # code-server's native modules
  postgresql                                # API storage tests (they run their own cluster)
  chromium fonts-dejavu-core                # browser tests (Playwright drives Debian's chromium)
  nginx-light wrk                           # bench/proxy.py (../shared/bench/proxy: anchors, load)
  lxc dnsmasq-base debootstrap nftables     # lxc backend (lxc-net needs dnsmasq) + template
  openssl                                   # proxmox backend tests (self-signed TLS)
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# The python builder uses `apt-get download`, which needs package lists even when nothing is missing.
if ((${#missing[@]})) || ! compgen -G "/var/lib/apt/lists/*_Packages" >/dev/null; then
  apt-get update -qq
fi
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# The install also compiles the front's hot path in place (setup.py: mypyc, Cython): redo it when one of
# those modules changed, or the compiled ones would shadow the edited sources.
stamp=.venv/.zlh-deps-$(cat pyproject.toml setup.py src/zlh/proxy/*.py src/zlh/proxy/*.pxd | sha256sum | cut -c1-16)
# A source touched after the last build (an edit undone, a checkout) is rebuilt too: pytest
# refuses compiled modules older than their sources (tests/conftest.py).
if [ ! -f "$stamp" ] || [ -n "$(find src/zlh/proxy -maxdepth 1 \( -name '*.py' -o -name '*.pxd' \) -newer "$stamp" -print -quit)" ]; then
  echo "bootstrap: installing Python dependencies and compiling the front (mypyc, Cython)"
  .venv/bin/pip install -q -e ".[dev]"
  rm -f .venv/.zlh-deps-*
  touch "$stamp"
fi

# The portal's front-end packages (xterm.js), from the npm registry, pinned by the lock file.
portal=src/zlh/portal
npm_stamp=$portal/node_modules/.zlh-$(cat $portal/package.json $portal/package-lock.json | sha256sum | cut -c1-16)
if [ ! -f "$npm_stamp" ]; then
  echo "bootstrap: installing the portal's npm packages"
  (cd "$portal" && npm ci --no-audit --no-fund --loglevel=error)
  touch "$npm_stamp"
fi
