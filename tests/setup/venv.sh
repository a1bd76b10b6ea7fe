#!/usr/bin/env bash
# Creates (or refreshes) the controller virtualenv .venv with Python >= 3.12 and
# test-requirements.txt. Idempotent: a stamp file records what was installed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=$ROOT/.venv
REQ=$ROOT/test-requirements.txt
STAMP=$VENV/.requirements.sha256

find_python() {
  local c
  for c in "${PYTHON:-}" python3.14 python3.13 python3.12 python3 \
           "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3 /usr/local/bin/python3.1[2-9]; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null 2>&1 || [ -x "$c" ] || continue
    if "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      command -v "$c" 2>/dev/null || echo "$c"
      return 0
    fi
  done
  return 1
}

# libvirt-python is built from source against the distribution's libvirt
need=()
for p in libvirt-dev pkg-config gcc; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing build dependencies: ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! PY=$(find_python); then
    echo "error: no Python >= 3.12 found (tried \$PYTHON, python3.14..python3.12, python3, ~/.pyenv/versions/3.12+)." >&2
    echo "       ansible-core 2.21 needs Python >= 3.12 on the controller; install one or set PYTHON=/path/to/python3.12" >&2
    exit 1
  fi
  echo "creating $VENV with $PY ($("$PY" --version))"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -m pip install -q -r "$REQ" 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -c 'import ansible, libvirt, pytest' || { echo "error: venv install incomplete" >&2; exit 1; }
echo "$want" > "$STAMP"
echo "venv ready: $("$VENV/bin/python" --version), ansible-core $("$VENV/bin/python" -c 'import ansible.release as r; print(r.__version__)')"
