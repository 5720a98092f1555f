#!/usr/bin/env bash
# Install what the deployment tests run, when running as root and it is missing:
# Debian's nginx for the reverse-proxy tests (tests/test_deploy_nginx.py), and
# systemd (for `systemd-analyze verify`, tests/test_deploy_systemd.py). The
# tests run nginx themselves as a foreground process on a loopback port;
# nothing here starts or enables a service. Without them those tests skip
# outside CI and fail under CI=true.
set -euo pipefail
need=()
# No pipes here: under pipefail a reader that exits early would kill us with SIGPIPE.
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-nginx: cannot install ${need[*]} (not root or no apt-get); the deployment tests will be skipped outside CI" >&2
  exit 0
fi
echo "ensure-nginx: installing ${need[*]}..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
install() { apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "$@" >/dev/null; }
# nginx-light is the small build (core, proxy, map, upstream, ssl: all the tests
# need); fall back to the full package where a release no longer has it.
if ! install "${need[@]}" 2>/dev/null; then
  install "${need[@]/nginx-light/nginx}"
fi
