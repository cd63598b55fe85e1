#!/usr/bin/env bash
# Installs the Debian packages a part of the test suite needs, when they are missing.
#   test: the host suite (npm test) compiles layout probes against <mpath_persist.h>,
#         <scsi/sg.h> and <linux/pr.h>, starts a private dbus-daemon, and runs python3
#         stand-ins (socket activation, a fake multipathd under unshare).
# As root it runs apt-get; otherwise it prints the exact command and fails.
set -euo pipefail
group=${1:-test}
case "$group" in
  test) packages=(multipath-tools gcc libc6-dev linux-libc-dev dbus-daemon python3 util-linux) ;;
  *) echo "ensure-debian-packages: unknown group '$group'" >&2; exit 2 ;;
esac
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "mpath-pr tests need these Debian packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages for the $group suite: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends "${missing[@]}" >&2 || { apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
