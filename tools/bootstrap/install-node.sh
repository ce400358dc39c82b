#!/usr/bin/env bash
# Install Node.js and npm from Debian's packages when they are missing (the MicroPython runtime needs them).
set -euo pipefail
if command -v node >/dev/null && command -v npm >/dev/null; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Node.js and npm are required: install them (e.g. 'sudo apt-get install nodejs npm') and re-run." >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
node --version
