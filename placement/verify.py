"""Independent re-check of a plan against its inputs.

This module deliberately shares no code with the candidate filters or the solver: it re-derives
every hard constraint from the workload, inventory and policy models, so that a bug in the planner
shows up as a violation here rather than being repeated. ``apply`` runs it before touching anything.
"""

from __future__ import annotations

import math
from collections import defaultdict

from placement.models import Offer, Plan, Workload
from placement.scenario import Scenario

_EARTH_KM = 6371.0


def _rtt_ms(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    km = 2 * _EARTH_KM * math.atan2(math.sqrt(a), math.sqrt(max(0.0, 1 - a)))
    return 5.0 + km * 3.0 / 200.0


def _needed_gpus(w: Workload, model: str, scenario: Scenario) -> int:
    table = w.gpu.throughput or (
        scenario.policies.policies.gpus.throughput
        if all(m in scenario.policies.policies.gpus.throughput for m in w.gpu.models) else {}
    )
    ref = w.gpu.models[0]
    ratio = (table.get(ref, 1.0) / table.get(model, 1.0)) if table else 1.0
    return max(1, math.ceil(w.gpu.count * ratio - 1e-9))


def verify_plan(plan: Plan, scenario: Scenario) -> list[str]:
    """Every hard-constraint violation in the plan, as sentences. Empty means the plan is valid."""
    inv = scenario.inventory.inventory
    pol = scenario.policies.policies
    offers: dict[str, Offer] = {o.id: o for o in inv.offers}
    workloads = {w.name: w for w in scenario.workloads.workloads}
    out: list[str] = []
    used_nodes: dict[str, int] = defaultdict(int)
    per_workload: dict[str, list[tuple[Offer, int, float]]] = defaultdict(list)
    team_cost: dict[str, float] = defaultdict(float)
    team_gpus: dict[str, list[tuple[int, bool]]] = defaultdict(list)
    seen: set[tuple[str, int]] = set()

    for p in plan.placements:
        where = f"{p.workload}[{p.replica}] on {p.offer_id}"
        w = workloads.get(p.workload)
        o = offers.get(p.offer_id)
        if w is None:
            out.append(f"{where}: no such workload in the inputs")
            continue
        if o is None:
            out.append(f"{where}: no such offer in the inventory")
            continue
        if (p.workload, p.replica) in seen:
            out.append(f"{where}: replica placed twice")
        seen.add((p.workload, p.replica))
        if o.unavailable_reason:
            out.append(f"{where}: offer is unavailable ({o.unavailable_reason})")
        if o.gpu_model not in w.gpu.models:
            out.append(f"{where}: GPU {o.gpu_model} not among {w.gpu.models}")
            continue
        if o.gpu_memory_gib < w.gpu.min_memory_gib:
            out.append(f"{where}: GPU memory {o.gpu_memory_gib} < {w.gpu.min_memory_gib}")
        need = _needed_gpus(w, o.gpu_model, scenario)
        if p.nodes * o.gpu_count < need:
            out.append(f"{where}: {p.nodes}x{o.gpu_count} GPUs < {need} needed")
        if w.max_nodes is not None and p.nodes > w.max_nodes:
            out.append(f"{where}: {p.nodes} nodes, more than the {w.max_nodes} allowed per replica")
        if p.nodes * o.vcpus < w.vcpus or p.nodes * o.memory_gib < w.memory_gib:
            out.append(f"{where}: not enough vCPUs or memory")
        if o.capacity_type == "spot" and not w.interruptible:
            out.append(f"{where}: spot capacity for a non-interruptible workload")
        r = w.residency
        if r.jurisdictions and o.jurisdiction not in r.jurisdictions:
            out.append(f"{where}: jurisdiction {o.jurisdiction} outside {r.jurisdictions}")
        if r.countries and o.country not in r.countries:
            out.append(f"{where}: country {o.country} outside {r.countries}")
        if r.regions and f"{o.provider}/{o.region}" not in r.regions and o.region not in r.regions:
            out.append(f"{where}: region outside {r.regions}")
        for user in w.users:
            measured = inv.latency_ms.get(user.name, {}).get(f"{o.provider}/{o.region}")
            ms = measured if measured is not None else _rtt_ms(user.location.lat, user.location.lon,
                                                               o.location.lat, o.location.lon)
            if ms > user.max_latency_ms + 1e-6:
                out.append(f"{where}: latency to {user.name} {ms:.1f} ms > {user.max_latency_ms} ms")
        if pol.allowed_providers and o.provider not in pol.allowed_providers:
            out.append(f"{where}: provider {o.provider} not allowed by policy")
        if o.provider in pol.forbidden_providers:
            out.append(f"{where}: provider {o.provider} forbidden by policy")
        if f"{o.provider}/{o.region}" in pol.forbidden_regions or o.region in pol.forbidden_regions:
            out.append(f"{where}: region forbidden by policy")
        if (pol.gpus.allowed and o.gpu_model not in pol.gpus.allowed) or o.gpu_model in pol.gpus.forbidden:
            out.append(f"{where}: GPU {o.gpu_model} not allowed by policy")
        rule = pol.data_classes.get(w.data_class or "")
        if rule is not None:
            bad = (
                (rule.allowed_jurisdictions and o.jurisdiction not in rule.allowed_jurisdictions)
                or (rule.allowed_countries and o.country not in rule.allowed_countries)
                or (rule.allowed_providers and o.provider not in rule.allowed_providers)
                or (rule.allowed_provider_kinds and o.provider_kind not in rule.allowed_provider_kinds)
                or not set(rule.required_certifications) <= set(o.certifications)
                or (not rule.interruptible_allowed and o.capacity_type == "spot")
            )
            if bad:
                out.append(f"{where}: breaks data class {w.data_class} rules")
        if abs(p.hourly_usd - p.nodes * o.hourly_usd) > 1e-3:
            out.append(f"{where}: cost {p.hourly_usd} does not match {p.nodes} x {o.hourly_usd}")
        used_nodes[o.id] += p.nodes
        per_workload[w.name].append((o, p.nodes, p.hourly_usd + p.egress_hourly_usd))
        team_cost[w.team] += p.hourly_usd + p.egress_hourly_usd
        team_gpus[w.team].append((p.nodes * o.gpu_count, o.capacity_type == "spot"))

    for oid, nodes in used_nodes.items():
        o = offers[oid]
        if o.available is not None and nodes > o.available:
            out.append(f"offer {oid}: {nodes} instances used, only {o.available} available")
    for pool in inv.pools:
        used = 0
        for oid, nodes in used_nodes.items():
            o = offers[oid]
            if pool.id in o.pools:
                used += nodes * {"instances": 1, "gpus": o.gpu_count, "vcpus": o.vcpus}[pool.unit]
        if used > pool.limit:
            out.append(f"pool {pool.id}: {used} {pool.unit} used, limit {pool.limit}")
    for name, w in workloads.items():
        items = per_workload.get(name, [])
        n = len(items)
        if n and n < w.fewest_replicas:
            out.append(f"{name}: {n} replicas placed, fewer than the minimum {w.fewest_replicas}")
        if n > w.replicas:
            out.append(f"{name}: {n} replicas placed, more than {w.replicas}")
        if w.budget_hourly_usd is not None and sum(c for _, _, c in items) > w.budget_hourly_usd + 1e-3:
            out.append(f"{name}: cost over its budget ${w.budget_hourly_usd}/h")
        if n:
            if len({o.provider for o, _, _ in items}) < w.spread.min_providers:
                out.append(f"{name}: fewer than {w.spread.min_providers} distinct providers")
            if len({(o.provider, o.region) for o, _, _ in items}) < w.spread.min_regions:
                out.append(f"{name}: fewer than {w.spread.min_regions} distinct regions")
    for team, team_rule in pol.teams.items():
        monthly = team_rule.budget_monthly_usd
        limits = [b for b in (team_rule.budget_hourly_usd, None if monthly is None else monthly / 730.0)
                  if b is not None]
        if limits and team_cost.get(team, 0.0) > min(limits) + 1e-3:
            out.append(f"team {team}: ${team_cost[team]:.2f}/h over its budget ${min(limits):.2f}/h")
        share = team_rule.max_interruptible_share
        if share is not None and team_gpus.get(team):
            total = sum(g for g, _ in team_gpus[team])
            spot = sum(g for g, s in team_gpus[team] if s)
            if spot > share * total + 1e-9:
                out.append(f"team {team}: {spot}/{total} GPUs interruptible, over {share:.0%}")
    return out
