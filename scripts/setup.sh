#!/usr/bin/env bash
# Set up AEVis in ./.venv. Usage: scripts/setup.sh [app|test]
#  - torch==2.13.0 is installed FIRST (a local CPU wheel on this kind of machine); a CUDA torch
#    already installed for the system python is kept (the venv then sees system site-packages);
#  - then the project (editable) and torchattacks with --no-deps (its metadata asks for
#    torchvision, which would pull a CUDA torch from the registry);
#  - `test` also installs the test extras and, as root, Debian's chromium + chromium-driver and
#    redis-server (the Celery tests start their own redis-server on a loopback port).
# Idempotent: a stamp keyed on pyproject.toml and this script skips pip when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-app}"
PY="${PYTHON:-python3}"
VENV="${AEVIS_VENV:-.venv}"
log() { echo "[setup] $*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    log "system python has a CUDA torch: keeping it (venv with system site-packages)"
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
pip_() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  log "installing torch==2.13.0 first (CPU wheel)"
  pip_ install "torch==2.13.0"
fi

extras=""
[ "$mode" = "test" ] && extras="[test]"
key=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
stamp="$VENV/.aevis-$mode-$key"
if [ ! -f "$stamp" ]; then
  log "installing AEVis$extras"
  pip_ install -e ".$extras"
  pip_ install --no-deps "torchattacks==3.5.1"
  rm -f "$VENV"/.aevis-"$mode"-*
  touch "$stamp"
else
  log "python packages up to date"
fi

if [ "$mode" = "test" ]; then
  need=()
  command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)  # Celery-mode tests start their own
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      log "installing ${need[*]} (Debian)"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
      log "WARNING: ${need[*]} missing and not root: some tests will fail (apt-get install -y ${need[*]})"
    fi
  fi
fi
