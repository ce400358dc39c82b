# Sourced by the bootstrap scripts: apt_install ESCAPE_VAR WHAT PACKAGE... installs Debian packages as root or with
# passwordless sudo; otherwise it says what to run and fails, unless ESCAPE_VAR=1 makes that a warning (whatever
# needed the packages then skips).
apt_install() {
  local escape="$1" what="$2"
  shift 2
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      local msg="$what need $*: install it (e.g. 'sudo apt-get install $*') and re-run"
      if [ "${!escape:-}" = "1" ]; then
        echo "warning: $msg ($escape=1: skipped)." >&2
        return 0
      fi
      echo "$msg, or set $escape=1 to skip." >&2
      return 1
    fi
  fi
  echo "installing $* (apt-get) for $what"
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
