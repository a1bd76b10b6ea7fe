# shellcheck shell=bash disable=SC2034
# Shared settings of the autopilot.kvm test lab, sourced by lab-up.sh, lab-down.sh and bin/*.
# Everything can be overridden from the environment; lib/labguests.py reads the same variables.

LAB_DIR=${LAB_DIR:-/var/tmp/autopilot-lab}   # lab state + cached artifacts (outside the repo)
LAB_NET=${LAB_NET:-10.77.0}                  # controller .1, host hN .(10+N)
LAB_CTL_NS=labctl                            # controller network namespace (bridge labbr0)
LAB_BRIDGE=labbr0
LAB_PY=/usr/bin/python3                      # the distribution's Python (python3-libvirt)
LAB_CP_DIR=/run/autopilot-lab                # short dir: ssh control sockets (see group_vars)
LAB_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)   # tests/lab
LAB_REPO=$(cd "$LAB_SRC/../.." && pwd)                      # collection root
export LAB_DIR LAB_NET

lab_ip() { # lab_ip hN -> 10.77.0.1N
  echo "$LAB_NET.$((10 + ${1#h}))"
}

lab_anchor_pid() { # prints the PID of host hN's anchor process if it is alive
  local f=$LAB_DIR/hosts/$1/anchor.pid p
  [ -s "$f" ] || return 1
  p=$(<"$f")
  grep -qs labanchor "/proc/$p/cmdline" || return 1
  echo "$p"
}

lab_hosts_present() { # hosts that have state or a namespace, whatever LAB_HOSTS says now
  { ls "$LAB_DIR/hosts" 2>/dev/null
    ip netns list 2>/dev/null | awk '$1 ~ /^labh[0-9]+$/ {sub("^lab", "", $1); print $1}'
  } | sort -u
}

lab_lock() { # serialise lab-up/lab-down runs (fd 9; start no long-lived process with it open)
  mkdir -p /run/lock
  exec 9>/run/lock/autopilot-lab.lock
  flock -w 600 9 || { echo "another lab-up/lab-down is still running" >&2; exit 1; }
}

lab_now() { date +%s.%N; }
lab_elapsed() { awk -v a="$1" -v b="$(lab_now)" 'BEGIN { printf "%.2f", b - a }'; }

lab_uri() { # unix-socket URI of host hN's libvirtd, usable from the root namespace
  echo "qemu:///system?socket=$LAB_DIR/hosts/$1/run/libvirt/libvirt-sock"
}

_lab_ns_pids() { # PIDs of all processes in the given network namespaces
  local ns
  for ns in "$@"; do [ -e "/run/netns/$ns" ] && ip netns pids "$ns" 2>/dev/null; done
  return 0
}

lab_kill_ns() { # lab_kill_ns NS...: end every process living in these lab netns, each by PID
  local ns p anchors=" " left _
  for ns in "$@"; do
    case "$ns" in labh[0-9]*) p=$(lab_anchor_pid "h${ns#labh}") && anchors+="$p " ;; esac
  done
  # daemons and QEMU first, so that each host's anchor (their subreaper) reaps them ...
  for p in $(_lab_ns_pids "$@"); do
    [[ "$anchors" == *" $p "* ]] || kill -TERM "$p" 2>/dev/null || true
  done
  for _ in $(seq 1 50); do
    left=0
    for p in $(_lab_ns_pids "$@"); do [[ "$anchors" == *" $p "* ]] || left=1; done
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  # ... then the anchors, then whatever is left
  for p in $(_lab_ns_pids "$@"); do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 20); do
    [ -z "$(_lab_ns_pids "$@")" ] && return 0
    sleep 0.1
  done
  for p in $(_lab_ns_pids "$@"); do kill -KILL "$p" 2>/dev/null || true; done
  sleep 0.2
}

lab_rm_cgroups() { # lab_rm_cgroups hN...: remove the (empty) lab-hN cgroups, deepest first
  local mp h d
  for mp in $(findmnt -rn -t cgroup,cgroup2 -o TARGET); do
    for h in "$@"; do
      find "$mp" -depth -type d \( -name "lab-$h" -o -path "*/lab-$h/*" \) 2>/dev/null |
        while read -r d; do rmdir "$d" 2>/dev/null || echo "warning: cannot remove cgroup $d" >&2; done
    done
  done
}
