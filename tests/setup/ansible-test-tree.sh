#!/usr/bin/env bash
# ansible-test needs the collection at a path ending in ansible_collections/autopilot/kvm.
# This mirrors the files git would ship (tracked + untracked, minus .gitignore'd) into
# .build/test/ansible_collections/autopilot/kvm and makes that a git repository of its own,
# so ansible-test sees exactly the files a clean clone has. It also seeds ansible-test's
# pip bootstrap, whose download site is unreachable here (see ../shared/refs/ANSIBLE.md §4).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=$ROOT/.build/test/ansible_collections/autopilot/kvm
mkdir -p "$DEST"
# remove files that no longer exist in the source, then copy the current ones
(cd "$ROOT" && git ls-files -co --exclude-standard -z) > "$ROOT/.build/test/files.lst"
if [ -d "$DEST/.git" ]; then
  git -C "$DEST" ls-files -co --exclude-standard -z > "$ROOT/.build/test/old.lst"
else
  : > "$ROOT/.build/test/old.lst"
fi
python3 - "$ROOT" "$DEST" <<'PY'
import os, sys
root, dest = sys.argv[1], sys.argv[2]
new = set(p for p in open(os.path.join(root, ".build/test/files.lst"), "rb").read().decode().split("\0") if p)
old = set(p for p in open(os.path.join(root, ".build/test/old.lst"), "rb").read().decode().split("\0") if p)
for p in sorted(old - new):
    try:
        os.unlink(os.path.join(dest, p))
    except FileNotFoundError:
        pass
PY
(cd "$ROOT" && tar -c --null -T "$ROOT/.build/test/files.lst" -f -) | (cd "$DEST" && tar -x -f -)
if [ ! -d "$DEST/.git" ]; then
  git -C "$DEST" init -q
fi
git -C "$DEST" add -A >/dev/null 2>&1
git -C "$DEST" -c user.name=ci -c user.email=ci@localhost commit -q -m snapshot --allow-empty >/dev/null 2>&1 || true

# ansible-test bootstraps pip in its sanity venvs from a URL we cannot reach: give it a
# stand-in that uses ensurepip, then pip with the machine's own pip.conf.
CACHE=$HOME/.ansible/test/cache
mkdir -p "$CACHE"
for v in 25_2 25_3 26_0; do
  cat > "$CACHE/get_pip_$v.py" <<'PY'
import ensurepip, os, subprocess, sys
ensurepip.bootstrap()
env = dict(os.environ)
for k in ("PIP_CONFIG_FILE", "ENSUREPIP_OPTIONS"):
    env.pop(k, None)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install"] + args, env=env)
PY
done
echo "$DEST"
