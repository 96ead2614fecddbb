"""The benchmark's LP bound (bench/baselines.py): the caps that tighten it keep it a lower bound."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench import baselines as B
from bench import instances as I
from placement.candidates import candidates_for, region_egress_table


@pytest.fixture(scope="module", params=["small-tight", "small-residency", "small-infeasible"])
def prob(request: Any) -> B.Problem:
    scen = I.scenario_of(I.build(request.param))
    inv, pol = scen.inventory.inventory, scen.policies.policies
    egress = region_egress_table(inv)
    problems = [candidates_for(w, inv, pol, egress) for w in scen.workloads.workloads]
    prob = B.compact_problem(problems, inv, pol)
    # Budgets that bind: every workload of several replicas that may have as few as one gets a
    # budget of a replica and a half of its cheapest candidate.
    cheapest = np.full(prob["n_workloads"], np.inf)
    np.minimum.at(cheapest, prob["c_w"], prob["c_cost"])
    some = (prob["w_replicas"] > 1) & (prob["w_fewest"] == 1) & np.isfinite(cheapest)
    prob["w_budget"] = np.where(some, 1.5 * cheapest, prob["w_budget"])
    return prob


def test_candidate_caps_keep_within_the_offer_and_its_pools(prob: B.Problem) -> None:
    cap, nodes, off = prob["c_cap"], prob["c_nodes"], prob["c_offer"]
    assert (cap > 0).all()
    assert (cap <= prob["w_replicas"][prob["c_w"]]).all()
    limited = prob["o_avail"][off] >= 0
    assert (cap[limited] * nodes[limited] <= prob["o_avail"][off][limited]).all()
    ptr, pool, per = prob["o_pool_ptr"], prob["o_pool"], prob["o_pool_per"]
    for c in range(len(cap)):
        o = int(off[c])
        for k in range(int(ptr[o]), int(ptr[o + 1])):
            assert cap[c] * nodes[c] * per[k] <= prob["p_limit"][pool[k]]


def test_affordable_is_the_most_replicas_a_budget_buys(prob: B.Problem) -> None:
    most = B.affordable(prob)
    assert (most <= prob["w_replicas"]).all()
    cw, cost, cap = prob["c_w"], prob["c_cost"], prob["c_cap"]
    budgets = np.flatnonzero(np.isfinite(prob["w_budget"]))
    assert (most[budgets] < prob["w_replicas"][budgets]).any()
    for w in budgets.tolist():
        cs = np.flatnonzero(cw == w)
        unit = np.sort(np.repeat(cost[cs], cap[cs]))  # every replica slot, cheapest first
        k = int(most[w])
        # k replicas fit the budget on the cheapest slots, and k + 1 do not (unless replicas or slots run out)
        assert unit[:k].sum() <= prob["w_budget"][w] + 1e-6
        if k < min(int(prob["w_replicas"][w]), len(unit)):
            assert unit[:k + 1].sum() > prob["w_budget"][w]


def test_the_tightened_lp_stays_below_the_integer_optimum(prob: B.Problem, monkeypatch: pytest.MonkeyPatch) -> None:
    lp = B.run_highs(prob, relax=True, time_limit=60, threads=1)
    # the integer optimum of the model as stated (budget rows only, no replica caps derived from them)
    with monkeypatch.context() as mp:
        mp.setattr(B, "affordable", lambda p: p["w_replicas"].copy())
        plain = B.run_highs(prob, relax=True, time_limit=60, threads=1)
        mip = B.run_highs(prob, relax=False, time_limit=60, threads=1)
    assert plain["lp_objective"] <= lp["lp_objective"] + 1e-6  # the caps never loosen it
    assert lp["status"] == "Optimal" and mip["status"] == "Optimal"
    optimum = B.evaluate(prob, mip["x"])
    assert optimum["violations"] == 0
    assert lp["lp_objective"] <= optimum["objective"] + 1e-6 * abs(optimum["objective"])
