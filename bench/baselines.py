"""Compact problem arrays, an independent evaluator, and the methods compared against the engine.

Everything here works on a *compact problem*: numpy arrays derived from the engine's own candidate
lists (``placement.candidates.candidates_for``), with exactly the variables the engine's CP-SAT model
creates (a candidate whose per-replica capacity ``min(replicas, available // nodes)``, or what one of
its offer's quota pools holds, is 0 gets no variable; CP-SAT's presolve drops the same ones). So every
method sees the same feasible pairs, costs and shared limits as the engine.

Model (the engine's, see placement/solver.py), for workload w, candidate c, offer o, pool p, team t:

    minimise  sum_c obj_c x_c + sum_w penalty_unit * priority_w * (replicas_w - placed_w)
    placed_w = sum_{c of w} x_c <= min(replicas_w, affordable_w),   0 <= x_c <= cap_c, integer
    placed_w in {0} u [fewest_w, replicas_w]        (binary on_w, when fewest_w > 1 or spread)
    spread: >= min distinct providers / regions among used candidates, if on_w
    sum_c cost_c x_c <= budget_w                    (workload budget)
    sum_{c on o} nodes_c x_c <= available_o          (offer headroom)
    sum_{c on o in p} nodes_c * per_node(o, p) x_c <= limit_p      (shared pools)
    sum_{c of t} cost_c x_c <= budget_t;  sum_{c of t} (1000 spot_c - share_t) gpus_c x_c <= 0

This module imports neither ortools nor highspy at import time: the HiGHS baselines run in processes
of their own, apart from the engine, and the greedy methods need neither.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from typing import Any

import numpy as np

Problem = dict[str, Any]  # name -> numpy array (or scalar); see compact_problem()


# --------------------------------------------------------------------------------------------------
# Compact problem
# --------------------------------------------------------------------------------------------------


def compact_problem(problems: list[Any], inventory: Any, policies: Any) -> Problem:
    """Arrays from the engine's ``WorkloadCandidates`` list (same order as the engine's workloads)."""
    from placement.candidates import HOURS_PER_MONTH

    offers = inventory.offers
    n_w = len(problems)
    teams = sorted({wc.workload.team for wc in problems} | set(policies.teams))
    team_ix = {t: i for i, t in enumerate(teams)}
    providers = sorted({o.provider for o in offers})
    prov_ix = {p: i for i, p in enumerate(providers)}
    regions = sorted({o.region_key for o in offers})
    reg_ix = {r: i for i, r in enumerate(regions)}

    R = np.zeros(n_w, np.int64)
    F = np.zeros(n_w, np.int64)
    P = np.zeros(n_w, np.int64)
    B = np.full(n_w, np.inf)
    T = np.zeros(n_w, np.int64)
    SP = np.ones(n_w, np.int64)
    SR = np.ones(n_w, np.int64)
    NK = np.zeros(n_w, np.int64)  # candidates kept by the filter (before the capacity-0 cut)
    cw, co, cl, cn, ccap, ccost, cobj = [], [], [], [], [], [], []
    max_obj = 0.0
    # Nodes of an offer its quota pools let one workload take at most (-1: no pool).
    pool_lim = {p.id: p for p in inventory.pools}
    pool_nodes = []
    for o in offers:
        per = [pool_lim[pid].limit // max(1, {"instances": 1, "gpus": o.gpu_count, "vcpus": o.vcpus}[pool_lim[pid].unit])
               for pid in o.pools]
        pool_nodes.append(min(per) if per else -1)
    for wi, wc in enumerate(problems):
        w = wc.workload
        R[wi], F[wi], P[wi], T[wi] = w.replicas, w.fewest_replicas, w.priority, team_ix[w.team]
        SP[wi], SR[wi] = w.spread.min_providers, w.spread.min_regions
        if w.budget_hourly_usd is not None:
            B[wi] = w.budget_hourly_usd
        NK[wi] = len(wc.candidates)
        for ci, cand in enumerate(wc.candidates):
            max_obj = max(max_obj, cand.objective_hourly_usd)
            o = offers[cand.offer_index]
            cap = w.replicas if o.available is None else min(w.replicas, o.available // cand.nodes)
            if pool_nodes[cand.offer_index] >= 0:
                cap = min(cap, pool_nodes[cand.offer_index] // cand.nodes)
            if cap <= 0:
                continue
            cw.append(wi)
            co.append(cand.offer_index)
            cl.append(ci)
            cn.append(cand.nodes)
            ccap.append(cap)
            ccost.append(cand.hourly_usd)
            cobj.append(cand.objective_hourly_usd)
    penalty_unit = float(np.ceil(1.0 + max_obj))
    co_a = np.asarray(co, np.int64)
    gpu_count = np.asarray([o.gpu_count for o in offers], np.int64)
    vcpus = np.asarray([o.vcpus for o in offers], np.int64)
    avail = np.asarray([-1 if o.available is None else o.available for o in offers], np.int64)
    spot = np.asarray([o.capacity_type == "spot" for o in offers], bool)
    oprov = np.asarray([prov_ix[o.provider] for o in offers], np.int64)
    oreg = np.asarray([reg_ix[o.region_key] for o in offers], np.int64)
    pool_ix = {p.id: i for i, p in enumerate(inventory.pools)}
    pool_limit = np.asarray([p.limit for p in inventory.pools], np.int64)
    # offer -> pools, CSR, with the per-node amount in the pool's unit
    optr, opool, oper = [0], [], []
    for o in offers:
        for pid in o.pools:
            unit = inventory.pools[pool_ix[pid]].unit
            opool.append(pool_ix[pid])
            oper.append({"instances": 1, "gpus": o.gpu_count, "vcpus": o.vcpus}[unit])
        optr.append(len(opool))
    team_budget = np.full(len(teams), np.inf)
    team_share = np.full(len(teams), np.nan)
    for t, rule in policies.teams.items():
        limits = [b for b in (rule.budget_hourly_usd,
                              None if rule.budget_monthly_usd is None else rule.budget_monthly_usd / HOURS_PER_MONTH)
                  if b is not None]
        if limits:
            team_budget[team_ix[t]] = min(limits)
        if rule.max_interruptible_share is not None:
            team_share[team_ix[t]] = rule.max_interruptible_share
    cn_a = np.asarray(cn, np.int64)
    return {
        "n_workloads": n_w, "n_offers": len(offers), "penalty_unit": penalty_unit,
        "w_replicas": R, "w_fewest": F, "w_priority": P, "w_budget": B, "w_team": T, "w_spread_prov": SP,
        "w_spread_reg": SR, "w_kept": NK,
        "c_w": np.asarray(cw, np.int64), "c_offer": co_a, "c_local": np.asarray(cl, np.int64), "c_nodes": cn_a,
        "c_cap": np.asarray(ccap, np.int64), "c_cost": np.asarray(ccost, float), "c_obj": np.asarray(cobj, float),
        "c_gpus": cn_a * gpu_count[co_a] if len(co_a) else np.zeros(0, np.int64),
        "c_spot": spot[co_a] if len(co_a) else np.zeros(0, bool),
        "o_avail": avail, "o_gpus": gpu_count, "o_vcpus": vcpus, "o_prov": oprov, "o_reg": oreg,
        "o_pool_ptr": np.asarray(optr, np.int64), "o_pool": np.asarray(opool, np.int64), "o_pool_per": np.asarray(oper, np.int64),
        "p_limit": pool_limit, "t_budget": team_budget, "t_share": team_share,
    }


def save_problem(prob: Problem, path: Any) -> None:
    np.savez(path, **{k: np.asarray(v) for k, v in prob.items()})


def load_problem(path: Any) -> Problem:
    with np.load(path) as data:
        out: Problem = {k: data[k] for k in data.files}
    for k in ("n_workloads", "n_offers"):
        out[k] = int(out[k])
    out["penalty_unit"] = float(out["penalty_unit"])
    return out


def unplaceable(prob: Problem) -> np.ndarray:
    """Workloads no valid plan can place, whatever the others do: no candidate; fewer distinct
    providers/regions among the candidates than the spread asks; fewer replicas fit on all its
    candidates together than the least it can have (its ``fewest``, and one per provider or region
    its spread asks for); or even the cheapest such least cost more than the workload's budget. Valid for every integer plan, so fixing them to 0
    keeps the LP a lower bound (and tightens it: the plain LP places fractions of them)."""
    nw = prob["n_workloads"]
    cw = prob["c_w"]
    out = np.bincount(cw, minlength=nw) == 0
    order = np.lexsort((prob["c_cost"], cw))
    bounds = np.searchsorted(cw[order], np.arange(nw + 1))
    for w in range(nw):
        cs = order[bounds[w]:bounds[w + 1]]
        if not len(cs):
            continue
        sp, sr = prob["w_spread_prov"][w], prob["w_spread_reg"][w]
        if sp > 1 and len(set(prob["o_prov"][prob["c_offer"][cs]].tolist())) < sp:
            out[w] = True
            continue
        if sr > 1 and len(set(prob["o_reg"][prob["c_offer"][cs]].tolist())) < sr:
            out[w] = True
            continue
        # A spread over k providers or regions needs k replicas at least.
        least = max(int(prob["w_fewest"][w]), int(sp), int(sr))
        if int(prob["c_cap"][cs].sum()) < least:
            out[w] = True
            continue
        if np.isfinite(prob["w_budget"][w]):
            need, cost = least, 0.0
            for c in cs:  # cheapest first
                take = min(need, int(prob["c_cap"][c]))
                cost += take * prob["c_cost"][c]
                need -= take
                if need == 0:
                    break
            if need > 0 or cost > prob["w_budget"][w] + 1e-9:
                out[w] = True
    return out


def affordable(prob: Problem) -> np.ndarray:
    """Most replicas each workload can have: its replicas, and with a budget, as many as its budget
    buys on its cheapest candidates first (each up to its cap). Every integer plan keeps within it,
    so it caps the workload's row of the LP (the plain LP buys a fraction of one more replica)."""
    nw = prob["n_workloads"]
    most = prob["w_replicas"].astype(np.int64).copy()
    cw = prob["c_w"]
    order = np.lexsort((prob["c_cost"], cw))
    bounds = np.searchsorted(cw[order], np.arange(nw + 1))
    for w in np.flatnonzero(np.isfinite(prob["w_budget"])).tolist():
        left, n = float(prob["w_budget"][w]) + 1e-9, 0
        for c in order[bounds[w]:bounds[w + 1]].tolist():
            cost, cap = float(prob["c_cost"][c]), int(prob["c_cap"][c])
            take = cap if cost <= 0 else min(cap, int(left // cost))
            n += take
            left -= take * cost
            if take < cap:
                break
        most[w] = min(most[w], n)
    return most


def problem_summary(prob: Problem) -> dict[str, Any]:
    has = np.bincount(prob["c_w"], minlength=prob["n_workloads"]) > 0
    dead = unplaceable(prob)
    return {
        "candidates_kept": int(prob["w_kept"].sum()),
        "variables": len(prob["c_w"]),
        "workloads_without_candidates": int((~has).sum()),
        "replicas_without_candidates": int(prob["w_replicas"][~has].sum()),
        "workloads_unplaceable": int(dead.sum()),
        "replicas_unplaceable": int(prob["w_replicas"][dead].sum()),
    }


def constant_penalty(prob: Problem) -> float:
    """Penalty every valid plan pays for workloads that cannot be placed at all (see unplaceable());
    subtracted from objectives and bounds so that gaps are not flattered by it."""
    dead = unplaceable(prob)
    return float(prob["penalty_unit"] * (prob["w_priority"][dead] * prob["w_replicas"][dead]).sum())


# --------------------------------------------------------------------------------------------------
# Independent evaluation of an assignment (x per candidate)
# --------------------------------------------------------------------------------------------------


def _pool_use(prob: Problem, x: np.ndarray) -> np.ndarray:
    nodes_per_offer = np.bincount(prob["c_offer"], weights=prob["c_nodes"] * x, minlength=prob["n_offers"])
    ptr = prob["o_pool_ptr"]
    counts = np.diff(ptr)
    offer_of_entry = np.repeat(np.arange(prob["n_offers"]), counts)
    use = np.bincount(prob["o_pool"], weights=nodes_per_offer[offer_of_entry] * prob["o_pool_per"],
                      minlength=len(prob["p_limit"]))
    return use


def evaluate(prob: Problem, x: np.ndarray) -> dict[str, Any]:
    """Objective, cost and every hard-constraint violation, recomputed from the arrays."""
    x = np.asarray(x, np.int64)
    nw = prob["n_workloads"]
    cw = prob["c_w"]
    placed = np.bincount(cw, weights=x, minlength=nw).astype(np.int64)
    R, F = prob["w_replicas"], prob["w_fewest"]
    pen = prob["penalty_unit"] * prob["w_priority"] * (R - np.minimum(placed, R))
    objective = float((prob["c_obj"] * x).sum() + pen.sum())
    cost = float((prob["c_cost"] * x).sum())
    v: dict[str, int] = defaultdict(int)
    v["over_replicas"] = int((placed > R).sum())
    v["under_min_replicas"] = int(((placed > 0) & (placed < F)).sum())
    v["over_candidate_cap"] = int((x > prob["c_cap"]).sum() + (x < 0).sum())
    wcost = np.bincount(cw, weights=prob["c_cost"] * x, minlength=nw)
    v["workload_budget"] = int((wcost > prob["w_budget"] + 1e-3).sum())
    nodes_per_offer = np.bincount(prob["c_offer"], weights=prob["c_nodes"] * x, minlength=prob["n_offers"])
    limited = prob["o_avail"] >= 0
    v["offer_capacity"] = int((limited & (nodes_per_offer > prob["o_avail"])).sum())
    v["pool_capacity"] = int((_pool_use(prob, x) > prob["p_limit"]).sum())
    tw = prob["w_team"][cw]
    nt = len(prob["t_budget"])
    tcost = np.bincount(tw, weights=prob["c_cost"] * x, minlength=nt)
    v["team_budget"] = int((tcost > prob["t_budget"] + 1e-3).sum())
    tg = np.bincount(tw, weights=prob["c_gpus"] * x, minlength=nt)
    ts = np.bincount(tw, weights=prob["c_gpus"] * x * prob["c_spot"], minlength=nt)
    share = prob["t_share"]
    v["team_spot_share"] = int((~np.isnan(share) & (ts > np.nan_to_num(share) * tg + 1e-9)).sum())
    spread_w = np.flatnonzero(((prob["w_spread_prov"] > 1) | (prob["w_spread_reg"] > 1)) & (placed > 0))
    if len(spread_w):
        used = x > 0
        by_w: dict[int, list[int]] = defaultdict(list)
        for c in np.flatnonzero(used & np.isin(cw, spread_w)):
            by_w[int(cw[c])].append(int(c))
        for w in spread_w:
            cs = by_w.get(int(w), [])
            offers = prob["c_offer"][cs]
            if len(set(prob["o_prov"][offers].tolist())) < prob["w_spread_prov"][w] or \
                    len(set(prob["o_reg"][offers].tolist())) < prob["w_spread_reg"][w]:
                v["spread"] += 1
    unplaced = int((R - np.minimum(placed, R)).sum())
    total_v = int(sum(v.values()))
    return {
        "objective": objective,
        "objective_adj": objective - constant_penalty(prob),
        "cost_hourly_usd": cost,
        "replicas_placed": int(np.minimum(placed, R).sum()),
        "replicas_unplaced": unplaced,
        "violations": total_v,
        "violations_by_kind": {k: n for k, n in sorted(v.items()) if n},
        "digest": assignment_digest(x),
    }


def assignment_digest(x: np.ndarray) -> str:
    nz = np.flatnonzero(x)
    body = np.stack([nz, np.asarray(x)[nz]]).astype(np.int64).tobytes()
    return "sha256:" + hashlib.sha256(body).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# Greedy methods
# --------------------------------------------------------------------------------------------------


def _by_workload(prob: Problem) -> list[np.ndarray]:
    """Candidate indices per workload, cheapest objective first (ties: offer order)."""
    cw = prob["c_w"]
    order = np.lexsort((prob["c_offer"], prob["c_obj"], cw))
    bounds = np.searchsorted(cw[order], np.arange(prob["n_workloads"] + 1))
    return [order[bounds[i]:bounds[i + 1]] for i in range(prob["n_workloads"])]


def greedy_naive(prob: Problem) -> np.ndarray:
    """Cheapest first per workload, each workload on its own: shared capacity, pools and team rules
    are ignored (the per-candidate cap a workload sees alone, its budget and spread are kept)."""
    x = np.zeros(len(prob["c_w"]), np.int64)
    cap, cost = prob["c_cap"], prob["c_cost"]
    oprov, oreg, coff = prob["o_prov"], prob["o_reg"], prob["c_offer"]
    for w, cs in enumerate(_by_workload(prob)):
        if not len(cs):
            continue
        need = int(prob["w_replicas"][w])
        budget = prob["w_budget"][w]
        spent = 0.0
        provs: set[int] = set()
        regs: set[int] = set()
        chosen: list[int] = []
        for _ in range(need):
            best = -1
            for c in cs:
                if x[c] >= cap[c] or spent + cost[c] > budget + 1e-9:
                    continue
                o = coff[c]
                if len(provs) < prob["w_spread_prov"][w] and oprov[o] in provs:
                    continue
                if len(regs) < prob["w_spread_reg"][w] and oreg[o] in regs:
                    continue
                best = int(c)
                break
            if best < 0:
                break
            x[best] += 1
            chosen.append(best)
            spent += cost[best]
            provs.add(int(oprov[coff[best]]))
            regs.add(int(oreg[coff[best]]))
        placed = len(chosen)
        if placed and (placed < prob["w_fewest"][w] or len(provs) < prob["w_spread_prov"][w]
                       or len(regs) < prob["w_spread_reg"][w]):
            for c in chosen:
                x[c] -= 1
    return x


def greedy_capacity(prob: Problem) -> np.ndarray:
    """Capacity-aware greedy: workloads by priority (then fewest GPUs per replica, then fewest candidates),
    each replica on the cheapest candidate that still fits every shared limit; a workload that
    cannot reach its minimum replicas or spread is rolled back."""
    nc = len(prob["c_w"])
    x = np.zeros(nc, np.int64)
    by_w = _by_workload(prob)
    cap, cost, nodes, gpus, spot = prob["c_cap"], prob["c_cost"], prob["c_nodes"], prob["c_gpus"], prob["c_spot"]
    coff, oprov, oreg = prob["c_offer"], prob["o_prov"], prob["o_reg"]
    avail = prob["o_avail"].astype(np.int64).copy()
    limited = avail >= 0
    ptr, opool, oper = prob["o_pool_ptr"], prob["o_pool"], prob["o_pool_per"]
    pool_left = prob["p_limit"].astype(np.int64).copy()
    team_left = prob["t_budget"].astype(float).copy()
    t_share = prob["t_share"]
    t_g = np.asarray(prob.get("t_gpus0", np.zeros(len(team_left))), float).copy()
    t_s = np.asarray(prob.get("t_spot0", np.zeros(len(team_left))), float).copy()
    gpus_per_replica = np.zeros(prob["n_workloads"])
    for w, cs in enumerate(by_w):
        if len(cs):
            gpus_per_replica[w] = gpus[cs].min()
    order = np.lexsort((np.arange(prob["n_workloads"]), [len(c) for c in by_w], gpus_per_replica, -prob["w_priority"]))

    def fits(c: int, team: int) -> bool:
        o = coff[c]
        if limited[o] and avail[o] < nodes[c]:
            return False
        for k in range(ptr[o], ptr[o + 1]):
            if pool_left[opool[k]] < nodes[c] * oper[k]:
                return False
        if team_left[team] < cost[c] - 1e-9:
            return False
        return not (spot[c] and not np.isnan(t_share[team]) and t_s[team] + gpus[c] > t_share[team] * (t_g[team] + gpus[c]) + 1e-09)

    def take(c: int, team: int, sign: int) -> None:
        o = coff[c]
        if limited[o]:
            avail[o] -= sign * nodes[c]
        for k in range(ptr[o], ptr[o + 1]):
            pool_left[opool[k]] -= sign * nodes[c] * oper[k]
        team_left[team] -= sign * cost[c]
        t_g[team] += sign * gpus[c]
        if spot[c]:
            t_s[team] += sign * gpus[c]
        x[c] += sign

    for w in order:
        cs = by_w[w]
        if not len(cs):
            continue
        team = int(prob["w_team"][w])
        budget = prob["w_budget"][w]
        spent = 0.0
        provs: set[int] = set()
        regs: set[int] = set()
        chosen: list[int] = []
        for _ in range(int(prob["w_replicas"][w])):
            best = -1
            for c in cs:
                if x[c] >= cap[c] or spent + cost[c] > budget + 1e-9:
                    continue
                o = coff[c]
                if len(provs) < prob["w_spread_prov"][w] and oprov[o] in provs:
                    continue
                if len(regs) < prob["w_spread_reg"][w] and oreg[o] in regs:
                    continue
                if fits(int(c), team):
                    best = int(c)
                    break
            if best < 0:
                break
            take(best, team, +1)
            chosen.append(best)
            spent += cost[best]
            provs.add(int(oprov[coff[best]]))
            regs.add(int(oreg[coff[best]]))
        placed = len(chosen)
        if placed and (placed < prob["w_fewest"][w] or len(provs) < prob["w_spread_prov"][w]
                       or len(regs) < prob["w_spread_reg"][w]):
            for c in chosen:
                take(c, team, -1)
    return x


# --------------------------------------------------------------------------------------------------
# The model as sparse rows (for HiGHS and GLOP)
# --------------------------------------------------------------------------------------------------


def mip_rows(prob: Problem) -> dict[str, Any]:
    """Columns (x, on, y), bounds, costs and CSR rows of the engine's model."""
    cw, coff = prob["c_w"], prob["c_offer"]
    nc = len(cw)
    nw = prob["n_workloads"]
    R, F = prob["w_replicas"], prob["w_fewest"]
    most = np.minimum(R, affordable(prob))
    pen = prob["penalty_unit"] * prob["w_priority"].astype(float)
    col_lb = [np.zeros(nc)]
    col_ub = [np.where(unplaceable(prob)[cw], 0.0, prob["c_cap"].astype(float))]
    col_cost = [prob["c_obj"] - pen[cw]]
    offset = float((pen * R).sum())
    integer = [np.arange(nc)]
    rows: list[tuple[np.ndarray, np.ndarray, float, float]] = []  # (cols, vals, lo, hi)
    next_col = nc
    by_w_cols: dict[int, np.ndarray] = {}
    order = np.argsort(cw, kind="stable")
    bounds = np.searchsorted(cw[order], np.arange(nw + 1))
    for w in range(nw):
        cs = order[bounds[w]:bounds[w + 1]]
        if not len(cs):
            continue
        by_w_cols[w] = cs
        rows.append((cs, np.ones(len(cs)), -np.inf, float(most[w])))
        if np.isfinite(prob["w_budget"][w]):
            rows.append((cs, prob["c_cost"][cs], -np.inf, float(prob["w_budget"][w])))
        sp, sr = int(prob["w_spread_prov"][w]), int(prob["w_spread_reg"][w])
        if F[w] > 1 or sp > 1 or sr > 1:
            on = next_col
            next_col += 1
            col_lb.append(np.zeros(1))
            col_ub.append(np.ones(1))
            col_cost.append(np.zeros(1))
            integer.append(np.array([on]))
            lo = max(int(F[w]), 1)
            rows.append((np.append(cs, on), np.append(np.ones(len(cs)), -lo), 0.0, np.inf))
            rows.append((np.append(cs, on), np.append(np.ones(len(cs)), -float(most[w])), -np.inf, 0.0))
            for minimum, key in ((sp, prob["o_prov"]), (sr, prob["o_reg"])):
                if minimum <= 1:
                    continue
                groups: dict[int, list[int]] = defaultdict(list)
                for c in cs:
                    groups[int(key[coff[c]])].append(int(c))
                ys = []
                for g in sorted(groups):
                    y = next_col
                    next_col += 1
                    ys.append(y)
                    col_lb.append(np.zeros(1))
                    col_ub.append(np.ones(1))
                    col_cost.append(np.zeros(1))
                    integer.append(np.array([y]))
                    gc = np.asarray(groups[g])
                    rows.append((np.append(gc, y), np.append(np.ones(len(gc)), -1.0), 0.0, np.inf))
                rows.append((np.append(ys, on), np.append(np.ones(len(ys)), -float(minimum)), 0.0, np.inf))
    # offers
    oorder = np.argsort(coff, kind="stable")
    ob = np.searchsorted(coff[oorder], np.arange(prob["n_offers"] + 1))
    for o in range(prob["n_offers"]):
        cs = oorder[ob[o]:ob[o + 1]]
        if len(cs) and prob["o_avail"][o] >= 0:
            rows.append((cs, prob["c_nodes"][cs].astype(float), -np.inf, float(prob["o_avail"][o])))
    # pools
    ptr, opool, oper = prob["o_pool_ptr"], prob["o_pool"], prob["o_pool_per"]
    pool_cols: dict[int, list[np.ndarray]] = defaultdict(list)
    pool_vals: dict[int, list[np.ndarray]] = defaultdict(list)
    for o in range(prob["n_offers"]):
        cs = oorder[ob[o]:ob[o + 1]]
        if not len(cs):
            continue
        for k in range(ptr[o], ptr[o + 1]):
            pool_cols[int(opool[k])].append(cs)
            pool_vals[int(opool[k])].append(prob["c_nodes"][cs] * float(oper[k]))
    for p in sorted(pool_cols):
        rows.append((np.concatenate(pool_cols[p]), np.concatenate(pool_vals[p]), -np.inf, float(prob["p_limit"][p])))
    # teams
    tw = prob["w_team"][cw]
    for t in range(len(prob["t_budget"])):
        cs = np.flatnonzero(tw == t)
        if not len(cs):
            continue
        if np.isfinite(prob["t_budget"][t]):
            rows.append((cs, prob["c_cost"][cs], -np.inf, float(prob["t_budget"][t])))
        if not np.isnan(prob["t_share"][t]):
            share = round(prob["t_share"][t] * 1000)
            vals = (1000.0 * prob["c_spot"][cs] - share) * prob["c_gpus"][cs]
            rows.append((cs, vals, -np.inf, 0.0))
    starts = np.zeros(len(rows) + 1, np.int64)
    starts[1:] = np.cumsum([len(r[0]) for r in rows])
    return {
        "n_cols": next_col, "n_x": nc,
        "col_lb": np.concatenate(col_lb), "col_ub": np.concatenate(col_ub), "col_cost": np.concatenate(col_cost),
        "offset": offset, "integer": np.concatenate(integer).astype(np.int32),
        "row_lo": np.asarray([r[2] for r in rows], float), "row_hi": np.asarray([r[3] for r in rows], float),
        "starts": starts,
        "index": np.concatenate([r[0] for r in rows]).astype(np.int32) if rows else np.zeros(0, np.int32),
        "value": np.concatenate([r[1] for r in rows]).astype(float) if rows else np.zeros(0),
    }


def run_highs(prob: Problem, relax: bool, time_limit: float, threads: int = 2, seed: int = 0) -> dict[str, Any]:
    """Solve the model (or its LP relaxation) with HiGHS. Must run in a process without ortools."""
    import highspy

    t0 = time.perf_counter()
    m = mip_rows(prob)
    build_s = time.perf_counter() - t0
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit))
    h.setOptionValue("threads", threads)
    h.setOptionValue("random_seed", seed)
    inf = highspy.kHighsInf
    n = m["n_cols"]
    h.addVars(n, np.maximum(m["col_lb"], -inf), np.minimum(m["col_ub"], inf))
    h.changeColsCost(n, np.arange(n, dtype=np.int32), m["col_cost"])
    h.changeObjectiveOffset(m["offset"])
    lo = np.where(np.isfinite(m["row_lo"]), m["row_lo"], -inf)
    hi = np.where(np.isfinite(m["row_hi"]), m["row_hi"], inf)
    h.addRows(len(lo), lo, hi, len(m["index"]), m["starts"][:-1], m["index"], m["value"])
    trajectory: list[tuple[float, float]] = []
    if not relax:
        ints = m["integer"]
        h.changeColsIntegrality(len(ints), ints, np.full(len(ints), highspy.HighsVarType.kInteger))
        t_solve = [0.0]

        def improving(event: Any) -> None:
            trajectory.append((time.perf_counter() - t_solve[0], float(event.data_out.objective_function_value)))

        h.cbMipImprovingSolution.subscribe(improving)
    t1 = time.perf_counter()
    if not relax:
        t_solve[0] = t1
    h.run()
    solve_s = time.perf_counter() - t1
    status = h.modelStatusToString(h.getModelStatus())
    info = h.getInfo()
    out: dict[str, Any] = {"status": status, "build_s": build_s, "solve_s": solve_s, "rows": len(lo), "cols": n,
                           "trajectory": [(round(t + build_s, 4), o) for t, o in trajectory]}
    sol = h.getSolution()
    if relax:
        out["lp_objective"] = float(info.objective_function_value)
        out["x_lp"] = np.asarray(sol.col_value)[: m["n_x"]]
    else:
        out["mip_dual_bound"] = float(info.mip_dual_bound)
        if info.primal_solution_status == 2:  # feasible
            out["x"] = np.rint(np.asarray(sol.col_value)[: m["n_x"]]).astype(np.int64)
    return out


def run_glop(prob: Problem) -> dict[str, Any]:
    """LP relaxation with ortools' GLOP (the fallback when highspy is not installed)."""
    from ortools.linear_solver import pywraplp

    t0 = time.perf_counter()
    m = mip_rows(prob)
    s = pywraplp.Solver.CreateSolver("GLOP")
    xs = [s.NumVar(float(lb), float(ub), "") for lb, ub in zip(m["col_lb"], m["col_ub"], strict=True)]
    for r in range(len(m["row_lo"])):
        a, b = m["starts"][r], m["starts"][r + 1]
        lo = m["row_lo"][r] if np.isfinite(m["row_lo"][r]) else -s.infinity()
        hi = m["row_hi"][r] if np.isfinite(m["row_hi"][r]) else s.infinity()
        ct = s.Constraint(lo, hi)
        for j, v in zip(m["index"][a:b], m["value"][a:b], strict=True):
            ct.SetCoefficient(xs[j], float(v))
    obj = s.Objective()
    for j, c in enumerate(m["col_cost"]):
        obj.SetCoefficient(xs[j], float(c))
    obj.SetOffset(m["offset"])
    obj.SetMinimization()
    build_s = time.perf_counter() - t0
    status = s.Solve()
    return {"status": {0: "Optimal"}.get(status, str(status)), "build_s": build_s,
            "solve_s": time.perf_counter() - t0 - build_s, "lp_objective": obj.Value(),
            "x_lp": np.asarray([v.solution_value() for v in xs[: m["n_x"]]]), "rows": len(m["row_lo"]), "cols": len(xs),
            "trajectory": []}


def lp_round_repair(prob: Problem, x_lp: np.ndarray) -> np.ndarray:
    """LP rounding + greedy repair: floor the LP solution, drop workloads left under their minimum
    or spread, then fill what is left with the capacity-aware greedy on the remaining capacity."""
    x = np.floor(np.asarray(x_lp) + 1e-6).astype(np.int64)
    x = np.minimum(x, prob["c_cap"])
    placed = np.bincount(prob["c_w"], weights=x, minlength=prob["n_workloads"])
    bad = (placed > 0) & ((placed < prob["w_fewest"]) | (placed > prob["w_replicas"]))
    x[bad[prob["c_w"]]] = 0
    ev = evaluate(prob, x)
    if ev["violations_by_kind"].get("spread"):
        spread_w = np.flatnonzero((prob["w_spread_prov"] > 1) | (prob["w_spread_reg"] > 1))
        x[np.isin(prob["c_w"], spread_w)] = 0
    return greedy_capacity_from(prob, x)


def greedy_capacity_from(prob: Problem, x0: np.ndarray) -> np.ndarray:
    """Capacity-aware greedy that starts from a partial assignment and only adds replicas to
    workloads that have none (keeps all-or-nothing and spread handling simple)."""
    # Reduce the shared limits by what x0 uses, then run the greedy on the untouched workloads.
    sub = dict(prob)
    x0 = np.asarray(x0, np.int64)
    nodes_per_offer = np.bincount(prob["c_offer"], weights=prob["c_nodes"] * x0, minlength=prob["n_offers"])
    avail = prob["o_avail"].copy()
    lim = avail >= 0
    avail[lim] = np.maximum(0, avail[lim] - nodes_per_offer[lim].astype(np.int64))
    sub["o_avail"] = avail
    sub["p_limit"] = np.maximum(0, prob["p_limit"] - _pool_use(prob, x0).astype(np.int64))
    tw = prob["w_team"][prob["c_w"]]
    nt = len(prob["t_budget"])
    sub["t_budget"] = prob["t_budget"] - np.bincount(tw, weights=prob["c_cost"] * x0, minlength=nt)
    sub["t_gpus0"] = np.bincount(tw, weights=prob["c_gpus"] * x0, minlength=nt)
    sub["t_spot0"] = np.bincount(tw, weights=prob["c_gpus"] * x0 * prob["c_spot"], minlength=nt)
    touched = np.bincount(prob["c_w"], weights=x0, minlength=prob["n_workloads"]) > 0
    keep = ~touched[prob["c_w"]]
    # Rounding down can break a team's spot share (the LP met it fractionally); evaluate() reports it.
    idx = np.flatnonzero(keep)
    for k in ("c_w", "c_offer", "c_local", "c_nodes", "c_cap", "c_cost", "c_obj", "c_gpus", "c_spot"):
        sub[k] = prob[k][idx]
    x_add = greedy_capacity(sub)
    x = x0.copy()
    x[idx] += x_add
    return x
