# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Guest tuning for autopilot.kvm.tune (PRIVATE to the collection: the API may change).

A request (the module's options) becomes a list of *targets*: one libvirt parameter set each
(the CPU scheduler, memtune, blkiotune, one blkio throttle device, one disk's I/O tune, one
interface's bandwidth). Each target lists only the parameters the user gave. For each scope
(live, config) the current values are read, compared with the wanted ones and only the
differing parameters are set, in one libvirt call per target and scope.

Units are converted here and nowhere else: ``to_libvirt`` turns an option's value into what
libvirt takes, ``to_user`` turns what libvirt reports back into the option's unit, normalising
libvirt's spellings of "no limit" on the way. Two values are equal when ``to_user`` makes them
equal, so comparison, return values and ``--diff`` all use the same conversion.
"""

from __future__ import annotations

import copy

from ansible_collections.autopilot.kvm.plugins.module_utils._guest_facts import MEMORY_PARAM_UNLIMITED, MIB_IN_KIB

# virDomainModificationImpact (stable libvirt ABI); kept here so the pure code needs no binding
AFFECT_LIVE = 1
AFFECT_CONFIG = 2
SCOPES = (("live", AFFECT_LIVE), ("config", AFFECT_CONFIG))

UNLIMITED = "unlimited"
# memtune values at or above this many KiB mean "no limit" (libvirt reports 2^53-1 KiB, and the
# cgroup's own "max" rounded to pages comes close to it): nobody has 4 EiB of RAM
MEMORY_UNLIMITED_THRESHOLD_KIB = MEMORY_PARAM_UNLIMITED // 2
MAX_MEMORY_MIB = (MEMORY_PARAM_UNLIMITED - 1) // MIB_IN_KIB
# highest CFS quota libvirt accepts (VIR_CGROUP_CPU_QUOTA_MAX), in microseconds
MAX_CPU_QUOTA_US = 17592186044415
UINT32_MAX = 4294967295
UINT64_MAX = 18446744073709551615

# kind -> (minimum, maximum, special values allowed outside the range, what the value is)
KINDS = {
    "shares": (2, 262144, (), "CPU shares"),
    "period": (1000, 1000000, (), "a CFS period in microseconds"),
    "quota": (1000, MAX_CPU_QUOTA_US, (-1,), "a CFS quota in microseconds (-1: no limit)"),
    "mib": (1, MAX_MEMORY_MIB, (UNLIMITED,), "a size in MiB or 'unlimited'"),
    "weight": (100, 1000, (), "a block I/O weight"),
    "device_weight": (100, 1000, (0,), "a per-device block I/O weight (0 removes it)"),
    "rate": (0, UINT64_MAX, (), "a rate (0: no limit)"),
    "bandwidth": (0, UINT32_MAX, (), "a bandwidth value (0: no limit)"),
}
# kinds for which libvirt's 0 means "not set" (a persistent definition without the element)
ZERO_IS_UNSET = frozenset(("shares", "period", "quota", "weight"))

# (option, libvirt parameter, kind), per target category
CPU_PARAMS = (
    ("shares", "cpu_shares", "shares"),
    ("vcpu_period", "vcpu_period", "period"),
    ("vcpu_quota", "vcpu_quota", "quota"),
    ("emulator_period", "emulator_period", "period"),
    ("emulator_quota", "emulator_quota", "quota"),
    ("global_period", "global_period", "period"),
    ("global_quota", "global_quota", "quota"),
    ("iothread_period", "iothread_period", "period"),
    ("iothread_quota", "iothread_quota", "quota"),
)
MEMORY_PARAMS = (
    ("soft_limit_mib", "soft_limit", "mib"),
    ("hard_limit_mib", "hard_limit", "mib"),
    ("swap_hard_limit_mib", "swap_hard_limit", "mib"),
)
BLKIO_PARAMS = (
    ("weight", "weight", "weight"),
)
BLKIO_DEVICE_PARAMS = (
    ("weight", "device_weight", "device_weight"),
    ("read_bytes_sec", "device_read_bytes_sec", "rate"),
    ("write_bytes_sec", "device_write_bytes_sec", "rate"),
    ("read_iops_sec", "device_read_iops_sec", "rate"),
    ("write_iops_sec", "device_write_iops_sec", "rate"),
)
DISK_PARAMS = tuple((name, name, "rate") for name in (
    "total_bytes_sec", "read_bytes_sec", "write_bytes_sec",
    "total_iops_sec", "read_iops_sec", "write_iops_sec",
))
INTERFACE_PARAMS = tuple((name, name, "bandwidth") for name in (
    "inbound.average", "inbound.peak", "inbound.burst", "inbound.floor",
    "outbound.average", "outbound.peak", "outbound.burst",
))

PARAMS_BY_CATEGORY = {
    "cpu": CPU_PARAMS,
    "memory": MEMORY_PARAMS,
    "blkio": BLKIO_PARAMS,
    "blkio_device": BLKIO_DEVICE_PARAMS,
    "disk": DISK_PARAMS,
    "interface": INTERFACE_PARAMS,
}


class TuningError(Exception):
    """Bad input, found before anything was touched; ``errors`` lists every problem."""

    def __init__(self, errors):
        super().__init__("; ".join(errors))
        self.errors = errors


def _int_options(names):
    return dict((name, dict(type="int")) for name in names)


def argument_spec():
    """The module's options (documented in plugins/modules/tune.py)."""
    bandwidth = _int_options(("average", "peak", "burst"))
    inbound = dict(bandwidth, floor=dict(type="int"))
    return dict(
        name=dict(type="str", required=True),
        live=dict(type="bool", default=True),
        config=dict(type="bool", default=False),
        cpu=dict(type="dict", options=_int_options(option for option, _name, _kind in CPU_PARAMS)),
        memory=dict(type="dict", options=dict(
            (option, dict(type="raw")) for option, _name, _kind in MEMORY_PARAMS)),
        blkio=dict(type="dict", options=dict(
            weight=dict(type="int"),
            devices=dict(type="list", elements="dict", options=dict(
                path=dict(type="str", required=True),
                **_int_options(option for option, _name, _kind in BLKIO_DEVICE_PARAMS)
            )),
        )),
        disks=dict(type="list", elements="dict", options=dict(
            target=dict(type="str", required=True),
            **_int_options(option for option, _name, _kind in DISK_PARAMS)
        )),
        interfaces=dict(type="list", elements="dict", options=dict(
            dev=dict(type="str"),
            mac=dict(type="str"),
            inbound=dict(type="dict", options=inbound),
            outbound=dict(type="dict", options=bandwidth),
        ), mutually_exclusive=[("dev", "mac")], required_one_of=[("dev", "mac")]),
    )


# ---------------------------------------------------------------- units: the one place

def check_value(kind, value):
    """The value in its canonical option form (int, or 'unlimited'); raises ValueError with the reason."""
    minimum, maximum, specials, what = KINDS[kind]
    if isinstance(value, str):
        text = value.strip().lower()
        if text in specials:
            return text
        try:
            value = int(text)
        except ValueError:
            raise ValueError("must be %s, got %r" % (what, value))
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be %s, got %r" % (what, value))
    if value in specials:
        return value
    if value < 0 and kind != "quota":
        raise ValueError("must not be negative, got %d" % value)
    if not minimum <= value <= maximum:
        allowed = " or ".join(str(s) for s in specials)
        raise ValueError("must be between %d and %d%s, got %d"
                         % (minimum, maximum, (" (or %s)" % allowed) if allowed else "", value))
    return value


def to_libvirt(kind, value):
    """A checked option value in libvirt's unit: memory in KiB, everything else unchanged."""
    if kind == "mib":
        return MEMORY_PARAM_UNLIMITED if value == UNLIMITED else value * MIB_IN_KIB
    return value


def to_user(kind, value):
    """A value libvirt reported, in the option's unit, with "no limit" and "not set" normalised.

    Memory: KiB -> MiB (an int when whole, else the exact fraction), 'unlimited' at or above the
    threshold. Quotas: any negative value -> -1. 0 for shares, periods, quotas and weights is what a
    persistent definition without that element reports: None (not set).
    """
    if value is None:
        return None
    if kind == "mib":
        if value >= MEMORY_UNLIMITED_THRESHOLD_KIB:
            return UNLIMITED
        return value // MIB_IN_KIB if value % MIB_IN_KIB == 0 else value / float(MIB_IN_KIB)
    if kind in ZERO_IS_UNSET and value == 0:
        return None
    if kind == "quota" and value < 0:
        return -1
    return value


# ---------------------------------------------------------------- requests

class Target:
    """One libvirt parameter set and the wanted values (in libvirt's units) of some of its parameters."""

    def __init__(self, category, device=None):
        self.category = category
        self.device = device
        self.items = []  # (option, libvirt name, kind, wanted libvirt value)

    @property
    def label(self):
        if self.category == "blkio_device":
            return "blkio.devices[%s]" % self.device
        if self.category == "disk":
            return "disks[%s]" % self.device
        if self.category == "interface":
            return "interfaces[%s]" % self.device
        return self.category

    @property
    def source(self):
        """Key of the libvirt reading this target compares against (blkio devices share blkio's)."""
        if self.category in ("blkio", "blkio_device"):
            return ("blkio", None)
        return (self.category, self.device)

    def __repr__(self):
        return "Target(%s, %r)" % (self.label, self.items)


def _lookup(entry, option):
    """entry['inbound']['average'] for option 'inbound.average'; None when any level is missing."""
    value = entry
    for part in option.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _fill(target, entry, params, errors):
    for option, name, kind in params:
        value = _lookup(entry, option)
        if value is None:
            continue
        try:
            checked = check_value(kind, value)
        except ValueError as error:
            errors.append("%s.%s %s" % (target.label, option, error))
            continue
        target.items.append((option, name, kind, to_libvirt(kind, checked)))
    return target


def _device_targets(category, entries, key_names, params, errors, what):
    targets = []
    seen = set()
    for entry in entries or []:
        key = None
        for key_name in key_names:
            key = entry.get(key_name) or key
            if key:
                break
        if not key:
            errors.append("every entry of %s needs %s" % (what, " or ".join(key_names)))
            continue
        if key in seen:
            errors.append("%s lists %s twice" % (what, key))
            continue
        seen.add(key)
        target = _fill(Target(category, key), entry, params, errors)
        if target.items:
            targets.append(target)
    return targets


def build_targets(params):
    """The targets of a request (the module's params); raises TuningError listing every bad value."""
    errors = []
    targets = []
    if not params.get("live") and not params.get("config"):
        errors.append("nothing to change: set live, config or both to true")
    for category, option in (("cpu", "cpu"), ("memory", "memory")):
        target = _fill(Target(category), params.get(option) or {}, PARAMS_BY_CATEGORY[category], errors)
        if target.items:
            targets.append(target)
    blkio = params.get("blkio") or {}
    target = _fill(Target("blkio"), blkio, BLKIO_PARAMS, errors)
    if target.items:
        targets.append(target)
    for target in _device_targets("blkio_device", blkio.get("devices"), ("path",), BLKIO_DEVICE_PARAMS,
                                  errors, "blkio.devices"):
        if "," in target.device:
            errors.append("%s: a device path cannot contain a comma" % target.label)
        targets.append(target)
    targets.extend(_device_targets("disk", params.get("disks"), ("target",), DISK_PARAMS, errors, "disks"))
    targets.extend(_device_targets("interface", params.get("interfaces"), ("dev", "mac"), INTERFACE_PARAMS,
                                   errors, "interfaces"))
    memory = dict((name, value) for target in targets if target.category == "memory"
                  for _option, name, _kind, value in target.items)
    if memory.get("hard_limit") is not None and memory.get("swap_hard_limit") is not None \
            and memory["hard_limit"] > memory["swap_hard_limit"]:
        errors.append("memory.hard_limit_mib must not exceed memory.swap_hard_limit_mib (the swap limit counts "
                      "memory plus swap)")
    if errors:
        raise TuningError(errors)
    return targets


# ---------------------------------------------------------------- libvirt readings

def parse_device_list(text):
    """libvirt's 'path,value,path,value' blkio device string -> {path: int}."""
    result = {}
    parts = (text or "").split(",")
    if len(parts) < 2:
        return result
    for index in range(0, len(parts) - 1, 2):
        path, value = parts[index].strip(), parts[index + 1].strip()
        if not path:
            continue
        try:
            result[path] = int(value)
        except ValueError:
            continue
    return result


def format_device_list(devices):
    """{path: int} -> libvirt's 'path,value,...' string, in path order."""
    return ",".join("%s,%d" % (path, devices[path]) for path in sorted(devices))


def current_params(target, reading):
    """{libvirt name: value} of the target in a reading of its source."""
    if target.category == "blkio_device":
        return dict((name, parse_device_list(reading.get(name)).get(target.device, 0))
                    for _option, name, _kind in BLKIO_DEVICE_PARAMS)
    return reading


def compare(target, reading):
    """[(option, libvirt name, kind, before, wanted)] for each wanted parameter, changed or not."""
    current = current_params(target, reading)
    return [(option, name, kind, current.get(name), wanted) for option, name, kind, wanted in target.items]


def differs(kind, before, wanted):
    return to_user(kind, before) != to_user(kind, wanted)


def payload(target, changes, reading):
    """The parameters to hand libvirt's setter for the changes.

    Blkio devices: 'path,value' strings, which libvirt merges into its device lists. Interfaces:
    libvirt replaces a whole direction (inbound or outbound) with the parameters it is given, so
    the direction's other current values are sent along to keep them; a floor only when it is set.
    """
    if target.category == "blkio_device":
        return dict((name, "%s,%d" % (target.device, wanted)) for _option, name, _kind, _before, wanted in changes)
    params = {}
    if target.category == "interface":
        directions = set(name.split(".")[0] for _option, name, _kind, _before, _wanted in changes)
        current = current_params(target, reading)
        for _option, name, _kind in INTERFACE_PARAMS:
            if name.split(".")[0] in directions and current.get(name):
                params[name] = current[name]
    params.update((name, wanted) for _option, name, _kind, _before, wanted in changes)
    return params


def apply_to_reading(target, reading, changes):
    """A copy of the reading as it will be once the changes are made (for check mode)."""
    reading = copy.deepcopy(reading)
    for _option, name, _kind, _before, wanted in changes:
        if target.category == "blkio_device":
            devices = parse_device_list(reading.get(name))
            devices[target.device] = wanted
            reading[name] = format_device_list(devices)
        else:
            reading[name] = wanted
    return reading


def getter(dom, target, flags):
    """(function, args) reading the target's source in one scope."""
    if target.category == "cpu":
        return dom.schedulerParametersFlags, (flags,)
    if target.category == "memory":
        return dom.memoryParameters, (flags,)
    if target.category in ("blkio", "blkio_device"):
        return dom.blkioParameters, (flags,)
    if target.category == "disk":
        return dom.blockIoTune, (target.device, flags)
    return dom.interfaceParameters, (target.device, flags)


def setter(dom, target, params, flags):
    """(function, args) setting params on the target in one scope."""
    if target.category == "cpu":
        return dom.setSchedulerParametersFlags, (params, flags)
    if target.category == "memory":
        return dom.setMemoryParameters, (params, flags)
    if target.category in ("blkio", "blkio_device"):
        return dom.setBlkioParameters, (params, flags)
    if target.category == "disk":
        return dom.setBlockIoTune, (target.device, params, flags)
    return dom.setInterfaceParameters, (target.device, params, flags)


SOURCE_WHAT = {
    "cpu": "CPU scheduler parameters",
    "memory": "memory parameters",
    "blkio": "block I/O parameters",
    "disk": "I/O tuning of disk %s",
    "interface": "bandwidth of interface %s",
}


def source_what(source):
    category, device = source
    text = SOURCE_WHAT[category]
    return text % device if device is not None else text


# ---------------------------------------------------------------- return values

def _user_values(params, reading):
    return dict((option, to_user(kind, reading.get(name))) for option, name, kind in params if name in reading)


def _nest(flat):
    """{'inbound.average': 1} -> {'inbound': {'average': 1}}."""
    nested = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def view(readings):
    """The values of every source read, in the options' units and layout.

    ``readings``: {source: libvirt reading}. Returns {cpu: {...}, memory: {...},
    blkio: {weight, devices: [{path, ...}]}, disks: [{target, ...}], interfaces: [{device, inbound, outbound}]}
    with only the categories that were read.
    """
    result = {}
    for (category, device), reading in sorted(readings.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        if category in ("cpu", "memory"):
            result[category] = _user_values(PARAMS_BY_CATEGORY[category], reading)
        elif category == "blkio":
            blkio = _user_values(BLKIO_PARAMS, reading)
            paths = set()
            for _option, name, _kind in BLKIO_DEVICE_PARAMS:
                paths.update(parse_device_list(reading.get(name)))
            devices = []
            for path in sorted(paths):
                entry = dict(path=path)
                entry.update(_user_values(BLKIO_DEVICE_PARAMS, current_params(Target("blkio_device", path), reading)))
                devices.append(entry)
            blkio["devices"] = devices
            result["blkio"] = blkio
        elif category == "disk":
            entry = dict(target=device)
            entry.update(_user_values(DISK_PARAMS, reading))
            result.setdefault("disks", []).append(entry)
        else:
            entry = dict(device=device)
            entry.update(_nest(_user_values(INTERFACE_PARAMS, reading)))
            result.setdefault("interfaces", []).append(entry)
    return result


def parameter_name(scope, target, option):
    """The name a parameter has in ``changes`` and ``--diff``: live.cpu.shares, config.disks[vda].read_bytes_sec."""
    return "%s.%s.%s" % (scope, target.label, option)
