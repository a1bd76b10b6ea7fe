"""Small document builders shared by the planner tests."""

from __future__ import annotations


def host(hid, cpu=10000, mem=10000, **kw):
    d = {"id": hid, "cap": {"cpu": cpu, "mem": mem}}
    d.update(kw)
    return d


def vm(vid, on, cpu=1000, mem=1000, **kw):
    d = {"id": vid, "dem": {"cpu": cpu, "mem": mem}, "vcpu": 2, "mem_alloc_mib": mem, "dirty_mbps": 1.0, "host": on}
    d.update(kw)
    return d


def doc(hosts, vms, expectations=None, **options):
    d = {"resources": ["cpu", "mem"], "hosts": hosts, "vms": vms, "expectations": expectations or []}
    if options:
        d["options"] = options
    return d
