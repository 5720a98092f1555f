#!/usr/bin/env bash
# Install Debian's Chromium (and CJK fonts, for screenshots of the Chinese
# text) for the browser tests, when running as root and it is missing.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || need+=(fonts-noto-cjk)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: cannot install ${need[*]} (not root or no apt-get); browser tests will be skipped outside CI" >&2
  exit 0
fi
echo "ensure-chromium: installing ${need[*]}..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
