"""What the policies cost, and which of them keep work from running.

Two questions, both answered by re-planning with the planner's own code:

- ``price_of_policies``: for every rule of the policy set, the plan's $/h and placed replicas with the
  rule and without it. A rule whose removal lowers the cost (delta > 0) costs money; one whose removal
  places more replicas blocks work; one with neither is not binding for these workloads.
- ``relax``: for workloads the plan leaves unplaced, a minimal set of rules that together rule them
  out (found with CP-SAT assumptions and shrunk by deletion, so that dropping any one rule of the set
  removes that conflict), and the cheapest relaxation (allow a value, drop an entry, raise a budget)
  that lets the plan place them, verified by re-planning.

Rule ids are those of ``placement.policy`` (``data_classes.restricted.allowed_jurisdictions``,
``teams.fraud.budget_hourly_usd``, ``allowed_providers``, ``gpus.allowed``) with one entry of a
forbidden list named by its value (``forbidden_providers[verda]``, ``forbidden_regions[gcp/europe-west4]``,
``gpus.forbidden[H100]``). A workload's own budget is ``workloads.<name>.budget_hourly_usd``.

The conflict model is a relaxation of the real problem: it ignores capacity, spread and the rest of
each team's work and charges every target workload ``min_replicas`` replicas on one offer. A conflict
it finds is therefore a real one; a workload it finds placeable may still be left out by the full
plan (capacity taken, budget used by other work), in which case the relaxation search falls back to
trying every relevant rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ortools.sat.python import cp_model

from placement.candidates import Candidate, candidates_for, region_egress_table
from placement.errors import PlacementError
from placement.inputs import digest_of, dump_model
from placement.models import DataClassRule, Inventory, Offer, Plan, PolicySet, Workload
from placement.planner import PlanOptions, make_plan
from placement.policy import is_policy_rule, rule_id_of, single_offer_inventory
from placement.scenario import Scenario
from placement.solver import money

PRICE_TIME_LIMIT = 5.0
_TEAM_FIELDS = ("budget_hourly_usd", "budget_monthly_usd", "max_interruptible_share")
_DATA_CLASS_FIELDS = ("allowed_jurisdictions", "allowed_countries", "allowed_providers", "allowed_provider_kinds",
                      "required_certifications", "interruptible_allowed")
_ENTRY_LISTS = ("forbidden_providers", "forbidden_regions", "gpus.forbidden")
_MAX_RULES_PER_PAIR = 64


def _plan_options() -> PlanOptions:
    return PlanOptions(max_deterministic_time=PRICE_TIME_LIMIT)


def _plan(scenario: Scenario) -> Plan:
    return make_plan(scenario, _plan_options())


# --------------------------------------------------------------------------------------------------
# Rules and edits
# --------------------------------------------------------------------------------------------------


def policy_rules(policies: PolicySet) -> list[str]:
    """Every rule of the policy set, one id per data class field, team limit and forbidden entry."""
    rules: list[str] = []
    for name, dc in policies.data_classes.items():
        for fname in _DATA_CLASS_FIELDS:
            if getattr(dc, fname) != DataClassRule.model_fields[fname].default:
                rules.append(f"data_classes.{name}.{fname}")
    for name, team in policies.teams.items():
        rules.extend(f"teams.{name}.{fname}" for fname in _TEAM_FIELDS if getattr(team, fname) is not None)
    if policies.allowed_providers:
        rules.append("allowed_providers")
    rules.extend(f"forbidden_providers[{p}]" for p in policies.forbidden_providers)
    rules.extend(f"forbidden_regions[{r}]" for r in policies.forbidden_regions)
    if policies.gpus.allowed:
        rules.append("gpus.allowed")
    rules.extend(f"gpus.forbidden[{g}]" for g in policies.gpus.forbidden)
    return rules


EditOp = Literal["drop", "extend", "remove", "set"]


@dataclass(frozen=True)
class Edit:
    """One change to one rule: drop it, add values to an allow-list, remove values, or set a limit."""

    rule: str
    op: EditOp
    values: tuple[str, ...] = ()
    value: float | None = None
    action: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "action": self.action or f"drop {self.rule}"}
        if self.values:
            out["values"] = list(self.values)
        if self.value is not None:
            out["value"] = self.value
        return out


def _split_entry(rule: str) -> tuple[str, str | None]:
    """``forbidden_providers[verda]`` -> (``forbidden_providers``, ``verda``); other ids -> (id, None)."""
    if rule.endswith("]") and "[" in rule:
        base, _, rest = rule.partition("[")
        return base, rest[:-1]
    return rule, None


def _slot(pol: dict[str, Any], rule: str) -> tuple[dict[str, Any], str]:
    """The dict and key of a dumped PolicySet that hold ``rule``."""
    base, _ = _split_entry(rule)
    for section in ("data_classes", "teams"):
        prefix = section + "."
        if base.startswith(prefix):
            name, _, fname = base[len(prefix):].rpartition(".")
            if name not in pol[section]:
                raise PlacementError(f"unknown rule {rule!r}: no {section[:-1].replace('_', ' ')} {name!r}")
            return pol[section][name], fname
    if base.startswith("gpus."):
        return pol["gpus"], base[len("gpus."):]
    if base in pol:
        return pol, base
    raise PlacementError(f"unknown rule {rule!r}")


def _edit_dict(pol: dict[str, Any], edit: Edit) -> None:
    holder, key = _slot(pol, edit.rule)
    if key not in holder:
        raise PlacementError(f"unknown rule {edit.rule!r}")
    current = holder[key]
    _, entry = _split_entry(edit.rule)
    if edit.op == "drop" and entry is not None:
        holder[key] = [v for v in current if v != entry]
    elif edit.op == "drop":
        holder[key] = True if isinstance(current, bool) else [] if isinstance(current, list | tuple) else None
    elif edit.op == "extend":
        holder[key] = [*current, *(v for v in edit.values if v not in current)]
    elif edit.op == "remove":
        holder[key] = [v for v in current if v not in edit.values]
    else:
        holder[key] = edit.value


def edited_policies(policies: PolicySet, edits: Iterable[Edit]) -> PolicySet:
    pol = policies.model_dump(mode="python")
    for edit in edits:
        if not edit.rule.startswith("workloads."):
            _edit_dict(pol, edit)
    return PolicySet.model_validate(pol)


def _workload_of_rule(rule: str) -> str:
    return rule[len("workloads."):].rpartition(".")[0]


def apply_edits(scenario: Scenario, edits: Sequence[Edit]) -> Scenario:
    """The scenario with the edits made to its policies (and, for workload budgets, its workloads)."""
    policies = edited_policies(scenario.policies.policies, edits)
    workloads = list(scenario.workloads.workloads)
    for edit in edits:
        if edit.rule.startswith("workloads."):
            name = _workload_of_rule(edit.rule)
            value = None if edit.op == "drop" else edit.value
            workloads = [w.model_copy(update={"budget_hourly_usd": value}) if w.name == name else w for w in workloads]
    loaded_p = replace(scenario.policies, policies=policies, digest=digest_of(dump_model(policies)))
    loaded_w = replace(scenario.workloads, workloads=tuple(workloads),
                       digest=digest_of([dump_model(w) for w in workloads]))
    return replace(scenario, policies=loaded_p, workloads=loaded_w)


# --------------------------------------------------------------------------------------------------
# Price of policies
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyPrice:
    rule: str
    hourly_usd_with: float
    hourly_usd_without: float
    replicas_with: int
    replicas_without: int

    @property
    def delta_hourly_usd(self) -> float:
        """What the rule costs per hour: the plan with it minus the plan without it."""
        return round(self.hourly_usd_with - self.hourly_usd_without, 4)

    @property
    def replicas_blocked(self) -> int:
        return self.replicas_without - self.replicas_with

    @property
    def binding(self) -> bool:
        return abs(self.delta_hourly_usd) > 1e-6 or self.replicas_blocked != 0

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "hourly_usd_with": self.hourly_usd_with,
                "hourly_usd_without": self.hourly_usd_without, "delta_hourly_usd": self.delta_hourly_usd,
                "replicas_with": self.replicas_with, "replicas_without": self.replicas_without,
                "replicas_blocked": self.replicas_blocked, "binding": self.binding}


def price_of_policies(scenario: Scenario, base: Plan | None = None) -> list[PolicyPrice]:
    """Re-plan once per rule with that rule removed; most expensive rules first."""
    base = base or _plan(scenario)
    out = []
    for rule in policy_rules(scenario.policies.policies):
        without = _plan(apply_edits(scenario, [Edit(rule, "drop")]))
        out.append(PolicyPrice(rule, base.totals.hourly_usd, without.totals.hourly_usd,
                               base.totals.replicas_placed, without.totals.replicas_placed))
    return sorted(out, key=lambda p: (-p.replicas_blocked, -p.delta_hourly_usd, p.rule))


def render_prices(prices: Sequence[PolicyPrice]) -> list[str]:
    if not prices:
        return ["no policy rules"]
    width = max(len("rule"), *(len(p.rule) for p in prices))
    lines = [f"{'rule':<{width}}  {'$/h with':>12}  {'$/h without':>12}  {'delta $/h':>11}  {'replicas':>9}"]
    for p in prices:
        replicas = f"{p.replicas_with}/{p.replicas_without}"
        lines.append(f"{p.rule:<{width}}  {p.hourly_usd_with:>12,.2f}  {p.hourly_usd_without:>12,.2f}  "
                     f"{p.delta_hourly_usd:>+11,.2f}  {replicas:>9}")
    lines.append("delta: what the rule costs (plan with it minus plan without it); replicas: placed with/without")
    return lines


# --------------------------------------------------------------------------------------------------
# Which rules reject a pair
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairVerdict:
    """Every relaxable rule that rejects a (workload, offer) pair, or what rejects it regardless."""

    rules: tuple[str, ...]
    blocker: str | None  # a non-policy reason (GPU model, capacity, latency, ...) that remains
    candidate: Candidate | None  # the pair once ``rules`` are relaxed, when no blocker remains


def _entry_rule(rule_id: str, offer: Offer, pol: PolicySet) -> str:
    if rule_id == "forbidden_providers":
        return f"forbidden_providers[{offer.provider}]"
    if rule_id == "forbidden_regions":
        entry = next(r for r in pol.forbidden_regions if r in (offer.region_key, offer.region))
        return f"forbidden_regions[{entry}]"
    if rule_id == "gpus.forbidden":
        return f"gpus.forbidden[{offer.gpu_model}]"
    return rule_id


def rejecting_rules(workload: Workload, offer: Offer, policies: PolicySet, inventory: Inventory,
                    egress: dict[str, float] | None = None) -> PairVerdict:
    """All the rules that reject the pair, found by judging it again with each found rule removed."""
    egress = region_egress_table(inventory) if egress is None else egress
    single = single_offer_inventory(offer, inventory)
    rules: list[str] = []
    pol, w = policies, workload
    for _ in range(_MAX_RULES_PER_PAIR):
        found = candidates_for(w, single, pol, egress)
        if found.candidates:
            return PairVerdict(tuple(rules), None, found.candidates[0])
        reason = next(iter(found.rejected))
        rid = rule_id_of(reason)
        if rid == "budget":
            rule = f"workloads.{workload.name}.budget_hourly_usd"
            w = w.model_copy(update={"budget_hourly_usd": None})
        elif is_policy_rule(rid):
            rule = _entry_rule(rid, offer, pol)
            pol = edited_policies(pol, [Edit(rule, "drop")])
        else:
            return PairVerdict(tuple(rules), reason, None)
        rules.append(rule)
    raise PlacementError(f"more than {_MAX_RULES_PER_PAIR} rules reject {workload.name} on {offer.id}")


# --------------------------------------------------------------------------------------------------
# The conflict model
# --------------------------------------------------------------------------------------------------


@dataclass
class _ConflictModel:
    model: cp_model.CpModel
    keep: dict[str, cp_model.IntVar]
    use: dict[tuple[str, int], cp_model.IntVar]  # (workload, offer index) -> chosen
    cost: dict[tuple[str, int], int]  # money units for fewest_replicas replicas
    unplaceable: dict[str, str]  # workload -> why no relaxation of the rules can place it

    def solve(self, kept: Iterable[str]) -> tuple[Any, cp_model.CpSolver]:
        self.model.clear_assumptions()
        self.model.add_assumptions([self.keep[r] for r in kept])
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        solver.parameters.max_time_in_seconds = 30.0
        solver.parameters.random_seed = 0
        return solver.solve(self.model), solver

    def feasible(self, kept: Iterable[str]) -> bool:
        status, _ = self.solve(kept)
        return status in (cp_model.OPTIMAL, cp_model.FEASIBLE)


def _conflict_model(scenario: Scenario, targets: Sequence[Workload]) -> _ConflictModel:
    inv = scenario.inventory.inventory
    pol = scenario.policies.policies
    egress = region_egress_table(inv)
    model = cp_model.CpModel()
    keep: dict[str, cp_model.IntVar] = {}
    use: dict[tuple[str, int], cp_model.IntVar] = {}
    cost: dict[tuple[str, int], int] = {}
    unplaceable: dict[str, str] = {}

    def keep_var(rule: str) -> cp_model.IntVar:
        if rule not in keep:
            keep[rule] = model.new_bool_var(f"keep[{rule}]")
        return keep[rule]

    for w in targets:
        choices = []
        blockers: dict[str, int] = {}
        for oi, offer in enumerate(inv.offers):
            verdict = rejecting_rules(w, offer, pol, inv, egress)
            if verdict.candidate is None:
                reason = verdict.blocker or "rejected"
                blockers[reason] = blockers.get(reason, 0) + 1
                continue
            u = model.new_bool_var(f"use[{w.name},{offer.id}]")
            for rule in verdict.rules:
                model.add_implication(u, keep_var(rule).Not())
            use[(w.name, oi)] = u
            cost[(w.name, oi)] = money(verdict.candidate.hourly_usd) * w.fewest_replicas
            choices.append(u)
        if not choices:
            parts = sorted(blockers.items(), key=lambda kv: (-kv[1], kv[0]))
            unplaceable[w.name] = "no offer fits even without the policies: " + ", ".join(
                f"{n} {reason}" for reason, n in parts)
            model.add_bool_or([])  # infeasible whatever is kept
        else:
            model.add_exactly_one(choices)
    # Team limits, charged with the target workloads alone (a relaxation of the real budget).
    for team in sorted({w.team for w in targets}):
        team_rule = pol.teams.get(team)
        if team_rule is None:
            continue
        terms = [(u, cost[key]) for key, u in use.items() if _team_of(targets, key[0]) == team]
        for fname, limit in (("budget_hourly_usd", team_rule.budget_hourly_usd),
                             ("budget_monthly_usd", None if team_rule.budget_monthly_usd is None
                              else team_rule.budget_monthly_usd / 730.0)):
            if limit is not None and terms:
                k = keep_var(f"teams.{team}.{fname}")
                model.add(sum(c * u for u, c in terms) <= money(limit)).only_enforce_if(k)
    return _ConflictModel(model, keep, use, cost, unplaceable)


def _team_of(targets: Sequence[Workload], name: str) -> str:
    return next(w.team for w in targets if w.name == name)


def minimal_conflict(cm: _ConflictModel) -> list[str]:
    """A minimal set of rules that together leave a target without a place; [] if there is none."""
    rules = sorted(cm.keep)
    if cm.unplaceable:
        return []
    status, solver = cm.solve(rules)
    if status != cp_model.INFEASIBLE:
        return []
    by_index = {var.Index(): rule for rule, var in cm.keep.items()}
    core = sorted(by_index[i] for i in solver.sufficient_assumptions_for_infeasibility() if i in by_index)
    for rule in list(core):
        trial = [r for r in core if r != rule]
        if not cm.feasible(trial):
            core = trial
    return core


def _fewest_drops(cm: _ConflictModel, rules: Sequence[str]) -> list[str]:
    """The fewest rules to drop (cheapest placement among ties) for every target to fit the model."""
    model = cm.model.clone()
    keep = {r: model.get_bool_var_from_proto_index(v.Index()) for r, v in cm.keep.items()}
    use = {key: model.get_bool_var_from_proto_index(v.Index()) for key, v in cm.use.items()}
    model.clear_assumptions()
    total = sum(cm.cost.values()) + 1
    model.minimize(sum(total * (1 - keep[r]) for r in rules) + sum(cm.cost[k] * u for k, u in use.items()))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = 30.0
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return []
    return [r for r in rules if not solver.boolean_value(keep[r])]


# --------------------------------------------------------------------------------------------------
# Relaxations
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relaxation:
    workloads: tuple[str, ...]
    conflict: tuple[str, ...]  # minimal conflicting rule set (empty: no policy conflict on its own)
    unplaceable: dict[str, str]  # workloads no policy relaxation can place, and why
    edits: tuple[Edit, ...]  # the cheapest relaxation found (empty: none found)
    base_hourly_usd: float
    cost_hourly_usd: float | None  # plan $/h with the relaxation applied
    places: tuple[dict[str, Any], ...] = ()
    tried: tuple[dict[str, Any], ...] = field(default=())

    @property
    def found(self) -> bool:
        return bool(self.edits)

    def to_json(self) -> dict[str, Any]:
        return {
            "workloads": list(self.workloads), "conflict": list(self.conflict),
            "unplaceable": dict(self.unplaceable),
            "relax": [e.to_json() for e in self.edits],
            "base_hourly_usd": self.base_hourly_usd, "cost_hourly_usd": self.cost_hourly_usd,
            "delta_hourly_usd": None if self.cost_hourly_usd is None
            else round(self.cost_hourly_usd - self.base_hourly_usd, 4),
            "places": list(self.places), "tried": list(self.tried),
        }


def _money_up(usd: float) -> float:
    return math.ceil(usd * 100 - 1e-6) / 100


def _describe(rule: str, op: EditOp, values: tuple[str, ...], old: Any, new: float | None) -> str:
    base, entry = _split_entry(rule)
    if entry is not None:
        what = {"forbidden_providers": "provider", "forbidden_regions": "region", "gpus.forbidden": "GPU model"}
        return f"stop forbidding {what.get(base, base)} {entry}"
    if rule.startswith("workloads."):
        name = _workload_of_rule(rule)
        if op == "set" and new is not None:
            return f"raise workload {name}'s budget from ${old:,.2f}/h to ${new:,.2f}/h"
        return f"drop workload {name}'s budget"
    if rule.startswith("teams."):
        team, _, fname = rule[len("teams."):].rpartition(".")
        if op == "set" and new is not None and fname == "budget_hourly_usd":
            return f"raise team {team}'s budget from ${old:,.2f}/h to ${new:,.2f}/h"
        if op == "set" and new is not None and fname == "budget_monthly_usd":
            return f"raise team {team}'s monthly budget from ${old:,.2f} to ${new:,.2f}"
        return f"drop team {team}'s {fname.replace('_', ' ')}"
    if rule.startswith("data_classes."):
        dc, _, fname = rule[len("data_classes."):].rpartition(".")
        noun = {"allowed_jurisdictions": "jurisdiction", "allowed_countries": "country",
                "allowed_providers": "provider", "allowed_provider_kinds": "provider kind"}
        if op == "extend" and fname in noun:
            return f"allow {noun[fname]} {', '.join(values)} for data class {dc}"
        if op == "remove" and fname == "required_certifications":
            return f"stop requiring certification {', '.join(values)} for data class {dc}"
        if fname == "interruptible_allowed":
            return f"allow spot capacity for data class {dc}"
        return f"drop data class {dc}'s {fname.replace('_', ' ')}"
    if op == "extend":
        label = {"allowed_providers": "provider", "gpus.allowed": "GPU model"}.get(rule, rule)
        return f"allow {label} {', '.join(values)}"
    return f"drop {rule}"


def _old_value(scenario: Scenario, rule: str) -> Any:
    if rule.startswith("workloads."):
        name = _workload_of_rule(rule)
        return next(w.budget_hourly_usd for w in scenario.workloads.workloads if w.name == name)
    holder, key = _slot(scenario.policies.policies.model_dump(mode="python"), rule)
    return holder[key]


def _refine(scenario: Scenario, rule: str, plan: Plan, targets: Sequence[Workload]) -> Edit:
    """The smallest change to ``rule`` that keeps ``plan`` (made with the rule dropped) possible."""
    names = {w.name for w in targets}
    offers = {o.id: o for o in scenario.inventory.inventory.offers}
    used = [offers[p.offer_id] for p in plan.placements if p.workload in names and p.offer_id in offers]
    old = _old_value(scenario, rule)
    op: EditOp = "drop"
    values: tuple[str, ...] = ()
    value: float | None = None
    base, entry = _split_entry(rule)
    attr = {"allowed_jurisdictions": "jurisdiction", "allowed_countries": "country",
            "allowed_providers": "provider", "allowed_provider_kinds": "provider_kind", "gpus.allowed": "gpu_model"}
    fname = base.rpartition(".")[2] if base.startswith(("data_classes.", "teams.", "workloads.")) else base
    if entry is None and fname in attr and isinstance(old, list | tuple):
        extra = sorted({str(getattr(o, attr[fname])) for o in used} - set(old))
        if extra:
            op, values = "extend", tuple(extra)
    elif fname == "required_certifications" and isinstance(old, list | tuple):
        missing = sorted({c for o in used for c in old if c not in o.certifications})
        if missing and len(missing) < len(old):
            op, values = "remove", tuple(missing)
    elif rule.startswith("teams.") and fname in ("budget_hourly_usd", "budget_monthly_usd"):
        team = base[len("teams."):].rpartition(".")[0]
        spend = plan.totals.by_team.get(team, 0.0)
        op = "set"
        value = _money_up(spend if fname == "budget_hourly_usd" else spend * 730.0)
    elif rule.startswith("workloads."):
        name = _workload_of_rule(rule)
        op = "set"
        value = _money_up(sum(p.total_hourly_usd for p in plan.placements if p.workload == name))
    return Edit(rule, op, values, value, _describe(rule, op, values, old, value))


def _places_all(plan: Plan, names: set[str]) -> bool:
    return not any(u.workload in names for u in plan.unplaced)


def _places(plan: Plan, names: set[str]) -> tuple[dict[str, Any], ...]:
    counts: dict[tuple[str, str], list[float]] = {}
    for p in plan.placements:
        if p.workload in names:
            counts.setdefault((p.workload, p.offer_id), []).append(p.total_hourly_usd)
    return tuple({"workload": w, "offer_id": o, "replicas": len(c), "hourly_usd": round(sum(c), 4)}
                 for (w, o), c in sorted(counts.items()))


@dataclass(frozen=True)
class _Option:
    edits: tuple[Edit, ...]
    plan: Plan


def _try(scenario: Scenario, rules: Sequence[str], targets: Sequence[Workload]) -> _Option | None:
    """Drop ``rules``, re-plan, narrow each drop to the smallest edit, and check the targets are placed."""
    names = {w.name for w in targets}
    dropped = _plan(apply_edits(scenario, [Edit(r, "drop") for r in rules]))
    if not _places_all(dropped, names):
        return None
    refined = tuple(_refine(scenario, r, dropped, targets) for r in rules)
    if all(e.op == "drop" for e in refined):
        return _Option(refined, dropped)
    plan = _plan(apply_edits(scenario, refined))
    if _places_all(plan, names):
        return _Option(refined, plan)
    drops = tuple(Edit(r, "drop", action=_describe(r, "drop", (), None, None)) for r in rules)
    return _Option(drops, dropped)


def relax(scenario: Scenario, workloads: Sequence[str], base: Plan | None = None) -> Relaxation:
    """The minimal conflicting rule set for unplaced ``workloads`` and the cheapest relaxation."""
    if not workloads:
        raise PlacementError("name at least one workload to relax")
    by_name = {w.name: w for w in scenario.workloads.workloads}
    unknown = [n for n in workloads if n not in by_name]
    if unknown:
        raise PlacementError(f"unknown workload{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                             f"the scenario has {', '.join(sorted(by_name))}")
    targets = [by_name[n] for n in dict.fromkeys(workloads)]
    names = {w.name for w in targets}
    base = base or _plan(scenario)
    if _places_all(base, names):
        raise PlacementError(f"{', '.join(sorted(names))}: already placed in full; nothing to relax")
    cm = _conflict_model(scenario, targets)
    conflict = minimal_conflict(cm)
    options: list[_Option] = []
    tried: list[dict[str, Any]] = []
    if not cm.unplaceable:
        singles = conflict or sorted(cm.keep)
        for rule in singles:
            option = _try(scenario, [rule], targets)
            tried.append({"rules": [rule], "places": option is not None,
                          "cost_hourly_usd": None if option is None else option.plan.totals.hourly_usd})
            if option is not None:
                options.append(option)
        if not options:
            several = _fewest_drops(cm, sorted(cm.keep))
            if several and len(several) > 1:
                option = _try(scenario, several, targets)
                tried.append({"rules": several, "places": option is not None,
                              "cost_hourly_usd": None if option is None else option.plan.totals.hourly_usd})
                if option is not None:
                    options.append(option)
    if not options:
        return Relaxation(tuple(t.name for t in targets), tuple(conflict), dict(cm.unplaceable), (),
                          base.totals.hourly_usd, None, (), tuple(tried))
    best = min(options, key=lambda o: (o.plan.totals.replicas_unplaced, o.plan.totals.hourly_usd,
                                       [e.rule for e in o.edits]))
    return Relaxation(tuple(t.name for t in targets), tuple(conflict), {}, best.edits, base.totals.hourly_usd,
                      best.plan.totals.hourly_usd, _places(best.plan, names), tuple(tried))


def render_relaxation(r: Relaxation) -> list[str]:
    lines = [f"{name}: {reason}" for name, reason in sorted(r.unplaceable.items())]
    who = ", ".join(r.workloads)
    if r.conflict:
        lines.append(f"conflict: {who} cannot be placed under these {len(r.conflict)} rule(s) together "
                     "(dropping any one of them removes this conflict):")
        lines.extend(f"  - {rule}" for rule in r.conflict)
    elif not r.unplaceable:
        lines.append(f"conflict: none among the policies alone; {who} is left out by capacity, spread "
                     "or the budget its team's other work uses")
    if r.found and r.cost_hourly_usd is not None:
        delta = r.cost_hourly_usd - r.base_hourly_usd
        lines.append(f"cheapest relaxation (plan ${r.cost_hourly_usd:,.2f}/h, {delta:+,.2f} $/h vs "
                     f"${r.base_hourly_usd:,.2f}/h now):")
        lines.extend(f"  - {e.action} [{e.rule}]" for e in r.edits)
        for p in r.places:
            lines.append(f"  places {p['workload']}: {p['replicas']} × {p['offer_id']} (${p['hourly_usd']:,.2f}/h)")
    else:
        lines.append(f"no relaxation of the policies found that places {who}")
    return lines


__all__ = ["Edit", "PairVerdict", "PolicyPrice", "Relaxation", "apply_edits", "edited_policies", "minimal_conflict",
           "policy_rules", "price_of_policies", "rejecting_rules", "relax", "render_prices", "render_relaxation"]
