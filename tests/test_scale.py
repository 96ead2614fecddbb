"""The large-instance planner (placement.scale): same candidates, feasible plans, honest bounds."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from placement import scale
from placement.candidates import candidates_for, region_egress_table
from placement.fastfilter import candidate_arrays
from placement.inputs import LoadedInventory, LoadedPolicies, LoadedWorkloads
from placement.models import Inventory, PolicySet, Workload
from placement.planner import PlanOptions, build_candidates, make_plan, plan_to_json
from placement.scenario import Scenario, load_scenario
from placement.solver import SolveOptions, solve
from placement.verify import verify_plan

METROS = [
    ("US", "US", 38.9, -77.4), ("US", "US", 37.4, -122.1), ("DE", "EU", 50.1, 8.7), ("NL", "EU", 52.4, 4.9),
    ("FR", "EU", 48.9, 2.35), ("JP", "JP", 35.7, 139.7), ("SG", "SG", 1.35, 103.8), ("GB", "UK", 51.5, -0.1),
]
MODELS = [("H100", 80.0, 3.0), ("A100", 80.0, 1.8), ("L4", 24.0, 0.7), ("L40S", 48.0, 1.1)]
PROVIDERS = [("aws", "hyperscaler"), ("gcp", "hyperscaler"), ("lambda", "specialist"), ("corp", "on-prem")]


def generate(seed: int, n_workloads: int, n_offers: int, variant: str) -> Scenario:
    """A seeded synthetic scenario. Variants: loose, tight, residency, infeasible, budgets, spot, spread."""
    rng = random.Random(seed)
    tight = variant != "loose"
    offers: list[dict[str, Any]] = []
    pools: list[dict[str, Any]] = []
    for i in range(n_offers):
        prov, kind = PROVIDERS[i % len(PROVIDERS)]
        country, jur, lat, lon = METROS[rng.randrange(len(METROS))]
        model, mem, price = MODELS[rng.randrange(len(MODELS))]
        count = rng.choice([1, 1, 2, 4, 8])
        cap = "owned" if prov == "corp" else rng.choice(["on-demand", "on-demand", "spot"])
        region = f"r{lat:.0f}_{lon:.0f}".replace("-", "m").replace(".", "_")
        offer: dict[str, Any] = dict(
            id=f"{prov}/{region}/t{i}/{cap}", provider=prov, provider_kind=kind, region=region, country=country,
            jurisdiction=jur, instance_type=f"t{i}", gpu_model=model, gpu_count=count, gpu_memory_gib=mem,
            vcpus=8 * count, memory_gib=64.0 * count, capacity_type=cap,
            hourly_usd=round(price * count * rng.uniform(0.6, 1.4) * (0.4 if cap == "spot" else 1.0), 3),
            location={"lat": lat, "lon": lon}, carbon_g_per_kwh=rng.choice([None, 50.0, 300.0]),
            egress_usd_per_gb=0.05,
        )
        if tight or rng.random() < 0.3:
            offer["available"] = rng.randint(0, 4)
        if prov == "corp":
            offer["pools"] = [f"corp/{model}"]
        offers.append(offer)
    for model, _, _ in MODELS:
        if any(o.get("pools") == [f"corp/{model}"] for o in offers):
            pools.append({"id": f"corp/{model}", "limit": rng.randint(4, 24) if tight else 200, "unit": "gpus"})
    inventory = Inventory.model_validate({
        "snapshot": {"name": "test", "taken_on": "2026-11-20", "prices": "synthetic"},
        "offers": offers, "pools": pools,
    })
    teams = [f"team{t}" for t in range(4)]
    workloads: list[Workload] = []
    for i in range(n_workloads):
        n_models = rng.randint(1, 3)
        models = rng.sample([m for m, _, _ in MODELS], n_models)
        replicas = rng.choice([1, 1, 2, 3])
        batch = rng.random() < 0.25
        w: dict[str, Any] = {
            "name": f"w{i:04d}", "team": teams[i % len(teams)], "kind": "batch" if batch else "service",
            "replicas": replicas, "gpu": {"models": models, "count": rng.choice([1, 1, 2, 4, 8] if batch else [1, 1, 2])},
            "interruptible": rng.random() < 0.4, "priority": rng.choice([10, 50, 100, 100, 500]),
        }
        if replicas > 1 and rng.random() < 0.4:
            w["min_replicas"] = rng.randint(1, replicas)
        if variant in ("residency", "infeasible") and rng.random() < 0.6:
            w["residency"] = {"jurisdictions": [rng.choice(["US", "EU", "JP"])]}
        if variant == "infeasible" and rng.random() < 0.15:
            w["gpu"]["min_memory_gib"] = 500
        if variant == "residency" and rng.random() < 0.2 and not batch:
            _, _, lat, lon = METROS[rng.randrange(len(METROS))]
            w["users"] = [{"name": f"u{lat:.0f}", "location": {"lat": lat, "lon": lon}, "max_latency_ms": 40}]
        if variant == "budgets" and rng.random() < 0.5:
            w["budget_hourly_usd"] = round(rng.uniform(1.0, 12.0) * replicas, 2)
        if variant == "spread" and replicas > 1 and rng.random() < 0.5:
            w["spread"] = {"min_regions": 2}
        if rng.random() < 0.2:
            w["dataset"] = {"provider": "aws", "region": offers[0]["region"], "size_gb": rng.choice([100, 2000])}
        workloads.append(Workload.model_validate(w))
    team_rules: dict[str, Any] = {}
    if variant == "budgets":
        team_rules = {"team0": {"budget_hourly_usd": 20.0}, "team1": {"budget_monthly_usd": 30000.0}}
    if variant == "spot":
        team_rules = {t: {"max_interruptible_share": 0.3} for t in teams[:3]}
    policies = PolicySet.model_validate({
        "teams": team_rules,
        "preferences": {"carbon_usd_per_tonne": 80.0, "owned_bonus_usd_per_gpu_hour": 0.2},
    })
    tag = "sha256:" + "0" * 64
    return Scenario(
        workloads=LoadedWorkloads(tuple(workloads), (), tag, (), {}),
        inventory=LoadedInventory(inventory, (), tag),
        policies=LoadedPolicies(policies, (), tag, ()),
        policy_dir=None, inventory_path="test", policy_path=None,
    )


VARIANTS = ["loose", "tight", "residency", "infeasible", "budgets", "spot", "spread"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_vectorised_filter_matches_the_scalar_filter(variant: str) -> None:
    s = generate(11, 120, 60, variant)
    inv, pol = s.inventory.inventory, s.policies.policies
    egress = region_egress_table(inv)
    scalar = [candidates_for(w, inv, pol, egress) for w in s.workloads.workloads]
    ca = candidate_arrays(s.workloads.workloads, inv, pol)
    expected = [(wi, c.offer_index, c.gpus_needed, c.nodes, c.instance_hourly_usd, c.egress_hourly_usd,
                 c.carbon_kg_per_hour, c.preference_hourly_usd)
                for wi, wc in enumerate(scalar) for c in wc.candidates]
    got = [(int(ca.workload[i]), int(ca.offer[i]), int(ca.gpus_needed[i]), int(ca.nodes[i]),
            float(ca.instance_hourly_usd[i]), float(ca.egress_hourly_usd[i]),
            None if np.isnan(ca.carbon_kg_per_hour[i]) else float(ca.carbon_kg_per_hour[i]),
            float(ca.preference_hourly_usd[i]))
           for i in range(len(ca))]
    assert got == expected  # same pairs, same order, bit-identical numbers
    assert len(got) > 0


def _scale_plan(s: Scenario, **kw: Any) -> Any:
    return make_plan(s, PlanOptions(method="scale", max_deterministic_time=kw.pop("det", 4.0), **kw))


@pytest.mark.parametrize("variant", VARIANTS)
def test_scale_plans_are_feasible_with_a_valid_bound(variant: str) -> None:
    s = generate(5, 60, 30, variant)
    plan = _scale_plan(s)
    assert verify_plan(plan, s) == []
    st = plan.solver
    assert st.best_bound <= st.objective + 1e-6
    assert 0.0 <= st.fixed_penalty <= st.best_bound + 1e-6
    assert st.gap == pytest.approx((st.objective - st.best_bound) / (st.objective - st.fixed_penalty), abs=1e-5) \
        or st.gap == 0.0
    # the exact CP-SAT optimum of the same model is never below the reported bound
    problems = build_candidates(s)
    exact = solve(problems, s.inventory.inventory, s.policies.policies,
                  SolveOptions(max_deterministic_time=20.0, workers=2))
    assert exact.best_bound_usd <= exact.objective_usd + 1e-6
    assert st.best_bound <= exact.objective_usd + 1e-3
    if exact.status == "OPTIMAL":
        assert st.objective >= exact.objective_usd - 1e-3


@pytest.mark.parametrize("variant", ["tight", "spot", "budgets"])
def test_large_component_path_is_feasible_and_bounded(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # force the Lagrangian + neighbourhood path on a component of moderate size
    monkeypatch.setattr(scale, "EXACT_MAX_CANDIDATES", 10)
    s = generate(23, 120, 40, variant)
    plan = _scale_plan(s, det=0.5)
    assert verify_plan(plan, s) == []
    assert plan.solver.best_bound <= plan.solver.objective + 1e-6
    problems = build_candidates(s)
    exact = solve(problems, s.inventory.inventory, s.policies.policies,
                  SolveOptions(max_deterministic_time=5.0, workers=2))
    assert plan.solver.best_bound <= exact.objective_usd + 1e-3


def test_relaxation_bound_is_below_any_feasible_plan() -> None:
    s = generate(3, 150, 50, "tight")
    w, inv, pol = s.workloads.workloads, s.inventory.inventory, s.policies.policies
    m, _ = scale.build_model(w, inv, pol, candidate_arrays(w, inv, pol))
    lag = scale.Lagrange(m)
    rc = m.cost.astype(np.float64)
    x = scale.greedy(m, rc, scale._order(m, np.zeros(m.n_c, np.int64), rc))
    assert scale.check(m, x) == []
    lag.run(30, lambda: float(m.objective(x)))
    assert lag.bound(m.objective(x)) <= m.objective(x)


@pytest.mark.parametrize("variant", ["tight", "budgets", "spot"])
def test_reduced_costs_add_each_limits_price_times_what_the_candidate_uses_of_it(variant: str) -> None:
    s = generate(5, 120, 40, variant)
    m = _model(s)
    lag = scale.Lagrange(m)
    rng = np.random.default_rng(1)
    n_t = len(m.team_budget)
    p = scale.Prices(rng.uniform(0, 50, len(m.avail)), rng.uniform(0, 20, len(m.pool_limit)),
                     rng.uniform(0, 0.5, n_t), rng.uniform(-5, 5, n_t))
    rc = p.reduced(m, lag.pools, lag.coef)
    coef = m.spot_coef()
    for c in range(m.n_c):
        o, w, nodes = int(m.offer[c]), int(m.cw[c]), int(m.nodes[c])
        want = float(m.cost[c]) + nodes * p.offer[o]
        for k in range(int(m.pool_start[o]), int(m.pool_start[o + 1])):
            want += p.pool[int(m.pool_id[k])] * int(m.pool_per_node[k]) * nodes
        t = int(m.team[w])
        if t >= 0:
            want += p.budget[t] * float(m.hourly[c]) + p.share[t] * float(coef[c])
        assert rc[c] == pytest.approx(want, rel=1e-12, abs=1e-9)
    if variant == "budgets":
        assert (m.team >= 0).any() and (m.team < 0).any()  # with and without a team
    assert len(lag.pools[0]) > 0  # with quota pools


def test_same_inputs_same_plan_and_workers_do_not_matter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale, "EXACT_MAX_CANDIDATES", 200)
    monkeypatch.setattr(scale, "EXACT_BATCH_CANDIDATES", 400)
    s = generate(8, 150, 60, "residency")
    one = plan_to_json(_scale_plan(s, workers=1, det=2.0))
    again = plan_to_json(_scale_plan(s, workers=1, det=2.0))
    two = plan_to_json(_scale_plan(s, workers=2, det=2.0))
    assert one == again == two


def test_auto_uses_exact_path_for_small_and_scale_for_large() -> None:
    small = generate(1, 20, 10, "loose")
    assert not scale.use_scale(small)
    assert make_plan(small).solver.method == "cp-sat"
    big = generate(1, scale.SCALE_MIN_WORKLOADS, 10, "loose")
    assert scale.use_scale(big)


def test_unplaced_workloads_are_explained_like_the_exact_path() -> None:
    s = generate(4, 60, 30, "infeasible")
    fast = _scale_plan(s)
    exact = make_plan(s, PlanOptions(method="exact", max_deterministic_time=5.0))
    no_fit = {u.workload: u for u in exact.unplaced if "fit on their own" not in u.summary}
    for u in fast.unplaced:
        if u.workload in no_fit:
            assert u.summary == no_fit[u.workload].summary
            assert u.reasons == no_fit[u.workload].reasons


def test_workloads_alike_but_for_their_names_are_explained_as_each_alone() -> None:
    # The scale path runs the scalar filter once per workload as it is but for its name; every
    # explanation must still be the one of that workload's own candidate list, placed replicas and
    # team spend.
    from collections import defaultdict

    from placement.planner import unplaced_summary

    base = generate(4, 60, 30, "budgets")
    originals = base.workloads.workloads
    copies = tuple(w.model_copy(update={"name": f"{w.name}-copy{k}"}) for w in originals[::2] for k in range(2))
    s = replace(base, workloads=replace(base.workloads, workloads=originals + copies))
    plan = _scale_plan(s)
    inv, pol = s.inventory.inventory, s.policies.policies
    egress = region_egress_table(inv)
    spend: dict[str, float] = defaultdict(float)
    for p in plan.placements:
        spend[p.team] += p.hourly_usd + p.egress_hourly_usd
    by_name = {w.name: w for w in s.workloads.workloads}
    explained_copies = 0
    for u in plan.unplaced:
        w = by_name[u.workload]
        summary, counts = unplaced_summary(candidates_for(w, inv, pol, egress), inv, pol,
                                           w.replicas - u.replicas, spend[w.team])
        assert (u.summary, u.reasons) == (summary, counts), u.workload
        explained_copies += "-copy" in u.workload
    assert explained_copies > 0
    assert any("fit on their own" in u.summary for u in plan.unplaced)


def test_cli_method_scale_on_a_scenario(tmp_path: Any) -> None:
    import json
    import subprocess
    import sys

    out = tmp_path / "plan.json"
    run = subprocess.run([sys.executable, "-m", "placement.cli", "plan", "scenarios/eu-bank", "--method", "scale",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    plan = json.loads(out.read_text())
    assert plan["solver"]["method"] == "scale" and plan["solver"]["best_bound"] <= plan["solver"]["objective"]
    assert "solver scale:" in run.stdout and "gap" in run.stdout
    exact = make_plan(load_scenario(Path("scenarios/eu-bank")))
    assert plan["solver"]["objective"] >= exact.solver.objective - 1e-6  # never better than the proven optimum
    bad = subprocess.run([sys.executable, "-m", "placement.cli", "plan", "scenarios/eu-bank", "--method", "fast"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "--method must be" in bad.stderr


def _model(s: Scenario) -> scale.Model:
    w, inv, pol = s.workloads.workloads, s.inventory.inventory, s.policies.policies
    m, _ = scale.build_model(w, inv, pol, candidate_arrays(w, inv, pol))
    return m


def _exact_objective(s: Scenario) -> tuple[float, str]:
    """The exact CP-SAT path's objective (a feasible plan's, so at least the optimum) and status."""
    exact = solve(build_candidates(s), s.inventory.inventory, s.policies.policies,
                  SolveOptions(max_deterministic_time=3.0, workers=2))
    return exact.objective_usd, exact.status


def _greedy_and_lp(variant: str) -> tuple[Scenario, scale.Model, np.ndarray, scale.LPResult]:
    """A 90-workload scenario's model, its capacity-aware greedy plan at cost and its LP relaxation."""
    s = generate(31, 90, 36, variant)
    m = _model(s)
    cost = m.cost.astype(np.float64)
    x = scale.greedy(m, cost, scale._order(m, np.zeros(m.n_c, np.int64), cost))
    return s, m, x, scale.lp_relaxation(m, x, scale.Lagrange(m), float(scale.fixed_penalty(m)))


@pytest.mark.parametrize("variant", ["tight", "budgets", "spot", "spread"])
def test_lp_by_column_generation_bounds_the_integer_optimum(variant: str) -> None:
    s, m, x, lp = _greedy_and_lp(variant)
    # the restricted LP's optimum is above its Lagrangian value, which is a valid bound
    assert lp.bound <= lp.value + 1e-6 * abs(lp.value)
    assert lp.bound <= m.objective(x)
    optimum, status = _exact_objective(s)
    assert lp.bound / scale.MONEY_SCALE <= optimum + 1e-3
    if status == "OPTIMAL":  # the relaxation cannot be far below a proven optimum on these
        assert lp.bound / scale.MONEY_SCALE >= optimum - 0.5 * (optimum - scale.fixed_penalty(m) / scale.MONEY_SCALE)
    # the LP's solution keeps every shared limit (fractionally)
    used = np.bincount(m.offer, weights=m.nodes * lp.x, minlength=len(m.avail))
    assert ((m.avail < 0) | (used <= m.avail + 1e-6)).all()
    assert (lp.x <= m.cap + 1e-6).all() and (lp.x >= -1e-9).all()


@pytest.mark.parametrize("variant", ["tight", "budgets", "spot", "spread"])
def test_fix_integral_keeps_the_lp_where_it_is_integral_and_reoptimises_the_rest(variant: str) -> None:
    _s, m, x, lp = _greedy_and_lp(variant)
    cost = m.cost.astype(np.float64)
    split = np.zeros(m.n_w, bool)
    split[m.cw[np.abs(lp.x - np.round(lp.x)) > 1e-6]] = True
    assert split.any()  # a fractional LP, or the test shows nothing
    r = scale.fix_integral(m, lp.x, x, seed=0)
    assert scale.check(m, r.x) == []
    assert r.objective == m.objective(r.x)
    # Workloads the LP does not split keep its values, unless the rounding had to drop them.
    kept = np.where(split[m.cw], 0.0, lp.x)
    rounded = scale.round_lp(m, kept)
    same = ~split
    same[m.cw[np.round(kept).astype(np.int64) != rounded]] = False
    assert same.any()
    assert (r.x[same[m.cw]] == rounded[same[m.cw]]).all()
    # The MIP starts from that part with the rest unplaced, and never returns worse.
    start = np.where(same[m.cw], rounded, 0)
    assert r.objective <= m.objective(start)
    # On instances this small HiGHS solves that MIP outright: the freed workloads are placed as
    # well as they can be around the kept part (within the MIP's relative gap tolerance), and no
    # worse than the greedy would place them.
    best = scale.mip(m, np.flatnonzero(~same), start, 10**6, seed=1)
    assert abs(r.objective - best.objective) <= 1e-6 * abs(best.objective), (r.objective, best.objective)
    order = [w for w in scale._order(m, np.zeros(m.n_c, np.int64), cost) if not same[w]]
    completed = scale.greedy(m, cost, order, scale.Residual(m, start), start.copy())
    assert (completed[same[m.cw]] == start[same[m.cw]]).all()
    assert r.objective <= m.objective(completed)
    # An integral LP is returned as the plan given.
    whole = scale.fix_integral(m, np.round(lp.x), x, seed=0)
    assert whole.status == "INTEGRAL" and (whole.x == x).all() and whole.det_time == 0.0


@pytest.mark.parametrize("variant", ["budgets", "tight", "spot"])
def test_components_are_the_connected_workloads(variant: str) -> None:
    s = generate(47, 160, 50, variant)
    m = _model(s)
    comps = scale.components(m)
    # reference: union-find over workload -- limited offer / pool / team links
    parent = list(range(m.n_w))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    owner: dict[tuple[str, int], int] = {}

    def link(w: int, key: tuple[str, int]) -> None:
        if key in owner:
            parent[find(w)] = find(owner[key])
        else:
            owner[key] = w

    for c in range(m.n_c):
        w, o = int(m.cw[c]), int(m.offer[c])
        if m.avail[o] >= 0:
            link(w, ("o", o))
        for p in m.pool_id[m.pool_start[o]:m.pool_start[o + 1]].tolist():
            link(w, ("p", p))
    for w in range(m.n_w):
        if m.team[w] >= 0:
            link(w, ("t", int(m.team[w])))
    expected: dict[int, list[int]] = {}
    for w in range(m.n_w):
        expected.setdefault(find(w), []).append(w)
    assert sorted(map(tuple, expected.values())) == [tuple(g.tolist()) for g in comps]
    if variant == "budgets":
        assert len(comps) > 1  # this one does decompose
    assert [int(g[0]) for g in comps] == sorted(int(g[0]) for g in comps)


def test_restricted_lp_with_columns_added_between_solves_matches_a_fresh_solve() -> None:
    s = generate(43, 150, 50, "tight")
    m = _model(s)
    rows = scale._LPRows(m)
    live = np.flatnonzero(m.cap > 0)
    first, rest = live[::2], live[1::2]
    warm = scale._RestrictedLP(m, rows)
    warm.add(first)
    _x1, _y1, v1 = warm.solve()
    warm.add(rest)
    x2, _y2, v2 = warm.solve()
    fresh = scale._RestrictedLP(m, rows)
    fresh.add(np.sort(live))
    _x3, _y3, v3 = fresh.solve()
    assert v2 <= v1 + 1e-6 * abs(v1)  # more columns can only lower the optimum
    assert v2 == pytest.approx(v3, rel=1e-9, abs=1.0)
    assert list(warm.cols) == [*first.tolist(), *rest.tolist()]
    # the warm solution, put back on the candidates, keeps every shared limit
    x = np.zeros(m.n_c)
    x[warm.cols] = x2
    used = np.bincount(m.offer, weights=m.nodes * x, minlength=len(m.avail))
    assert ((m.avail < 0) | (used <= m.avail + 1e-6)).all()
    # HiGHS through MathOpt still works in the same process after highspy (one HiGHS release)
    cost = m.cost.astype(np.float64)
    xg = scale.greedy(m, cost, scale._order(m, np.zeros(m.n_c, np.int64), cost))
    r = scale.mip(m, np.arange(m.n_w, dtype=np.int64), xg, 50, seed=0)
    assert r.bound is not None and r.bound <= r.objective
    assert scale.check(m, r.x) == []


def test_restricted_lp_resolves_few_new_columns_by_primal_simplex_to_the_fresh_optimum() -> None:
    s = generate(43, 150, 50, "tight")
    m = _model(s)
    rows = scale._LPRows(m)
    live = np.flatnonzero(m.cap > 0)
    few = live[::40]  # under LP_PRIMAL_SHARE of the rest
    many = np.setdiff1d(live, few)
    assert len(few) < scale.LP_PRIMAL_SHARE * len(many)
    warm = scale._RestrictedLP(m, rows)
    warm.add(many)
    warm.solve()
    assert warm.h.getOptionValue("simplex_strategy")[1] == 1  # a first solve: dual simplex
    warm.add(few)
    x, _y, v = warm.solve()
    assert warm.h.getOptionValue("simplex_strategy")[1] == 4  # a few new columns: primal
    fresh = scale._RestrictedLP(m, rows)
    fresh.add(live)
    _x, _y, v_fresh = fresh.solve()
    assert v == pytest.approx(v_fresh, rel=1e-9, abs=1.0)
    assert fresh.h.getOptionValue("presolve")[1] == "off"
    # many new columns again (as many as were in it): back to the dual simplex
    again = scale._RestrictedLP(m, rows)
    again.add(live[::2])
    again.solve()
    again.add(live[1::2])
    again.solve()
    assert again.h.getOptionValue("simplex_strategy")[1] == 1
    xs = np.zeros(m.n_c)
    xs[warm.cols] = x
    assert (xs <= m.cap + 1e-6).all()


@pytest.mark.parametrize("variant", ["tight", "spot", "spread", "budgets"])
def test_rounded_lp_and_its_top_up_keep_every_hard_constraint(variant: str) -> None:
    s = generate(37, 200, 60, variant)
    m = _model(s)
    lag = scale.Lagrange(m)
    cost = m.cost.astype(np.float64)
    x0 = scale.greedy(m, cost, scale._order(m, np.zeros(m.n_c, np.int64), cost))
    lp = scale.lp_relaxation(m, x0, lag, 0.0)
    xr = scale.round_lp(m, lp.x)
    assert scale.check(m, xr) == []
    assert (xr <= np.floor(lp.x + 1e-6)).all()
    rc, x_rel, _ = lag.evaluate(lp.prices)
    topped = scale.greedy(m, rc, scale._order(m, x_rel, rc), scale.Residual(m, xr), xr.copy())
    assert scale.check(m, topped) == []
    assert (topped >= xr).all()  # the top-up only adds
    assert m.objective(topped) <= m.objective(xr)


def test_greedy_tops_up_a_partial_plan_without_exceeding_replicas() -> None:
    s = generate(41, 120, 40, "loose")
    m = _model(s)
    cost = m.cost.astype(np.float64)
    full = scale.greedy(m, cost, scale._order(m, np.zeros(m.n_c, np.int64), cost))
    # take one replica off every workload that has more than its minimum, then top up again
    partial = full.copy()
    placed = np.bincount(m.cw, weights=full, minlength=m.n_w).astype(np.int64)
    for w in np.flatnonzero(placed > np.maximum(m.fewest, 1)).tolist():
        c = int(m.start[w]) + int(np.flatnonzero(partial[m.start[w]:m.start[w + 1]])[0])
        partial[c] -= 1
    assert scale.check(m, partial) == []
    again = scale.greedy(m, cost, scale._order(m, np.zeros(m.n_c, np.int64), cost), scale.Residual(m, partial),
                         partial.copy())
    assert scale.check(m, again) == []
    placed_again = np.bincount(m.cw, weights=again, minlength=m.n_w)
    assert (placed_again <= m.replicas).all()
    assert placed_again.sum() >= placed.sum()


@pytest.mark.parametrize("variant", ["tight", "spread", "budgets", "spot"])
def test_greedy_plan_does_not_depend_on_how_many_candidates_it_reads_ahead(variant: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    s = generate(29, 150, 50, variant)
    m = _model(s)
    rng = np.random.default_rng(2)
    rc = m.cost.astype(np.float64) + rng.uniform(0, float(m.cost.mean()), m.n_c)
    rc = np.round(rc / float(m.cost.mean())) * float(m.cost.mean())  # ties within workloads
    order = scale._order(m, np.zeros(m.n_c, np.int64), rc)
    plans = []
    for head in (1, 2, 8, 10**9):
        monkeypatch.setattr(scale, "GREEDY_HEAD", head)
        monkeypatch.setattr(scale, "GREEDY_BATCH", 16)
        x = scale.greedy(m, rc, order)
        assert scale.check(m, x) == []
        half = x.copy()
        half[m.cw % 2 == 0] = 0
        topped = scale.greedy(m, rc, order, scale.Residual(m, half), half.copy())
        assert scale.check(m, topped) == []
        plans.append((x, topped))
    for x, topped in plans[1:]:
        assert np.array_equal(x, plans[0][0])
        assert np.array_equal(topped, plans[0][1])
    # some workload holds replicas on two candidates or more: reading one ahead, it read the rest
    assert (np.bincount(m.cw, weights=plans[0][0] > 0, minlength=m.n_w) >= 2).any()


@pytest.mark.parametrize("by_offer", [False, True])
def test_pop_parts_share_every_limit_and_add_up_to_a_feasible_plan(by_offer: bool) -> None:
    s = generate(43, 240, 50, "spot")
    m = _model(s)
    parts = scale.pop_parts(m, 3, by_offer)
    assert sorted(np.concatenate([p.workload_ids for p in parts]).tolist()) == list(range(m.n_w))
    for p in parts:  # a part's candidates are candidates of its workloads, unchanged
        assert (m.cw[p.cand_ids] == p.workload_ids[p.cw]).all() and (m.cost[p.cand_ids] == p.cost).all()
    if by_offer:
        # every limited offer is in at most one part's candidates, and that part has all of it
        owners = [set(p.offer[m.avail[p.offer] >= 0].tolist()) for p in parts]
        assert all(not (owners[i] & owners[j]) for i in range(3) for j in range(i + 1, 3))
        for p, own in zip(parts, owners, strict=True):
            assert all(p.avail[o] == m.avail[o] for o in own)
        assert sum(p.n_c for p in parts) < m.n_c
    else:
        assert sum(p.n_c for p in parts) == m.n_c
    for field in ("avail", "pool_limit", "team_budget"):
        total = getattr(m, field)
        shares = np.stack([getattr(p, field) for p in parts])
        limited = total >= 0
        assert (shares[:, limited] >= 0).all()
        assert (shares[:, limited].sum(axis=0) == total[limited]).all()
        assert (shares[:, ~limited] == total[~limited]).all()
    x = np.zeros(m.n_c, np.int64)
    for p in parts:
        cost = p.cost.astype(np.float64)
        xp = scale.greedy(p, cost, scale._order(p, np.zeros(p.n_c, np.int64), cost))
        assert scale.check(p, xp) == []
        x[p.cand_ids] = xp
    assert scale.check(m, x) == []


@pytest.mark.parametrize(("by_offer", "lp_prices"), [(False, False), (True, False), (True, True)])
def test_split_components_give_a_feasible_plan_with_a_valid_bound(by_offer: bool, lp_prices: bool,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A component too large for one LP: repaired from its first plan at the prices of the LP over
    the whole; split into parts (POP) only where that LP gives no prices."""
    monkeypatch.setattr(scale, "POP_BY_OFFER", by_offer)
    if not lp_prices:
        monkeypatch.setattr(scale, "whole_lp_start", lambda lm, key=None: None)
    monkeypatch.setattr(scale, "EXACT_MAX_CANDIDATES", 10)
    monkeypatch.setattr(scale, "POP_MAX_WORKLOADS", 60)
    monkeypatch.setattr(scale, "POP_PART_WORKLOADS", 50)
    calls: list[int] = []
    split = scale.pop_parts

    def counted(m: scale.Model, k: int, by_offer: bool = False) -> list[scale.Model]:
        calls.append(k)
        return split(m, k, by_offer)

    monkeypatch.setattr(scale, "pop_parts", counted)
    s = generate(47, 150, 40, "tight")
    plan = _scale_plan(s, det=2.0, workers=None if lp_prices else 1)  # (the stand-in LP runs in this process)
    if lp_prices:
        assert calls == []  # the LP's prices: no parts
    else:
        assert calls and all(k >= 2 for k in calls)  # the component was split
    assert verify_plan(plan, s) == []
    optimum, _ = _exact_objective(s)
    assert plan.solver.best_bound <= plan.solver.objective + 1e-6
    assert plan.solver.best_bound <= optimum + 1e-3


def test_a_workload_whose_candidates_cannot_hold_its_minimum_is_unplaceable() -> None:
    s = generate(53, 80, 30, "tight")
    m = _model(s)
    room = np.array([int(m.cap[m.start[w]:m.start[w + 1]].sum()) for w in range(m.n_w)])
    # build_model zeroes the caps of unplaceable workloads: none is left with room below its least
    least = np.maximum(m.fewest, np.maximum(m.min_providers, m.min_regions))
    assert not ((room > 0) & (room < least)).any()
    # and a workload asking more than its candidates can hold is caught
    w = int(np.flatnonzero(room > 0)[0])
    m.fewest[w] = room[w] + 1
    m.replicas[w] = max(int(m.replicas[w]), room[w] + 1)
    assert scale.unplaceable(m)[w]
    assert scale.fixed_penalty(m) >= 0


@pytest.mark.parametrize("variant", ["tight", "budgets", "spread", "spot"])
def test_pruned_relaxations_stay_below_the_unpruned_ones(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale, "PRUNE_SPREAD", 2)
    s = generate(31, 90, 36, variant)
    m = _model(s)
    pm, kept = scale.prune(m, 2)
    assert pm.n_c < m.n_c and (np.diff(kept) > 0).all()
    # in small chunks of workloads, the same
    chunk = scale.PRUNE_CHUNK_CANDIDATES
    try:
        scale.PRUNE_CHUNK_CANDIDATES = 7
        pm7, kept7 = scale.prune(m, 2)
    finally:
        scale.PRUNE_CHUNK_CANDIDATES = chunk
    assert (kept7 == kept).all() and np.array_equal(pm7.dropped, pm.dropped)
    # every workload keeps its 2 cheapest (8 when spread), and at least its cheapest dropped costs as much
    spread = (m.min_providers > 1) | (m.min_regions > 1)
    for w in range(m.n_w):
        s0, e0 = int(m.start[w]), int(m.start[w + 1])
        mine = kept[(kept >= s0) & (kept < e0)]
        k = 8 if spread[w] else 2
        if len(mine) < e0 - s0:  # it keeps its k cheapest: nothing it lost costs less than those
            gone_all = np.setdiff1d(np.arange(s0, e0), mine)
            assert len(mine) >= k and m.cost[gone_all].min() >= np.sort(m.cost[s0:e0])[k - 1]
            assert len(mine) <= k + 2 or m.most_replicas()[w] > 1 or spread[w]  # k cheapest, 2 beyond
        gone = np.setdiff1d(np.arange(s0, e0), mine)
        gone = gone[m.cap[gone] > 0]
        assert pm.dropped[w] == (m.cost[gone].min() if len(gone) else np.inf)
    assert (pm.cost == m.cost[kept]).all() and (pm.offer == m.offer[kept]).all() and (m.cw[kept] == pm.cw).all()
    spot_team = (m.team >= 0) & (m.team_share[np.maximum(m.team, 0)] >= 0) if len(m.team_share) else \
        np.zeros(m.n_w, bool)
    counts = np.diff(pm.start)
    assert (counts[spot_team] == np.diff(m.start)[spot_team]).all()  # spot-share teams keep every candidate
    # at zero prices the pruned relaxation is the unpruned one (the kept candidates hold every
    # replica), except for spread workloads, whose pruned candidates' groups are unknown: there at most
    _, v_full = scale.relaxed_solution(m, m.cost.astype(np.float64))
    _, v_pruned = scale.relaxed_solution(pm, pm.cost.astype(np.float64))
    assert v_pruned <= v_full + 1e-6 * abs(v_full)
    plain = np.flatnonzero(~spread)
    _, v_full = scale.relaxed_solution(scale.restrict(m, plain), scale.restrict(m, plain).cost.astype(np.float64))
    _, v_pruned = scale.relaxed_solution(scale.restrict(pm, plain), scale.restrict(pm, plain).cost.astype(np.float64))
    assert v_pruned == pytest.approx(v_full)
    # at any prices the pruned Lagrangian value is a lower bound of the unpruned one
    rng = np.random.default_rng(3)
    full, pruned = scale.Lagrange(m), scale.Lagrange(pm)
    for _ in range(5):
        p = scale.Prices(rng.uniform(0, 4e4, len(m.avail)), rng.uniform(0, 2e4, len(m.pool_limit)),
                         rng.uniform(0, 0.3, len(m.team_budget)), rng.uniform(0, 30, len(m.team_share)))
        assert pruned.evaluate(p)[2] <= full.evaluate(p)[2] + 1e-6 * abs(full.evaluate(p)[2])
    # the LP of the pruned model bounds the unpruned model's integer optimum
    cost = pm.cost.astype(np.float64)
    x = scale.greedy(pm, cost, scale._order(pm, np.zeros(pm.n_c, np.int64), cost))
    lp = scale.lp_relaxation(pm, x, scale.Lagrange(pm), float(scale.fixed_penalty(pm)))
    optimum, _ = _exact_objective(s)
    assert lp.bound / scale.MONEY_SCALE <= optimum + 1e-3


def test_a_pruned_model_gives_a_feasible_plan_with_a_valid_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale, "PRUNE_MIN_CANDIDATES", 0)
    monkeypatch.setattr(scale, "PRUNE_KEEP", 2)
    monkeypatch.setattr(scale, "PRUNE_SPREAD", 2)
    pruned: list[int] = []
    prune = scale.prune

    def counted(m: scale.Model, k: int, first: int = 0) -> tuple[scale.Model, np.ndarray]:
        out = prune(m, k, first)
        pruned.append(m.n_c - out[0].n_c)
        return out

    monkeypatch.setattr(scale, "prune", counted)
    s = generate(47, 150, 40, "tight")
    plan = _scale_plan(s, det=2.0)
    assert pruned and pruned[0] > 0
    assert verify_plan(plan, s) == []
    optimum, _ = _exact_objective(s)
    assert plan.solver.best_bound <= plan.solver.objective + 1e-6
    assert plan.solver.best_bound <= optimum + 1e-3


def test_rank_in_group_matches_a_lexsort_for_integer_and_float_keys() -> None:
    rng = np.random.default_rng(1)
    for n in (0, 1, 10, 5000):
        group = rng.integers(0, max(1, n // 7), n)
        key = rng.integers(-50, 50, n)
        for k in (key, key.astype(np.float64)):  # integer keys take the one-key sort, floats the lexsort
            ref = np.lexsort((np.arange(n), k, group))
            rank = np.empty(n, np.int64)
            if n:
                g = group[ref]
                first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
                rank[ref] = np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))
            assert (scale._rank_in_group(group, k) == rank).all()


def test_candidate_caps_keep_within_every_pool_of_their_offer() -> None:
    s = generate(11, 150, 40, "tight")
    m = _model(s)
    by_pool = 0
    for c in range(m.n_c):
        o, n = int(m.offer[c]), int(m.nodes[c])
        held = [int(m.pool_limit[m.pool_id[k]]) // (int(m.pool_per_node[k]) * n)
                for k in range(int(m.pool_start[o]), int(m.pool_start[o + 1]))]
        assert all(m.cap[c] <= h for h in held)
        if m.avail[o] >= 0:
            assert m.cap[c] * n <= m.avail[o]
        # candidates whose replicas only the pool holds back (not their replicas, nor the offer's headroom)
        by_pool += bool(held) and min(held) < m.replicas[m.cw[c]] and (m.avail[o] < 0 or m.avail[o] // n > min(held))
    assert by_pool > 0
    # a plan never puts more on a candidate than its cap, and it still respects every pool
    plan = make_plan(s, PlanOptions(method="scale"))
    assert verify_plan(plan, s) == []


def test_spread_optimum_is_the_best_placement_with_its_spread() -> None:
    import itertools

    rng = np.random.default_rng(5)
    for _ in range(300):
        n = int(rng.integers(1, 5))
        rc = rng.integers(-30, 30, n).astype(np.float64)
        cap = rng.integers(0, 3, n)
        group = rng.integers(0, 3, n)
        least = int(rng.integers(2, 4))
        fewest = int(rng.integers(1, 4))
        most = int(rng.integers(1, 6))
        penalty = float(rng.integers(0, 40))
        value, x = scale._spread_optimum(rc, cap, group, least, fewest, most, penalty)
        best = 0.0
        for xs in itertools.product(*[range(int(c) + 1) for c in cap]):
            xa = np.asarray(xs)
            k = int(xa.sum())
            if k == 0 or (max(fewest, least) <= k <= most and len(set(group[xa > 0].tolist())) >= least):
                best = min(best, float(((rc - penalty) * xa).sum()))
        assert value == pytest.approx(best)
        # and its placement is one with that value, within the caps and the spread
        assert (x <= cap).all() and float(((rc - penalty) * x).sum()) == pytest.approx(value)
        if x.sum():
            assert len(set(group[x > 0].tolist())) >= least and max(fewest, least) <= x.sum() <= most


@pytest.mark.parametrize("variant", ["spread", "tight"])
def test_lp_relaxation_is_the_exact_models_lp(variant: str) -> None:
    """The column generation's LP, spread rows included, is the LP relaxation of the exact model
    (the benchmark's independent formulation of it, solved whole by HiGHS)."""
    from bench import baselines as B

    s = generate(30, 120, 40, variant)
    m = _model(s)
    cost = m.cost.astype(np.float64)
    x = scale.greedy(m, cost, scale._order(m, np.zeros(m.n_c, np.int64), cost))
    lp = scale.lp_relaxation(m, x, scale.Lagrange(m), float(scale.fixed_penalty(m)))
    inv, pol = s.inventory.inventory, s.policies.policies
    egress = region_egress_table(inv)
    prob = B.compact_problem([candidates_for(w, inv, pol, egress) for w in s.workloads.workloads], inv, pol)
    whole = B.run_highs(prob, relax=True, time_limit=60, threads=1)["lp_objective"]
    assert variant != "spread" or ((m.min_providers > 1) | (m.min_regions > 1)).any()
    # the Lagrangian value (the bound) is below the LP, the restricted LP's optimum above it
    assert lp.bound / scale.MONEY_SCALE <= whole * (1 + 1e-6)
    assert lp.value / scale.MONEY_SCALE >= whole * (1 - 1e-6)
    assert (lp.value - lp.bound) <= 1e-3 * (lp.value - scale.fixed_penalty(m))


@pytest.mark.parametrize(("pruned", "threads"), [("no", 1), ("early", 1), ("no", 3), ("early", 3), ("late", 3)])
def test_filtering_block_by_block_gives_the_model_of_all_workloads_at_once(
        monkeypatch: pytest.MonkeyPatch, pruned: str, threads: int) -> None:
    g = generate(23, 90, 40, "spread")
    # Each offer three times (equal costs: pruning's rotation among them depends on the workload's number).
    inv = g.inventory.inventory.model_copy(update={"offers": tuple(
        o.model_copy(update={"id": f"{o.id}/{k}"}) for k in range(3) for o in g.inventory.inventory.offers)})
    s = replace(g, inventory=LoadedInventory(inv, (), g.inventory.digest))
    ws, pol = s.workloads.workloads, s.policies.policies
    if pruned != "no":
        # early: the first blocks' candidates are over the threshold, so the threads prune every block
        # but the first; late: over it only with half of the blocks, the others held and pruned here
        n_all = scale.filtered_model(ws, inv, pol)[1].n_all
        monkeypatch.setattr(scale, "PRUNE_MIN_CANDIDATES", 50 if pruned == "early" else n_all // 2)
        monkeypatch.setattr(scale, "PRUNE_KEEP", 2)
        monkeypatch.setattr(scale, "PRUNE_SPREAD", 2)
    whole, fw = scale.filtered_model(ws, inv, pol)
    plan_whole = _scale_plan(s, det=2.0, workers=1) if threads == 1 else None
    monkeypatch.setattr(scale, "BLOCK_PAIRS", len(inv.offers))  # blocks of one workload
    in_threads: list[bool] = []
    prune = scale.prune

    def pruning(*a: Any, **k: Any) -> Any:
        in_threads.append(threading.current_thread() is not threading.main_thread())
        return prune(*a, **k)

    monkeypatch.setattr(scale, "prune", pruning)
    blocks, fb = scale.filtered_model(ws, inv, pol, threads=threads)
    # every block pruned once; in threads where they knew it, else here
    assert len(in_threads) == (len(ws) if pruned != "no" else 0)
    if pruned != "no":
        assert any(in_threads) == (threads > 1)
        assert all(in_threads) is False  # the first block: before the threshold was known to be passed
    assert (len(whole.dropped) > 0) == (pruned != "no")
    assert fb.n_all == fw.n_all > whole.n_c if pruned != "no" else fb.n_all == fw.n_all == whole.n_c
    for f in dataclasses.fields(scale.Model):
        if f.name != "cache":
            assert np.array_equal(getattr(whole, f.name), getattr(blocks, f.name)), f.name
    assert len(fb.blocks) > 1 and len(fw.blocks) == 1
    every = np.arange(whole.n_c)
    fw_all, fb_all = fw.take(every), fb.take(every)
    for g in dataclasses.fields(fw_all):
        assert np.array_equal(getattr(fw_all, g.name), getattr(fb_all, g.name), equal_nan=True), g.name
    picked = np.asarray([5, 0, whole.n_c - 1, 17])  # any order
    assert np.array_equal(fb.take(picked).offer, fb_all.offer[picked])
    for name in ("obj_start", "obj", "best_offer", "best_hourly"):
        assert np.array_equal(getattr(fw, name), getattr(fb, name), equal_nan=True), name
    # The model's candidates are the filter's, in its order: the plan maps back through them.
    ca = candidate_arrays(ws, inv, pol)
    pos = {(int(w), int(o)): i for i, (w, o) in enumerate(zip(ca.workload, ca.offer, strict=True))}
    back = np.asarray([pos[(int(w), int(o))] for w, o in zip(fb_all.workload, fb_all.offer, strict=True)])
    assert np.array_equal(scale._money(ca.objective_hourly_usd[back]), blocks.cost)
    assert np.array_equal(ca.offer[back], blocks.offer)
    assert np.array_equal(fb.obj_start, ca.start) and np.array_equal(fb.obj, ca.objective_hourly_usd)
    obj = ca.objective_hourly_usd
    for w in range(len(ws)):
        s0, e0 = int(ca.start[w]), int(ca.start[w + 1])
        assert fb.best_offer[w] == (ca.offer[s0 + int(np.argmin(obj[s0:e0]))] if e0 > s0 else -1)
    if plan_whole is not None:
        assert plan_whole.digest == _scale_plan(s, det=2.0, workers=1).digest


def test_top_up_places_short_workloads_where_room_is_left_and_moves_nothing() -> None:
    s = generate(13, 120, 40, "tight")
    m = _model(s)
    rc = m.cost.astype(np.float64)
    x = scale.greedy(m, rc, scale._order(m, np.zeros(m.n_c, np.int64), rc))
    assert scale.check(m, x) == []
    placed = np.bincount(m.cw, weights=x, minlength=m.n_w).astype(np.int64)
    # Every replica taken off some placed workloads: the room they held is free again, so the top-up
    # places some replica (theirs, or another short workload's in their room).
    off = np.flatnonzero(placed > 0)[::7]
    cut = x.copy()
    cut[np.isin(m.cw, off)] = 0
    topped = scale.top_up(m, cut, rc)
    assert scale.check(m, topped) == []
    assert (topped >= cut).all() and topped.sum() > cut.sum()
    assert m.objective(topped) < m.objective(cut)
    # a plan with no workload short at all comes back as it is
    none_short = scale.restrict(m, np.flatnonzero(placed == m.most_replicas()))
    xs = x[np.isin(m.cw, np.flatnonzero(placed == m.most_replicas()))]
    assert scale.top_up(none_short, xs, none_short.cost.astype(np.float64)) is xs


def test_neighbourhoods_around_short_workloads_keep_within_their_cap() -> None:
    s = generate(13, 400, 40, "tight")
    m = _model(s)
    rc = m.cost.astype(np.float64)
    x = scale.greedy(m, rc, scale._order(m, np.zeros(m.n_c, np.int64), rc))
    lag = scale.Lagrange(m)
    offers = np.arange(len(m.avail))
    pools = np.arange(len(m.pool_limit))
    placed = np.bincount(m.cw, weights=x, minlength=m.n_w).astype(np.int64)
    short = set(np.flatnonzero((placed < m.most_replicas()) & (scale._room(m) > 0)).tolist())
    assert short
    wide = scale._neighbourhoods(m, x, rc, offers, pools, lag.prices, True)
    narrow = scale._neighbourhoods(m, x, rc, offers, pools, lag.prices, True, seed_size=20)
    assert len(narrow) == len(wide)
    assert max(len(h) for h in narrow) <= 20 < max(len(h) for h in wide)
    # every short workload is at the centre of one of them, wide or narrow
    assert short <= {int(w) for h in narrow for w in h} and short <= {int(w) for h in wide for w in h}


def _chain_scenario() -> tuple[scale.Model, np.ndarray]:
    """Three offers with room for one replica each, A (H100), B (A100), C (L4, dear); ``s`` runs on A
    only, ``h1`` (worth more than s) on A or B, ``h2`` on B or C. The plan: h1 on A, h2 on B, s short.
    Placing s takes a chain of moves: h2 to C, then h1 to B, then s on A."""
    base: dict[str, Any] = dict(
        provider="spec", provider_kind="specialist", region="us", country="US", jurisdiction="US", gpu_count=1,
        gpu_memory_gib=80.0, vcpus=8, memory_gib=64.0, capacity_type="on-demand",
        location={"lat": 38.9, "lon": -77.4}, egress_usd_per_gb=0.05, available=1,
    )
    offers = [{**base, "id": f"spec/us/{g.lower()}", "instance_type": g.lower(), "gpu_model": g, "hourly_usd": usd}
              for g, usd in (("H100", 1.0), ("A100", 1.0), ("L4", 3.0))]
    m = _model(_scenario(offers, [
        {"name": "h1", "team": "t", "replicas": 1, "gpu": {"models": ["H100", "A100"], "count": 1}, "priority": 600},
        {"name": "h2", "team": "t", "replicas": 1, "gpu": {"models": ["A100", "L4"], "count": 1}},
        {"name": "s", "team": "t", "replicas": 1, "gpu": {"models": ["H100"], "count": 1}, "priority": 500},
    ]))
    x = np.zeros(m.n_c, np.int64)
    x[(m.cw == 0) & (m.offer == 0)] = 1  # h1 on A
    x[(m.cw == 1) & (m.offer == 1)] = 1  # h2 on B
    assert scale.check(m, x) == [] and x.sum() == 2
    return m, x


def test_a_chain_neighbourhood_reaches_the_holders_of_the_holders_offers() -> None:
    m, x = _chain_scenario()
    rc = m.cost.astype(np.float64)
    lag = scale.Lagrange(m)
    offers, pools = np.arange(len(m.avail)), np.arange(len(m.pool_limit))
    # Around s, the seeds' neighbourhood holds s and the holder of its offer, not h2 ...
    (seeds,) = scale._neighbourhoods(m, x, rc, offers, pools, lag.prices, True)
    assert seeds.tolist() == [0, 2]
    stuck = scale.mip(m, seeds, x, scale.NEIGHBOURHOOD_NODES, rc, scale.NEIGHBOURHOOD_TOP_K)
    assert stuck.objective == m.objective(x)
    # ... the chain's reaches h2 through h1's other offer, and its MIP places s.
    (chain,) = scale._chains(m, x, rc)
    assert chain.tolist() == [0, 1, 2]
    r = scale.mip(m, chain, x, scale.NEIGHBOURHOOD_NODES, rc, scale.NEIGHBOURHOOD_TOP_K)
    assert r.x.sum() == 3 and r.objective < m.objective(x) and scale.check(m, r.x) == []
    # With B free, the chain ends at h1, the holder of s's own offer: no chain (the seeds' had it).
    b_free = x.copy()
    b_free[(m.cw == 1) & (m.offer == 1)] = 0
    assert scale._chains(m, b_free, rc) == []


def test_the_repair_tries_chains_once_the_seeds_stall_and_once_per_set_of_short(
        monkeypatch: pytest.MonkeyPatch) -> None:
    m, x = _chain_scenario()
    lag = scale.Lagrange(m)
    rc, _x_rel, _lb = lag.evaluate_and_keep(lag.prices)
    chains = scale._chains
    calls: list[int] = []

    def recorded(m_: scale.Model, x_: np.ndarray, rc_: np.ndarray) -> list[np.ndarray]:
        calls.append(int(x_.sum()))
        return chains(m_, x_, rc_)

    def repaired() -> tuple[np.ndarray, int]:
        xr, obj, _det, _k = scale._repair(m, x, m.objective(x), rc, lag, 20.0, 0, 0, lambda o: 1.0,
                                          lambda xn, on: None)
        assert scale.check(m, xr) == [] and obj == m.objective(xr)
        return xr, obj

    monkeypatch.setattr(scale, "_chains", recorded)
    placed_all, obj = repaired()
    assert calls == [2] and placed_all.sum() == 3 and obj < m.objective(x)
    # Without them, nothing places s.
    calls.clear()
    monkeypatch.setattr(scale, "_chains", lambda m_, x_, rc_: (calls.append(int(x_.sum())), [])[1])
    xr, obj = repaired()
    assert calls == [2] and xr.sum() == 2 and obj == m.objective(x)
    # A round of chains once per set of short workloads; none when nothing is short.
    tried: set[bytes] = set()
    assert scale._chain_worth(m, x, tried) and not scale._chain_worth(m, x, tried)
    only_h2 = x.copy()
    only_h2[(m.cw == 0) & (m.offer == 0)] = 0  # h1 short too: another set
    assert scale._chain_worth(m, only_h2, tried) and not scale._chain_worth(m, only_h2, tried)
    assert not scale._chain_worth(m, placed_all, set())


def test_the_costly_placements_neighbourhoods_double_when_a_round_brings_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    m, start = _tight_first_plan()
    lag = scale.Lagrange(m)
    rc, _x_rel, _lb = lag.evaluate_and_keep(lag.prices)
    hoods, mip = scale._neighbourhoods, scale.mip
    rounds: list[list[Any]] = []  # per round: seeds phase?, size asked, largest neighbourhood, improved?

    def recorded_hoods(*args: Any) -> list[np.ndarray]:
        out = hoods(*args)
        rounds.append([args[6], args[8], max((len(h) for h in out), default=0), False])
        return out

    def recorded_mip(m_: scale.Model, free: np.ndarray, x: np.ndarray, *args: Any, **kw: Any) -> Any:
        r = mip(m_, free, x, *args, **kw)
        rounds[-1][3] |= r.objective < m_.objective(x)
        return r

    monkeypatch.setattr(scale, "_neighbourhoods", recorded_hoods)
    monkeypatch.setattr(scale, "mip", recorded_mip)
    full = scale._hood_size(m)
    x, obj, _det, _k = scale._repair(m, start, m.objective(start), rc, lag, 1000.0, 0, 0, lambda o: 1.0,
                                     lambda xn, on: None, cost_size=full // 4)
    assert scale.check(m, x) == [] and obj <= m.objective(start)
    cost = [r for r in rounds if not r[0]]
    assert cost[0][1] == full // 4 and cost[-1][1] == full and not cost[-1][3]  # ends at full size, stalled
    for a, b in itertools.pairwise(cost):
        assert b[1] == (a[1] if a[3] else min(full, 2 * a[1]))  # doubled only after a round that brought nothing
    assert all(r[2] <= r[1] for r in cost)  # no costly-placement neighbourhood above the size asked
    # The size caps the costly placements' neighbourhoods only, not those around short workloads.
    offers, pools = np.arange(len(m.avail)), np.arange(len(m.pool_limit))
    args = (m, start, rc, offers, pools, lag.best_prices)
    seeds, seeds_capped = hoods(*args, True), hoods(*args, True, None, 20)
    assert [h.tolist() for h in seeds] == [h.tolist() for h in seeds_capped] and max(len(h) for h in seeds) > 20
    assert max(len(h) for h in hoods(*args, False, None, 20)) <= 20 < max(len(h) for h in hoods(*args, False))


def _two_offer_scenario() -> Scenario:
    """One cheap offer with room for one replica and more dear offers without a limit than
    ``SCARCE_ROOM``; a high-priority workload that can pay for any, and a low-priority one whose
    budget affords the cheap one only."""
    base: dict[str, Any] = dict(
        provider_kind="specialist", country="US", jurisdiction="US", gpu_model="L4", gpu_count=1,
        gpu_memory_gib=24.0, vcpus=8, memory_gib=64.0, capacity_type="on-demand",
        location={"lat": 38.9, "lon": -77.4}, egress_usd_per_gb=0.05,
    )
    offers = [
        {**base, "id": "cheap/us/l4", "provider": "cheap", "region": "us", "instance_type": "l4",
         "hourly_usd": 1.0, "available": 1},
        *({**base, "id": f"dear/us/l4-{i}", "provider": "dear", "region": "us", "instance_type": f"l4-{i}",
           "hourly_usd": 1.5} for i in range(scale.SCARCE_ROOM + 1)),
    ]
    gpu = {"models": ["L4"], "count": 1}
    return _scenario(offers, [
        {"name": "a-rich", "team": "t", "replicas": 1, "gpu": gpu, "priority": 500},
        {"name": "b-thrifty", "team": "t", "replicas": 1, "gpu": gpu, "priority": 50, "budget_hourly_usd": 1.2},
    ])


def _scenario(offers: list[dict[str, Any]], workloads: list[dict[str, Any]]) -> Scenario:
    inventory = Inventory.model_validate({
        "snapshot": {"name": "test", "taken_on": "2026-11-20", "prices": "synthetic"}, "offers": offers})
    tag = "sha256:" + "0" * 64
    return Scenario(
        workloads=LoadedWorkloads(tuple(Workload.model_validate(w) for w in workloads), (), tag, (), {}),
        inventory=LoadedInventory(inventory, (), tag),
        policies=LoadedPolicies(PolicySet.model_validate({}), (), tag, ()),
        policy_dir=None, inventory_path="test", policy_path=None,
    )


def test_scarce_first_order_keeps_the_cheap_offer_for_the_workload_that_can_afford_no_other() -> None:
    m = _model(_two_offer_scenario())
    cost = m.cost.astype(np.float64)
    none = np.zeros(m.n_c, np.int64)
    by_penalty = scale._order(m, none, cost)
    scarce = scale._order(m, none, cost, scarce_first=True)
    assert by_penalty == [0, 1] and scarce == [1, 0]
    x_pen = scale.greedy(m, cost, by_penalty)
    x_scarce = scale.greedy(m, cost, scarce)
    assert scale.check(m, x_pen) == [] and scale.check(m, x_scarce) == []
    placed = np.bincount(m.cw, weights=x_scarce, minlength=m.n_w)
    assert placed.tolist() == [1, 1]  # both placed: the thrifty one on the cheap offer, the other on the dear one
    assert np.bincount(m.cw, weights=x_pen, minlength=m.n_w).tolist() == [1, 0]
    assert m.objective(x_scarce) < m.objective(x_pen)


@pytest.mark.parametrize("variant", ["budgets", "tight", "residency"])
def test_scarce_first_order_puts_little_choice_first_then_follows_the_penalty(variant: str) -> None:
    m = _model(generate(17, 300, 40, variant))
    cost = m.cost.astype(np.float64)
    none = np.zeros(m.n_c, np.int64)
    order = scale._order(m, none, cost, scarce_first=True)
    assert sorted(order) == sorted(scale._order(m, none, cost))  # the same workloads, reordered
    most = np.maximum(1, m.most_replicas())
    per = np.where(m.budget >= 0, m.budget // most, np.iinfo(np.int64).max)
    room = np.bincount(m.cw, weights=np.where((m.cap > 0) & (m.hourly <= per[m.cw]), m.cap, 0),
                       minlength=m.n_w) / most
    scarce = ((m.budget >= 0) | (room <= scale.SCARCE_ROOM))[order]
    assert scarce.any()
    first_plenty = int(np.argmin(scarce)) if not scarce.all() else len(order)
    assert scarce[:first_plenty].all() and not scarce[first_plenty:].any()
    for group in (order[:first_plenty], order[first_plenty:]):
        key = np.stack([-m.penalty[group], room[group]], axis=1)
        assert all(tuple(key[i]) <= tuple(key[i + 1]) for i in range(len(group) - 1))
    x = scale.greedy(m, cost, order)
    assert scale.check(m, x) == []


def _whole_lp_prices(lm: scale.Model) -> scale.Prices | None:
    """The first round's prices of the LP over a whole split component (None: no prices)."""
    got = scale.whole_lp_start(lm)
    return None if got is None else got[0]


def _scarce_first_plan(m: scale.Model) -> np.ndarray:
    """The first plan a split component gets: the greedy at cost, the workloads with little choice first."""
    cost = m.cost.astype(np.float64)
    return scale.greedy(m, cost, scale._order(m, np.zeros(m.n_c, np.int64), cost, scarce_first=True))


def _tight_first_plan() -> tuple[scale.Model, np.ndarray]:
    """A tight instance's model and its ``_scarce_first_plan``."""
    m = _model(generate(13, 200, 40, "tight"))
    return m, _scarce_first_plan(m)


def test_the_merged_parts_repair_goes_on_from_the_first_plan_where_that_is_better(
        monkeypatch: pytest.MonkeyPatch) -> None:
    m, start = _tight_first_plan()
    empty = np.zeros(m.n_c, np.int64)
    seen: list[int] = []
    repair = scale._repair

    def recorded(m_: scale.Model, x: np.ndarray, obj: int, *args: Any, **kw: Any) -> Any:
        seen.append(obj)
        assert obj == m_.objective(x)
        return repair(m_, x, obj, *args, **kw)

    monkeypatch.setattr(scale, "_repair", recorded)
    # The parts' plans merged place nothing, and the fill at zero prices leaves work out: the first plan is better.
    monkeypatch.setattr(scale, "greedy", lambda m_, rc, order, res=None, x=None: empty.copy())
    r = scale.pop_finish(m, empty, start, [], 2.0, 0, scale.fixed_penalty(m), True)
    assert seen == [m.objective(start)]
    assert scale.check(m, r.x) == [] and r.objective <= m.objective(start)
    assert r.bound <= r.objective


def test_a_component_not_split_is_repaired_from_its_first_plan_without_a_fill_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    m, start = _tight_first_plan()
    events: list[tuple[str, int]] = []
    repair, greedy = scale._repair, scale.greedy

    def recorded(m_: scale.Model, x: np.ndarray, obj: int, *args: Any, **kw: Any) -> Any:
        events.append(("repair", obj))
        return repair(m_, x, obj, *args, **kw)

    def counted(*args: Any, **kw: Any) -> np.ndarray:
        events.append(("greedy", 0))
        return greedy(*args, **kw)

    monkeypatch.setattr(scale, "_repair", recorded)
    monkeypatch.setattr(scale, "greedy", counted)
    r = scale.pop_finish(m, None, start, [], 2.0, 0, scale.fixed_penalty(m), True)
    assert events[0] == ("repair", m.objective(start))
    assert scale.check(m, r.x) == [] and r.objective <= m.objective(start)
    assert r.bound <= r.objective


def test_the_bound_steps_run_beside_the_repair_and_count_in_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    m, start = _tight_first_plan()
    lp = _whole_lp_prices(scale.whole_lp_model(m, start))
    assert lp is not None
    seen: list[float] = []
    repair = scale._repair

    def recorded(m_: scale.Model, x: np.ndarray, obj: int, rc: np.ndarray, lag: scale.Lagrange, *args: Any,
                 **kw: Any) -> Any:
        seen.append(lag.best_lb)
        return repair(m_, x, obj, rc, lag, *args, **kw)

    monkeypatch.setattr(scale, "_repair", recorded)
    zero = [scale._zero_priced(m)]
    r = scale.pop_finish(m, None, start, [], 2.0, 0, scale.fixed_penalty(m), True, lp, zero)
    assert zero == []  # handed over, not held by the caller through the repair
    # The same steps, run here before any repair: the repair saw the bound before them, the result
    # counts the bound after them.
    lag, _rc, _x, lb = scale._zero_priced(m)
    if lag.evaluate_and_keep(lp)[2] > lb:
        lag.prices = lp
    before = lag.best_lb
    lag.theta = scale.THETA0 / 8
    lag.run(scale.POP_BOUND_ITERATIONS, lambda: float(m.objective(start)))
    assert seen == [before] and lag.best_lb > before
    assert r.bound == lag.bound(r.objective) and scale.check(m, r.x) == []


def test_the_repair_tops_up_the_short_after_every_neighbourhood_that_improves(
        monkeypatch: pytest.MonkeyPatch) -> None:
    m, start = _tight_first_plan()
    lag = scale.Lagrange(m)
    rc, _x_rel, _lb = lag.evaluate_and_keep(lag.prices)
    events: list[tuple[str, int]] = []
    mip, top_up = scale.mip, scale.top_up

    def recorded_mip(m_: scale.Model, free: np.ndarray, x: np.ndarray, *args: Any, **kw: Any) -> Any:
        r = mip(m_, free, x, *args, **kw)
        if r.objective < m_.objective(x):
            events.append(("better", r.objective))
        return r

    def recorded_top_up(m_: scale.Model, x: np.ndarray, rc_: np.ndarray) -> np.ndarray:
        events.append(("top_up", m_.objective(x)))
        return top_up(m_, x, rc_)

    monkeypatch.setattr(scale, "mip", recorded_mip)
    monkeypatch.setattr(scale, "top_up", recorded_top_up)
    x, obj, _det, _k = scale._repair(m, start, m.objective(start), rc, lag, 4.0, 0, 0, lambda o: 1.0,
                                     lambda xn, on: None)
    better = [i for i, (kind, _o) in enumerate(events) if kind == "better"]
    assert better  # the repair improved the plan at least once
    for i in better:  # each improvement is topped up at once, from the improved plan
        assert events[i + 1] == ("top_up", events[i][1])
    assert events[-1][0] == "top_up" and sum(kind == "top_up" for kind, _o in events) == len(better) + 1
    assert scale.check(m, x) == [] and obj == m.objective(x) <= m.objective(start)


@pytest.mark.parametrize("pop_max", [60, 10_000])
def test_first_plan_puts_the_scarce_first_only_where_a_component_is_split(pop_max: int,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale, "EXACT_MAX_CANDIDATES", 10)
    monkeypatch.setattr(scale, "POP_MAX_WORKLOADS", pop_max)
    monkeypatch.setattr(scale, "POP_PART_WORKLOADS", 50)
    m = _model(generate(47, 150, 40, "tight"))
    flags: list[bool] = []
    order = scale._order

    def recorded(m_: scale.Model, x: np.ndarray, rc: np.ndarray, scarce_first: bool = False) -> list[int]:
        flags.append(scarce_first)
        return order(m_, x, rc, scarce_first)

    monkeypatch.setattr(scale, "_order", recorded)
    r = scale.solve_model(m, 2.0, 0, 1)
    assert scale.check(m, r.x) == [] and r.bound <= r.objective
    split = max(len(ws) for ws in scale.components(m)) > pop_max
    assert flags[0] is split and not any(flags[1:])


def test_squeaky_rounds_put_the_short_first_and_keep_only_better_plans() -> None:
    m = _model(generate(15, 200, 40, "tight"))
    rc = m.cost.astype(np.float64)
    order = scale._order(m, np.zeros(m.n_c, np.int64), rc, scarce_first=True)
    x = scale.greedy(m, rc, order)
    obj = m.objective(x)
    seen: list[int] = []
    best, best_obj = scale.squeaky(m, rc, order, x, obj, 4, seen.append)
    assert scale.check(m, best) == []
    assert best_obj == m.objective(best) < obj
    assert seen and seen[-1] == best_obj and all(a > b for a, b in zip([obj, *seen], seen, strict=False))
    # The first round is the greedy with the workloads x leaves short first.
    short = scale._short(m, np.bincount(m.cw, weights=x, minlength=m.n_w).astype(np.int64))
    assert short.any()
    first = scale.greedy(m, rc, [w for w in order if short[w]] + [w for w in order if not short[w]])
    assert m.objective(first) == seen[0]
    # No round: the plan as it is.
    same, same_obj = scale.squeaky(m, rc, order, x, obj, 0)
    assert same is x and same_obj == obj


def _full_offer_scenario() -> Scenario:
    """One offer with room for 3 replicas and 3 all-or-nothing workloads of 2 replicas each: one fits.
    The LP fills the offer with 1.5 of them, and the integer per-workload problems at any prices
    relax no further than that, so only the integer problem itself bounds the plan."""
    offer = dict(
        id="spec/us/l4", provider="spec", provider_kind="specialist", region="us", country="US", jurisdiction="US",
        instance_type="l4", gpu_model="L4", gpu_count=1, gpu_memory_gib=24.0, vcpus=8, memory_gib=64.0,
        capacity_type="on-demand", location={"lat": 38.9, "lon": -77.4}, egress_usd_per_gb=0.05,
        hourly_usd=1.0, available=3,
    )
    gpu = {"models": ["L4"], "count": 1}
    return _scenario([offer], [{"name": f"w{i}", "team": "t", "replicas": 2, "gpu": gpu, "priority": 100}
                               for i in range(3)])


@pytest.mark.parametrize("step", [True, False])
def test_a_component_far_above_its_lp_bound_gets_the_mip_root_bound(step: bool,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    if not step:
        monkeypatch.setattr(scale, "BOUND_MIP_GAP", math.inf)
    m = _model(_full_offer_scenario())
    assert len(scale.components(m)) == 1
    r = scale.solve_large(m, 2.0, 0, scale.fixed_penalty(m))
    assert scale.check(m, r.x) == []
    assert np.bincount(m.cw, weights=r.x, minlength=m.n_w).tolist() in ([2, 0, 0], [0, 2, 0], [0, 0, 2])
    lp = scale.lp_relaxation(m, r.x, scale.Lagrange(m), float(scale.fixed_penalty(m)))
    one_short = int(m.penalty[0])  # the LP leaves 3 replicas unplaced, any plan 4
    assert lp.bound <= r.objective - one_short + int(m.cost.max())
    if step:  # the root node's cuts prove the plan optimal (up to HiGHS' tolerances)
        assert lp.bound + one_short // 2 < r.bound <= r.objective <= r.bound + 1e-5 * r.objective
        assert r.trajectory[-1][2] == r.bound
    else:
        assert r.bound <= lp.bound + 1 < r.objective


def test_a_part_of_a_split_component_skips_the_mip_root_bound() -> None:
    m = _model(_full_offer_scenario())
    lp = scale.lp_relaxation(m, np.zeros(m.n_c, np.int64), scale.Lagrange(m), float(scale.fixed_penalty(m)))
    whole = scale._run_task(scale.Task("large", m, 2.0, 0, scale.fixed_penalty(m)))
    part = scale._run_task(scale.Task("part", m, 2.0, 0, scale.fixed_penalty(m)))
    assert whole.objective == part.objective
    assert part.bound <= lp.bound + 1 < whole.bound


def test_whole_lp_model_keeps_the_cheapest_and_the_plans_candidates_without_spread_or_budgets() -> None:
    m = _model(generate(47, 150, 40, "tight"))
    start = _scarce_first_plan(m)
    lm = scale.whole_lp_model(m, start)
    kept = set(lm.cand_ids.tolist())
    assert set(np.flatnonzero(start).tolist()) <= kept
    for w in range(m.n_w):
        s, e = int(m.start[w]), int(m.start[w + 1])
        live = [c for c in range(s, e) if m.cap[c] > 0]
        cheapest = sorted(live, key=lambda c: (int(m.cost[c]), c))[:scale.POP_LP_COLUMNS]
        assert set(cheapest) <= kept
        assert {c for c in range(s, e) if c in kept} <= set(cheapest) | set(np.flatnonzero(start[s:e]) + s)
    assert lm.n_w == m.n_w and (lm.min_providers == 1).all() and (lm.min_regions == 1).all()
    assert (lm.budget == -1).all() and (lm.most_replicas() == m.most_replicas()).all()
    assert (lm.cost == m.cost[lm.cand_ids]).all() and (lm.cw == m.cw[lm.cand_ids]).all()


def test_whole_lp_prices_lift_the_bound_and_stay_below_the_optimum(monkeypatch: pytest.MonkeyPatch) -> None:
    for variant, lifts in (("loose", True), ("tight", False)):
        s = generate(31 if variant == "loose" else 47, 90 if variant == "loose" else 150, 36, variant)
        m = _model(s)
        start = _scarce_first_plan(m)
        prices = _whole_lp_prices(scale.whole_lp_model(m, start))
        assert prices is not None
        lag = scale.Lagrange(m)
        zero = lag.evaluate(lag.prices)[2]
        at_lp = lag.evaluate(prices)[2]
        optimum, _ = _exact_objective(s)
        # Valid whatever the columns (with few columns per workload on a small tight instance the
        # prices can be far too high: the LP sees no other offer to go to, and the bound falls).
        assert at_lp <= optimum * scale.MONEY_SCALE + 1
        if lifts:  # here as high as the LP by column generation
            lp = scale.lp_relaxation(m, start, scale.Lagrange(m), float(scale.fixed_penalty(m)))
            assert zero < at_lp == pytest.approx(lp.bound, rel=1e-6)
    # Stopped at its iteration limit, the LP gives no prices.
    monkeypatch.setattr(scale, "POP_LP_ITERATIONS", 1)
    assert _whole_lp_prices(scale.whole_lp_model(m, start)) is None


def test_the_whole_lps_second_round_adds_the_columns_that_price_out_and_lifts_the_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale, "POP_LP_MORE_SHARE", 100.0)  # solved to optimality (the cap: below)
    s = generate(47, 150, 40, "tight")
    m = _model(s)
    start = _scarce_first_plan(m)
    lm = scale.whole_lp_model(m, start)
    first = scale.whole_lp_start(lm, 7)
    assert first is not None and 7 in scale._WHOLE_LPS
    prices, yw = first
    lag = scale.Lagrange(m)
    rc, _, lb1 = lag.evaluate(prices)
    in_lp = np.zeros(m.n_c, bool)
    in_lp[np.searchsorted(m.cand_ids, lm.cand_ids)] = True
    more = scale._priced_out(m, rc, yw, in_lp)
    assert more is not None
    # Per workload, its POP_LP_ADD_COLUMNS most negative reduced costs among the live candidates
    # not in the LP, and only those.
    red = (rc - m.penalty[m.cw]) / scale.MONEY_SCALE - yw[m.cw]
    expected: set[int] = set()
    for w in range(m.n_w):
        cs = [c for c in range(int(m.start[w]), int(m.start[w + 1]))
              if m.cap[c] > 0 and not in_lp[c] and red[c] < -1e-7]
        expected |= set(sorted(cs, key=lambda c: (red[c], c))[:scale.POP_LP_ADD_COLUMNS])
    assert expected and set(more.cand_ids.tolist()) == set(m.cand_ids[sorted(expected)].tolist())
    assert (more.budget == -1).all() and (more.min_providers == 1).all() and (more.min_regions == 1).all()
    second = scale.whole_lp_more(7, more)
    assert second is not None and 7 not in scale._WHOLE_LPS  # the LP is dropped after its second round
    lb2 = lag.evaluate(second)[2]
    optimum, _ = _exact_objective(s)
    # With four columns per workload this tight instance's first prices are far too high (the
    # bound falls below zero); those that price out at them bring them down.
    assert lb1 < 0 < lb2 <= optimum * scale.MONEY_SCALE + 1
    assert lb2 > lag.evaluate(lag.prices)[2]  # above the bound at zero prices too
    # Stopped at its iteration cap, the round still gives prices, and they still bound.
    monkeypatch.setattr(scale, "POP_LP_MORE_SHARE", 0.01)
    assert scale.whole_lp_start(lm, 9) is not None
    capped = scale.whole_lp_more(9, more)
    assert capped is not None and lag.evaluate(capped)[2] <= optimum * scale.MONEY_SCALE + 1
    assert lag.evaluate(capped)[2] < lb2
    # Without a kept LP, or with nothing to add, no second round.
    assert scale.whole_lp_more(7, more) is None
    assert scale.whole_lp_start(lm, 8) is not None and scale.whole_lp_more(8, None) is None
    assert 8 not in scale._WHOLE_LPS


def test_a_split_component_is_bounded_by_the_whole_lp_and_workers_do_not_matter(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale, "EXACT_MAX_CANDIDATES", 10)
    monkeypatch.setattr(scale, "POP_MAX_WORKLOADS", 60)
    monkeypatch.setattr(scale, "POP_PART_WORKLOADS", 50)
    # Columns enough for this small instance's LP prices to be good ones (above).
    monkeypatch.setattr(scale, "POP_LP_COLUMNS", 8)
    m = _model(generate(47, 150, 40, "tight"))
    assert max(len(ws) for ws in scale.components(m)) > 60
    one = scale.solve_model(m, 2.0, 0, 1)
    two = scale.solve_model(m, 2.0, 0, 2)
    assert (one.x == two.x).all() and (one.objective, one.bound) == (two.objective, two.bound)
    assert scale.check(m, one.x) == [] and one.bound <= one.objective
    monkeypatch.setattr(scale, "whole_lp_start", lambda lm, key=None: None)
    without = scale.solve_model(m, 2.0, 0, 1)
    assert without.bound < one.bound


def test_the_whole_lps_second_round_lifts_a_split_components_bound_and_leaves_its_plan(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale, "EXACT_MAX_CANDIDATES", 10)
    monkeypatch.setattr(scale, "POP_MAX_WORKLOADS", 60)
    # Uncapped: on an instance this small, a quarter of the first round's iterations ends the
    # second round at prices that bound less than zero prices (kept anyway: the better bound counts).
    monkeypatch.setattr(scale, "POP_LP_MORE_SHARE", 100.0)
    m = _model(generate(47, 150, 40, "tight"))
    two = scale.solve_model(m, 2.0, 0, 2)  # the second round in the LP's worker process
    one = scale.solve_model(m, 2.0, 0, 1)  # here
    assert (one.x == two.x).all() and (one.objective, one.bound) == (two.objective, two.bound)
    monkeypatch.setattr(scale, "whole_lp_more", lambda key, more, share=0.0: None)
    first_round = scale.solve_model(m, 2.0, 0, 1)
    assert (first_round.x == one.x).all() and first_round.objective == one.objective
    assert first_round.bound < one.bound
    optimum, _ = _exact_objective(generate(47, 150, 40, "tight"))
    assert one.bound <= optimum * scale.MONEY_SCALE + 1


def test_residual_lists_are_32_bit_where_the_values_fit_and_keep_them_exactly() -> None:
    small = np.array([0, -(2**31), 2**31 - 1, 7], np.int64)
    out = scale._ints(small)
    assert out.itemsize == 4
    assert list(out) == small.tolist()
    big = np.array([1, 2**31], np.int64)
    out = scale._ints(big)
    assert out.itemsize == 8
    assert list(out) == big.tolist()
    assert list(scale._ints(np.array([-(2**31) - 1], np.int64))) == [-(2**31) - 1]
    assert len(scale._ints(np.zeros(0, np.int64))) == 0
