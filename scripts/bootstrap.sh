#!/usr/bin/env bash
# Installs what the platform and its tests need on a fresh Debian 12 machine, as root.
# Idempotent and quick on the second run: apt only for missing packages, pip only when
# the build (pyproject.toml, setup.py, build_backend/), zlh.proxy or ZLH_COMPILE_FRONT changed,
# npm only when portal/package.json changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  ca-certificates curl xz-utils zstd git make
  python3-venv                              # the .venv below, and the tests' clean-venv installs
  build-essential python3-dev libkrb5-dev   # code-server's native modules
  postgresql                                # API storage tests (they run their own cluster)
  chromium fonts-dejavu-core                # browser tests (Playwright drives Debian's chromium)
  nginx-light wrk                           # bench/proxy.py (../shared/bench/proxy: anchors, load)
  haproxy                                   # deploy/haproxy-zlh.cfg (its tests run it)
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
# The platform host runs the public front compiled (setup.py: mypyc, Cython); `make test` checks
# that it is (tests/proxy/test_compiled.py). ZLH_COMPILE_FRONT=0 installs it as plain Python.
export ZLH_COMPILE_FRONT=${ZLH_COMPILE_FRONT:-1}
case $ZLH_COMPILE_FRONT in
  0 | 1) ;;
  *) echo "bootstrap: ZLH_COMPILE_FRONT is 1 (compile the front, the default) or 0" >&2; exit 2 ;;
esac
# The editable install compiles into src/zlh/proxy, where the compiled modules shadow their
# sources: reinstall when the flag, the build or one of those sources changed, and when a source
# is newer than its compiled module (an edit, an edit undone, a checkout).
stamp=.venv/.zlh-deps-$( (echo "$ZLH_COMPILE_FRONT"; cat pyproject.toml setup.py build_backend/*.py src/zlh/proxy/*.py src/zlh/proxy/*.pxd) | sha256sum | cut -c1-16)
rebuild=
if [ ! -f "$stamp" ] || [ -n "$(find src/zlh/proxy build_backend -maxdepth 1 \( -name '*.py' -o -name '*.pxd' \) -newer "$stamp" -print -quit)" ]; then
  rebuild=1
fi
for so in src/zlh/proxy/*.so; do
  [ -e "$so" ] || continue
  for source in "${so%%.*}.py" "${so%%.*}.pxd"; do
    if [ -f "$source" ] && [ "$source" -nt "$so" ]; then rebuild=1; fi
  done
done
if [ "$ZLH_COMPILE_FRONT" = 1 ] && ! compgen -G "src/zlh/proxy/_compiled__mypyc.*.so" >/dev/null; then
  rebuild=1
fi
if [ -n "$rebuild" ]; then
  if [ "$ZLH_COMPILE_FRONT" = 1 ]; then
    echo "bootstrap: installing Python dependencies and compiling the front (mypyc, Cython)"
  else
    echo "bootstrap: installing Python dependencies (the front as plain Python)"
  fi
  # Old compiled modules go first (the one-time top-level zlh_proxy__mypyc too): the build
  # makes every one it needs anew, and none is left to shadow a source.
  rm -f src/*.so src/zlh/proxy/*.so
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
