"""From a scenario to a Plan value: filter, solve, explain, total, digest."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from placement.candidates import (
    HOURS_PER_MONTH,
    Candidate,
    WorkloadCandidates,
    candidates_for,
    region_egress_table,
)
from placement.errors import PlanError
from placement.idle import idle_owned
from placement.inputs import bundled_inventory_path, canonical_json, digest_of
from placement.models import (
    InputDigest,
    Inventory,
    Offer,
    Placement,
    Plan,
    PolicySet,
    SolverStats,
    Totals,
    Unplaced,
    Workload,
)
from placement.scenario import Scenario
from placement.solver import MoveRules, SolveOptions, SolveResult, solve


@dataclass(frozen=True)
class PlanOptions:
    max_deterministic_time: float | None = None
    workers: int | None = None
    seed: int | None = None
    record_wall_time: bool = False
    extra_inputs: dict[str, InputDigest] | None = None
    hint: dict[str, dict[str, int]] | None = None  # workload -> {offer_id: replicas}
    # "exact": one CP-SAT model over everything; "scale": the large-instance planner (placement.scale);
    # "auto": "scale" when the problem is too big for one CP-SAT model (see placement.scale.use_scale).
    method: str = "auto"
    # Re-optimisation: running replicas, moving costs and budgets (placement.reoptimize). Exact path only.
    moves: MoveRules | None = None


def _r(value: float, digits: int = 4) -> float:
    return round(value + 0.0, digits)


def build_candidates(scenario: Scenario, running: dict[str, set[int]] | None = None) -> list[WorkloadCandidates]:
    """Every workload's candidates. ``running`` (workload -> offer indexes where it runs now) exempts those
    offers from the headroom check: replicas kept where they run need no new capacity."""
    inv = scenario.inventory.inventory
    pol = scenario.policies.policies
    egress = region_egress_table(inv)
    problems = [candidates_for(w, inv, pol, egress) for w in scenario.workloads.workloads]
    for wc in problems:
        full = sorted(i for i in (running or {}).get(wc.workload.name, set())
                      if inv.offers[i].available is not None
                      and all(c.offer_index != i for c in wc.candidates))
        if not full:
            continue
        offers = list(inv.offers)
        for i in full:
            offers[i] = offers[i].model_copy(update={"available": None})
        relaxed = candidates_for(wc.workload, inv.model_copy(update={"offers": tuple(offers)}), pol, egress)
        for cand in relaxed.candidates:
            if cand.offer_index in full:
                wc.candidates.append(cand)
                wc.rejected["no capacity left"] -= 1
        wc.candidates.sort(key=lambda c: c.offer_index)
        wc.rejected = +wc.rejected
    return problems


def make_plan(scenario: Scenario, options: PlanOptions | None = None) -> Plan:
    options = options or PlanOptions()
    if options.method not in ("auto", "exact", "scale"):
        raise ValueError(f"unknown planning method {options.method!r}")
    if options.method != "exact" and options.moves is None:
        from placement import scale

        if options.method == "scale" or scale.use_scale(scenario):
            return scale.plan_large(scenario, options)
    inv = scenario.inventory.inventory
    pol = scenario.policies.policies
    running = None
    if options.moves is not None:
        running = {name: set(wm.current) for name, wm in options.moves.workloads.items()}
    problems = build_candidates(scenario, running)
    offer_index = {o.id: i for i, o in enumerate(inv.offers)}
    hint = None
    if options.hint:
        hint = {w: {offer_index[o]: n for o, n in per.items() if o in offer_index} for w, per in options.hint.items()}
    settings = pol.solver
    result = solve(
        problems,
        inv,
        pol,
        SolveOptions(
            max_deterministic_time=options.max_deterministic_time or settings.max_deterministic_time,
            workers=options.workers or settings.workers,
            seed=settings.seed if options.seed is None else options.seed,
            hint=hint,
            moves=options.moves,
        ),
    )
    return assemble_plan(scenario, problems, result, options)


def placement_reasons(cand: Candidate, rank: int, fitting: int, cheapest_id: str, cheapest_hourly: float) -> tuple[str, ...]:
    """Why a replica landed on ``cand``: the rules that admitted it, its cost rank, the cheaper option it lost."""
    reasons = [*cand.rules, f"cost: ${cand.hourly_usd:,.2f}/h per replica, rank {rank} of {fitting} fitting offers"]
    if rank > 1:
        reasons.append(f"cheaper: {cheapest_id} at ${cheapest_hourly:,.2f}/h was full, "
                       "taken by other work, or ruled out by a budget or spread rule")
    return tuple(reasons)


def new_placement(w: Workload, offer: Offer, cand: Candidate, replica: int, reasons: tuple[str, ...]) -> Placement:
    return Placement(
        workload=w.name, replica=replica, team=w.team, offer_id=offer.id, provider=offer.provider,
        provider_kind=offer.provider_kind, region=offer.region, zone=offer.zone,
        country=offer.country, jurisdiction=offer.jurisdiction, instance_type=offer.instance_type,
        capacity_type=offer.capacity_type, gpu_model=offer.gpu_model,
        gpus_per_node=offer.gpu_count, nodes=cand.nodes,
        hourly_usd=_r(cand.instance_hourly_usd), egress_hourly_usd=_r(cand.egress_hourly_usd),
        carbon_kg_per_hour=None if cand.carbon_kg_per_hour is None else _r(cand.carbon_kg_per_hour),
        latency_ms=cand.latency_ms, reasons=reasons,
    )


@dataclass(frozen=True)
class UnfitFacts:
    """What explaining a workload's unplaced replicas needs of its candidate list. It depends on
    the workload's fields but not on its name, so workloads that differ only by name share it."""

    summary: str  # WorkloadCandidates.summary()
    rejected: tuple[tuple[str, int], ...]  # rejection reason, offers, in the list's order
    fitting: int  # candidates that fit on their own
    cheapest_hourly: float  # least cost per replica among them (0 when none)
    providers: int  # distinct providers among them
    regions: int  # distinct regions among them


def unfit_facts(wc: WorkloadCandidates, inv: Inventory) -> UnfitFacts:
    """The facts ``explain_unplaced`` needs of one workload's candidate list (``candidates_for``)."""
    cands = wc.candidates
    return UnfitFacts(
        summary=wc.summary(), rejected=tuple(wc.rejected.items()), fitting=len(cands),
        cheapest_hourly=min((c.hourly_usd for c in cands), default=0.0),
        providers=len({inv.offers[c.offer_index].provider for c in cands}),
        regions=len({inv.offers[c.offer_index].region_key for c in cands}),
    )


def unplaced_summary(
    wc: WorkloadCandidates, inv: Inventory, pol: PolicySet, placed: int, team_spend: float
) -> tuple[str, dict[str, int]]:
    return explain_unplaced(wc.workload, unfit_facts(wc, inv), pol, placed, team_spend)


def explain_unplaced(
    w: Workload, facts: UnfitFacts, pol: PolicySet, placed: int, team_spend: float
) -> tuple[str, dict[str, int]]:
    """Why ``w`` has replicas left unplaced (``placed`` of them placed, its team spending
    ``team_spend``): its rejection counts and a one-line summary."""
    counts = dict(facts.rejected)
    if not facts.fitting:
        return facts.summary, counts
    why = []
    team = pol.teams.get(w.team)
    limit = None if team is None else team.hourly_limit_usd
    if limit is not None:
        needed = facts.cheapest_hourly * (w.fewest_replicas - placed if placed else w.fewest_replicas)
        if team_spend + needed > limit:
            why.append(f"team {w.team} budget ${limit:,.2f}/h would be exceeded (${team_spend:,.2f}/h in use)")
    if w.spread.min_providers > 1 and facts.providers < w.spread.min_providers:
        why.append(f"spread needs {w.spread.min_providers} providers, only {facts.providers} fit")
    if w.spread.min_regions > 1 and facts.regions < w.spread.min_regions:
        why.append(f"spread needs {w.spread.min_regions} regions, only {facts.regions} fit")
    if not why:
        why.append("the remaining capacity of those offers is used by other workloads")
    counts["fit alone but not together"] = facts.fitting
    return f"{facts.summary}; {facts.fitting} fit on their own but {'; '.join(why)}", counts


def assemble_plan(
    scenario: Scenario, problems: list[WorkloadCandidates], result: SolveResult, options: PlanOptions
) -> Plan:
    inv = scenario.inventory.inventory
    pol = scenario.policies.policies
    placements: list[Placement] = []
    unplaced: list[Unplaced] = []
    team_spend: dict[str, float] = defaultdict(float)
    for wc in problems:
        for cand, n in result.assignment[wc.workload.name]:
            team_spend[wc.workload.team] += cand.hourly_usd * n
    for wc in problems:
        w = wc.workload
        ranked = sorted(wc.candidates, key=lambda c: (c.objective_hourly_usd, c.offer_index))
        replica = 0
        chosen = sorted(result.assignment[w.name], key=lambda cn: inv.offers[cn[0].offer_index].id)
        for cand, n in chosen:
            offer = inv.offers[cand.offer_index]
            rank = 1 + sum(1 for c in ranked if c.objective_hourly_usd < cand.objective_hourly_usd - 1e-9)
            cheapest = ranked[0]
            reasons = placement_reasons(cand, rank, len(ranked), inv.offers[cheapest.offer_index].id,
                                        cheapest.hourly_usd)
            for _ in range(n):
                placements.append(new_placement(w, offer, cand, replica, reasons))
                replica += 1
        if replica < w.replicas:
            summary, counts = unplaced_summary(wc, inv, pol, replica, team_spend[w.team])
            unplaced.append(Unplaced(workload=w.name, team=w.team, replicas=w.replicas - replica,
                                     summary=summary, reasons=counts))
    totals = compute_totals(placements, unplaced)
    kept = sum(len(wc.candidates) for wc in problems)
    stats = SolverStats(
        method="cp-sat",
        status=result.status,
        objective=_r(result.objective_usd),
        best_bound=_r(result.best_bound_usd),
        gap=_r(result.gap, 6),
        deterministic_time=_r(result.deterministic_time, 3),
        variables=result.variables,
        candidates_total=len(problems) * len(inv.offers),
        candidates_kept=kept,
        wall_time_s=_r(result.wall_time_s, 3) if options.record_wall_time else None,
    )
    inputs = plan_inputs(scenario)
    if options.extra_inputs:
        inputs.update(options.extra_inputs)
    plan = Plan(inputs=inputs, placements=tuple(placements), unplaced=tuple(unplaced), totals=totals, solver=stats,
                idle_owned=idle_owned(inv, placements))
    return with_digest(plan)


def compute_totals(placements: list[Placement] | tuple[Placement, ...], unplaced: tuple[Unplaced, ...] | list[Unplaced]) -> Totals:
    by_provider: dict[str, float] = defaultdict(float)
    by_team: dict[str, float] = defaultdict(float)
    inst = egress = carbon = 0.0
    gpus = 0
    for p in placements:
        inst += p.hourly_usd
        egress += p.egress_hourly_usd
        carbon += p.carbon_kg_per_hour or 0.0
        gpus += p.nodes * p.gpus_per_node
        by_provider[p.provider] += p.total_hourly_usd
        by_team[p.team] += p.total_hourly_usd
    hourly = inst + egress
    return Totals(
        hourly_usd=_r(hourly), monthly_usd=_r(hourly * HOURS_PER_MONTH, 2), instance_hourly_usd=_r(inst),
        egress_hourly_usd=_r(egress), gpus=gpus, replicas_placed=len(placements),
        replicas_unplaced=sum(u.replicas for u in unplaced), carbon_kg_per_hour=_r(carbon),
        by_provider={k: _r(v) for k, v in sorted(by_provider.items())},
        by_team={k: _r(v) for k, v in sorted(by_team.items())},
    )


def _display_files(files: tuple[str, ...]) -> tuple[str, ...]:
    bundled = str(bundled_inventory_path())
    return tuple("<bundled>/default.yaml" if f == bundled else f for f in files)


def git_provenance(path: str | None) -> dict[str, Any]:
    """The git commit the policy files come from, and whether they differ from it (dirty)."""
    import subprocess

    if path is None:
        return {"commit": None, "dirty": None}
    target = Path(path)
    folder = target if target.is_dir() else target.parent
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--", "."], capture_output=True,
                                text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(status.strip())}


def plan_inputs(scenario: Scenario) -> dict[str, InputDigest]:
    snap = scenario.inventory.inventory.snapshot
    return {
        "workloads": InputDigest(digest=scenario.workloads.digest, files=scenario.workloads.files),
        "inventory": InputDigest(
            digest=scenario.inventory.digest,
            files=_display_files(scenario.inventory.files),
            detail={"snapshot": snap.name, "taken_on": snap.taken_on.isoformat(),
                    "offers": len(scenario.inventory.inventory.offers), "path": scenario.inventory_path,
                    "stale_providers": list(snap.stale_providers)},
        ),
        "policies": InputDigest(digest=scenario.policies.digest, files=scenario.policies.files,
                                detail={"path": scenario.policy_path, **git_provenance(scenario.policy_path)}),
    }


# --------------------------------------------------------------------------------------------------
# Plan files
# --------------------------------------------------------------------------------------------------


def plan_body(plan: Plan) -> dict[str, Any]:
    body = plan.model_dump(mode="json")
    body.pop("digest", None)
    return body


def with_digest(plan: Plan) -> Plan:
    return plan.model_copy(update={"digest": digest_of(plan_body(plan))})


def plan_to_json(plan: Plan) -> str:
    """The plan file: sorted keys, two-space indent, trailing newline. Same plan, same bytes."""
    return json.dumps(plan.model_dump(mode="json"), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def read_plan(path: Path) -> Plan:
    """Load a saved plan and refuse it if it is not a plan or was edited after it was written."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(f"{path}: plan file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path}: not a readable plan file ({exc})") from None
    if not isinstance(raw, dict) or raw.get("kind") != "placement-plan":
        raise PlanError(f"{path}: not a placement plan (missing kind: placement-plan)")
    if raw.get("format_version") != 1:
        raise PlanError(f"{path}: plan format_version {raw.get('format_version')!r} is not supported (expected 1)")
    stated = raw.get("digest", "")
    body = {k: v for k, v in raw.items() if k != "digest"}
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise PlanError(f"{path}: malformed plan at {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    actual = digest_of(plan_body(plan))
    if stated != actual or digest_of(body) != actual:
        raise PlanError(
            f"{path}: the plan was modified after it was written (digest {stated or 'missing'} does not match "
            f"its content {actual}); run `placement plan` again"
        )
    return plan


def gpu_mix(plan: Plan) -> dict[str, int]:
    mix: Counter[str] = Counter()
    for p in plan.placements:
        mix[p.gpu_model] += p.nodes * p.gpus_per_node
    return dict(sorted(mix.items()))


__all__ = ["PlanOptions", "assemble_plan", "canonical_json", "make_plan", "plan_to_json", "read_plan"]
