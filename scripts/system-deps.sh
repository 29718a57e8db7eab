#!/usr/bin/env bash
# Installs the Debian packages the tests (or, with "bench", the benchmarks) use,
# when we are root on a Debian-like machine. Without them the tests that need
# them skip and say why, so this never fails the run.
# With "build PYTHON": what `make compiled` needs, a C compiler (and the Python
# headers when PYTHON has none); without them the node runs as pure Python.
set -u
want=(chromium iptables)  # iptables: the netns fixture's loss and relay rules
[ "${1:-}" = "bench" ] && want=(nginx-light wrk)
if [ "${1:-}" = "build" ]; then
  want=(gcc)
  "${2:-python3}" -c 'import os, sys, sysconfig
sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || want+=(python3-dev)
fi
missing=()
for p in "${want[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: not root or no apt-get; what needs ${missing[*]} will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
timeout 600 apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { timeout 300 apt-get update -q >/dev/null 2>&1 && \
       timeout 600 apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1; } \
  || echo "system-deps: could not install ${missing[*]}; what needs them will skip" >&2
exit 0
