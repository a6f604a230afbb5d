#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are not installed yet (as root, or
# through sudo when there is one). Used for the tools tests call directly, e.g. lua5.4.
set -Eeuo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0
SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
echo "installing Debian packages: ${missing[*]}" >&2
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
