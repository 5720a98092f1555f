#!/usr/bin/env bash
# Install Debian's nginx for the reverse-proxy tests (tests/test_deploy_nginx.py),
# when running as root and it is missing. The tests run it themselves as a
# foreground process on a loopback port; nothing here starts or enables a
# service. Without nginx the tests skip outside CI and fail under CI=true.
set -euo pipefail
nginx_bin() {
  # No pipes here: under pipefail a reader that exits early would kill us with SIGPIPE.
  if [ -x /usr/sbin/nginx ]; then echo /usr/sbin/nginx; return 0; fi
  command -v nginx || true
}
if [ -n "$(nginx_bin)" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-nginx: cannot install nginx (not root or no apt-get); the nginx tests will be skipped outside CI" >&2
  exit 0
fi
echo "ensure-nginx: installing nginx-light..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# nginx-light is the small build (core, proxy, map, upstream: all the tests need);
# fall back to the full package where a release no longer has it.
apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 nginx-light >/dev/null 2>&1 \
  || apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 nginx >/dev/null
echo "ensure-nginx: installed $(nginx_bin)" >&2
