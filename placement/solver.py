"""The CP-SAT model: every replica on a compatible offer, or reported unplaced.

Units. CP-SAT works on integers, so money is scaled to integer units of 1/10,000 USD per hour
(``MONEY_SCALE``): $98.32/h is 983,200 units. Shares (spot limits) are scaled to per-mille.

Objective (minimised), in $/h:
    sum of replica costs (instances + amortised data egress)
  + soft preferences (carbon shadow price, owned-capacity and provider bonuses)
  + for every unplaced replica: priority × ``penalty_unit``

``penalty_unit`` is one dollar more than the most expensive single-replica candidate in the
problem, so running a replica anywhere always beats leaving it unplaced, and a replica of higher
priority wins a contested slot over one of lower priority.

Determinism: CP-SAT runs with ``interleave_search`` (its deterministic parallel mode), a fixed seed
and a deterministic-time limit, so the same inputs give the same solution whatever the machine load.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass

from ortools.sat.python import cp_model

from placement.candidates import Candidate, WorkloadCandidates
from placement.errors import SolverError
from placement.models import Inventory, PolicySet

MONEY_SCALE = 10_000  # integer units per USD
SHARE_SCALE = 1_000


def money(usd: float) -> int:
    return round(usd * MONEY_SCALE)


@dataclass(frozen=True)
class SolveResult:
    # per workload name: list of (candidate, replicas on it), in offer order
    assignment: dict[str, list[tuple[Candidate, int]]]
    status: str
    objective_usd: float
    best_bound_usd: float
    gap: float
    deterministic_time: float
    wall_time_s: float
    variables: int
    penalty_unit_usd: float


@dataclass(frozen=True)
class WorkloadMoves:
    """A running workload as re-optimisation sees it (see placement.reoptimize)."""

    current: dict[int, int]  # offer index -> replicas running there now
    current_hourly_usd: float  # what the running replicas cost now
    migration_usd: dict[int, float]  # offer index -> one-off cost of starting one replica there
    horizon_hours: float  # hours over which a move's one-off cost is amortised
    min_saving_usd: float | None  # $/h the workload's move must save at least; None: any move allowed
    max_payback_hours: float
    fixed: bool = False  # may not move (do-not-move, or on a provider whose data is stale)


@dataclass(frozen=True)
class MoveRules:
    """Re-optimisation: running replicas kept in place need no new capacity; moves pay their way."""

    workloads: dict[str, WorkloadMoves]
    budgets: tuple[tuple[frozenset[str], int], ...] = ()  # (workload names, most of them moved)
    frozen_offers: frozenset[int] = frozenset()  # no new replicas here (stale inventory)


@dataclass(frozen=True)
class SolveOptions:
    max_deterministic_time: float = 30.0
    workers: int = 2
    seed: int = 0
    # current placement as a hint: workload -> {offer_index: replicas}
    hint: dict[str, dict[int, int]] | None = None
    moves: MoveRules | None = None


def solve(
    problems: list[WorkloadCandidates],
    inventory: Inventory,
    policies: PolicySet,
    options: SolveOptions,
) -> SolveResult:
    started = time.perf_counter()
    model = cp_model.CpModel()
    penalty_unit = 1.0 + max(
        (c.objective_hourly_usd for wc in problems for c in wc.candidates), default=0.0
    )
    penalty_unit = float(math.ceil(penalty_unit))

    x: dict[tuple[int, int], cp_model.IntVar] = {}  # (workload idx, candidate idx) -> replicas
    x_of: list[list[tuple[int, cp_model.IntVar]]] = []  # per workload: (candidate idx, var)
    placed: list[cp_model.IntVar] = []
    objective_terms: list[cp_model.LinearExprT] = []
    offers_use: dict[int, list[tuple[cp_model.IntVar, int]]] = defaultdict(list)
    team_cost: dict[str, list[tuple[cp_model.IntVar, int]]] = defaultdict(list)
    team_gpus: dict[str, list[tuple[cp_model.IntVar, int, bool]]] = defaultdict(list)
    kept: dict[tuple[int, int], cp_model.IntVar] = {}
    kept_cap: dict[tuple[int, int], int] = {}
    moved: dict[str, cp_model.IntVar] = {}
    rules = options.moves
    variables = 0

    for wi, wc in enumerate(problems):
        w = wc.workload
        n_placed = model.new_int_var(0, w.replicas, f"placed[{w.name}]")
        placed.append(n_placed)
        variables += 1
        vars_w: list[cp_model.IntVar] = []
        x_of.append([])
        wm = rules.workloads.get(w.name) if rules is not None else None
        for ci, cand in enumerate(wc.candidates):
            cur = min(wm.current.get(cand.offer_index, 0), w.replicas) if wm is not None else 0
            cap = w.replicas
            offer = inventory.offers[cand.offer_index]
            if offer.available is not None:
                cap = min(cap, offer.available // cand.nodes + cur)
            if rules is not None and cand.offer_index in rules.frozen_offers:
                cap = min(cap, cur)
            if cap <= 0:
                continue
            var = model.new_int_var(0, cap, f"x[{w.name},{offer.id}]")
            variables += 1
            x[(wi, ci)] = var
            x_of[wi].append((ci, var))
            vars_w.append(var)
            offers_use[cand.offer_index].append((var, cand.nodes))
            objective_terms.append(money(cand.objective_hourly_usd) * var)
            if wm is not None:
                new_replicas: cp_model.LinearExprT = var
                if cur > 0:
                    # Replicas kept where they run already hold their capacity: they use no headroom.
                    k = model.new_int_var(0, min(cur, cap), f"kept[{w.name},{offer.id}]")
                    variables += 1
                    model.add(k <= var)
                    kept[(wi, ci)] = k
                    offers_use[cand.offer_index].append((k, -cand.nodes))
                    kept_cap[(wi, ci)] = min(cur, cap)
                    new_replicas = var - k
                cost = wm.migration_usd.get(cand.offer_index, 0.0) / wm.horizon_hours
                if cost > 0:
                    objective_terms.append(money(cost) * new_replicas)
            team_cost[w.team].append((var, money(cand.hourly_usd)))
            team_gpus[w.team].append((var, cand.nodes * offer.gpu_count, offer.capacity_type == "spot"))
        model.add(n_placed == sum(vars_w)) if vars_w else model.add(n_placed == 0)
        # all-or-nothing down to min_replicas: placed is 0 or in [fewest, replicas]
        if w.fewest_replicas > 1 and vars_w:
            on = model.new_bool_var(f"on[{w.name}]")
            model.add(n_placed >= w.fewest_replicas).only_enforce_if(on)
            model.add(n_placed == 0).only_enforce_if(~on)
            _add_spread(model, wc, inventory, x_of[wi], on)
        elif vars_w and (w.spread.min_providers > 1 or w.spread.min_regions > 1):
            on = model.new_bool_var(f"on[{w.name}]")
            model.add(n_placed >= 1).only_enforce_if(on)
            model.add(n_placed == 0).only_enforce_if(~on)
            _add_spread(model, wc, inventory, x_of[wi], on)
        if w.budget_hourly_usd is not None and vars_w:
            model.add(
                sum(money(wc.candidates[ci].hourly_usd) * var for ci, var in x_of[wi])
                <= money(w.budget_hourly_usd)
            )
        objective_terms.append(money(penalty_unit * w.priority) * (w.replicas - n_placed))
        if wm is not None:
            moved[w.name] = _add_move_rules(model, wc, wi, wm, x_of[wi], kept, objective_terms)
            variables += 1

    if rules is not None:
        for names, most in rules.budgets:
            in_scope = [moved[n] for n in sorted(names) if n in moved]
            if in_scope:
                model.add(sum(in_scope) <= most)

    # Shared capacity: each offer's own headroom and every pool it draws on.
    for oi, uses in offers_use.items():
        offer = inventory.offers[oi]
        if offer.available is not None:
            model.add(sum(nodes * var for var, nodes in uses) <= offer.available)
    for pool in inventory.pools:
        terms: list[cp_model.LinearExprT] = []
        for oi, uses in offers_use.items():
            offer = inventory.offers[oi]
            if pool.id not in offer.pools:
                continue
            per_node = {"instances": 1, "gpus": offer.gpu_count, "vcpus": offer.vcpus}[pool.unit]
            terms.extend(nodes * per_node * var for var, nodes in uses)
        if terms:
            model.add(sum(terms) <= pool.limit)

    # Team rules: budgets and the share of GPUs that may be interruptible.
    for team, rule in policies.teams.items():
        limit = rule.hourly_limit_usd
        if limit is not None and team_cost.get(team):
            model.add(sum(cost * var for var, cost in team_cost[team]) <= money(limit))
        if rule.max_interruptible_share is not None and team_gpus.get(team):
            share = round(rule.max_interruptible_share * SHARE_SCALE)
            model.add(
                sum((SHARE_SCALE if spot else 0) * g * var for var, g, spot in team_gpus[team])
                <= sum(share * g * var for var, g, _ in team_gpus[team])
            )

    model.minimize(sum(objective_terms))

    if options.hint:
        for (wi, ci), var in x.items():
            w_hint = options.hint.get(problems[wi].workload.name, {})
            model.add_hint(var, w_hint.get(problems[wi].candidates[ci].offer_index, 0))
        for (wi, ci), k in kept.items():
            w_hint = options.hint.get(problems[wi].workload.name, {})
            model.add_hint(k, min(w_hint.get(problems[wi].candidates[ci].offer_index, 0), kept_cap[(wi, ci)]))

    # Phase 1: one worker, a quarter of the budget. Small and medium models are proven optimal here
    # in milliseconds. Phase 2, only if needed: the deterministic interleaved portfolio, warm-started
    # from phase 1's solution. Both phases are deterministic, so the whole solve is.
    first_budget = options.max_deterministic_time if options.workers == 1 else options.max_deterministic_time / 4
    solver, status = _run(model, 1, options.seed, first_budget)
    spent = solver.deterministic_time
    if status != "OPTIMAL" and options.workers > 1:
        if status == "FEASIBLE":
            model.clear_hints()
            for var in (*x.values(), *kept.values()):
                model.add_hint(var, solver.value(var))
        second, second_status = _run(model, options.workers, options.seed,
                                     max(0.1, options.max_deterministic_time - spent))
        spent += second.deterministic_time
        if second_status in ("OPTIMAL", "FEASIBLE") and (
            status != "FEASIBLE" or second.objective_value <= solver.objective_value
        ):
            solver, status = second, second_status
    if status not in ("OPTIMAL", "FEASIBLE"):
        # Out of budget before any solution: take the first solution one worker finds.
        solver, status = _run(model, 1, options.seed, max(60.0, options.max_deterministic_time), first_only=True)
        spent += solver.deterministic_time
    status_code = cp_model.OPTIMAL if status == "OPTIMAL" else cp_model.FEASIBLE if status == "FEASIBLE" else None
    if status_code is None and status == "INFEASIBLE" and rules is not None:
        raise SolverError(
            "no plan keeps every do-not-move workload (or every workload on a provider with stale "
            "inventory) in place while meeting the current budgets and rules; lift a do-not-move mark "
            "or the budget that the running work now exceeds"
        )
    if status_code is None:
        raise SolverError(
            f"the solver found no plan ({status}) within its time limit; raise --time-limit "
            "(leaving work unplaced is always allowed, so a plan exists)"
        )
    assignment: dict[str, list[tuple[Candidate, int]]] = {}
    for wi, wc in enumerate(problems):
        chosen = []
        for ci, cand in enumerate(wc.candidates):
            chosen_var = x.get((wi, ci))
            if chosen_var is not None:
                n = solver.value(chosen_var)
                if n:
                    chosen.append((cand, int(n)))
        assignment[wc.workload.name] = chosen
    objective = solver.objective_value / MONEY_SCALE
    bound = solver.best_objective_bound / MONEY_SCALE
    gap = 0.0 if status_code == cp_model.OPTIMAL else abs(objective - bound) / max(abs(objective), 1e-9)
    return SolveResult(
        assignment=assignment,
        status=status,
        objective_usd=objective,
        best_bound_usd=bound,
        gap=gap,
        deterministic_time=spent,
        wall_time_s=time.perf_counter() - started,
        variables=variables,
        penalty_unit_usd=penalty_unit,
    )


def _add_move_rules(
    model: cp_model.CpModel,
    wc: WorkloadCandidates,
    wi: int,
    wm: WorkloadMoves,
    x_w: list[tuple[int, cp_model.IntVar]],
    kept: dict[tuple[int, int], cp_model.IntVar],
    objective_terms: list[cp_model.LinearExprT],
) -> cp_model.IntVar:
    """A moved[w] flag: 0 keeps every running replica that can stay; 1 only if the move pays."""
    w = wc.workload
    m = model.new_bool_var(f"moved[{w.name}]")
    kept_w = [kept[(wi, ci)] for ci, _ in x_w if (wi, ci) in kept]
    keepable = min(w.replicas, sum(wm.current.get(wc.candidates[ci].offer_index, 0) for ci, _ in x_w))
    if keepable == 0:
        # Nothing of it can stay (new work, or every replica sits on an offer it may no longer use).
        model.add(m == 0)
        return m
    model.add(sum(kept_w) >= keepable).only_enforce_if(~m)
    if wm.fixed:
        model.add(m == 0)
        return m
    objective_terms.append(1 * m)  # among equal plans, the one with fewer moves
    if wm.min_saving_usd is None:
        return m
    new_cost = sum(money(wc.candidates[ci].hourly_usd) * var for ci, var in x_w)
    saving = money(wm.current_hourly_usd) - new_cost
    model.add(saving >= max(1, money(wm.min_saving_usd))).only_enforce_if(m)
    started = []
    for ci, var in x_w:
        cost = money(wm.migration_usd.get(wc.candidates[ci].offer_index, 0.0))
        if cost:
            k = kept.get((wi, ci))
            started.append(cost * (var - k if k is not None else var))
    if started:
        # payback: one-off migration cost / hourly saving <= max_payback_hours (in tenths of an hour)
        model.add(round(wm.max_payback_hours * 10) * saving >= 10 * sum(started)).only_enforce_if(m)
    return m


def _run(
    model: cp_model.CpModel, workers: int, seed: int, budget: float, first_only: bool = False
) -> tuple[cp_model.CpSolver, str]:
    solver = cp_model.CpSolver()
    params = solver.parameters
    params.num_workers = workers
    params.interleave_search = workers > 1
    params.random_seed = seed
    params.max_deterministic_time = budget
    params.stop_after_first_solution = first_only
    return solver, solver.status_name(solver.solve(model))


def _add_spread(
    model: cp_model.CpModel,
    wc: WorkloadCandidates,
    inventory: Inventory,
    x_w: list[tuple[int, cp_model.IntVar]],
    on: cp_model.IntVar,
) -> None:
    w = wc.workload
    for minimum, key in ((w.spread.min_providers, "provider"), (w.spread.min_regions, "region")):
        if minimum <= 1:
            continue
        groups: dict[str, list[cp_model.IntVar]] = defaultdict(list)
        for ci, var in x_w:
            offer = inventory.offers[wc.candidates[ci].offer_index]
            groups[offer.provider if key == "provider" else offer.region_key].append(var)
        used = []
        for name, vars_g in sorted(groups.items()):
            y = model.new_bool_var(f"spread[{w.name},{key}={name}]")
            model.add(sum(vars_g) >= 1).only_enforce_if(y)
            used.append(y)
        model.add(sum(used) >= minimum).only_enforce_if(on)
