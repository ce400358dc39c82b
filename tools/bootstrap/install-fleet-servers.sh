#!/usr/bin/env bash
# Install Debian's Mosquitto and PostgreSQL when they are missing: the fleet tests, the fault test and
# `smartshelf bench fleet` start their own brokers and database servers on loopback (tools/servers/), on ports of
# their own and in temporary directories; a system service the packages may start (port 1883 / 5432) is never used.
# SMARTSHELF_ALLOW_NO_FLEET=1 (the fleet tests then skip) makes missing servers a warning, not an error.
set -euo pipefail
source "$(dirname "$0")/apt.sh"
missing=()
# mosquitto lives in /usr/sbin, which a normal user's PATH may lack
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
# PostgreSQL's server binaries live in /usr/lib/postgresql/<version>/bin, never on PATH
if [ -n "${SMARTSHELF_PG_BINDIR:-}" ]; then
  if [ ! -x "$SMARTSHELF_PG_BINDIR/postgres" ]; then
    echo "SMARTSHELF_PG_BINDIR=$SMARTSHELF_PG_BINDIR: no postgres there" >&2
    exit 1
  fi
elif ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  missing+=(postgresql)
fi
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
apt_install SMARTSHELF_ALLOW_NO_FLEET "the fleet tests" "${missing[@]}"
