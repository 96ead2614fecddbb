"""Re-optimisation: re-plan running work as prices and capacity move, and move it only when it pays.

A move of one replica costs, once:

    restart_minutes / 60 × the new place's hourly cost      (paying for both while the new one starts)
  + state_gb × egress $/GB from where it runs now            (checkpoint or data carried; 0 within a region)

and pays back at the hourly saving. The solver (``MoveRules`` in placement.solver) sees each running
replica as able to stay where it is without new capacity, adds every move's one-off cost amortised over
the workload's horizon (a service's amortisation horizon, or a batch job's expected remaining runtime)
to the objective, and lets a workload move only when

  - its hourly saving is at least ``min_saving_usd_per_hour`` and ``min_saving_percent`` of its cost,
  - the move pays back within ``max_payback_hours``,
  - the run's move budget and every disruption budget whose window is open allow one more move,
  - it is not marked do-not-move, and neither its provider nor its destination's has stale inventory.

Among plans of equal cost the one with fewer moves wins (cost first, then moves, as in POP's
two-stage re-solve). A second, unconstrained re-plan (no moving costs, thresholds or budgets) gives
the saving that was available, so that the plan can say how much of it was captured and what was
held back and why.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import math
from collections import defaultdict
from dataclasses import dataclass, replace

from placement.candidates import WorkloadCandidates
from placement.cron import window_open
from placement.diff import StateView, attach_state, hint_from_state
from placement.idle import with_idle
from placement.models import (
    Action,
    Inventory,
    Offer,
    Placement,
    Plan,
    Reoptimization,
    ReoptimizationPolicy,
    Workload,
)
from placement.planner import PlanOptions, build_candidates, make_plan, with_digest
from placement.scenario import Scenario
from placement.solver import MoveRules, WorkloadMoves


@dataclass(frozen=True)
class ReoptimizeOptions:
    now: dt.datetime | None = None
    max_deterministic_time: float | None = None
    workers: int | None = None
    record_wall_time: bool = False


@dataclass(frozen=True)
class _Running:
    """One workload's running replicas, priced at today's prices where it runs."""

    by_offer: dict[str, int]
    hourly_usd: float
    regions: frozenset[str]
    egress_usd_per_gb: float  # cheapest egress rate out of a place it runs now


def _hours(w: Workload, pol: ReoptimizationPolicy) -> float:
    if w.kind == "batch":
        return w.migration.remaining_hours or pol.batch_remaining_hours
    return pol.service_horizon_hours


def _restart_hours(w: Workload, pol: ReoptimizationPolicy) -> float:
    minutes = w.migration.restart_minutes
    return (minutes if minutes is not None else pol.restart_minutes.get(w.kind, 0.0)) / 60.0


def _state_gb(w: Workload, pol: ReoptimizationPolicy) -> float:
    gb = w.migration.state_gb
    return gb if gb is not None else pol.state_gb.get(w.kind, 0.0)


def migration_usd(w: Workload, pol: ReoptimizationPolicy, running: _Running, offer: Offer, hourly_usd: float) -> float:
    """One-off cost of starting one replica of ``w`` on ``offer`` instead of where it runs."""
    transfer = 0.0 if offer.region_key in running.regions else _state_gb(w, pol) * running.egress_usd_per_gb
    return _restart_hours(w, pol) * hourly_usd + transfer


def do_not_move(w: Workload, pol: ReoptimizationPolicy) -> bool:
    return w.migration.do_not_move or any(fnmatch.fnmatchcase(w.name, pat) for pat in pol.do_not_move)


def running_offers(inv: Inventory, state: StateView) -> dict[str, set[int]]:
    """Workload -> indexes of the offers its replicas run on now (offers still in the inventory)."""
    index = {o.id: i for i, o in enumerate(inv.offers)}
    out: dict[str, set[int]] = defaultdict(set)
    for r in state.replicas:
        if r.offer_id in index:
            out[r.workload].add(index[r.offer_id])
    return dict(out)


def running_workloads(problems: list[WorkloadCandidates], inv: Inventory, state: StateView) -> dict[str, _Running]:
    """Every running workload, priced at today's prices where it runs."""
    offers = {o.id: o for o in inv.offers}
    max_egress = max((o.egress_usd_per_gb for o in inv.offers), default=0.0)
    by_w: dict[str, list[tuple[str, float, str]]] = defaultdict(list)
    for r in state.replicas:
        region = offers[r.offer_id].region_key if r.offer_id in offers else "/".join(r.offer_id.split("/")[:2])
        by_w[r.workload].append((r.offer_id, r.hourly_usd, region))
    out: dict[str, _Running] = {}
    for wc in problems:
        reps = by_w.get(wc.workload.name)
        if not reps:
            continue
        price_now = {inv.offers[c.offer_index].id: c.hourly_usd for c in wc.candidates}
        count: dict[str, int] = defaultdict(int)
        hourly = 0.0
        rates = []
        for offer_id, recorded, _region in reps:
            count[offer_id] += 1
            hourly += price_now.get(offer_id, recorded)
            rates.append(offers[offer_id].egress_usd_per_gb if offer_id in offers else max_egress)
        out[wc.workload.name] = _Running(dict(count), hourly, frozenset(r for _, _, r in reps), min(rates))
    return out


def _budget_max(max_moves: int | None, percent: float | None, population: int) -> int | None:
    if max_moves is not None:
        return max_moves
    if percent is not None:
        return max(1, math.floor(population * percent / 100.0)) if percent > 0 else 0
    return None


def move_rules(
    scenario: Scenario,
    problems: list[WorkloadCandidates],
    running: dict[str, _Running],
    now: dt.datetime,
    *,
    constrained: bool = True,
) -> tuple[MoveRules, dict[str, str], list[str], int | None]:
    """The solver's view of running work. Returns the rules, the reasons a workload may not move at
    all, the budgets that apply now (described) and the run's move limit."""
    inv = scenario.inventory.inventory
    pol = scenario.policies.policies.reoptimization
    stale = set(inv.snapshot.stale_providers)
    index = {o.id: i for i, o in enumerate(inv.offers)}
    fixed_why: dict[str, str] = {}
    workloads: dict[str, WorkloadMoves] = {}
    for wc in problems:
        w = wc.workload
        run = running.get(w.name)
        if run is None:
            continue
        on_stale = sorted({oid.split("/")[0] for oid in run.by_offer} & stale)
        if on_stale:
            fixed_why[w.name] = f"runs on {', '.join(on_stale)}, whose inventory is stale"
        elif constrained and do_not_move(w, pol):
            fixed_why[w.name] = "marked do-not-move"
        migration = {}
        if constrained:
            for c in wc.candidates:
                migration[c.offer_index] = migration_usd(w, pol, run, inv.offers[c.offer_index], c.hourly_usd)
        workloads[w.name] = WorkloadMoves(
            current={index[o]: n for o, n in run.by_offer.items() if o in index},
            current_hourly_usd=run.hourly_usd,
            migration_usd=migration,
            horizon_hours=_hours(w, pol),
            min_saving_usd=max(pol.min_saving_usd_per_hour, pol.min_saving_percent / 100.0 * run.hourly_usd)
            if constrained else None,
            max_payback_hours=pol.max_payback_hours if constrained else 1e6,
            fixed=w.name in fixed_why,
        )
    frozen = frozenset(i for i, o in enumerate(inv.offers) if o.provider in stale)
    budgets: list[tuple[frozenset[str], int]] = []
    described: list[str] = []
    run_limit = None
    if constrained and workloads:
        names = frozenset(workloads)
        run_limit = _budget_max(pol.max_moves, pol.max_moves_percent, len(names))
        if run_limit is not None:
            budgets.append((names, run_limit))
            described.append(f"run: at most {run_limit} of {len(names)} running workloads moved")
        team_of = {wc.workload.name: wc.workload.team for wc in problems}
        for i, b in enumerate(pol.disruption_budgets):
            if b.schedule is not None and not window_open(b.schedule, b.duration or "", now, b.timezone):
                continue
            scope = frozenset(
                n for n in names
                if (not b.teams or team_of[n] in b.teams)
                and (not b.providers or any(o.split("/")[0] in b.providers for o in running[n].by_offer))
            )
            most = _budget_max(b.max_moves, b.max_moves_percent, len(scope))
            if most is None:
                continue
            budgets.append((scope, most))
            where = ", ".join([*(f"team {t}" for t in b.teams), *(f"provider {p}" for p in b.providers)]) or "all"
            window = f" (window '{b.schedule}' for {b.duration}, {b.timezone})" if b.schedule else ""
            described.append(f"disruption_budgets[{i}] {where}: at most {most} of {len(scope)} moved{window}")
    return MoveRules(workloads, tuple(budgets), frozen), fixed_why, described, run_limit


def workload_cost(plan: Plan) -> dict[str, float]:
    cost: dict[str, float] = defaultdict(float)
    for p in plan.placements:
        cost[p.workload] += p.total_hourly_usd
    return cost


def reoptimize(scenario: Scenario, state: StateView, options: ReoptimizeOptions | None = None) -> Plan:
    """A plan against ``state`` that moves running work only where the move pays, within the budgets."""
    options = options or ReoptimizeOptions()
    now = options.now or dt.datetime.now(dt.UTC)
    inv = scenario.inventory.inventory
    pol = scenario.policies.policies.reoptimization
    problems = build_candidates(scenario, running_offers(inv, state))
    base = PlanOptions(max_deterministic_time=options.max_deterministic_time, workers=options.workers,
                       record_wall_time=options.record_wall_time, hint=hint_from_state(state), method="exact")
    running = running_workloads(problems, inv, state)
    rules, fixed_why, budgets, run_limit = move_rules(scenario, problems, running, now)
    free, *_ = move_rules(scenario, problems, running, now, constrained=False)
    planned = attach_state(make_plan(scenario, replace(base, moves=rules)), state)
    ideal = attach_state(make_plan(scenario, replace(base, moves=free)), state)

    offers = {o.id: o for o in inv.offers}
    workloads = {wc.workload.name: wc.workload for wc in problems}
    by_replica = {(p.workload, p.replica): p for p in planned.placements}
    actions: list[Action] = []
    migration_total = 0.0
    for a in planned.actions:
        if a.action == "move" and a.offer_id in offers and a.workload in running:
            w = workloads[a.workload]
            placement = by_replica[(a.workload, a.replica)]
            cost = migration_usd(w, pol, running[a.workload], offers[a.offer_id], placement.total_hourly_usd)
            saving = -a.hourly_usd_delta
            payback = cost / saving if saving > 0 else None
            migration_total += cost
            reason = (f"{a.reason}; saves ${saving:,.2f}/h, moving costs ${cost:,.2f} once, "
                      + (f"paid back in {payback:,.1f} h" if payback is not None else "no saving on this replica"))
            a = a.model_copy(update={"migration_usd": round(cost, 4),
                                     "payback_hours": None if payback is None else round(payback, 2),
                                     "reason": reason})
        actions.append(a)

    current = sum(r.hourly_usd for r in running.values())
    planned_cost = workload_cost(planned)
    ideal_cost = workload_cost(ideal)
    moved = {a.workload for a in planned.actions if a.action == "move"}
    ideal_moved = {a.workload for a in ideal.actions if a.action == "move"}
    ideal_at: dict[str, list[Placement]] = defaultdict(list)
    for p in ideal.placements:
        ideal_at[p.workload].append(p)
    held: dict[str, str] = {}
    for name in sorted(ideal_moved - moved):
        if name not in running:
            continue
        held[name] = _held_reason(name, running[name], rules.workloads[name], fixed_why, ideal_at[name], offers,
                                  workloads[name], pol, ideal_cost.get(name, 0.0))
    running_names = set(running)
    admitted = {wc.workload.name: {c.offer_index for c in wc.candidates} for wc in problems}
    forced = sorted(n for n in moved if n in rules.workloads
                    and not set(rules.workloads[n].current) & admitted.get(n, set()))
    summary = Reoptimization(
        current_hourly_usd=round(current, 4),
        planned_hourly_usd=round(sum(planned_cost[n] for n in running_names), 4),
        unconstrained_hourly_usd=round(sum(ideal_cost[n] for n in running_names), 4),
        saving_usd_per_hour=_saving(moved, running, planned_cost),
        available_saving_usd_per_hour=_saving(ideal_moved, running, ideal_cost),
        migration_usd=round(migration_total, 4),
        moves=len(moved),
        moves_allowed=run_limit,
        forced_moves=tuple(forced),
        running_workloads=len(running),
        held_back=held,
        stale_providers=tuple(inv.snapshot.stale_providers),
        budgets=tuple(budgets),
        evaluated_at=now.astimezone(dt.UTC).isoformat(timespec="seconds"),
    )
    planned = with_idle(planned, inv)
    return with_digest(planned.model_copy(update={"actions": tuple(actions), "reoptimization": summary}))


def _saving(moved: set[str], running: dict[str, _Running], cost: dict[str, float]) -> float:
    """What the moved workloads save per hour (work dropped by a plan is not a saving)."""
    return round(sum(running[n].hourly_usd - cost[n] for n in moved if n in running) + 0.0, 4)


def _held_reason(
    name: str, run: _Running, wm: WorkloadMoves, fixed_why: dict[str, str], ideal: list[Placement],
    offers: dict[str, Offer], w: Workload, pol: ReoptimizationPolicy, new_cost: float,
) -> str:
    if name in fixed_why:
        return fixed_why[name]
    saving = run.hourly_usd - new_cost
    if wm.min_saving_usd is not None and saving < wm.min_saving_usd:
        return (f"saving ${saving:,.2f}/h is below the threshold ${wm.min_saving_usd:,.2f}/h "
                f"(min_saving_usd_per_hour {pol.min_saving_usd_per_hour:g}, min_saving_percent {pol.min_saving_percent:g})")
    cost = 0.0
    for p in ideal:
        if run.by_offer.get(p.offer_id, 0) == 0 and p.offer_id in offers:
            cost += migration_usd(w, pol, run, offers[p.offer_id], p.total_hourly_usd)
    if saving > 0 and cost / saving > pol.max_payback_hours:
        return f"moving costs ${cost:,.2f}: paid back in {cost / saving:,.1f} h, over max_payback_hours {pol.max_payback_hours:g}"
    if cost / wm.horizon_hours >= saving:
        return f"moving costs ${cost:,.2f}, more than it saves over the {wm.horizon_hours:g} h horizon"
    return "move budget used by moves that save more, or the capacity went to them"


def auto_apply_refusals(plan: Plan, scenario: Scenario) -> list[str]:
    """Why ``--apply`` may not apply this plan without review (empty: it may)."""
    rule = scenario.policies.policies.reoptimization.auto_apply
    if not rule.enabled:
        return ["reoptimization.auto_apply.enabled is false"]
    offers = {o.id: o for o in scenario.inventory.inventory.offers}
    out: list[str] = []
    moves = [a for a in plan.actions if a.action == "move"]
    summary = plan.reoptimization
    if summary is not None and moves and summary.saving_usd_per_hour < rule.min_saving_usd_per_hour:
        out.append(f"the moves save ${summary.saving_usd_per_hour:,.2f}/h, below auto_apply.min_saving_usd_per_hour "
                   f"{rule.min_saving_usd_per_hour:g}")
    if rule.max_moves is not None and len(moves) > rule.max_moves:
        out.append(f"{len(moves)} moves, over auto_apply.max_moves {rule.max_moves}")
    for a in moves:
        src, dst = offers.get(a.from_offer_id or ""), offers.get(a.offer_id or "")
        if rule.same_jurisdiction_only and (src is None or dst is None or src.jurisdiction != dst.jurisdiction):
            out.append(f"{a.workload}[{a.replica}] would leave its jurisdiction "
                       f"({src.jurisdiction if src else 'unknown'} -> {dst.jurisdiction if dst else 'unknown'})")
        if rule.providers and not {a.provider, a.from_provider} <= set(rule.providers):
            out.append(f"{a.workload}[{a.replica}] moves between {a.from_provider} and {a.provider}, "
                       f"outside auto_apply.providers")
    unplaced = {u.workload for u in plan.unplaced}
    dropped = sorted({a.workload for a in plan.actions if a.action == "delete" and a.workload in unplaced})
    if dropped:
        out.append(f"the plan stops running replicas of {', '.join(dropped)} without a place for them")
    return out
