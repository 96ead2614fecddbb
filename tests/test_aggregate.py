"""Nodes alike merged into classes (placement.aggregate) and the large-instance plans built on them."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from placement import scale
from placement.aggregate import aggregate_offers, disaggregate
from placement.fastfilter import candidate_arrays
from placement.inputs import LoadedInventory, LoadedPolicies, LoadedWorkloads
from placement.models import Inventory, PolicySet, Workload
from placement.planner import PlanOptions, build_candidates
from placement.scenario import Scenario
from placement.solver import SolveOptions, solve
from placement.verify import verify_plan

SITE = {"provider": "corp", "provider_kind": "on-prem", "region": "dc1", "country": "DE", "jurisdiction": "EU",
        "location": {"lat": 50.1, "lon": 8.7}, "capacity_type": "owned", "vcpus": 64, "memory_gib": 512.0}


def _node(name: str, model: str, gpus: int, per_gpu: float, slices: tuple[int, ...] = (1, 2, 4, 8),
          extra_pools: tuple[str, ...] = (), available: int | None = None) -> list[dict[str, Any]]:
    return [{**SITE, "instance_type": f"{name}.slice{k}", "gpu_model": model, "gpu_count": k,
             "gpu_memory_gib": 80.0, "hourly_usd": round(per_gpu * k, 4), "pools": [f"node/{name}", *extra_pools],
             "available": available}
            for k in slices if k <= gpus]


def _inventory(offers: list[dict[str, Any]], pools: list[dict[str, Any]]) -> Inventory:
    return Inventory.model_validate({"snapshot": {"name": "cluster", "taken_on": "2026-12-01", "prices": "assumed"},
                                     "offers": offers, "pools": pools})


def cluster(seed: int, n_workloads: int, shapes: list[tuple[str, int, int, float]], cloud: bool = False,
            slices: tuple[int, ...] = (1, 2, 4, 8), sizes: tuple[int, ...] = (1, 1, 1, 2, 4, 8)) -> Scenario:
    """An on-prem cluster node by node (a pool per node, one offer per slice size) and pods asking
    for 1-8 GPUs of one or two models; ``cloud`` adds unlimited cloud offers to spill to."""
    rng = random.Random(seed)
    offers: list[dict[str, Any]] = []
    pools: list[dict[str, Any]] = []
    for model, gpus, count, per_gpu in shapes:
        for i in range(count):
            name = f"{model.lower()}-{gpus}g-{i:03d}"
            offers += _node(name, model, gpus, per_gpu, slices)
            pools.append({"id": f"node/{name}", "limit": gpus, "unit": "gpus"})
    if cloud:
        for model, per_gpu in sorted(dict((s[0], s[3]) for s in shapes).items()):
            offers.append({**SITE, "provider": "aws", "provider_kind": "hyperscaler", "region": "eu-central-1",
                           "capacity_type": "on-demand", "instance_type": f"{model.lower()}.8x", "gpu_model": model,
                           "gpu_count": 8, "gpu_memory_gib": 80.0, "hourly_usd": round(per_gpu * 8 * 4, 2)})
    models = sorted({s[0] for s in shapes})
    workloads = []
    for i in range(n_workloads):
        replicas = rng.choice([1, 1, 1, 2, 3])
        w: dict[str, Any] = {"name": f"pod{i:04d}", "team": f"t{i % 3}", "replicas": replicas,
                             "gpu": {"models": rng.sample(models, rng.randint(1, min(2, len(models)))),
                                     "count": rng.choice(sizes)},
                             "priority": rng.choice([100, 200, 300, 500])}
        if replicas > 1 and rng.random() < 0.5:
            w["min_replicas"] = replicas
        workloads.append(Workload.model_validate(w))
    tag = "sha256:" + "0" * 64
    return Scenario(
        workloads=LoadedWorkloads(tuple(workloads), (), tag, (), {}),
        inventory=LoadedInventory(_inventory(offers, pools), (), tag),
        policies=LoadedPolicies(PolicySet(), (), tag, ()),
        policy_dir=None, inventory_path="test", policy_path=None,
    )


def _plan(s: Scenario, hint: dict[str, dict[str, int]] | None = None) -> Any:
    return scale.plan_large(s, PlanOptions(method="scale", max_deterministic_time=4.0, hint=hint))


def test_twin_pools_are_merged_and_everything_else_kept() -> None:
    offers = (_node("a0", "H100", 8, 2.0) + _node("a1", "H100", 8, 2.0) + _node("a2", "H100", 8, 2.0)
              + _node("p0", "H100", 8, 2.5)  # another price
              + _node("b0", "H100", 4, 2.0))  # another size
    offers.append({**SITE, "provider": "aws", "provider_kind": "hyperscaler", "region": "eu-central-1",
                   "capacity_type": "on-demand", "instance_type": "p5", "gpu_model": "H100", "gpu_count": 8,
                   "gpu_memory_gib": 80.0, "hourly_usd": 60.0})
    pools = [{"id": f"node/{n}", "limit": 4 if n == "b0" else 8, "unit": "gpus"} for n in ("a0", "a1", "a2", "p0", "b0")]
    inv = _inventory(offers, pools)
    agg = aggregate_offers(inv)
    assert agg is not None and agg.classes == 1
    merged = agg.inventory
    assert [p.limit for p in merged.pools] == [24, 8, 4]
    assert agg.pool_members.tolist() == [3, 1, 1]
    assert len(merged.offers) == 4 + 4 + 3 + 1
    by_id = {o.id: i for i, o in enumerate(inv.offers)}
    for a, o in enumerate(merged.offers):
        members = [inv.offers[i] for i in agg.members[a].tolist()]
        if agg.class_pool[a] >= 0:
            assert len(members) == 3 and agg.offer_members[a] == 3
            assert o.pools == (merged.pools[0].id,)
            # one member per node, each the same slice
            assert sorted(m.pools[0] for m in members) == ["node/a0", "node/a1", "node/a2"]
            assert {m.instance_type.split(".")[1] for m in members} == {o.instance_type.split(".")[1]}
            assert {(m.gpu_count, m.hourly_usd) for m in members} == {(o.gpu_count, o.hourly_usd)}
        else:
            assert members == [o] and by_id[o.id] == int(agg.members[a][0])


def test_pools_that_differ_in_other_pools_are_not_merged() -> None:
    # Nodes of two racks (a rack pool each) merge within their rack only.
    offers = [o for r in (0, 1) for n in range(3) for o in _node(f"r{r}n{n}", "A100", 8, 1.5, extra_pools=(f"rack/{r}",))]
    pools = [{"id": f"node/r{r}n{n}", "limit": 8, "unit": "gpus"} for r in (0, 1) for n in range(3)]
    pools += [{"id": f"rack/{r}", "limit": 16, "unit": "gpus"} for r in (0, 1)]
    agg = aggregate_offers(_inventory(offers, pools))
    assert agg is not None and agg.classes == 2
    merged = agg.inventory
    for a, o in enumerate(merged.offers):
        rack = next(p for p in o.pools if p.startswith("rack/"))
        assert {p for i in agg.members[a].tolist() for p in offers[i]["pools"] if p.startswith("rack/")} == {rack}
    # A vCPU pool per node as well: no two GPU pools have the same other pools, nothing is merged.
    offers = [o for n in range(3) for o in _node(f"n{n}", "A100", 8, 1.5, extra_pools=(f"cpu/n{n}",))]
    pools = [{"id": f"node/n{n}", "limit": 8, "unit": "gpus"} for n in range(3)]
    pools += [{"id": f"cpu/n{n}", "limit": 64, "unit": "vcpus"} for n in range(3)]
    assert aggregate_offers(_inventory(offers, pools)) is None


@pytest.mark.parametrize("seed", range(6))
def test_first_fit_decreasing_packs_any_total_that_fits_when_sizes_divide(seed: int) -> None:
    rng = random.Random(seed)
    nodes = rng.randint(2, 9)
    offers = [o for n in range(nodes) for o in _node(f"n{n}", "H100", 8, 2.0)]
    inv = _inventory(offers, [{"id": f"node/n{n}", "limit": 8, "unit": "gpus"} for n in range(nodes)])
    agg = aggregate_offers(inv)
    assert agg is not None
    slice_of = {o.gpu_count: a for a, o in enumerate(agg.inventory.offers)}
    # replicas of 1, 2, 4 and 8 GPUs filling the class up to its last GPU, in random order
    left, items = 8 * nodes, []
    while left:
        k = rng.choice([k for k in (1, 2, 4, 8) if k <= left])
        items.append(k)
        left -= k
    rng.shuffle(items)
    cand_offer = np.asarray([slice_of[k] for k in items], np.int64)
    counts = np.ones(len(items), np.int64)
    placed, where = disaggregate(agg, inv, cand_offer, np.ones(len(items), np.int64), counts)
    assert placed.tolist() == counts.tolist()
    used = np.zeros(nodes, np.int64)
    for k, on in zip(items, where, strict=True):
        (o, n), = on
        assert n == 1 and inv.offers[o].gpu_count == k
        used[int(inv.offers[o].pools[0].split("/n")[1])] += k
    assert used.tolist() == [8] * nodes


def test_largest_replicas_are_packed_first() -> None:
    # Two 6-GPU nodes, replicas of 2, 2, 4 and 4 GPUs: in that order the second 4 finds no node.
    offers = [o for n in range(2) for o in _node(f"n{n}", "H100", 6, 2.0, slices=(2, 4))]
    inv = _inventory(offers, [{"id": f"node/n{n}", "limit": 6, "unit": "gpus"} for n in range(2)])
    agg = aggregate_offers(inv)
    assert agg is not None
    slice_of = {o.gpu_count: a for a, o in enumerate(agg.inventory.offers)}
    items = [2, 2, 4, 4]
    placed, where = disaggregate(agg, inv, np.asarray([slice_of[k] for k in items], np.int64),
                                 np.ones(4, np.int64), np.ones(4, np.int64))
    assert placed.tolist() == [1, 1, 1, 1]
    used: dict[str, int] = {}
    for on in where:
        (o, n), = on
        used[inv.offers[o].pools[0]] = used.get(inv.offers[o].pools[0], 0) + n * inv.offers[o].gpu_count
    assert used == {"node/n0": 6, "node/n1": 6}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_merged_plan_is_feasible_and_bounded_by_the_node_by_node_optimum(seed: int) -> None:
    s = cluster(seed, 60, [("H100", 8, 4, 2.0), ("A100", 4, 5, 1.2), ("A100", 2, 6, 1.25)], cloud=seed == 3)
    inv = s.inventory.inventory
    agg = aggregate_offers(inv)
    assert agg is not None and agg.classes == 3 and len(agg.inventory.offers) < len(inv.offers) / 3
    plan = _plan(s)
    assert verify_plan(plan, s) == []
    st = plan.solver
    assert st.best_bound <= st.objective + 1e-6
    # placements name the nodes' own offers (verify_plan above checks each node's pool)
    assert {p.offer_id for p in plan.placements} <= {o.id for o in inv.offers}
    # the node-by-node model, solved by CP-SAT without merging: its plan is never below the merged bound
    exact = solve(build_candidates(s), inv, s.policies.policies, SolveOptions(max_deterministic_time=20.0, workers=2))
    assert st.best_bound <= exact.objective_usd + 1e-3
    if exact.status == "OPTIMAL":
        assert st.objective >= exact.objective_usd - 1e-3
        assert st.objective <= exact.objective_usd * 1.01  # sizes divide: the classes pack whole


def test_merged_and_node_by_node_planning_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    s = cluster(7, 80, [("H100", 8, 6, 2.0), ("A100", 2, 8, 1.2)])
    merged = _plan(s)
    monkeypatch.setattr(scale, "aggregate_offers", lambda inv: None)
    nodes = _plan(s)
    assert merged.solver.variables < nodes.solver.variables / 3
    assert merged.solver.candidates_kept == nodes.solver.candidates_kept  # counted per concrete offer
    assert verify_plan(merged, s) == verify_plan(nodes, s) == []
    # the merged bound is valid for the node-by-node plan, and the merged plan as good within 1%
    assert merged.solver.best_bound <= nodes.solver.objective + 1e-6
    assert merged.solver.objective <= nodes.solver.objective * 1.01
    # reasons count concrete offers, as the node-by-node plan does
    rank = {(p.workload, p.replica): next(r for r in p.reasons if r.startswith("cost:")) for p in nodes.placements}
    same = [p for p in merged.placements if (p.workload, p.replica) in rank]
    assert same and all(rank[(p.workload, p.replica)].split(" of ")[1] == next(
        r for r in p.reasons if r.startswith("cost:")).split(" of ")[1] for p in same)


def test_replicas_that_do_not_pack_are_dropped_and_the_plan_stays_feasible() -> None:
    # 3-GPU nodes take one 2-GPU slice each; their merged class (9 GPUs) takes four.
    s = cluster(5, 0, [("L4", 3, 3, 0.5)], slices=(1, 2))
    pods = [Workload.model_validate({"name": f"p{i}", "team": "t", "gpu": {"models": ["L4"], "count": 2},
                                     "priority": 500}) for i in range(4)]
    pods.append(Workload.model_validate({"name": "pair", "team": "t", "replicas": 2, "min_replicas": 2,
                                         "gpu": {"models": ["L4"], "count": 1}, "priority": 100}))
    s = Scenario(workloads=LoadedWorkloads(tuple(pods), (), s.workloads.digest, (), {}), inventory=s.inventory,
                 policies=s.policies, policy_dir=None, inventory_path="test", policy_path=None)
    plan = _plan(s)
    assert verify_plan(plan, s) == []
    # the merged model places the four pods (8 of 9 GPUs) and leaves the pair out; three pack
    assert sorted(p.workload for p in plan.placements) == ["p0", "p1", "p2"]
    assert len({p.offer_id.split(".")[0] for p in plan.placements}) == 3
    assert {u.workload: u.replicas for u in plan.unplaced} == {"p3": 1, "pair": 2}
    # the objective is the plan's own, above the merged model's bound
    assert plan.solver.status == "FEASIBLE" and plan.solver.objective > plan.solver.best_bound


def test_hinted_replicas_stay_on_their_nodes() -> None:
    s = cluster(11, 30, [("H100", 8, 5, 2.0)], sizes=(1, 2))
    offers = s.inventory.inventory.offers
    free = _plan(s)
    # four placed workloads asked to stay on the last node, on the slice they use
    last = max(o.id for o in offers).split(".")[0]
    moved = [p for p in free.placements if not p.offer_id.startswith(last)][:4]
    hint = {p.workload: {next(o.id for o in offers if o.id.startswith(last) and o.gpu_count == p.gpus_per_node): 1}
            for p in moved}
    hinted = _plan(s, hint=hint)
    assert verify_plan(hinted, s) == []
    assert hinted.solver.objective == free.solver.objective
    for w, want in hint.items():
        assert set(want) <= {p.offer_id for p in hinted.placements if p.workload == w}
        assert not set(want) & {p.offer_id for p in free.placements if p.workload == w}


def test_a_replica_bigger_than_every_node_is_not_placed_on_the_class() -> None:
    s = cluster(2, 0, [("A100", 2, 6, 1.0)], slices=(1, 2))
    pod = Workload.model_validate({"name": "big", "team": "t", "kind": "batch", "priority": 100,
                                   "gpu": {"models": ["A100"], "count": 4}})
    small = Workload.model_validate({"name": "small", "team": "t", "gpu": {"models": ["A100"], "count": 2},
                                     "priority": 100})
    s = Scenario(workloads=LoadedWorkloads((pod, small), (), s.workloads.digest, (), {}), inventory=s.inventory,
                 policies=s.policies, policy_dir=None, inventory_path="test", policy_path=None)
    inv, pol = s.inventory.inventory, s.policies.policies
    agg = aggregate_offers(inv)
    assert agg is not None
    ws = s.workloads.workloads
    m, _ = scale.build_model(ws, agg.inventory, pol, candidate_arrays(ws, agg.inventory, pol),
                             scale._offer_arrays(agg.inventory, pol, agg))
    # 4 GPUs as two 2-GPU slices (or four 1-GPU ones) of one 2-GPU node: no member holds it, so
    # neither does the class, whose 12 GPUs would
    assert len(m.cap[m.cw == 0]) == 2 and m.cap[m.cw == 0].tolist() == [0, 0]
    assert m.cap[m.cw == 1].tolist() == [1]
    plan = _plan(s)
    assert verify_plan(plan, s) == []
    assert [u.workload for u in plan.unplaced] == ["big"]
