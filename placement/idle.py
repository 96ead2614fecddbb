"""Idle owned capacity: GPUs the company has paid for that no planned replica uses.

An owned pool (an on-prem or edge cluster) is a capacity pool in GPUs whose offers are of capacity type
``owned``. Its limit is the GPUs free at inventory time; a plan starting replicas there uses some of
them; the rest sit idle and still cost their internal amortised price (the offers' hourly price per
GPU). Replicas that already run there (kept by a plan against the state) hold GPUs the inventory no
longer counts as free, so only replicas the plan starts count against the free GPUs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from placement.models import IdleOwned, Inventory, Placement, Plan


def idle_owned(inventory: Inventory, started: Iterable[Placement]) -> tuple[IdleOwned, ...]:
    """Idle GPUs per owned pool, given the placements the plan starts (creates and moves)."""
    offers = {o.id: o for o in inventory.offers}
    owned_pools: dict[str, list[str]] = defaultdict(list)
    for o in inventory.offers:
        if o.capacity_type == "owned":
            for pid in o.pools:
                owned_pools[pid].append(o.id)
    used: dict[str, int] = defaultdict(int)
    for p in started:
        offer = offers.get(p.offer_id)
        if offer is None or offer.capacity_type != "owned":
            continue
        for pid in offer.pools:
            used[pid] += p.gpus_per_node * p.nodes
    out: list[IdleOwned] = []
    for pool in sorted(inventory.pools, key=lambda q: q.id):
        if pool.unit != "gpus" or pool.id not in owned_pools:
            continue
        members = [offers[i] for i in owned_pools[pool.id]]
        first = min(members, key=lambda o: o.id)
        per_gpu = min(o.hourly_usd / o.gpu_count for o in members)
        idle = max(0, pool.limit - used[pool.id])
        out.append(IdleOwned(
            pool=pool.id, provider=first.provider, region=first.region, gpu_model=first.gpu_model,
            gpus_free=pool.limit, gpus_planned=used[pool.id], gpus_idle=idle,
            gpu_hour_usd=round(per_gpu, 4), idle_hourly_usd=round(idle * per_gpu, 4),
        ))
    return tuple(out)


def with_idle(plan: Plan, inventory: Inventory) -> Plan:
    """The plan with idle capacity counted against what it starts: kept replicas hold their GPUs already."""
    from placement.planner import with_digest

    if not plan.actions:
        return plan
    starting = {(a.workload, a.replica) for a in plan.actions if a.action in ("create", "move")}
    started = [p for p in plan.placements if (p.workload, p.replica) in starting]
    return with_digest(plan.model_copy(update={"idle_owned": idle_owned(inventory, started)}))
