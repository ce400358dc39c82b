#!/usr/bin/env bash
# Install Debian's Chromium when /usr/bin/chromium is missing: the browser tests (tests/test_web_browser.py) drive it
# with Playwright (the Python package only; Playwright's own browser download is never used).
# SMARTSHELF_ALLOW_NO_BROWSER=1 (the browser tests then skip) makes a missing browser a warning, not an error.
set -euo pipefail
source "$(dirname "$0")/apt.sh"
BROWSER="${SMARTSHELF_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$BROWSER" ]; then exit 0; fi
if [ "$BROWSER" != /usr/bin/chromium ]; then
  echo "SMARTSHELF_CHROMIUM=$BROWSER: no such executable" >&2
  exit 1
fi
apt_install SMARTSHELF_ALLOW_NO_BROWSER "the browser tests" chromium
if [ "${SMARTSHELF_ALLOW_NO_BROWSER:-}" != "1" ] || [ -x "$BROWSER" ]; then
  "$BROWSER" --version 2>/dev/null || true
  test -x "$BROWSER"
fi
