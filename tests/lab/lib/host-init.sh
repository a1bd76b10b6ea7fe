#!/usr/bin/env bash
# host-init.sh hN [daemons]: runs as the child of lib/labanchor.py, i.e. already inside host hN's own
# mount, UTS, network and cgroup namespaces. Makes the stock Debian daemons (virtlogd, libvirtd,
# sshd, started by their unmodified sysv init scripts) see a private machine: own sysfs and
# cgroupfs roots, hostname, /run, /etc/libvirt, /etc/ssh, /var/{lib,log,cache}/libvirt.
set -euo pipefail
# shellcheck source=/dev/null
. "$(dirname "${BASH_SOURCE[0]}")/lab-env.sh"
H=$1
HD=$LAB_DIR/hosts/$H

start_daemons() { # start those of virtlogd, libvirtd, sshd that are not running
  local svc pidfile p
  for svc in virtlogd:virtlogd.pid libvirtd:libvirtd.pid ssh:sshd.pid; do
    pidfile=/run/${svc#*:}
    if [ -s "$pidfile" ] && p=$(<"$pidfile") && [ -d "/proc/$p" ]; then continue; fi
    service "${svc%%:*}" start
  done
}
if [ "${2:-}" = daemons ]; then # SIGHUP to the anchor: repair (lab-up.sh)
  start_daemons
  exit 0
fi

mount --make-rprivate /
# A sysfs of this netns (/sys/class/net shows eth0), then the cgroup hierarchies again: mounted
# from inside the cgroup namespace, their roots are <placement>/lab-hN.
mapfile -t CG < <(findmnt -rn -t cgroup,cgroup2 -o TARGET,FSTYPE,OPTIONS)
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgroup_root /sys/fs/cgroup
for line in "${CG[@]}"; do
  read -r tgt fs opts <<<"$line"
  mkdir -p "$tgt"
  if [ "$fs" = cgroup2 ]; then
    mount -t cgroup2 cgroup2 "$tgt"
  else
    o=$(tr , '\n' <<<"$opts" | grep -vxE 'rw|ro|relatime|noatime|nosuid|nodev|noexec' | paste -sd, -)
    case "$o" in name=*) o="none,$o" ;; esac
    mount -t cgroup -o "$o" cgroup "$tgt"
  fi
done

hostname "$H"
# A private /dev/kvm node with the mode udev gives it (root:kvm 0660). Without udev the real
# node is 0600, the qemu user cannot open it, and libvirtd then discards its QEMU capability
# cache and re-probes QEMU (10-16 s) at every start.
if [ -c /dev/kvm ]; then
  rm -f "$HD/dev-kvm"
  mknod -m 660 "$HD/dev-kvm" c "$((16#$(stat -c %t /dev/kvm)))" "$((16#$(stat -c %T /dev/kvm)))"
  chgrp kvm "$HD/dev-kvm"
  mount --bind "$HD/dev-kvm" /dev/kvm
fi

mount --bind "$HD/run" /run
mkdir -p /run/lock /run/sshd
for p in etc/libvirt etc/ssh etc/default/libvirtd etc/hosts etc/hostname etc/machine-id \
         var/lib/libvirt var/log/libvirt var/cache/libvirt; do
  if [ -e "$HD/$p" ] && [ -e "/$p" ]; then mount --bind "$HD/$p" "/$p"; fi
done

start_daemons
