# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The memory_controls filter: balloon and KSM controls per host, from gathered facts (see docs/memory-policy.md)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.autopilot.kvm.plugins.plugin_utils.memory_policy import MemoryPolicyError, cluster_controls


def memory_controls(facts, guarantees=None, options=None, uptimes=None):
    """facts_cluster (host -> entry), or one host's entry, -> controls per host (or that host's)."""
    if not isinstance(facts, dict):
        raise AnsibleFilterError("memory_controls: the input must be facts_cluster or one host's entry, got %r" % type(facts).__name__)
    single = isinstance(facts.get("host"), dict) and isinstance(facts["host"].get("memory"), dict)
    cluster = {facts.get("name") or "host": facts} if single else facts
    try:
        result = cluster_controls(cluster, guarantees=guarantees or {}, options=options or {}, uptimes=uptimes or {})
    except MemoryPolicyError as error:
        raise AnsibleFilterError("memory_controls: %s" % error)
    return next(iter(result.values())) if single else result


class FilterModule:
    def filters(self):
        return {"memory_controls": memory_controls}
