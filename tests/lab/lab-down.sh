#!/usr/bin/env bash
# lab-down.sh [--purge]: stop the autopilot.kvm test lab. Ends every process living in the lab's
# network namespaces (daemons, QEMU guests, ssh sessions; each by PID), removes the namespaces,
# the lab-hN cgroups, the per-host state and the generated inventory, and restores the
# machine-wide knobs lab-up.sh or the tests may have changed (KSM, vm.unprivileged_userfaultfd).
#   --purge   also delete the cached artifacts (guest kernel + initramfs, QEMU capabilities
#             cache, ssh key): the whole LAB_DIR.
set -euo pipefail
# shellcheck source=/dev/null
. "$(dirname "${BASH_SOURCE[0]}")/lib/lab-env.sh"

PURGE=0
for a in "$@"; do
  case "$a" in
    --purge) PURGE=1 ;;
    -h | --help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "usage: lab-down.sh [--purge]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "lab-down.sh must run as root" >&2; exit 1; }
lab_lock
T0=$(lab_now)

mapfile -t hosts < <(lab_hosts_present)
mapfile -t nss < <(ip netns list 2>/dev/null | awk -v c="$LAB_CTL_NS" '$1 ~ /^labh[0-9]+$/ || $1 == c {print $1}')

# 1. processes: all hosts at once (daemons and guests first, then the anchors)
if [ ${#nss[@]} -gt 0 ]; then lab_kill_ns "${nss[@]}"; fi
left=$(_lab_ns_pids "${nss[@]}")
[ -z "$left" ] || echo "warning: processes left in the lab namespaces: $left" >&2

# 2. cgroups, 3. namespaces (the veths and the bridge go with them)
if [ ${#hosts[@]} -gt 0 ]; then lab_rm_cgroups "${hosts[@]}"; fi
for ns in "${nss[@]}"; do ip netns del "$ns" 2>/dev/null || echo "warning: cannot delete netns $ns" >&2; done

# 4. per-host state and generated files
rm -rf "${LAB_DIR:?}/hosts" "$LAB_DIR/ctl" "$LAB_CP_DIR"
rm -f "$LAB_REPO/inventories/lab/hosts.yml"

# 5. machine-wide knobs
K=/sys/kernel/mm/ksm
if [ -w $K/run ]; then
  read -r run scan sleep_ms < <(cat "$LAB_DIR/state/ksm.orig" 2>/dev/null || echo "0 100 20")
  if [ "$run" != 1 ] && [ "$(cat $K/pages_shared)" != 0 ]; then
    echo 2 > $K/run   # unmerge everything the tests made KSM merge
    for _ in $(seq 1 100); do [ "$(cat $K/pages_shared)" = 0 ] && break; sleep 0.1; done
  fi
  echo "$run" > $K/run
  echo "$scan" > $K/pages_to_scan
  echo "$sleep_ms" > $K/sleep_millisecs
  rm -f "$LAB_DIR/state/ksm.orig"
fi
if [ -s "$LAB_DIR/state/uffd.orig" ]; then
  cat "$LAB_DIR/state/uffd.orig" > /proc/sys/vm/unprivileged_userfaultfd
  rm -f "$LAB_DIR/state/uffd.orig"
fi

# 6. cached artifacts
if [ "$PURGE" = 1 ]; then rm -rf "${LAB_DIR:?}"; fi
printf 'lab-down done in %ss%s\n' "$(lab_elapsed "$T0")" "$([ "$PURGE" = 1 ] && echo ' (purged)')"
