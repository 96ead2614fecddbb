"""Tooling for a policy repository kept in git: static checks, policy unit tests and explanations.

Three things live here, all built on the planner's own code so that they cannot drift from it:

- ``check_policy_folder``: the schema check of ``load_policies`` plus cross-reference checks of the
  policies against an inventory (and optionally workloads): names nobody knows, entries that
  contradict each other, rules that leave nothing to run on. Every problem names its file and line.
- ``evaluate`` and ``run_policy_tests``: one (workload, offer) pair judged by
  ``placement.candidates.candidates_for`` on a one-offer inventory, with the rejection reason mapped
  to a stable rule id (``gpus.forbidden``, ``data_classes.restricted.allowed_providers``, ...), and
  YAML test cases in the spirit of ``opa test`` that expect a pair to be allowed or denied by a rule.
- ``explain``: where one workload of a saved plan landed and why, the next-best offers that pass the
  hard filters with their extra cost, and for unplaced work the counted reasons.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import ValidationError

from placement.candidates import (
    HOURS_PER_MONTH,
    WorkloadCandidates,
    candidates_for,
    gpus_needed,
    region_egress_table,
    throughput_of,
)
from placement.errors import InputError, PlacementError, Problem
from placement.gpus import GPU_MODELS, resolve_gpu
from placement.inputs import LoadedPolicies, load_policies, load_workloads
from placement.models import (
    DataClassRule,
    GpuRequest,
    Inventory,
    Offer,
    Plan,
    PolicySet,
    SnapshotInfo,
    Workload,
)
from placement.scenario import Scenario
from placement.yamlio import PathKey, SourceFile, format_loc, parse_yaml, validation_problems

# --------------------------------------------------------------------------------------------------
# Rule ids
# --------------------------------------------------------------------------------------------------

# Reason strings of ``placement.candidates`` -> rule id. Policy rules are named by their path in the
# policy files; the others by what the workload or the offer lacks.
_REASON_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), rule)
    for pattern, rule in (
        (r"^offer unavailable$", "unavailable"),
        (r"^GPU model not requested$", "gpu_model"),
        (r"^GPU memory under .+ GiB$", "gpu_memory"),
        (r"^spot capacity \(workload not interruptible\)$", "spot"),
        (r"^outside residency \(jurisdiction .*\)$", "residency.jurisdictions"),
        (r"^outside residency \(countries .*\)$", "residency.countries"),
        (r"^outside residency \(regions\)$", "residency.regions"),
        (r"^provider not allowed by policy$", "allowed_providers"),
        (r"^provider forbidden by policy$", "forbidden_providers"),
        (r"^region forbidden by policy$", "forbidden_regions"),
        (r"^GPU model not allowed by policy$", "gpus.allowed"),
        (r"^GPU model forbidden by policy$", "gpus.forbidden"),
        (r"^data class (?P<dc>.+): jurisdiction not allowed$", "data_classes.{dc}.allowed_jurisdictions"),
        (r"^data class (?P<dc>.+): country not allowed$", "data_classes.{dc}.allowed_countries"),
        (r"^data class (?P<dc>.+): provider not allowed$", "data_classes.{dc}.allowed_providers"),
        (r"^data class (?P<dc>.+): provider kind not allowed$", "data_classes.{dc}.allowed_provider_kinds"),
        (r"^data class (?P<dc>.+): missing certification .+$", "data_classes.{dc}.required_certifications"),
        (r"^data class (?P<dc>.+): spot capacity not allowed$", "data_classes.{dc}.interruptible_allowed"),
        (r"^too few GPUs per node$", "max_nodes"),
        (r"^needs more than \d+ nodes$", "max_nodes"),
        (r"^not enough vCPUs$", "vcpus"),
        (r"^not enough memory$", "memory"),
        (r"^latency to .+ over .+ ms$", "latency"),
        (r"^no capacity left$", "capacity"),
        (r"^over workload budget .+$", "budget"),
    )
)

# Rule ids that do not come from the policy files: the workload's own needs and the offer's state.
WORKLOAD_RULES = ("unavailable", "gpu_model", "gpu_memory", "spot", "residency.jurisdictions",
                  "residency.countries", "residency.regions", "max_nodes", "vcpus", "memory", "latency",
                  "capacity", "budget")
_GLOBAL_POLICY_RULES = ("allowed_providers", "forbidden_providers", "forbidden_regions", "gpus.allowed",
                        "gpus.forbidden")
_DATA_CLASS_FIELDS = ("allowed_jurisdictions", "allowed_countries", "allowed_providers", "allowed_provider_kinds",
                      "required_certifications", "interruptible_allowed")
_DATA_CLASS_RULE_RE = re.compile(r"^data_classes\.(?P<dc>[^.]+)\.(?P<field>[a-z_]+)$")


class Decision(NamedTuple):
    """The hard filters' verdict on one (workload, offer) pair."""

    allowed: bool
    rule_id: str | None  # the first rule that denies the pair; None when it is allowed
    reason: str  # the planner's own words


def rule_id_of(reason: str) -> str:
    """The stable rule id of a rejection reason of ``candidates_for``; the reason itself if unknown."""
    for pattern, rule in _REASON_RULES:
        match = pattern.match(reason)
        if match:
            return rule.format(**match.groupdict())
    return reason


def is_known_rule_id(rule_id: str) -> bool:
    """Whether ``rule_id`` has the shape of a rule id ``rule_id_of`` can return."""
    if rule_id in WORKLOAD_RULES or rule_id in _GLOBAL_POLICY_RULES:
        return True
    match = _DATA_CLASS_RULE_RE.match(rule_id)
    return match is not None and match["field"] in _DATA_CLASS_FIELDS


def is_policy_rule(rule_id: str) -> bool:
    return rule_id in _GLOBAL_POLICY_RULES or rule_id.startswith("data_classes.")


def policy_rule_ids(policies: PolicySet) -> list[str]:
    """Every rule the policies define: hard-filter rules by rule id, and the teams' limits."""
    rules: list[str] = []
    for name, dc in policies.data_classes.items():
        for field in _DATA_CLASS_FIELDS:
            if getattr(dc, field) != DataClassRule.model_fields[field].default:
                rules.append(f"data_classes.{name}.{field}")
    for field, value in (("gpus.allowed", policies.gpus.allowed), ("gpus.forbidden", policies.gpus.forbidden),
                         ("allowed_providers", policies.allowed_providers),
                         ("forbidden_providers", policies.forbidden_providers),
                         ("forbidden_regions", policies.forbidden_regions)):
        if value:
            rules.append(field)
    for name, team in policies.teams.items():
        for field in ("budget_hourly_usd", "budget_monthly_usd", "max_interruptible_share"):
            if getattr(team, field) is not None:
                rules.append(f"teams.{name}.{field}")
    return rules


_NO_SNAPSHOT = SnapshotInfo(name="policy-evaluation", taken_on=dt.date(2000, 1, 1), prices="none")


def single_offer_inventory(offer: Offer, inventory: Inventory | None = None) -> Inventory:
    """An inventory holding only ``offer``, with the measured latencies of ``inventory``.

    Capacity pools limit the solver, not the filters, so the offer is taken without them.
    """
    return Inventory(
        snapshot=inventory.snapshot if inventory is not None else _NO_SNAPSHOT,
        offers=(offer.model_copy(update={"pools": ()}),),
        latency_ms=inventory.latency_ms if inventory is not None else {},
    )


def evaluate(workload: Workload, offer: Offer, policies: PolicySet, inventory: Inventory | None = None) -> Decision:
    """Judge one pair with the planner's hard filters, as if ``offer`` were the only offer.

    ``inventory`` contributes measured latencies and egress prices; the offer need not be in it.
    """
    single = single_offer_inventory(offer, inventory)
    egress = region_egress_table(inventory if inventory is not None else single)
    found = candidates_for(workload, single, policies, egress)
    if found.candidates:
        return Decision(True, None, "; ".join(found.candidates[0].rules))
    reason = next(iter(found.rejected))
    return Decision(False, rule_id_of(reason), reason)


# --------------------------------------------------------------------------------------------------
# Locating policy entries in their files
# --------------------------------------------------------------------------------------------------


_MERGED_MAPS = ("data_classes", "teams")


class _Locator:
    """Finds the file and line of a path of the merged policy set (sections may sit in any file)."""

    def __init__(self, sources: Sequence[SourceFile], fallback: str):
        self.sources = sources
        self.fallback = fallback

    def source(self, loc: PathKey) -> SourceFile | None:
        for src in self.sources:
            data = src.data
            if not isinstance(data, dict) or not loc or loc[0] not in data:
                continue
            if loc[0] in _MERGED_MAPS and len(loc) > 1:
                section = data[loc[0]]
                if not isinstance(section, dict) or loc[1] not in section:
                    continue
            return src
        return None

    def problem(self, loc: Iterable[str | int], message: str) -> Problem:
        key = tuple(loc)
        src = self.source(key)
        if src is None:
            return Problem(self.fallback, None, format_loc(key), message)
        return src.problem(key, message)

    def where(self, loc: Iterable[str | int]) -> str:
        key = tuple(loc)
        src = self.source(key)
        if src is None:
            return self.fallback
        line = src.line_of(key)
        return f"{src.name}:{line}" if line else src.name

    def raw_gpu_key(self, section: str, canonical: str) -> str:
        """The spelling of a GPU model as written in the file (``A100-80GB`` for ``A100``)."""
        src = self.source(("gpus",))
        raw = src.data.get("gpus") if src is not None and isinstance(src.data, dict) else None
        table = raw.get(section) if isinstance(raw, dict) else None
        if isinstance(table, dict):
            for key in table:
                found = resolve_gpu(str(key))
                if found is not None and found[0] == canonical:
                    return str(key)
        return canonical


# --------------------------------------------------------------------------------------------------
# policy check
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckReport:
    problems: tuple[Problem, ...]
    files: int
    rules: int

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Facts:
    """What the inventory knows, for checking names and for finding impossible rules."""

    snapshot: str
    providers: dict[str, set[str]]  # provider -> provider kinds
    region_keys: set[str]
    bare_regions: set[str]
    jurisdictions: set[str]
    country_jurisdictions: dict[str, set[str]]
    certifications: set[str]
    kinds: set[str]
    gpu_models: set[str]

    @classmethod
    def of(cls, inventory: Inventory) -> _Facts:
        providers: dict[str, set[str]] = {}
        countries: dict[str, set[str]] = {}
        for o in inventory.offers:
            providers.setdefault(o.provider, set()).add(o.provider_kind)
            countries.setdefault(o.country, set()).add(o.jurisdiction)
        return cls(
            snapshot=inventory.snapshot.name,
            providers=providers,
            region_keys=inventory.region_keys(),
            bare_regions={o.region for o in inventory.offers},
            jurisdictions={o.jurisdiction for o in inventory.offers},
            country_jurisdictions=countries,
            certifications={c for o in inventory.offers for c in o.certifications},
            kinds={o.provider_kind for o in inventory.offers},
            gpu_models={o.gpu_model for o in inventory.offers},
        )

    def unknown_provider(self, name: str) -> str:
        return (f"unknown provider {name!r}: no offer in the inventory ({self.snapshot}) is from it; "
                f"it has {', '.join(sorted(self.providers))}")


def _probe_workload(models: Iterable[str], data_class: str | None) -> Workload:
    """A workload that any offer of the listed GPU models fits, so that only policy rules reject it."""
    ordered = sorted(set(models))
    return Workload(
        name="policy-check", team="policy-check", kind="batch", data_class=data_class, interruptible=True,
        gpu=GpuRequest(models=tuple(ordered), count=1, throughput=dict.fromkeys(ordered, 1.0)),
    )


def _policy_rejections(wc: WorkloadCandidates) -> str:
    counts = Counter({reason: n for reason, n in wc.rejected.items() if is_policy_rule(rule_id_of(reason))})
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _check_global(policies: PolicySet, facts: _Facts, at: _Locator) -> list[Problem]:
    out: list[Problem] = []
    gpus = policies.gpus
    for i, model in enumerate(gpus.allowed):
        if model not in facts.gpu_models:
            out.append(at.problem(("gpus", "allowed", i),
                                  f"GPU model {model!r} is allowed but no offer in the inventory ({facts.snapshot}) has it"))
    for i, model in enumerate(gpus.forbidden):
        if model in gpus.allowed:
            j = gpus.allowed.index(model)
            out.append(at.problem(("gpus", "forbidden", i),
                                  f"GPU model {model!r} is both forbidden and allowed (gpus.allowed at "
                                  f"{at.where(('gpus', 'allowed', j))}); forbidden wins, so the allowed entry has no effect"))
    for model in gpus.throughput:
        loc = ("gpus", "throughput", at.raw_gpu_key("throughput", model))
        if model in gpus.forbidden:
            out.append(at.problem(loc, f"throughput given for GPU model {model!r}, which gpus.forbidden rules out"))
        elif gpus.allowed and model not in gpus.allowed:
            out.append(at.problem(loc, f"throughput given for GPU model {model!r}, which gpus.allowed leaves out"))
        elif model not in facts.gpu_models:
            out.append(at.problem(loc, f"throughput given for GPU model {model!r}, which no offer in the inventory "
                                       f"({facts.snapshot}) has"))
    for i, name in enumerate(policies.allowed_providers):
        if name not in facts.providers:
            out.append(at.problem(("allowed_providers", i), facts.unknown_provider(name)))
    for i, name in enumerate(policies.forbidden_providers):
        if name not in facts.providers:
            out.append(at.problem(("forbidden_providers", i), facts.unknown_provider(name)))
        if name in policies.allowed_providers:
            j = policies.allowed_providers.index(name)
            out.append(at.problem(("forbidden_providers", i),
                                  f"provider {name!r} is both forbidden and allowed (allowed_providers at "
                                  f"{at.where(('allowed_providers', j))}); forbidden wins"))
    for i, region in enumerate(policies.forbidden_regions):
        if region not in facts.region_keys and region not in facts.bare_regions:
            out.append(at.problem(("forbidden_regions", i),
                                  f"unknown region {region!r}: no offer in the inventory ({facts.snapshot}) is in it "
                                  "(give 'provider/region' or a region name)"))
    for name in policies.preferences.provider_bonus_usd_per_hour:
        loc = ("preferences", "provider_bonus_usd_per_hour", name)
        if name not in facts.providers:
            out.append(at.problem(loc, facts.unknown_provider(name)))
        elif name in policies.forbidden_providers or (policies.allowed_providers and name not in policies.allowed_providers):
            out.append(at.problem(loc, f"bonus for provider {name!r}, which the provider rules exclude"))
    return out


def _check_data_class(name: str, dc: DataClassRule, policies: PolicySet, facts: _Facts, at: _Locator) -> list[Problem]:
    out: list[Problem] = []
    base = ("data_classes", name)
    for i, juris in enumerate(dc.allowed_jurisdictions):
        if juris not in facts.jurisdictions:
            out.append(at.problem((*base, "allowed_jurisdictions", i),
                                  f"unknown jurisdiction {juris!r}; the inventory has {', '.join(sorted(facts.jurisdictions))}"))
    for i, country in enumerate(dc.allowed_countries):
        in_country = facts.country_jurisdictions.get(country)
        if in_country is None:
            out.append(at.problem((*base, "allowed_countries", i),
                                  f"no offer in the inventory ({facts.snapshot}) is in country {country!r}"))
        elif dc.allowed_jurisdictions and not in_country & set(dc.allowed_jurisdictions):
            out.append(at.problem((*base, "allowed_countries", i),
                                  f"country {country} is in jurisdiction {'/'.join(sorted(in_country))}, outside this "
                                  f"class's allowed_jurisdictions ({', '.join(dc.allowed_jurisdictions)}): "
                                  "no offer can satisfy both"))
    for i, provider in enumerate(dc.allowed_providers):
        loc = (*base, "allowed_providers", i)
        kinds = facts.providers.get(provider)
        if kinds is None:
            out.append(at.problem(loc, facts.unknown_provider(provider)))
        elif provider in policies.forbidden_providers:
            out.append(at.problem(loc, f"provider {provider!r} is in forbidden_providers, so this entry has no effect"))
        elif policies.allowed_providers and provider not in policies.allowed_providers:
            out.append(at.problem(loc, f"provider {provider!r} is not in allowed_providers, so this entry has no effect"))
        elif dc.allowed_provider_kinds and not kinds & set(dc.allowed_provider_kinds):
            out.append(at.problem(loc, f"provider {provider!r} is {'/'.join(sorted(kinds))}, not one of this class's "
                                       f"allowed_provider_kinds ({', '.join(dc.allowed_provider_kinds)})"))
    for i, kind in enumerate(dc.allowed_provider_kinds):
        loc = (*base, "allowed_provider_kinds", i)
        if kind not in facts.kinds:
            out.append(at.problem(loc, f"no provider in the inventory ({facts.snapshot}) is of kind {kind!r}"))
        elif dc.allowed_providers and not any(kind in facts.providers.get(p, set()) for p in dc.allowed_providers):
            out.append(at.problem(loc, f"provider kind {kind!r} is allowed but none of this class's allowed_providers "
                                       f"({', '.join(dc.allowed_providers)}) is of that kind"))
    for i, cert in enumerate(dc.required_certifications):
        if cert not in facts.certifications:
            out.append(at.problem((*base, "required_certifications", i),
                                  f"no offer in the inventory ({facts.snapshot}) holds certification {cert!r}; "
                                  f"known: {', '.join(sorted(facts.certifications))}"))
    return out


def _check_teams(policies: PolicySet, at: _Locator) -> list[Problem]:
    out: list[Problem] = []
    for name, team in policies.teams.items():
        hourly, monthly = team.budget_hourly_usd, team.budget_monthly_usd
        if hourly is not None and monthly is not None and monthly < hourly:
            out.append(at.problem(("teams", name, "budget_monthly_usd"),
                                  f"monthly budget ${monthly:,.2f} is less than the hourly budget ${hourly:,.2f}; a month "
                                  f"is {HOURS_PER_MONTH:g} hours (is it an hourly figure?)"))
    return out


def _check_reoptimization(policies: PolicySet, facts: _Facts, at: _Locator) -> list[Problem]:
    """Names in the reoptimization section that nothing carries: a budget or rule that never applies."""
    out: list[Problem] = []
    rule = policies.reoptimization
    for i, budget in enumerate(rule.disruption_budgets):
        base = ("reoptimization", "disruption_budgets", i)
        for j, team in enumerate(budget.teams):
            if policies.teams and team not in policies.teams:
                out.append(at.problem((*base, "teams", j), f"unknown team {team!r}; the policies define "
                                                           f"{', '.join(sorted(policies.teams))}"))
        for j, provider in enumerate(budget.providers):
            if provider not in facts.providers:
                out.append(at.problem((*base, "providers", j), f"no provider {provider!r} in the inventory "
                                                               f"({facts.snapshot}); known: {', '.join(sorted(facts.providers))}"))
    for j, provider in enumerate(rule.auto_apply.providers):
        if provider not in facts.providers:
            out.append(at.problem(("reoptimization", "auto_apply", "providers", j),
                                  f"no provider {provider!r} in the inventory ({facts.snapshot}); "
                                  f"known: {', '.join(sorted(facts.providers))}"))
    if rule.max_payback_hours > rule.service_horizon_hours:
        out.append(at.problem(("reoptimization", "max_payback_hours"),
                              f"max_payback_hours {rule.max_payback_hours:g} is longer than service_horizon_hours "
                              f"{rule.service_horizon_hours:g}: a service move that pays back that late never pays"))
    return out


def _check_reachability(policies: PolicySet, inventory: Inventory, facts: _Facts, at: _Locator) -> list[Problem]:
    """Rules that together leave no offer at all: for everyone, for a data class, for a team's budget."""
    out: list[Problem] = []
    egress = region_egress_table(inventory)
    everyone = candidates_for(_probe_workload(facts.gpu_models, None), inventory, policies, egress)
    if not everyone.candidates:
        worst = max(everyone.rejected.items(), key=lambda kv: (kv[1], kv[0]), default=None)
        rule = rule_id_of(worst[0]) if worst else "allowed_providers"
        loc: tuple[str, ...] = tuple(rule.split(".")) if is_policy_rule(rule) else ("allowed_providers",)
        out.append(at.problem(loc, f"the policies admit no offer of the inventory ({facts.snapshot}, "
                                   f"{len(inventory.offers)} offers: {_policy_rejections(everyone) or everyone.summary()})"))
        return out
    for name in policies.data_classes:
        found = candidates_for(_probe_workload(facts.gpu_models, name), inventory, policies, egress)
        if not found.candidates:
            out.append(at.problem(("data_classes", name),
                                  f"data class {name!r} admits no offer of the inventory ({facts.snapshot}, "
                                  f"{len(inventory.offers)} offers: {_policy_rejections(found) or found.summary()})"))
    cheapest = min(everyone.candidates, key=lambda c: (c.instance_hourly_usd, c.offer_index))
    cheapest_id = inventory.offers[cheapest.offer_index].id
    for name, team in policies.teams.items():
        hourly, monthly = team.budget_hourly_usd, team.budget_monthly_usd
        if hourly is not None and monthly is not None and monthly < hourly:
            continue  # reported by _check_teams
        limits: list[tuple[float, str]] = []
        if hourly is not None:
            limits.append((hourly, "budget_hourly_usd"))
        if monthly is not None:
            limits.append((monthly / HOURS_PER_MONTH, "budget_monthly_usd"))
        if not limits:
            continue
        limit, field = min(limits)
        if limit + 1e-9 < cheapest.instance_hourly_usd:
            out.append(at.problem(("teams", name, field),
                                  f"team {name!r} may spend ${limit:,.2f}/h, less than the cheapest offer the policies "
                                  f"allow ({cheapest_id} at ${cheapest.instance_hourly_usd:,.2f}/h): none of its work "
                                  "can ever be placed"))
    return out


def _check_workloads(paths: Sequence[Path], policies: PolicySet) -> list[Problem]:
    try:
        loaded = load_workloads(list(paths))
    except InputError as exc:
        return list(exc.problems)
    out: list[Problem] = []
    gpus = policies.gpus
    for w in loaded.workloads:
        index, base = loaded.where[w.name]
        src = loaded.sources[index]
        if w.data_class is not None and w.data_class not in policies.data_classes:
            defined = ", ".join(sorted(policies.data_classes)) or "none"
            out.append(src.problem((*base, "data_class"),
                                   f"unknown data class {w.data_class!r}; the policies define {defined}"))
        if policies.teams and w.team not in policies.teams:
            out.append(src.problem((*base, "team"),
                                   f"unknown team {w.team!r}; the policies define {', '.join(sorted(policies.teams))}"))
        usable = [m for m in w.gpu.models if m not in gpus.forbidden and (not gpus.allowed or m in gpus.allowed)]
        if not usable:
            out.append(src.problem((*base, "gpu", "models"),
                                   f"every GPU model this workload accepts ({', '.join(w.gpu.models)}) is ruled out by "
                                   "gpus.allowed / gpus.forbidden"))
    return out


def check_policies(loaded: LoadedPolicies, inventory: Inventory, workloads: Sequence[Path] = ()) -> list[Problem]:
    """Cross-reference problems of already schema-valid policies, against an inventory and workloads."""
    policies = loaded.policies
    at = _Locator(loaded.sources, loaded.files[0] if loaded.files else "(policies)")
    facts = _Facts.of(inventory)
    problems = _check_global(policies, facts, at)
    flawed: set[str] = set()
    for name, dc in policies.data_classes.items():
        found = _check_data_class(name, dc, policies, facts, at)
        problems.extend(found)
        if found:
            flawed.add(name)
    problems.extend(_check_teams(policies, at))
    problems.extend(_check_reoptimization(policies, facts, at))
    # A class with a flawed entry is reported already; that it admits nothing follows from the entry.
    problems.extend(p for p in _check_reachability(policies, inventory, facts, at)
                    if not (p.field.startswith("data_classes.") and p.field.split(".")[1] in flawed))
    if workloads:
        problems.extend(_check_workloads(workloads, policies))
    return sorted(problems, key=lambda p: (p.file, p.line or 0))


def policy_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    return [path] if path.exists() else []


def check_policy_folder(path: Path, inventory: Inventory, workloads: Sequence[Path] = ()) -> CheckReport:
    """Schema and cross-reference problems of a policy folder (or file), one per mistake."""
    files = len(policy_files(path))
    if path.is_dir() and not files:
        return CheckReport((Problem(str(path), None, "", "no policy files (*.yaml, *.yml) in this folder"),), 0, 0)
    try:
        loaded = load_policies(path)
    except InputError as exc:
        return CheckReport(tuple(sorted(exc.problems, key=lambda p: (p.file, p.line or 0))), files, 0)
    problems = check_policies(loaded, inventory, workloads)
    return CheckReport(tuple(problems), files, len(policy_rule_ids(loaded.policies)))


# --------------------------------------------------------------------------------------------------
# policy test
# --------------------------------------------------------------------------------------------------

Expectation = Literal["allowed", "denied"]
_CASE_KEYS = ("name", "workload", "offer", "offer_id", "expect", "rule")
_REGION_FIELDS = ("country", "jurisdiction", "location", "carbon_g_per_kwh", "pue", "egress_usd_per_gb")
TEST_WORKLOAD_DEFAULTS = {"name": "policy-test", "team": "policy-test"}


@dataclass(frozen=True)
class PolicyCase:
    name: str
    file: str
    line: int | None
    workload: Workload
    offer: Offer
    expect: Expectation
    rule: str | None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class CaseResult:
    case: PolicyCase
    decision: Decision
    passed: bool
    message: str


def policy_test_files(policy_dir: Path) -> list[Path]:
    """Test files of a policy folder: ``tests/*.yaml`` and ``tests/*.yml``, sorted."""
    folder = policy_dir / "tests"
    if not folder.is_dir():
        return []
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def _region_defaults(inventory: Inventory, provider: Any, region: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fields an offer inherits from its provider and its region, read off the inventory's offers."""
    same_provider = [o for o in inventory.offers if o.provider == provider]
    same_region = [o for o in same_provider if o.region == region]
    from_provider: dict[str, Any] = {}
    if same_provider:
        from_provider["provider_kind"] = same_provider[0].provider_kind
    from_region: dict[str, Any] = {}
    if same_region:
        first = same_region[0].model_dump()
        from_region = {k: first[k] for k in _REGION_FIELDS}
        common = set(same_region[0].certifications)
        for o in same_region[1:]:
            common &= set(o.certifications)
        from_region["certifications"] = tuple(sorted(common))
    return from_provider, from_region


def _offer_fields(raw: dict[str, Any], base: Offer | None, workload: Workload, policies: PolicySet,
                  inventory: Inventory) -> dict[str, Any]:
    """A complete offer from a test case: the inventory offer it names (if any), its own fields, and
    for what is left out, the provider's and region's attributes and a shape that just fits the workload."""
    merged: dict[str, Any] = base.model_dump(exclude={"id"}) if base is not None else {}
    moved = base is None or any(k in raw and raw[k] != getattr(base, k) for k in ("provider", "region"))
    if moved:
        provider = raw.get("provider", base.provider if base is not None else None)
        region = raw.get("region", base.region if base is not None else None)
        from_provider, from_region = _region_defaults(inventory, provider, region)
        merged.update(from_provider)
        merged.update(from_region)
        merged.pop("pools", None)
        merged.pop("zone", None)
    if base is None:
        model = raw.get("gpu_model", workload.gpu.models[0])
        resolved = resolve_gpu(model) if isinstance(model, str) else None
        canonical = resolved[0] if resolved is not None else None
        tp = throughput_of(workload, policies)
        count = gpus_needed(workload, canonical, tp) if canonical is not None and canonical in tp else workload.gpu.count
        memory = float(max(GPU_MODELS[canonical].memory_gib)) if canonical is not None else 1.0
        merged.update({
            "gpu_model": model, "gpu_count": count,
            "gpu_memory_gib": max(memory, workload.gpu.min_memory_gib, 1.0),
            "vcpus": workload.vcpus, "memory_gib": workload.memory_gib, "instance_type": "policy-test",
            "capacity_type": "on-demand", "hourly_usd": 0.0,
        })
    merged.update(raw)
    return merged


def _load_case(src: SourceFile, loc: PathKey, raw: Any, names: set[str], policies: PolicySet,
               inventory: Inventory, problems: list[Problem]) -> PolicyCase | None:
    if not isinstance(raw, dict):
        problems.append(src.problem(loc, "expected a test case {name, workload, offer or offer_id, expect, rule}"))
        return None
    before = len(problems)
    for key in sorted(set(raw) - set(_CASE_KEYS)):
        problems.append(src.problem((*loc, key), f"unknown field (expected {', '.join(_CASE_KEYS)})"))
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(src.problem((*loc, "name"), "every test case needs a name"))
    elif name in names:
        problems.append(src.problem((*loc, "name"), f"test case name {name!r} is used twice in this file"))
    else:
        names.add(name)
    expect = raw.get("expect")
    if expect not in ("allowed", "denied"):
        problems.append(src.problem((*loc, "expect"), f"expected 'allowed' or 'denied', got {expect!r}"))
    rule = raw.get("rule")
    if rule is not None:
        if not isinstance(rule, str) or not is_known_rule_id(rule):
            problems.append(src.problem((*loc, "rule"), f"unknown rule id {rule!r}; rule ids are "
                                        f"{', '.join(_GLOBAL_POLICY_RULES)}, data_classes.<class>."
                                        f"{{{','.join(_DATA_CLASS_FIELDS)}}}, or {', '.join(WORKLOAD_RULES)}"))
        elif expect == "allowed":
            problems.append(src.problem((*loc, "rule"), "a rule is named only for cases expected to be denied"))
    raw_workload = raw.get("workload")
    workload: Workload | None = None
    if not isinstance(raw_workload, dict):
        problems.append(src.problem((*loc, "workload"), "expected the workload's fields (gpu, data_class, ...)"))
    else:
        try:
            workload = Workload.model_validate({**TEST_WORKLOAD_DEFAULTS, **raw_workload})
        except ValidationError as exc:
            problems.extend(validation_problems(exc, src, (*loc, "workload")))
    offer_id = raw.get("offer_id")
    raw_offer = raw.get("offer", {})
    base: Offer | None = None
    if offer_id is None and "offer" not in raw:
        problems.append(src.problem(loc, "give offer_id (an offer of the inventory) or offer (its fields)"))
    if offer_id is not None:
        matches = [o for o in inventory.offers if o.id == offer_id]
        if not matches:
            problems.append(src.problem((*loc, "offer_id"),
                                        f"no offer {offer_id!r} in the inventory ({inventory.snapshot.name})"))
        else:
            base = matches[0]
    if not isinstance(raw_offer, dict):
        problems.append(src.problem((*loc, "offer"), "expected the offer's fields (provider, region, gpu_model, ...)"))
    if len(problems) > before or workload is None or not isinstance(raw_offer, dict):
        return None
    fields = _offer_fields(raw_offer, base, workload, policies, inventory)
    missing = [k for k in ("provider", "region") if k not in fields]
    if missing:
        problems.append(src.problem((*loc, "offer"), f"the offer needs {' and '.join(missing)}"))
        return None
    try:
        offer = Offer.model_validate(fields)
    except ValidationError as exc:
        found = validation_problems(exc, src, (*loc, "offer"))
        if any(p.message == "required field is missing" for p in found):
            found.append(src.problem((*loc, "offer"),
                                     f"{fields['provider']}/{fields['region']} is not a region of the inventory "
                                     f"({inventory.snapshot.name}); give provider_kind, country, jurisdiction and "
                                     "location, or use offer_id"))
        problems.extend(found)
        return None
    assert isinstance(name, str) and expect in ("allowed", "denied")
    return PolicyCase(name=name, file=src.name, line=src.line_of(loc), workload=workload, offer=offer,
                      expect=expect, rule=rule)


def _case_lists(src: SourceFile, problems: list[Problem], required: bool) -> list[tuple[PathKey, Any]]:
    data = src.data
    if isinstance(data, list):
        return [((i,), raw) for i, raw in enumerate(data)]
    if isinstance(data, dict) and isinstance(data.get("tests"), list):
        return [(("tests", i), raw) for i, raw in enumerate(data["tests"])]
    if isinstance(data, dict) and "tests" in data:
        problems.append(src.problem(("tests",), "expected a list of test cases"))
    elif required:
        problems.append(src.problem((), "expected a list of test cases, or a mapping with a list under 'tests'"))
    return []


def load_policy_tests(policy_dir: Path, policies: PolicySet, inventory: Inventory) -> list[PolicyCase]:
    """Test cases of ``policy_dir/tests/*.yaml`` and of ``tests:`` sections in the policy files.

    Raises InputError with every malformed case, located by file and line.
    """
    problems: list[Problem] = []
    cases: list[PolicyCase] = []
    sources = [(parse_yaml(f), False) for f in (policy_files(policy_dir) if policy_dir.is_dir() else [])]
    sources += [(parse_yaml(f), True) for f in policy_test_files(policy_dir)]
    for src, required in sources:
        names: set[str] = set()
        for loc, raw in _case_lists(src, problems, required):
            case = _load_case(src, loc, raw, names, policies, inventory, problems)
            if case is not None:
                cases.append(case)
    if problems:
        raise InputError(sorted(problems, key=lambda p: (p.file, p.line or 0)))
    return cases


def run_case(case: PolicyCase, policies: PolicySet, inventory: Inventory | None = None) -> CaseResult:
    dc = case.workload.data_class
    if dc is not None and dc not in policies.data_classes:
        decision = Decision(False, None, f"data class {dc!r} is not defined by the policies")
        return CaseResult(case, decision, False, f"the workload's data class {dc!r} is not defined by the policies")
    decision = evaluate(case.workload, case.offer, policies, inventory)
    got = "allowed" if decision.allowed else f"denied by {decision.rule_id} ({decision.reason})"
    if case.expect == "allowed":
        passed = decision.allowed
        wanted = "allowed"
    else:
        passed = not decision.allowed and (case.rule is None or decision.rule_id == case.rule)
        wanted = "denied" + (f" by {case.rule}" if case.rule else "")
    message = got if passed else f"expected {wanted}, got {got}"
    return CaseResult(case, decision, passed, message)


def run_policy_tests(policy_dir: Path, inventory: Inventory) -> list[CaseResult]:
    """Load the policies and their tests and run every case. Raises InputError on malformed files."""
    loaded = load_policies(policy_dir)
    cases = load_policy_tests(policy_dir, loaded.policies, inventory)
    return [run_case(c, loaded.policies, inventory) for c in cases]


# --------------------------------------------------------------------------------------------------
# explain
# --------------------------------------------------------------------------------------------------

RUNNERS_UP = 5


def _r(value: float) -> float:
    return round(value + 0.0, 4)


def explain(plan: Plan, scenario: Scenario, workload: str) -> dict[str, Any]:
    """Where ``workload`` landed in ``plan`` and why, what came next, and why any replica is missing.

    The runners-up are the other offers that pass the hard filters for this workload against the
    scenario's current inputs, cheapest first ($/h per replica, instances plus data egress), with
    their extra cost over the cheapest offer the plan chose (negative: cheaper, but not taken).
    """
    workloads = {w.name: w for w in scenario.workloads.workloads}
    in_plan = {p.workload for p in plan.placements} | {u.workload for u in plan.unplaced}
    if workload not in workloads or workload not in in_plan:
        known = sorted(in_plan & set(workloads))
        raise PlacementError(f"unknown workload {workload!r}; the plan has {', '.join(known) or 'no workloads'}")
    w = workloads[workload]
    inv = scenario.inventory.inventory
    pol = scenario.policies.policies
    current = {"workloads": scenario.workloads.digest, "inventory": scenario.inventory.digest,
               "policies": scenario.policies.digest}
    changed = sorted(k for k, d in current.items() if k in plan.inputs and plan.inputs[k].digest != d)

    placed = [p for p in plan.placements if p.workload == workload]
    groups: dict[str, list[Any]] = {}
    for p in placed:
        groups.setdefault(p.offer_id, []).append(p)
    placements = []
    for offer_id, items in sorted(groups.items()):
        p = items[0]
        placements.append({
            "offer_id": offer_id, "provider": p.provider, "region": p.region, "zone": p.zone,
            "capacity_type": p.capacity_type, "gpu_model": p.gpu_model, "gpus": p.nodes * p.gpus_per_node,
            "nodes": p.nodes, "replicas": len(items), "replica_hourly_usd": _r(p.total_hourly_usd),
            "reasons": list(p.reasons),
        })
    reference = min((p.total_hourly_usd for p in placed), default=None)

    found = candidates_for(w, inv, pol, region_egress_table(inv))
    others = sorted((c for c in found.candidates if inv.offers[c.offer_index].id not in groups),
                    key=lambda c: (c.hourly_usd, inv.offers[c.offer_index].id))
    runners_up = []
    for c in others[:RUNNERS_UP]:
        o = inv.offers[c.offer_index]
        runners_up.append({
            "offer_id": o.id, "provider": o.provider, "region": o.region, "capacity_type": o.capacity_type,
            "gpu_model": o.gpu_model, "gpus": c.nodes * o.gpu_count, "nodes": c.nodes,
            "hourly_usd": _r(c.hourly_usd), "objective_hourly_usd": _r(c.objective_hourly_usd),
            "extra_hourly_usd": None if reference is None else _r(c.hourly_usd - reference),
        })
    missing = next((u for u in plan.unplaced if u.workload == workload), None)
    return {
        "workload": w.name, "team": w.team, "replicas": w.replicas, "replicas_placed": len(placed),
        "plan_digest": plan.digest, "inputs_changed": changed,
        "offers_total": found.offers_total, "offers_fitting": len(found.candidates),
        "placements": placements, "runners_up": runners_up,
        "unplaced": None if missing is None else {
            "replicas": missing.replicas, "summary": missing.summary, "reasons": dict(missing.reasons),
        },
    }


def render_explanation(data: dict[str, Any]) -> list[str]:
    """The explanation as plain text lines."""
    lines = [f"{data['workload']} (team {data['team']}): {data['replicas_placed']}/{data['replicas']} replica(s) placed"]
    if data["inputs_changed"]:
        lines.append(f"note: the {', '.join(data['inputs_changed'])} changed since the plan was made; "
                     "the runners-up below are computed from the current files")
    for p in data["placements"]:
        zone = f" ({p['zone']})" if p["zone"] else ""
        lines.append(f"placed: {p['replicas']} × {p['offer_id']} — {p['gpus']}× {p['gpu_model']}, {p['region']}{zone}, "
                     f"{p['capacity_type']}, ${p['replica_hourly_usd']:,.2f}/h per replica")
        lines.extend(f"  - {reason}" for reason in p["reasons"])
    if data["runners_up"]:
        versus = "; extra cost vs the cheapest chosen offer" if data["placements"] else ""
        lines.append(f"runners-up ({data['offers_fitting']}/{data['offers_total']} offers pass the hard filters; "
                     f"cheapest others first{versus}):")
        for i, r in enumerate(data["runners_up"], 1):
            extra = r["extra_hourly_usd"]
            if extra is None:
                delta = ""
            elif extra >= 0:
                delta = f" (+${extra:,.2f}/h)"
            else:
                delta = f" (${-extra:,.2f}/h cheaper, but not taken: full, used by other work, or over a budget or spread rule)"
            lines.append(f"  {i}. {r['offer_id']} — {r['gpus']}× {r['gpu_model']}, {r['capacity_type']}, "
                         f"${r['hourly_usd']:,.2f}/h{delta}")
    elif data["placements"]:
        lines.append(f"runners-up: none; no other offer passes the hard filters "
                     f"({data['offers_fitting']}/{data['offers_total']} fit)")
    if data["unplaced"] is not None:
        u = data["unplaced"]
        lines.append(f"unplaced: {u['replicas']} replica(s): {u['summary']}")
        for reason, n in sorted(u["reasons"].items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {n:>5} {reason}")
    return lines
