# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: plan
short_description: Plan the moves that bring a KVM cluster back within what each host and guest is owed
version_added: 0.1.0
author:
  - autopilot.kvm developers (@autopilot-kvm)
description:
  - Takes the facts the C(autopilot.kvm.facts) role gathered (C(facts_cluster)) and returns a plan, an ordered list
    of live migrations grouped in waves, each step naming the expectation it serves and the host loads predicted
    after it.
  - Every host's ceilings (memory and CPU, in percent of its schedulable capacity) are hard expectations; a guest's
    memory counts on both hosts while it moves, so no step ever puts a host above its ceiling.
  - Runs on the controller; the planner is the pure-Python library in C(plugins/plugin_utils/planner).
  - When the request cannot be met the plan has RV(_raw[].feasible=false), no steps, and the conflicting expectations.
options:
  _terms:
    description: The gathered cluster, as the C(autopilot.kvm.facts) role's C(facts_cluster).
    required: true
    type: list
    elements: dict
  default_ceiling:
    description: Ceiling of every host unless C(ceilings) names it.
    type: dict
    default: {memory_pct: 80, cpu_pct: 90}
  ceilings:
    description:
      - Per-host ceilings, keyed by inventory host name, each with C(memory_pct) and/or C(cpu_pct).
      - A host name that is not in the cluster, or a percentage outside (0, 100], is an error.
    type: dict
    default: {}
  expectations:
    description: Further expectations for the planner (anti-affinity, bans, maintenance...). See docs/planner.md.
    type: list
    elements: dict
    default: []
  managed_guests:
    description:
      - Regular expression (matched against the whole name) of the guests the plan may move. Other guests count as
        load where they run and are never moved.
    type: str
    default: ".*"
  ksm_hosts:
    description:
      - Regular expression (whole inventory name) of the hosts whose KSM the plan may switch on or off, with
        O(memory_overcommit). On other hosts KSM is left as it is; what it shares still counts.
    type: str
    default: ".*"
  ksm_full_scan_s:
    description:
      - Seconds a KSM the plan switches on should take to scan the guests' memory once. With O(ksmd_cpu_budget) it
        sets pages_to_scan and sleep_millisecs (the memory policy's derivation, docs/memory-policy.md).
    type: float
    default: 600
  ksmd_cpu_budget:
    description: Share of one CPU core ksmd may use (0 to 1); the scan rate is cut to stay within it.
    type: float
    default: 0.1
  saved:
    description:
      - A plan written earlier by the C(autopilot.kvm.plan) playbook (the parsed JSON or YAML file).
      - Instead of searching, the saved plan's remaining steps are checked against the cluster as it is now, under
        the expectations saved with it; the lookup fails, saying why, when the cluster changed in a way that
        invalidates the plan (a guest moved elsewhere, a host is gone, a step would now break a ceiling).
      - Steps already done (guest already on its destination) are left out and listed in RV(_raw[].already_done).
    type: dict
  budget:
    description: Time the search may take, in seconds.
    type: float
    default: 1.0
  seed:
    description: Seed of the search; the same facts, options and seed give the same plan.
    type: int
    default: 0
  max_migrations_per_host:
    description: Migrations that may touch one host (in and out) in one wave.
    type: int
    default: 2
  objective:
    description:
      - What the planner optimises once every hard expectation is met.
      - V(balance) evens out host loads; V(consolidate) packs guests on as few hosts as possible; V(cost) minimises
        the weighted cost of the soft expectations (each by its weight) plus what the migrations cost (guests'
        C(move_cost), hosts' C(move_cost_to)), see docs/planner.md.
      - Unset lets the planner choose (V(consolidate) when a power-saving expectation is given, else V(balance)).
    type: str
    choices: [balance, consolidate, cost]
  min_gain_per_gib:
    description:
      - Stability. A move that no hard expectation needs is made only if it improves the objective by at least this
        much per GiB of guest memory moved. Unset uses the planner's default (see docs/planner.md).
    type: float
  memory_overcommit:
    description:
      - Let the planner weigh balloon shrinks and KSM against migrations for hosts over their memory ceiling
        (see docs/planner.md), and switch KSM off where it is no longer needed. Guests without balloon statistics are
        never ballooned. Off by default, since shrinking guests and running ksmd are an operator's policy choice.
    type: bool
    default: false
  migration_budget:
    description:
      - Stability. At most this many optional migrations in one plan; the moves hard expectations need are always made
        and do not count.
      - When consolidating, the planner looks for the fewest hosts it can empty within the budget.
    type: int
  cooldown:
    description: Stability. Seconds after its last migration during which a guest moves only if a hard expectation needs it.
    type: float
  search_workers:
    description:
      - With O(objective=cost), run this many searches side by side, each in a forked process with its own seed, and
        plan to the cheapest answer. The first is the search one worker would run.
      - Give it the cores the controller can spare. Each worker is a copy of the planner's memory, and more workers
        than cores slow each other down.
    type: int
    default: 1
  joint_swaps:
    description:
      - With O(objective=cost), let the search also swap two guests that fit only once both have moved, as the
        ROADEF 2012 challenge rules allow (only the end placement must fit).
      - No one-at-a-time order of live migrations reaches such a swap without a host with room to spare, so the plan
        may stop short of the placement found and report it as C(unreached_target). Use it to learn how far a
        cluster's placement could go; leave it off for plans that should run to their end.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Plan within ceilings of 70 % memory and 90 % CPU
  ansible.builtin.set_fact:
    rebalance_plan: "{{ lookup('autopilot.kvm.plan', facts_cluster, default_ceiling={'memory_pct': 70, 'cpu_pct': 90}) }}"

- name: Show each step with its reason
  ansible.builtin.debug:
    msg: "{{ item.vm }}: {{ item.from }} -> {{ item.to }} ({{ item.reason.text }})"
  loop: "{{ rebalance_plan.steps }}"
"""

RETURN = r"""
_raw:
  description: One plan per term.
  type: list
  elements: dict
  contains:
    feasible:
      description: Whether every hard expectation can be met.
      type: bool
    steps:
      description: Steps in order, each with C(id), C(wave), C(kind), C(vm), C(from), C(to), C(reason) and C(loads_after).
      type: list
      elements: dict
    waves:
      description: The migrations of each wave; the steps of one wave may run at the same time.
      type: list
      elements: list
    assignment:
      description: Host of every guest once the plan has run.
      type: dict
    metrics:
      description: Figures of the plan (hosts used, migrations, GiB moved, waves, predicted makespan).
      type: dict
    unreached_target:
      description:
        - With O(objective=cost), when the search found a placement of lower weighted cost that meets every hard
          expectation but no safe order of migrations to it (it would need a host free meanwhile); the plan then
          stops short of it. C(assignment) (host of every guest there), C(weighted_cost) and C(text).
        - Absent when the plan reaches the placement it aimed at.
      type: dict
    already_done:
      description: With O(saved), the guests whose saved migration was already done and was left out.
      type: list
      elements: str
    request:
      description: The planner's input (hosts, guests, expectations, options), saved with the plan for review.
      type: dict
    placement_before:
      description: Per host, its guests and load in percent of capacity (C(load_pct.mem), C(load_pct.cpu)) now.
      type: dict
    placement_after:
      description: The same once the plan has run (equal to RV(_raw[].placement_before) when it is not feasible).
      type: dict
    conflicts:
      description: When not feasible, the expectations that conflict, as few as could be found.
      type: list
      elements: dict
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.autopilot.kvm.plugins.plugin_utils.cluster_document import ClusterDocumentError, build_document, placement
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.api import plan_document
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.errors import PlanInputError
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.validate import check_plan
from ansible_collections.autopilot.kvm.plugins.plugin_utils.saved_plan import SavedPlanError, revalidate


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        options = {
            "budget_s": self.get_option("budget"),
            "seed": self.get_option("seed"),
            "max_migrations_per_host": self.get_option("max_migrations_per_host"),
            "memory_overcommit": self.get_option("memory_overcommit"),
            "search_workers": self.get_option("search_workers"),
            "joint_swaps": self.get_option("joint_swaps"),
        }
        for option, key in (("objective", "objective"), ("min_gain_per_gib", "min_gain_per_gib"),
                            ("migration_budget", "migration_budget"), ("cooldown", "cooldown_s")):
            if self.get_option(option) is not None:
                options[key] = self.get_option(option)
        if options["budget_s"] <= 0:
            raise AnsibleLookupError("budget must be a positive number of seconds, got %r" % options["budget_s"])
        plans = []
        for cluster in terms:
            try:
                document = build_document(
                    cluster,
                    ceilings=self.get_option("ceilings"),
                    default_ceiling=self.get_option("default_ceiling"),
                    expectations=self.get_option("expectations"),
                    options=options,
                    managed_guests=self.get_option("managed_guests"),
                    ksm_hosts=self.get_option("ksm_hosts"),
                    ksm_policy={"ksm_full_scan_s": self.get_option("ksm_full_scan_s"),
                                "ksmd_cpu_budget": self.get_option("ksmd_cpu_budget")},
                )
                saved = self.get_option("saved")
                if saved:
                    plan = revalidate(saved, document)
                    document = dict(document, expectations=saved["request"].get("expectations", []))
                else:
                    plan = plan_document(document)
                    # The planner's own validity rules, checked independently of its search: a plan that
                    # breaks them is a planner bug, and nothing of it may be applied.
                    broken = check_plan(document, plan)
                    if broken:
                        raise AnsibleLookupError("autopilot.kvm.plan: the planner returned a plan that breaks its own rules "
                                                 "(a bug; nothing will be applied): %s" % "; ".join(broken[:5]))
                plan["request"] = document
                plan["placement_before"] = placement(document)
                plan["placement_after"] = placement(document, plan.get("assignment") if plan.get("feasible") else None)
                plans.append(plan)
            except (ClusterDocumentError, PlanInputError, SavedPlanError) as error:
                raise AnsibleLookupError("autopilot.kvm.plan: %s" % error) from error
        return plans
