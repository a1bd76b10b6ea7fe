# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Guest (domain) facts for autopilot.kvm.guest_info (PRIVATE to the collection: the API may change).

Everything comes from libvirt through a LibvirtClient (see _libvirt_client.py). Calls that a
driver may not support, or that need a running domain, go through ``client.try_call`` and their
error text is reported next to the missing value instead of failing the whole module.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET

STATE_NAMES = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shutoff",
    6: "crashed",
    7: "pmsuspended",
}

# virDomain*Reason enums, per state code
STATE_REASONS = {
    1: ("unknown", "booted", "migrated", "restored", "from_snapshot", "unpaused",
        "migration_canceled", "save_canceled", "wakeup", "crashed", "postcopy", "postcopy_failed"),
    2: ("unknown",),
    3: ("unknown", "user", "migration", "save", "dump", "ioerror", "watchdog", "from_snapshot",
        "shutting_down", "snapshot", "crashed", "starting_up", "postcopy", "postcopy_failed",
        "api_error"),
    4: ("unknown", "user"),
    5: ("unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed",
        "from_snapshot", "daemon"),
    6: ("unknown", "panicked"),
    7: ("unknown",),
}

# States in which the domain has a process, hence counters
LIVE_STATES = frozenset((1, 2, 3, 4, 7))

BALLOON_KEYS = ("actual", "unused", "usable", "available", "rss", "last_update")
BLOCK_COUNTERS = ("rd_req", "rd_bytes", "wr_req", "wr_bytes", "errs")
NET_COUNTERS = ("rx_bytes", "rx_packets", "rx_errs", "rx_drop",
                "tx_bytes", "tx_packets", "tx_errs", "tx_drop")

# VIR_DOMAIN_MEMORY_PARAM_UNLIMITED: memtune's "no limit", reported as null
MEMORY_PARAM_UNLIMITED = 9007199254740991

MIB_IN_KIB = 1024
NS_PER_SECOND = 1000000000.0


class GuestFactsError(Exception):
    """A guest fact could not be obtained; the message says which guest and why."""


def state_name(code):
    return STATE_NAMES.get(code, "unknown")


def state_reason_name(code, reason):
    reasons = STATE_REASONS.get(code, ())
    if 0 <= reason < len(reasons):
        return reasons[reason]
    return "reason_%d" % reason


def _int_or_none(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


# A guest may declare what it is owed in its own libvirt metadata, as a JSON list of expectations
# (the same schema as the inventory's autopilot_kvm_expectations, see docs/planner.md):
#   <metadata><ap:expectations xmlns:ap="http://autopilot.kvm/xmlns/expectations/1">
#     [{"type": "anti_affinity", "group": "web"}, {"type": "memory_guarantee", "min_mib": 128}]
#   </ap:expectations></metadata>
EXPECTATIONS_NAMESPACE = "http://autopilot.kvm/xmlns/expectations/1"


def parse_metadata_expectations(root):
    """(expectations, error) declared in the domain's metadata; ([], None) when there are none."""
    node = root.find("metadata/{%s}expectations" % EXPECTATIONS_NAMESPACE)
    if node is None or not (node.text or "").strip():
        return [], None
    try:
        value = json.loads(node.text)
    except ValueError as error:
        return [], "metadata expectations are not valid JSON: %s" % error
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        return [], "metadata expectations must be a JSON list of objects"
    return value, None


def parse_domain_xml(xml_text):
    """Disks, interfaces, balloon model and vCPU counts from a domain's XML."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as error:
        raise GuestFactsError("Cannot parse the domain XML: %s" % error)
    vcpu = root.find("vcpu")
    disks = []
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        path = None
        if source is not None:
            path = source.get("file") or source.get("dev") or source.get("name") or source.get("volume")
        disks.append({
            "dev": target.get("dev") if target is not None else None,
            "bus": target.get("bus") if target is not None else None,
            "device": disk.get("device", "disk"),
            "type": disk.get("type"),
            "path": path,
            "readonly": disk.find("readonly") is not None,
        })
    interfaces = []
    for iface in root.findall("devices/interface"):
        target = iface.find("target")
        mac = iface.find("mac")
        source = iface.find("source")
        model = iface.find("model")
        source_name = None
        if source is not None:
            source_name = source.get("network") or source.get("bridge") or source.get("dev")
        interfaces.append({
            "dev": target.get("dev") if target is not None else None,
            "mac": mac.get("address") if mac is not None else None,
            "type": iface.get("type"),
            "source": source_name,
            "model": model.get("type") if model is not None else None,
        })
    balloon = root.find("devices/memballoon")
    expectations, expectations_error = parse_metadata_expectations(root)
    return {
        "expectations": expectations,
        "expectations_error": expectations_error,
        "vcpus_max": _int_or_none(vcpu.text) if vcpu is not None else None,
        "vcpus_current": _int_or_none(vcpu.get("current")) if vcpu is not None else None,
        "balloon_model": balloon.get("model") if balloon is not None else None,
        "disks": disks,
        "interfaces": interfaces,
    }


def _counter_values(names, values):
    """Counters by name; libvirt's -1 (not supported by the driver) becomes None."""
    return dict((name, (None if value is None or value < 0 else value)) for name, value in zip(names, values))


def _interface_stats(client, dom, iface):
    """interfaceStats by target device, then by MAC (drivers accept either); (values, error)."""
    error = "the interface has neither a target device nor a MAC address"
    for key in (iface["dev"], iface["mac"]):
        if not key:
            continue
        values, error = client.try_call(dom.interfaceStats, key)
        if error is None:
            return values, None
    return None, error


def take_sample(client, dom, devices, clock=time.monotonic):
    """One sample of a domain's counters: state, CPU time, block and interface counters."""
    info, error = client.try_call(dom.info)
    if error is not None:
        return {"error": error}
    sample = {"error": None, "time": clock(), "state": info[0], "cpu_time_ns": info[4], "info": info,
              "block": {}, "block_errors": {}, "net": {}, "net_errors": {}}
    if info[0] not in LIVE_STATES:
        return sample
    for disk in devices["disks"]:
        if not disk["dev"]:
            continue
        values, err = client.try_call(dom.blockStats, disk["dev"])
        if err is None:
            sample["block"][disk["dev"]] = _counter_values(BLOCK_COUNTERS, values)
        else:
            sample["block_errors"][disk["dev"]] = err
    for index, iface in enumerate(devices["interfaces"]):
        values, err = _interface_stats(client, dom, iface)
        if err is None:
            sample["net"][index] = _counter_values(NET_COUNTERS, values)
        else:
            sample["net_errors"][index] = err
    return sample


def _sum_delta(first, second, field):
    """Sum over devices present in both samples of a counter's increase; None on a reset or gap."""
    total = 0
    for key, counters in second.items():
        before = first.get(key)
        if before is None:
            continue
        old, new = before.get(field), counters.get(field)
        if old is None or new is None or new < old:
            return None
        total += new - old
    return total


def compute_rates(first, second, vcpus):
    """Rates between two samples of one domain; None unless it was live in both."""
    if first is None or second is None or first.get("error") or second.get("error"):
        return None
    if first["state"] not in LIVE_STATES or second["state"] not in LIVE_STATES:
        return None
    elapsed = second["time"] - first["time"]
    if elapsed <= 0:
        return None

    def per_second(delta):
        return None if delta is None else round(delta / elapsed, 2)

    cpu_delta = second["cpu_time_ns"] - first["cpu_time_ns"]
    cpu_percent = None
    cpu_percent_vcpus = None
    if cpu_delta >= 0:
        cpu_percent = round(cpu_delta / (elapsed * NS_PER_SECOND) * 100.0, 2)
        if vcpus:
            cpu_percent_vcpus = round(cpu_percent / vcpus, 2)
    return {
        "interval": round(elapsed, 3),
        "cpu_percent": cpu_percent,
        "cpu_percent_of_vcpus": cpu_percent_vcpus,
        "disk_read_bytes_per_sec": per_second(_sum_delta(first["block"], second["block"], "rd_bytes")),
        "disk_write_bytes_per_sec": per_second(_sum_delta(first["block"], second["block"], "wr_bytes")),
        "disk_read_requests_per_sec": per_second(_sum_delta(first["block"], second["block"], "rd_req")),
        "disk_write_requests_per_sec": per_second(_sum_delta(first["block"], second["block"], "wr_req")),
        "net_rx_bytes_per_sec": per_second(_sum_delta(first["net"], second["net"], "rx_bytes")),
        "net_tx_bytes_per_sec": per_second(_sum_delta(first["net"], second["net"], "tx_bytes")),
    }


def balloon_facts(model, stats, error):
    """guest.balloon: the named memoryStats() values; a key libvirt did not report is None and listed in ``missing``."""
    stats = dict(stats or {})
    facts = {"device": model, "error": error, "stats": stats}
    for key in BALLOON_KEYS:
        facts[key] = stats.get(key)
    facts["missing"] = [key for key in BALLOON_KEYS if key not in stats]
    return facts


def _memory_tuning(params):
    if params is None:
        return None
    return dict((key, (None if value == MEMORY_PARAM_UNLIMITED else value)) for key, value in params.items())


def tuning_facts(client, dom):
    """guest.tuning: scheduler (CPU shares/quota), memtune and blkiotune parameters as the driver reports them."""
    scheduler, scheduler_error = client.try_call(dom.schedulerParameters)
    memory, memory_error = client.try_call(dom.memoryParameters, 0)
    blkio, blkio_error = client.try_call(dom.blkioParameters, 0)
    return {
        "scheduler": scheduler,
        "memory": _memory_tuning(memory),
        "blkio": blkio,
        "errors": dict((key, value) for key, value in (
            ("scheduler", scheduler_error), ("memory", memory_error), ("blkio", blkio_error)) if value),
    }


def guest_facts(client, dom, devices, sample, first_sample=None):
    """One guest's facts from its parsed XML and its latest sample (and the earlier one, for rates)."""
    info = sample["info"]
    state, reason = info[0], 0
    state_pair, _error = client.try_call(dom.state)
    if state_pair:
        state, reason = state_pair[0], state_pair[1]
    live = state in LIVE_STATES
    persistent, _error = client.try_call(dom.isPersistent)
    autostart, _error = client.try_call(dom.autostart)
    dom_id = dom.ID()

    vcpus = info[3]
    if live:
        stats, balloon_error = client.try_call(dom.memoryStats)
    else:
        stats, balloon_error = None, "the guest is not running"

    block = []
    for disk in devices["disks"]:
        entry = dict(disk)
        counters = sample["block"].get(disk["dev"])
        entry.update(counters or dict((name, None) for name in BLOCK_COUNTERS))
        entry["error"] = sample["block_errors"].get(disk["dev"]) if live else None
        block.append(entry)
    interfaces = []
    for index, iface in enumerate(devices["interfaces"]):
        entry = dict(iface)
        counters = sample["net"].get(index)
        entry.update(counters or dict((name, None) for name in NET_COUNTERS))
        entry["error"] = sample["net_errors"].get(index) if live else None
        interfaces.append(entry)

    return {
        "name": dom.name(),
        "uuid": dom.UUIDString(),
        "id": dom_id if dom_id >= 0 else None,
        "active": live,
        "persistent": None if persistent is None else bool(persistent),
        "autostart": None if autostart is None else bool(autostart),
        "state": state_name(state),
        "state_code": state,
        "state_reason": state_reason_name(state, reason),
        "vcpus": vcpus,
        "vcpus_max": devices["vcpus_max"] or vcpus,
        "cpu_time_ns": info[4],
        "memory": {
            "max_kib": info[1],
            "max_mib": info[1] // MIB_IN_KIB,
            "current_kib": info[2],
            "current_mib": info[2] // MIB_IN_KIB,
        },
        "balloon": balloon_facts(devices["balloon_model"], stats, balloon_error),
        "block": block,
        "interfaces": interfaces,
        "tuning": tuning_facts(client, dom),
        "expectations": devices.get("expectations", []),
        "expectations_error": devices.get("expectations_error"),
        "rates": compute_rates(first_sample, sample, vcpus),
    }


def collect_guests(client, names=None, interval=1.0, sleep=time.sleep, clock=time.monotonic):
    """Facts of every domain (or of those called ``names``), keyed by name, and the names not found.

    With ``interval`` > 0, running domains are sampled twice, ``interval`` seconds apart, for rates.
    A domain that disappears while it is being looked at is left out.
    """
    conn = client.conn
    domains = client.call("list the guests", conn.listAllDomains, 0)
    by_name = dict((dom.name(), dom) for dom in domains)
    not_found = []
    if names:
        wanted = []
        for name in names:
            if name in by_name:
                if name not in wanted:
                    wanted.append(name)
            elif name not in not_found:
                not_found.append(name)
    else:
        wanted = sorted(by_name)

    devices = {}
    for name in wanted:
        xml_text, error = client.try_call(by_name[name].XMLDesc, 0)
        if error is not None:
            if client.find_domain(name) is None:
                continue  # undefined since listAllDomains()
            raise GuestFactsError("Cannot get the XML of guest %r: %s" % (name, error))
        try:
            devices[name] = parse_domain_xml(xml_text)
        except GuestFactsError as parse_error:
            raise GuestFactsError("Guest %r: %s" % (name, parse_error))

    first = {}
    if interval and interval > 0:
        for name in devices:
            first[name] = take_sample(client, by_name[name], devices[name], clock)
        if any(s.get("error") is None and s["state"] in LIVE_STATES for s in first.values()):
            sleep(interval)

    guests = {}
    for name in devices:
        sample = take_sample(client, by_name[name], devices[name], clock)
        if sample["error"] is not None:
            if client.find_domain(name) is None:
                continue
            raise GuestFactsError("Cannot get the state of guest %r: %s" % (name, sample["error"]))
        guests[name] = guest_facts(client, by_name[name], devices[name], sample, first.get(name))
    return guests, not_found
