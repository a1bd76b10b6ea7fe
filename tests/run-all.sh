#!/usr/bin/env bash
# Runs every test tier (what `make test` and .ci/run do) and ends with "N passed, N failed".
# Each tier runs even when an earlier one failed, so one run shows every problem.
# TIERS="sanity units" limits the run to some tiers.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
TIERS=${TIERS:-"changelog sanity units lint docs integration lab"}
LOGDIR=$ROOT/tests/output/tiers
mkdir -p "$LOGDIR"
passed=0; failed=0; summary=()

run_tier() {
  local name=$1; shift
  local start end rc
  start=$(date +%s)
  echo "=================== tier: $name ($*)"
  "$@" 2>&1 | tee "$LOGDIR/$name.log"
  rc=${PIPESTATUS[0]}
  end=$(date +%s)
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1)); summary+=("PASS  $name  $((end - start))s")
  else
    failed=$((failed + 1)); summary+=("FAIL  $name  $((end - start))s (rc=$rc, log: tests/output/tiers/$name.log)")
  fi
}

for tier in $TIERS; do
  case $tier in
    changelog)   run_tier changelog make --no-print-directory changelog-lint ;;
    sanity)      run_tier sanity make --no-print-directory sanity ;;
    units)       run_tier units make --no-print-directory units ;;
    lint)        run_tier lint make --no-print-directory lint ;;
    docs)        run_tier docs make --no-print-directory docs-check ;;
    integration) run_tier integration make --no-print-directory integration ;;
    lab)         run_tier lab make --no-print-directory lab-test ;;
    *) echo "unknown tier $tier" >&2; failed=$((failed + 1)) ;;
  esac
done

echo "=================== summary"
printf '%s\n' "${summary[@]}"
echo "tiers: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
