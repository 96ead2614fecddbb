"""Executing a saved plan: checks, lock, journalled actions, failover, audit.

The order of things:

1. The plan file is read and its digest checked (an edited plan is refused).
2. Its inputs are read again from the files it names; a changed workload, inventory or policy file
   makes the plan stale, and the plan is re-checked against them with the independent verifier.
3. The state lock is taken (waiting up to the lock timeout), and the state's lineage and serial are
   compared with the ones the plan was made from. A plan whose own apply was cut off, or that
   already succeeded, is the exception: its journal shows that the changes since are its own.
4. Actions run with bounded concurrency. Every action is journalled before and after it runs;
   actions that already succeeded for this plan are skipped, so running apply again resumes a plan
   cut off by a crash and changes nothing for a plan that finished. Resource creation is idempotent
   on a key derived from the plan, the workload, the replica and the offer, so a create that was
   cut off finds its resources instead of making new ones. Moves create the new replica first and
   delete the old one only after that succeeded.
5. When a create fails for lack of capacity or quota, the offer is blocked at the error's scope
   (zone, region, provider, account), the replica is planned again on what is left, and apply goes on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from placement.errors import PlacementError, PlanError
from placement.models import Action, Inventory, Offer, Placement, Plan, PolicySet, Workload
from placement.planner import read_plan
from placement.scenario import Scenario, load_scenario
from placement.state import PlacementRecord, StateStore
from placement.verify import verify_plan
from providers.base import (
    Compute,
    InsufficientCapacity,
    ManagedResource,
    OfferUnavailable,
    ProviderError,
    QuotaExceeded,
    ResourceSpec,
)

ComputeFactory = Callable[[str], Compute]


@dataclass(frozen=True)
class ApplyOptions:
    owner: str
    auto_approve: bool = False
    parallelism: int = 4
    lock_timeout_s: float = 0.0
    failover: bool = True
    confirm: Callable[[Plan], bool] | None = None
    check_inputs: bool = True


@dataclass
class ApplyReport:
    plan_digest: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    failovers: list[str] = field(default_factory=list)
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.cancelled


class StalePlanError(PlanError):
    """The plan was made against inputs or a state that no longer hold."""


def scenario_of(plan: Plan) -> Scenario:
    """Load the inputs a plan names, from the paths recorded in it."""
    wl = plan.inputs.get("workloads")
    inv = plan.inputs.get("inventory")
    pol = plan.inputs.get("policies")
    if wl is None or inv is None or pol is None:
        raise PlanError("the plan does not record its inputs (workloads, inventory, policies)")
    inventory_path = str(inv.detail.get("path", "default"))
    policy_path = pol.detail.get("path")
    return load_scenario(
        None,
        [Path(f) for f in wl.files],
        inventory_path,
        Path(policy_path) if policy_path else None,
    )


def check_inputs(plan: Plan) -> Scenario:
    """Refuse a plan whose input files changed since planning, or that breaks a hard constraint."""
    if "whatif" in plan.inputs:
        raise PlanError("this plan is a what-if variant (its inputs were changed in memory); it cannot be applied. "
                        "Make the change in the files and run `placement plan`")
    scenario = scenario_of(plan)
    current = {
        "workloads": scenario.workloads.digest,
        "inventory": scenario.inventory.digest,
        "policies": scenario.policies.digest,
    }
    changed = [name for name, digest in current.items() if plan.inputs[name].digest != digest]
    violations = verify_plan(plan, scenario)
    if changed:
        broken = ""
        if violations:
            listed = "\n  ".join(violations[:20])
            broken = f"\nunder the current inputs the plan breaks {len(violations)} rule(s):\n  {listed}"
        raise StalePlanError(
            f"saved plan is stale: the {', '.join(changed)} changed since the plan was made; "
            f"run `placement plan` again{broken}"
        )
    if violations:
        listed = "\n  ".join(violations[:20])
        raise PlanError(f"the plan breaks {len(violations)} rule(s) of its inputs and will not be applied:\n  {listed}")
    return scenario


def check_state(plan: Plan, store: StateStore) -> None:
    """Refuse a plan made against another state, unless the changes since are this plan's own."""
    recorded = plan.inputs.get("state")
    if recorded is None:
        raise PlanError("the plan does not record the state it was made against; run `placement plan` again")
    serial = int(recorded.detail.get("serial", 0))
    lineage = recorded.detail.get("lineage")
    if lineage is not None and lineage != store.lineage():
        raise StalePlanError(
            f"saved plan is stale: it was made against another state (lineage {lineage}, this state is "
            f"{store.lineage()}); run `placement plan` against this state"
        )
    current = store.serial()
    if current == serial:
        return
    if store.last_journal_plan() == plan.digest:
        return  # a resumed or repeated apply of this very plan
    raise StalePlanError(
        f"saved plan is stale: the state changed since the plan was made (serial {serial} then, {current} now); "
        "run `placement plan` again"
    )


# --------------------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------------------


@dataclass
class _Context:
    plan: Plan
    scenario: Scenario
    store: StateStore
    computes: dict[str, Compute]
    options: ApplyOptions
    report: ApplyReport
    computes_for: ComputeFactory | None = None
    blocked: list[ProviderError] = field(default_factory=list)

    def adapter_for(self, provider: str) -> Compute | None:
        """The adapter of a provider, built on first use; None when it has no usable adapter."""
        if provider not in self.computes:
            if self.computes_for is None:
                return None
            try:
                self.computes[provider] = self.computes_for(provider)
            except PlacementError:
                return None
        return self.computes[provider]


def _workload(ctx: _Context, name: str) -> Workload:
    for w in ctx.scenario.workloads.workloads:
        if w.name == name:
            return w
    raise PlanError(f"workload {name!r} of the plan is not in its inputs")


def _offer(inventory: Inventory, offer_id: str) -> Offer:
    for o in inventory.offers:
        if o.id == offer_id:
            return o
    raise PlanError(f"offer {offer_id!r} of the plan is not in its inventory")


def managed_from_record(rec: PlacementRecord) -> ManagedResource:
    ids = tuple(i for i in (rec.resource_id or "").split(",") if i)
    return ManagedResource(
        provider=rec.provider, resource_ids=ids, region=rec.region, zone=rec.zone, key=rec.idempotency_key,
        workload=rec.workload, replica=rec.replica, offer_id=rec.offer_id, plan_digest=rec.plan_digest,
        state="recorded",
    )


def _create(ctx: _Context, placement: Placement) -> tuple[Placement, ManagedResource, str]:
    """Create one replica's resources, failing over to another offer on capacity or quota errors."""
    inv = ctx.scenario.inventory.inventory
    w = _workload(ctx, placement.workload)
    offer = _offer(inv, placement.offer_id)
    attempts = 0
    while True:
        spec = ResourceSpec.for_replica(
            plan_digest=ctx.plan.digest, workload=placement.workload, replica=placement.replica, team=w.team,
            offer=offer, nodes=placement.nodes, interruptible=offer.capacity_type == "spot",
            labels=w.labels, kind=w.kind,
        )
        compute = ctx.computes[offer.provider]
        try:
            return placement, compute.create(spec), spec.key
        except (InsufficientCapacity, QuotaExceeded, OfferUnavailable) as exc:
            if not ctx.options.failover or attempts >= 5:
                raise
            attempts += 1
            ctx.blocked.append(exc)
            replacement = replan_replica(ctx, placement, w)
            if replacement is None:
                raise PlacementError(f"{exc}; no other offer fits {placement.workload} (failover found nothing)") from exc
            ctx.report.failovers.append(
                f"{placement.workload}[{placement.replica}]: {placement.offer_id} -> {replacement.offer_id} "
                f"because {exc} (blocked {exc.scope} {exc.zone or exc.region or exc.provider})"
            )
            placement = replacement
            offer = _offer(inv, placement.offer_id)
            if ctx.adapter_for(offer.provider) is None:
                raise PlacementError(f"failover chose provider {offer.provider!r}, which has no configured adapter") from exc


def _blocked(offer: Offer, errors: Iterable[ProviderError]) -> bool:
    for e in errors:
        if e.provider != offer.provider and e.scope != "account":
            continue
        if e.scope in ("provider", "account") and e.provider == offer.provider:
            return True
        if e.scope == "region" and e.region == offer.region:
            return True
        if e.scope == "zone" and e.zone is not None and e.zone == offer.zone:
            return True
        if e.scope == "zone" and e.zone is None and e.region == offer.region and offer.zone is None:
            return True
    return False


def replan_replica(ctx: _Context, failed: Placement, w: Workload) -> Placement | None:
    """Plan one replica again with the blocked offers removed and the rest of the plan's usage taken."""
    from placement.candidates import candidates_for, region_egress_table
    from placement.planner import PlanOptions, assemble_plan
    from placement.solver import SolveOptions, solve

    inv = ctx.scenario.inventory.inventory
    pol = ctx.scenario.policies.policies
    others = [p for p in ctx.plan.placements if not (p.workload == failed.workload and p.replica == failed.replica)]
    used_nodes: dict[str, int] = defaultdict(int)
    for p in others:
        used_nodes[p.offer_id] += p.nodes
    pool_used: dict[str, int] = defaultdict(int)
    offers = []
    for o in inv.offers:
        for pool in inv.pools:
            if pool.id in o.pools:
                per = {"instances": 1, "gpus": o.gpu_count, "vcpus": o.vcpus}[pool.unit]
                pool_used[pool.id] += used_nodes.get(o.id, 0) * per
        update: dict[str, object] = {}
        if o.available is not None:
            update["available"] = max(0, o.available - used_nodes.get(o.id, 0))
        if _blocked(o, ctx.blocked) or ctx.adapter_for(o.provider) is None:
            update["unavailable_reason"] = "blocked during apply" if _blocked(o, ctx.blocked) else "no adapter configured"
        offers.append(o.model_copy(update=update) if update else o)
    pools = tuple(p.model_copy(update={"limit": max(0, p.limit - pool_used[p.id])}) for p in inv.pools)
    reduced = Inventory(snapshot=inv.snapshot, offers=tuple(offers), pools=pools, latency_ms=inv.latency_ms)
    spend_team = sum(p.total_hourly_usd for p in others if p.team == w.team)
    spend_workload = sum(p.total_hourly_usd for p in others if p.workload == w.name)
    teams = {
        name: rule.model_copy(update={
            "budget_hourly_usd": None if rule.budget_hourly_usd is None else max(0.0, rule.budget_hourly_usd - spend_team),
            "budget_monthly_usd": None if rule.budget_monthly_usd is None
            else max(0.0, rule.budget_monthly_usd - spend_team * 730.0),
        }) if name == w.team else rule
        for name, rule in pol.teams.items()
    }
    single = w.model_copy(update={
        "replicas": 1, "min_replicas": None, "spread": w.spread.model_copy(update={"min_providers": 1, "min_regions": 1}),
        "budget_hourly_usd": None if w.budget_hourly_usd is None else max(0.0, w.budget_hourly_usd - spend_workload),
    })
    policies = PolicySet.model_validate({**pol.model_dump(), "teams": {k: v.model_dump() for k, v in teams.items()}})
    problem = candidates_for(single, reduced, policies, region_egress_table(reduced))
    if not problem.candidates:
        return None
    result = solve([problem], reduced, policies, SolveOptions(max_deterministic_time=5.0, workers=1))
    if not result.assignment.get(w.name):
        return None
    sub = Scenario(ctx.scenario.workloads, ctx.scenario.inventory, ctx.scenario.policies, ctx.scenario.policy_dir)
    plan = assemble_plan(sub, [problem], result, PlanOptions())
    chosen = plan.placements[0]
    return chosen.model_copy(update={"replica": failed.replica})


def _run_action(ctx: _Context, action: Action, by_replica: dict[tuple[str, int], Placement]) -> None:
    store, plan = ctx.store, ctx.plan
    detail: dict[str, object] = {"offer": action.offer_id, "from_offer": action.from_offer_id}
    store.journal_start(plan.digest, action.id, action.action, action.workload, action.replica, detail)
    try:
        if action.action in ("create", "move"):
            placement = by_replica[(action.workload, action.replica)]
            placed, resource, key = _create(ctx, placement)
            if action.action == "move":
                old = store.get_placement(action.workload, action.replica)
                if old is not None and old.idempotency_key != key:
                    ctx.computes[old.provider].delete(managed_from_record(old))
            store.record_placement(PlacementRecord.from_placement(
                placed, idempotency_key=key, plan_digest=plan.digest, resource_id=",".join(resource.resource_ids),
            ))
            detail.update({"resource_ids": list(resource.resource_ids), "placed_offer": placed.offer_id})
        elif action.action == "delete":
            old = store.get_placement(action.workload, action.replica)
            if old is not None:
                ctx.computes[old.provider].delete(managed_from_record(old))
                store.remove_placement(action.workload, action.replica)
    except PlacementError as exc:
        store.journal_finish(plan.digest, action.id, False, {**detail, "error": str(exc)})
        ctx.report.failed.append(f"{action.id}: {exc}")
        return
    store.journal_finish(plan.digest, action.id, True, detail)
    ctx.report.done.append(action.id)


@dataclass(frozen=True)
class PreparedApply:
    """A plan that passed every check that needs no state: digest, inputs, constraints, adapters."""

    plan: Plan
    scenario: Scenario
    computes: dict[str, Compute]
    computes_for: ComputeFactory


def prepare_apply(plan_path: Path, computes_for: ComputeFactory, options: ApplyOptions) -> PreparedApply:
    plan = read_plan(plan_path)
    scenario = check_inputs(plan) if options.check_inputs else scenario_of(plan)
    changes = plan.changes()
    providers = sorted({a.provider for a in changes if a.provider} | {a.from_provider for a in changes if a.from_provider})
    computes: dict[str, Compute] = {}
    for name in providers:
        computes[name] = computes_for(name)  # raises for a provider with no adapter, before anything runs
    return PreparedApply(plan, scenario, computes, computes_for)


def apply_plan(
    plan_path: Path,
    store: StateStore,
    computes_for: ComputeFactory,
    options: ApplyOptions,
) -> ApplyReport:
    return run_prepared(prepare_apply(plan_path, computes_for, options), store, options)


def run_prepared(prepared: PreparedApply, store: StateStore, options: ApplyOptions) -> ApplyReport:
    plan, scenario, computes, computes_for = prepared.plan, prepared.scenario, dict(prepared.computes), prepared.computes_for
    report = ApplyReport(plan_digest=plan.digest)
    changes = plan.changes()
    with store.locked(options.owner, f"apply {plan.digest[:19]}", options.lock_timeout_s):
        check_state(plan, store)
        done = store.completed_actions(plan.digest)
        pending = [a for a in changes if a.id not in done]
        report.skipped = sorted(a.id for a in changes if a.id in done)
        if not pending:
            store.audit(options.owner, "apply", plan.digest, "no changes", {"skipped": len(report.skipped)})
            return report
        if not options.auto_approve and (options.confirm is None or not options.confirm(plan)):
            report.cancelled = True
            store.audit(options.owner, "apply", plan.digest, "cancelled", {})
            return report
        ctx = _Context(plan, scenario, store, computes, options, report, computes_for)
        by_replica = {(p.workload, p.replica): p for p in plan.placements}
        first = [a for a in pending if a.action in ("create", "move")]
        last = [a for a in pending if a.action == "delete"]
        workers = max(1, min(options.parallelism, 64))
        for batch in (first, last):
            if not batch:
                continue
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(lambda a: _run_action(ctx, a, by_replica), batch))
        outcome = "succeeded" if report.ok else "failed"
        store.audit(options.owner, "apply", plan.digest, outcome, {
            "done": len(report.done), "failed": report.failed, "failovers": report.failovers,
            "skipped": len(report.skipped),
        })
    return report


def destroy_all(store: StateStore, computes_for: ComputeFactory, owner: str, lock_timeout_s: float) -> list[str]:
    """Delete every replica the state knows, journalled under a destroy id. Returns failures."""
    import uuid

    failed: list[str] = []
    run_id = f"destroy:{uuid.uuid4()}"
    with store.locked(owner, "destroy", lock_timeout_s):
        records = store.placements()
        for rec in records:
            action_id = f"delete:{rec.workload}:{rec.replica}"
            store.journal_start(run_id, action_id, "delete", rec.workload, rec.replica, {"offer": rec.offer_id})
            try:
                computes_for(rec.provider).delete(managed_from_record(rec))
            except PlacementError as exc:
                store.journal_finish(run_id, action_id, False, {"error": str(exc)})
                failed.append(f"{rec.workload}[{rec.replica}]: {exc}")
                continue
            store.remove_placement(rec.workload, rec.replica)
            store.journal_finish(run_id, action_id, True, {})
        store.audit(owner, "destroy", None, "failed" if failed else "succeeded",
                    {"deleted": len(records) - len(failed), "failed": failed})
    return failed
