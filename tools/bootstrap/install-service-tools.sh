#!/usr/bin/env bash
# Install systemd's and udev's command-line tools when they are missing: the service tests (tests/test_service.py)
# check the hub's unit with `systemd-analyze verify` and its udev rules with `udevadm test`, as on a Raspberry Pi.
# As root: apt-get. Otherwise with passwordless sudo: sudo apt-get. Otherwise a message saying what to run.
# SMARTSHELF_ALLOW_NO_SYSTEMD=1 (those checks then skip) makes missing tools a warning, not an error.
set -euo pipefail
missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v udevadm >/dev/null || missing+=(udev)
command -v unshare >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  msg="the service tests need ${missing[*]}: install them (e.g. 'sudo apt-get install ${missing[*]}') and re-run"
  if [ "${SMARTSHELF_ALLOW_NO_SYSTEMD:-}" = "1" ]; then
    echo "warning: $msg (SMARTSHELF_ALLOW_NO_SYSTEMD=1: those checks will be skipped)." >&2
    exit 0
  fi
  echo "$msg, or set SMARTSHELF_ALLOW_NO_SYSTEMD=1 to skip them." >&2
  exit 1
fi
echo "installing ${missing[*]} (apt-get) for the service tests"
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
