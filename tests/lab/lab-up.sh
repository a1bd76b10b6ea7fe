#!/usr/bin/env bash
# lab-up.sh: bring up the autopilot.kvm test lab, a pool of LAB_HOSTS (default 3) namespaced
# "KVM hosts" h1..hN on this one machine, each with its own libvirtd, virtlogd and sshd, network,
# mount, UTS and cgroup namespaces, hostname and host UUID. See tests/lab/README.md.
#
# Idempotent and self-repairing: healthy hosts are left alone, a dead daemon is restarted, a dead
# host is rebuilt. Prints per-step timings and a total.
#
# Env: LAB_DIR=/var/tmp/autopilot-lab  LAB_HOSTS=3  LAB_NET=10.77.0
#      LAB_UFFD=1         set vm.unprivileged_userfaultfd=1 (post-copy migration); lab-down restores
#      LAB_SKIP_INSTALL=1 never call apt-get for the Debian packages
set -euo pipefail
# shellcheck source=/dev/null
. "$(dirname "${BASH_SOURCE[0]}")/lib/lab-env.sh"

N=${LAB_HOSTS:-3}
GUEST=$LAB_DIR/guest
CACHE=$LAB_DIR/cache
STATE=$LAB_DIR/state
KEY=$LAB_DIR/ssh/id_ed25519
INVENTORY=$LAB_REPO/inventories/lab/hosts.yml
GUEST_MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_balloon)
PKGS=(libvirt-daemon-system libvirt-daemon-system-sysv libvirt-daemon-driver-qemu libvirt-clients
      qemu-system-x86 python3 python3-libvirt openssh-server openssh-client busybox-static
      iproute2 util-linux procps gzip)

[ "$(id -u)" = 0 ] || { echo "lab-up.sh must run as root" >&2; exit 1; }
[[ "$N" =~ ^[1-9][0-9]?$ ]] || { echo "LAB_HOSTS must be 1..99" >&2; exit 1; }
lab_lock
mkdir -p "$LAB_DIR" "$GUEST" "$CACHE" "$STATE" "$LAB_DIR/hosts" "$LAB_DIR/ctl"
chmod 755 "$LAB_DIR" "$GUEST"   # QEMU runs as libvirt-qemu and reads the guest image

T_ALL=$(lab_now)
step() { STEP=$1; T_STEP=$(lab_now); echo "== $1"; }
step_done() { printf '   %-28s %6ss\n' "$STEP" "$(lab_elapsed "$T_STEP")"; }

###############################################################################
step "packages"
missing=()
for p in "${PKGS[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" = "ii " ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "${LAB_SKIP_INSTALL:-0}" != 1 ] || { echo "missing packages: ${missing[*]}" >&2; exit 1; }
  echo "   installing: ${missing[*]}"
  # No init system runs the daemons here: keep the postinst scripts from starting them in the
  # root namespace. A Docker-style policy-rc.d may already exist; otherwise add one for now.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# added by autopilot lab-up.sh during apt-get install\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -q
  # -sysv explicitly: otherwise apt picks libvirt-daemon-system-systemd and pulls in systemd
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ "$(trap -p EXIT)" ]; then rm -f "$policy"; trap - EXIT; fi
fi
step_done

###############################################################################
step "guest image"
# Debian's kernel as an uncompressed ELF vmlinux (PVH entry: boots ~2x faster than the bzImage
# under TCG) and a busybox initramfs with lib/guest-init.sh as /init plus the virtio modules.
if [ ! -s "$GUEST/vmlinux" ] || [ ! -s "$GUEST/modules/virtio_balloon.ko" ]; then
  kdeps() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
  kpkg=${LAB_KERNEL_PKG:-$(kdeps)}
  if [ -z "$kpkg" ]; then apt-get update -q; kpkg=$(kdeps); fi
  dl=$LAB_DIR/dl
  rm -rf "$dl" "$GUEST/modules"
  mkdir -p "$dl/x" "$GUEST/modules"
  (cd "$dl" && apt-get download -q "$kpkg") 2>&1 | { grep -v '^W: Download is performed unsandboxed' || true; }
  deb=$(find "$dl" -maxdepth 1 -name 'linux-image-*.deb' | head -1)
  [ -n "$deb" ] || { echo "could not download $kpkg" >&2; exit 1; }
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dl/x" --wildcards './boot/vmlinuz-*' './lib/modules/*/kernel/drivers/virtio/*'
  for m in "${GUEST_MODULES[@]}"; do
    cp "$(find "$dl/x/lib/modules" -name "$m.ko" | head -1)" "$GUEST/modules/"
  done
  "$LAB_PY" - "$(find "$dl/x/boot" -name 'vmlinuz-*' | head -1)" "$GUEST/vmlinux.tmp" <<'EOF'
import lzma
import sys
data = open(sys.argv[1], "rb").read()
off = data.find(b"\xfd7zXZ\x00")
if off < 0:
    sys.exit("no xz payload in the bzImage")
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[off:])
if elf[:4] != b"\x7fELF":
    sys.exit("xz payload is not an ELF vmlinux")
open(sys.argv[2], "wb").write(elf)
EOF
  mv "$GUEST/vmlinux.tmp" "$GUEST/vmlinux"
  echo "$kpkg" > "$GUEST/kernel-package"
  rm -rf "$dl"
  echo "   kernel: $kpkg"
fi
stamp=$(cat "$LAB_SRC/lib/guest-init.sh" "$GUEST"/modules/*.ko /bin/busybox | sha256sum | cut -c1-16)
if [ ! -s "$GUEST/initrd.gz" ] || [ "$(cat "$GUEST/initrd.stamp" 2>/dev/null)" != "$stamp" ]; then
  R=$(mktemp -d "$LAB_DIR/initrd.XXXXXX")
  mkdir -p "$R"/{bin,dev,etc,lib/modules,proc,run,sys,tmp}
  cp /bin/busybox "$R/bin/busybox"
  ln -s busybox "$R/bin/sh"
  install -m 755 "$LAB_SRC/lib/guest-init.sh" "$R/init"
  cp "$GUEST"/modules/*.ko "$R/lib/modules/"
  (cd "$R" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -9 > "$GUEST/initrd.gz.tmp")
  mv "$GUEST/initrd.gz.tmp" "$GUEST/initrd.gz"
  echo "$stamp" > "$GUEST/initrd.stamp"
  rm -rf "$R"
  echo "   initramfs rebuilt"
fi
chmod 644 "$GUEST/vmlinux" "$GUEST/initrd.gz"
step_done

###############################################################################
step "ssh key + controller"
if [ ! -s "$KEY" ]; then
  mkdir -p "$(dirname "$KEY")"
  chmod 700 "$(dirname "$KEY")"
  ssh-keygen -q -t ed25519 -N '' -C autopilot-lab -f "$KEY"
fi
write_hosts_file() {
  local j
  echo "127.0.0.1 localhost"
  echo "$LAB_NET.1 $LAB_CTL_NS"
  for j in $(seq 1 "$N"); do echo "$(lab_ip "h$j") h$j"; done
}
ssh_client_config() {
  cat <<EOF
# autopilot lab: key-only root logins to lab hosts; no known_hosts bookkeeping
Host *
  User root
  IdentityFile $KEY
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  ConnectTimeout 10
EOF
}
# bin/lab-ctl bind-mounts these over /etc/ssh/ssh_config and /etc/hosts (private mount ns)
ssh_client_config > "$LAB_DIR/ctl/ssh_config"
write_hosts_file > "$LAB_DIR/ctl/hosts"
step_done

###############################################################################
step "network"
ip netns add "$LAB_CTL_NS" 2>/dev/null || [ -e "/run/netns/$LAB_CTL_NS" ]
ip -n "$LAB_CTL_NS" link set lo up
ip -n "$LAB_CTL_NS" link show "$LAB_BRIDGE" >/dev/null 2>&1 || ip -n "$LAB_CTL_NS" link add "$LAB_BRIDGE" type bridge
ip -n "$LAB_CTL_NS" addr replace "$LAB_NET.1/24" dev "$LAB_BRIDGE"
ip -n "$LAB_CTL_NS" link set "$LAB_BRIDGE" up
ip netns exec "$LAB_CTL_NS" sysctl -qw net.ipv4.ip_forward=0   # no way out of the lab network
for i in $(seq 1 "$N"); do
  ns=labh$i
  ip netns add "$ns" 2>/dev/null || [ -e "/run/netns/$ns" ]
  ip -n "$ns" link set lo up
  if ! ip -n "$LAB_CTL_NS" link show "vh$i" >/dev/null 2>&1; then
    ip -n "$ns" link del eth0 2>/dev/null || true
    ip link add "vh$i" netns "$LAB_CTL_NS" type veth peer name eth0 netns "$ns"
  fi
  ip -n "$LAB_CTL_NS" link set "vh$i" master "$LAB_BRIDGE" up
  ip -n "$ns" addr replace "$(lab_ip "h$i")/24" dev eth0
  ip -n "$ns" link set eth0 up
  # a default route (to the controller, which does not forward) gives Ansible a default_ipv4
  ip -n "$ns" route replace default via "$LAB_NET.1" dev eth0
done
# machine-wide knobs the lab may change: remember them once, lab-down.sh restores them
K=/sys/kernel/mm/ksm
if [ -w $K/run ] && [ ! -s "$STATE/ksm.orig" ]; then
  echo "$(cat $K/run) $(cat $K/pages_to_scan) $(cat $K/sleep_millisecs)" > "$STATE/ksm.orig"
fi
UFFD=/proc/sys/vm/unprivileged_userfaultfd
if [ "${LAB_UFFD:-0}" = 1 ] && [ -w $UFFD ]; then
  [ -s "$STATE/uffd.orig" ] || cat $UFFD > "$STATE/uffd.orig"
  echo 1 > $UFFD
elif [ -s "$STATE/uffd.orig" ]; then
  cat "$STATE/uffd.orig" > $UFFD && rm -f "$STATE/uffd.orig"
fi
step_done

###############################################################################
# hosts
host_daemon_alive() { # host_daemon_alive hN NAME.pid
  local f=$LAB_DIR/hosts/$1/run/$2 p
  [ -s "$f" ] && p=$(<"$f") && [ -d "/proc/$p" ]
}
libvirt_answers() { timeout 10 virsh -q -c "$(lab_uri "$1")" version >/dev/null 2>&1; }
host_ok() {
  local f
  lab_anchor_pid "$1" >/dev/null || return 1
  for f in virtlogd.pid libvirtd.pid sshd.pid; do host_daemon_alive "$1" "$f" || return 1; done
  libvirt_answers "$1"
}
make_host_tree() { # per-host copies of the files the daemons read and write
  local i=$1 H=h$1 HD=$LAB_DIR/hosts/h$1
  rm -rf "$HD"
  mkdir -p "$HD"/{run,etc/default,var/lib,var/log/libvirt/qemu,var/cache}
  cp -a /etc/libvirt "$HD/etc/libvirt"
  rm -f "$HD"/etc/libvirt/qemu/*.xml "$HD"/etc/libvirt/qemu/autostart/* \
        "$HD"/etc/libvirt/qemu/networks/autostart/*
  cat >> "$HD/etc/libvirt/libvirtd.conf" <<EOF

# ---- autopilot lab ($H) ----
listen_tls = 0
listen_tcp = 1
listen_addr = "0.0.0.0"
auth_tcp = "none"
auth_unix_ro = "none"
auth_unix_rw = "none"
host_uuid = "$(printf 'a0a0%04x-1ab0-4000-8000-%012x' "$i" "$i")"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
  cat >> "$HD/etc/libvirt/qemu.conf" <<EOF

# ---- autopilot lab ($H) ----
migration_host = "$(lab_ip "$H")"
migration_address = "0.0.0.0"
# the guest kernel/initrd are shared by all hosts: no ownership bookkeeping in xattrs
remember_owner = 0
EOF
  { cat /etc/default/libvirtd 2>/dev/null || true; echo 'LIBVIRTD_ARGS="-l"'; } > "$HD/etc/default/libvirtd"
  cp -a /var/lib/libvirt "$HD/var/lib/libvirt"
  cp -a /var/cache/libvirt "$HD/var/cache/libvirt"
  if [ -d "$CACHE/qemu-caps" ]; then   # seed the QEMU capabilities cache (saves 10-16 s)
    mkdir -p "$HD/var/cache/libvirt/qemu/capabilities"
    cp "$CACHE"/qemu-caps/*.xml "$HD/var/cache/libvirt/qemu/capabilities/" 2>/dev/null || true
  fi
  cp -a /etc/ssh "$HD/etc/ssh"
  rm -f "$HD"/etc/ssh/ssh_host_* "$HD"/etc/ssh/sshd_config.d/* "$HD"/etc/ssh/ssh_config.d/*
  ssh-keygen -q -t ed25519 -N '' -C "$H" -f "$HD/etc/ssh/ssh_host_ed25519_key"
  install -m 600 "$KEY.pub" "$HD/etc/ssh/lab_authorized_keys"
  cat > "$HD/etc/ssh/sshd_config.d/lab.conf" <<EOF
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
AuthorizedKeysFile /etc/ssh/lab_authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
MaxStartups 50:30:100
MaxSessions 50
EOF
  ssh_client_config > "$HD/etc/ssh/ssh_config.d/lab.conf"   # libvirtd's qemu+ssh:// (p2p)
  echo "$H" > "$HD/etc/hostname"
  printf 'a0a0%04x1ab040008000%012x\n' "$i" "$i" > "$HD/etc/machine-id"
  write_hosts_file > "$HD/etc/hosts"
  touch "$HD/tree-ok"
}
stop_host() { # stop_host hN: kill what is left of the host, drop its cgroups
  lab_kill_ns "labh${1#h}"   # includes the anchor, which lives in that netns too
  lab_rm_cgroups "$1"
  rm -f "$LAB_DIR/hosts/$1/anchor.pid" "$LAB_DIR/hosts/$1/init.rc"
}
start_host() { # start_host hN (in the background): the anchor process becomes the host
  local H=$1 HD=$LAB_DIR/hosts/$1
  rm -f "$HD/init.rc" "$HD"/run/*.pid
  find "$HD/run" -mindepth 1 -delete
  # a clean environment: the daemons must not inherit the caller's PATH (pyenv, venvs)
  setsid env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    HOME=/root LAB_DIR="$LAB_DIR" LAB_NET="$LAB_NET" \
    unshare --mount --uts --propagation private -- nsenter --net="/run/netns/labh${H#h}" -- \
    "$LAB_PY" "$LAB_SRC/lib/labanchor.py" run "$H" > "$HD/init.log" 2>&1 < /dev/null 9>&- &
}
wait_host() { # wait_host hN: until host-init finished and libvirtd answers
  local H=$1 HD=$LAB_DIR/hosts/$1 _
  for _ in $(seq 1 600); do [ -s "$HD/init.rc" ] && break; sleep 0.1; done
  if [ "$(cat "$HD/init.rc" 2>/dev/null)" != 0 ]; then
    echo "host $H: init failed" >&2; cat "$HD/init.log" >&2; return 1
  fi
  for _ in $(seq 1 600); do host_ok "$H" && return 0; sleep 0.1; done
  echo "host $H: daemons did not come up" >&2; cat "$HD/init.log" >&2; return 1
}
repair_daemons() { # anchor alive, some daemon dead: the anchor restarts it (SIGHUP)
  local H=$1 f _
  for f in virtlogd libvirtd sshd; do
    host_daemon_alive "$H" "$f.pid" || echo "   $H: $f is down, restarting it"
  done
  kill -HUP "$(lab_anchor_pid "$H")"
  for _ in $(seq 1 100); do host_ok "$H" && return 0; sleep 0.1; done
  return 1
}

step "hosts"
for H in $(lab_hosts_present); do   # hosts beyond LAB_HOSTS (from an earlier, bigger lab)
  if [ "${H#h}" -gt "$N" ]; then
    echo "   $H: not in LAB_HOSTS=$N, removing"
    stop_host "$H"
    ip netns del "labh${H#h}" 2>/dev/null || true
    ip -n "$LAB_CTL_NS" link del "vh${H#h}" 2>/dev/null || true
    rm -rf "${LAB_DIR:?}/hosts/$H"
  fi
done
to_start=()
for i in $(seq 1 "$N"); do
  H=h$i
  if [ -e "$LAB_DIR/hosts/$H/tree-ok" ]; then write_hosts_file > "$LAB_DIR/hosts/$H/etc/hosts"; fi
  if host_ok "$H"; then echo "   $H: up"; continue; fi
  if lab_anchor_pid "$H" >/dev/null && repair_daemons "$H"; then echo "   $H: repaired"; continue; fi
  echo "   $H: starting"
  stop_host "$H"
  [ -e "$LAB_DIR/hosts/$H/tree-ok" ] || make_host_tree "$i"
  to_start+=("$H")
done
if [ ${#to_start[@]} -gt 0 ]; then
  if [ ! -d "$CACHE/qemu-caps" ]; then
    # first start ever: one libvirtd probes QEMU (slow), the others reuse its cache
    H=${to_start[0]}
    to_start=("${to_start[@]:1}")
    start_host "$H"
    wait_host "$H"
    mkdir -p "$CACHE/qemu-caps.tmp"
    cp "$LAB_DIR/hosts/$H"/var/cache/libvirt/qemu/capabilities/*.xml "$CACHE/qemu-caps.tmp/"
    mv "$CACHE/qemu-caps.tmp" "$CACHE/qemu-caps"
    for H in "${to_start[@]}"; do
      mkdir -p "$LAB_DIR/hosts/$H/var/cache/libvirt/qemu/capabilities"
      cp "$CACHE"/qemu-caps/*.xml "$LAB_DIR/hosts/$H/var/cache/libvirt/qemu/capabilities/"
    done
  fi
  for H in "${to_start[@]}"; do start_host "$H"; done
  for H in "${to_start[@]}"; do wait_host "$H"; done
fi
step_done

###############################################################################
step "inventory"
mkdir -p "$(dirname "$INVENTORY")"
{
  echo "---"
  echo "# Generated by tests/lab/lab-up.sh (LAB_HOSTS=$N): do not edit, not committed."
  echo "# Static lab settings: group_vars/kvm_hosts.yml. See README.md."
  echo "all:"
  echo "  children:"
  echo "    kvm_hosts:"
  echo "      hosts:"
  for i in $(seq 1 "$N"); do
    echo "        h$i:"
    echo "          ansible_host: $(lab_ip "h$i")"
    echo "          ansible_user: root"
    echo "          ansible_ssh_private_key_file: $KEY"
    echo "          ansible_python_interpreter: /usr/bin/python3"
    echo "          autopilot_kvm_libvirt_uri: qemu:///system"
    echo "          autopilot_kvm_migration_uri: qemu+ssh://root@$(lab_ip "h$i")/system"
  done
} > "$INVENTORY.tmp"
mv "$INVENTORY.tmp" "$INVENTORY"
mkdir -p "$LAB_CP_DIR"
chmod 700 "$LAB_CP_DIR"
step_done

###############################################################################
step "smoke check"
ips=()
for i in $(seq 1 "$N"); do ips+=("$(lab_ip "h$i")"); done
# from the controller netns, per host in parallel: libvirt over tcp, ssh, libvirt over ssh
# shellcheck disable=SC2016
out=$("$LAB_SRC/bin/lab-ctl" bash -c '
  for ip in "$@"; do
    ( t=$(timeout 20 virsh -q -c "qemu+tcp://$ip/system" hostname 2>&1 || echo FAIL)
      s=$(timeout 20 ssh -o BatchMode=yes "$ip" hostname 2>&1 || echo FAIL)
      v=$(timeout 20 virsh -q -c "qemu+ssh://root@$ip/system" hostname 2>&1 || echo FAIL)
      echo "$ip $t $s $v" ) &
  done
  wait' smoke "${ips[@]}")
bad=0
for i in $(seq 1 "$N"); do
  line=$(grep "^$(lab_ip "h$i") " <<<"$out" || true)
  if [ "$line" = "$(lab_ip "h$i") h$i h$i h$i" ]; then
    echo "   h$i: qemu+tcp ok, ssh ok, qemu+ssh ok"
  else
    echo "   h$i: FAILED: ${line:-no answer} (expected hostname h$i for qemu+tcp, ssh, qemu+ssh)" >&2
    bad=1
  fi
done
step_done
printf '   %-28s %6ss\n' "TOTAL lab-up" "$(lab_elapsed "$T_ALL")"
[ "$bad" = 0 ] || exit 1
echo "lab up: $N hosts; inventory $INVENTORY; tests/lab/bin/lab-ctl CMD, tests/lab/bin/lab-host hN CMD"
