"""The plan against the current state: which replicas are kept, created, moved or deleted.

Replicas of one workload are interchangeable, so the diff first keeps every running replica whose
offer the new plan still uses, then turns the remaining differences into moves (same replica
number, new offer) and finally into creates or deletes. Planned replicas are renumbered to match,
so that a kept replica keeps its number and its resources.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from placement.models import Action, InputDigest, Placement, Plan
from placement.planner import compute_totals, with_digest
from placement.state import StateSnapshot


@dataclass(frozen=True)
class CurrentReplica:
    workload: str
    replica: int
    provider: str
    offer_id: str
    resource_ids: tuple[str, ...]
    hourly_usd: float


@dataclass(frozen=True)
class StateView:
    """What the plan is compared with: the running replicas plus the state's serial and lineage."""

    serial: int
    lineage: str | None
    replicas: tuple[CurrentReplica, ...]


EMPTY_STATE = StateView(serial=0, lineage=None, replicas=())


def view_from_snapshot(snap: StateSnapshot) -> StateView:
    replicas = []
    for rec in snap.placements:
        ids = tuple(i for i in (rec.resource_id or "").split(",") if i)
        cost = rec.placement().total_hourly_usd if rec.spec else 0.0
        replicas.append(CurrentReplica(rec.workload, rec.replica, rec.provider, rec.offer_id, ids, cost))
    return StateView(serial=snap.serial, lineage=snap.lineage, replicas=tuple(replicas))


def hint_from_state(view: StateView) -> dict[str, dict[str, int]]:
    """Where the state's replicas run, as a solver hint: workload -> {offer id: replicas}."""
    hint: dict[str, dict[str, int]] = defaultdict(dict)
    for r in view.replicas:
        hint[r.workload][r.offer_id] = hint[r.workload].get(r.offer_id, 0) + 1
    return dict(hint)


def state_input(state: StateView) -> InputDigest:
    from placement.inputs import digest_of

    body = sorted((r.workload, r.replica, r.offer_id, list(r.resource_ids)) for r in state.replicas)
    return InputDigest(digest=digest_of(body), detail={"serial": state.serial, "lineage": state.lineage})


def attach_state(plan: Plan, state: StateView) -> Plan:
    """Renumber the plan's replicas against the state, add the actions and the state input."""
    new_by_w: dict[str, list[Placement]] = defaultdict(list)
    for p in plan.placements:
        new_by_w[p.workload].append(p)
    cur_by_w: dict[str, list[CurrentReplica]] = defaultdict(list)
    for r in state.replicas:
        cur_by_w[r.workload].append(r)
    placements: list[Placement] = []
    actions: list[Action] = []
    for workload in sorted(set(new_by_w) | set(cur_by_w)):
        new = sorted(new_by_w.get(workload, []), key=lambda p: (p.offer_id, p.replica))
        cur = sorted(cur_by_w.get(workload, []), key=lambda r: r.replica)
        placed, acts = _diff_workload(workload, new, cur)
        placements.extend(placed)
        actions.extend(acts)
    placements.sort(key=lambda p: (p.workload, p.replica))
    actions.sort(key=lambda a: (a.workload, a.replica, a.action))
    inputs = dict(plan.inputs)
    inputs["state"] = state_input(state)
    updated = plan.model_copy(update={
        "placements": tuple(placements),
        "actions": tuple(actions),
        "inputs": inputs,
        "totals": compute_totals(placements, plan.unplaced),
    })
    return with_digest(updated)


def _diff_workload(
    workload: str, new: list[Placement], cur: list[CurrentReplica]
) -> tuple[list[Placement], list[Action]]:
    remaining_new = list(new)
    remaining_cur: list[CurrentReplica] = []
    out: list[Placement] = []
    actions: list[Action] = []
    for r in cur:
        match = next((p for p in remaining_new if p.offer_id == r.offer_id), None)
        if match is None:
            remaining_cur.append(r)
            continue
        remaining_new.remove(match)
        out.append(match.model_copy(update={"replica": r.replica}))
        actions.append(Action(
            id=f"keep:{workload}:{r.replica}", action="keep", workload=workload, replica=r.replica,
            provider=match.provider, offer_id=match.offer_id, from_provider=r.provider, from_offer_id=r.offer_id,
            from_resource_ids=r.resource_ids, reason="already running on the planned offer",
        ))
    for r, p in zip(list(remaining_cur), list(remaining_new), strict=False):
        remaining_cur.remove(r)
        remaining_new.remove(p)
        out.append(p.model_copy(update={"replica": r.replica}))
        delta = round(p.total_hourly_usd - r.hourly_usd, 4)
        actions.append(Action(
            id=f"move:{workload}:{r.replica}", action="move", workload=workload, replica=r.replica,
            provider=p.provider, offer_id=p.offer_id, from_provider=r.provider, from_offer_id=r.offer_id,
            from_resource_ids=r.resource_ids, hourly_usd_delta=delta,
            reason=f"planned on {p.offer_id} instead of {r.offer_id} ({delta:+,.2f} $/h)",
        ))
    used = {p.replica for p in out} | {r.replica for r in remaining_cur}
    next_free = 0
    for p in remaining_new:
        while next_free in used:
            next_free += 1
        used.add(next_free)
        out.append(p.model_copy(update={"replica": next_free}))
        actions.append(Action(
            id=f"create:{workload}:{next_free}", action="create", workload=workload, replica=next_free,
            provider=p.provider, offer_id=p.offer_id, hourly_usd_delta=round(p.total_hourly_usd, 4),
            reason="new replica",
        ))
    for r in remaining_cur:
        actions.append(Action(
            id=f"delete:{workload}:{r.replica}", action="delete", workload=workload, replica=r.replica,
            from_provider=r.provider, from_offer_id=r.offer_id, from_resource_ids=r.resource_ids,
            hourly_usd_delta=round(-r.hourly_usd, 4),
            reason="no longer in the plan" if not new else "fewer replicas planned",
        ))
    return out, actions
