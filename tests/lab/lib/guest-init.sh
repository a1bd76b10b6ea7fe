#!/bin/sh
# /init of the lab guest's initramfs (busybox sh, POSIX). Marker lines on the serial console
# (ttyS0, logged by libvirt per host to /var/log/libvirt/qemu/<name>-serial.log):
#   GUEST-UP boot=<id> uptime=<s> balloon=<0|1>   userspace reached
#   GUEST-FILLED <MB>MiB                           lab_fill=MB done (KSM bait)
#   GUEST-MEM MemTotal_kB=<kB> uptime=<s>          at start and whenever MemTotal changes (balloon)
#   GUEST-TICK uptime=<s> boot=<id>                every lab_tick seconds (default 2)
# boot=<id> is the start of the kernel's boot_id: it changes if the guest is restarted.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_balloon; do
  if [ -f "/lib/modules/$m.ko" ]; then insmod "/lib/modules/$m.ko" || echo "insmod $m failed"; fi
done
hostname labguest
up() { cut -d' ' -f1 /proc/uptime; }
arg() { sed -n "s/.*\\b$1=\\([0-9]*\\).*/\\1/p" /proc/cmdline; }
boot=$(cut -c1-8 /proc/sys/kernel/random/boot_id)
balloon=0
for d in /sys/bus/virtio/drivers/virtio_balloon/virtio*; do [ -e "$d" ] && balloon=1; done
echo "GUEST-UP boot=$boot uptime=$(up) balloon=$balloon"

fill=$(arg lab_fill)
if [ -n "$fill" ]; then # identical pages: bait for KSM
  mount -t tmpfs -o size=$((fill + 4))m tmpfs /tmp
  yes labksmpattern | head -c $((fill * 1024 * 1024)) > /tmp/fill
  echo "GUEST-FILLED ${fill}MiB"
fi

tick=$(arg lab_tick)
tick=${tick:-2}
last=""
n=0
while true; do
  t=$(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo)
  if [ "$t" != "$last" ]; then
    echo "GUEST-MEM MemTotal_kB=$t uptime=$(up)"
    last=$t
  fi
  if [ $((n % tick)) = 0 ]; then echo "GUEST-TICK uptime=$(up) boot=$boot"; fi
  n=$((n + 1))
  sleep 1
done
