#!/usr/bin/env bash
# ansible-doc must render every module, lookup and role of the collection.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
export ANSIBLE_CONFIG=$ROOT/ansible.cfg
fail=0
check() {
  if ansible-doc "$@" >/dev/null 2>"$ROOT/tests/output/docs-check.err"; then
    echo "ok    ansible-doc $*"
  else
    echo "FAIL  ansible-doc $*"; cat "$ROOT/tests/output/docs-check.err"; fail=1
  fi
}
mkdir -p "$ROOT/tests/output"
for f in plugins/modules/*.py; do
  check -t module "autopilot.kvm.$(basename "$f" .py)"
done
for f in plugins/lookup/*.py; do
  check -t lookup "autopilot.kvm.$(basename "$f" .py)"
done
for d in roles/*/; do
  r=$(basename "$d")
  [ -f "$d/meta/argument_specs.yml" ] || { echo "FAIL  role $r has no meta/argument_specs.yml"; fail=1; continue; }
  check -t role "autopilot.kvm.$r"
done
# the collection's own listing must name every module
listed=$(ansible-doc -t module -l autopilot.kvm 2>/dev/null | awk '{print $1}' | sort)
for f in plugins/modules/*.py; do
  grep -qx "autopilot.kvm.$(basename "$f" .py)" <<<"$listed" || { echo "FAIL  ansible-doc -l misses $(basename "$f" .py)"; fail=1; }
done
exit $fail
