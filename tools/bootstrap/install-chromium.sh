#!/usr/bin/env bash
# Install Debian's Chromium when /usr/bin/chromium is missing: the browser tests (tests/test_web_browser.py) drive it
# with Playwright (the Python package only; Playwright's own browser download is never used).
# As root: apt-get. Otherwise with passwordless sudo: sudo apt-get. Otherwise a message saying what to run.
# SMARTSHELF_ALLOW_NO_BROWSER=1 (the browser tests then skip) makes a missing browser a warning, not an error.
set -euo pipefail
BROWSER="${SMARTSHELF_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$BROWSER" ]; then exit 0; fi
if [ "$BROWSER" != /usr/bin/chromium ]; then
  echo "SMARTSHELF_CHROMIUM=$BROWSER: no such executable" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  msg="Chromium is required for the browser tests: install it (e.g. 'sudo apt-get install chromium') and re-run"
  if [ "${SMARTSHELF_ALLOW_NO_BROWSER:-}" = "1" ]; then
    echo "warning: $msg (SMARTSHELF_ALLOW_NO_BROWSER=1: the browser tests will be skipped)." >&2
    exit 0
  fi
  echo "$msg, or set SMARTSHELF_ALLOW_NO_BROWSER=1 to skip the browser tests." >&2
  exit 1
fi
echo "installing Debian's chromium (apt-get) for the browser tests"
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
"$BROWSER" --version 2>/dev/null || true
test -x "$BROWSER"
