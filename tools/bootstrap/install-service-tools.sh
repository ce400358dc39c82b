#!/usr/bin/env bash
# Install systemd's and udev's command-line tools when they are missing: the service tests (tests/test_service.py)
# check the hub's unit with `systemd-analyze verify` and its udev rules with `udevadm test`, as on a Raspberry Pi.
# SMARTSHELF_ALLOW_NO_SYSTEMD=1 (those checks then skip) makes missing tools a warning, not an error.
set -euo pipefail
source "$(dirname "$0")/apt.sh"
missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v udevadm >/dev/null || missing+=(udev)
command -v unshare >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
apt_install SMARTSHELF_ALLOW_NO_SYSTEMD "the service tests" "${missing[@]}"
