"""What-if analysis: a base scenario plus named variants, each a list of changes, planned side by side.

A change is a pure function from a Scenario to a modified Scenario (the models are frozen, so every
change builds new values with ``model_copy``). The kinds of change:

- ``traffic``: replicas × factor for the workloads selected by name, team and labels (all given
  selectors must match; none selects every workload). ``min_replicas`` is scaled too when set; both
  round up. ``scale_budget: true`` scales the workload's own ``budget_hourly_usd`` as well.
- ``outage``: every offer of a provider, or of one of its regions or zones, is marked unavailable
  with the reason ``outage (what-if)``.
- ``price``: ``hourly_usd`` × (1 + percent / 100) for the offers of a provider, GPU model, capacity
  type and/or region.
- ``shortage``: percent fewer instances of a GPU model (optionally of one provider). An offer with
  a known ``available`` keeps ``floor(available × (1 − percent / 100))``. An offer with no known
  limit becomes finite with ``unlimited: base-use`` (the default): the base plan's use of it is the
  only amount known to be obtainable, so it keeps ``floor(used × (1 − percent / 100))`` instances,
  0 when the base plan does not use it; ``unlimited: keep`` leaves such offers unlimited. Capacity
  pools counted in GPUs are reduced the same way when every offer drawing on them is affected (a
  pool shared with other GPU models, such as a project-wide GPU quota, is left as it is).
- ``new_pool``: an inline inventory fragment (``providers``, ``regions``, ``pools``, ``offers``,
  written as in an inventory file). An offer inherits the fields of an existing offer in the same
  provider/region (or, failing that, the provider-wide fields of an offer of the same provider),
  then those of the fragment's ``providers`` and ``regions`` entries.
- ``policy``: a JSON merge patch (RFC 7386) over the loaded policies: mappings merge, lists and
  values replace, ``null`` removes a key (back to its default).

Each variant is planned with ``make_plan`` against the same current state as the base. Moves needed
are counted by diffing the variant's placements against the base plan's placements with
``attach_state`` (replicas of one workload are interchangeable).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from placement.candidates import HOURS_PER_MONTH
from placement.diff import CurrentReplica, StateView, attach_state, hint_from_state
from placement.errors import InputError, PlacementError
from placement.gpus import known_gpu_names, resolve_gpu
from placement.inputs import digest_of, dump_model
from placement.models import (
    CapacityPool,
    CapacityType,
    CountryCode,
    Frozen,
    GeoPoint,
    InputDigest,
    Inventory,
    Name,
    NonNegFloat,
    Offer,
    Plan,
    PolicySet,
    ProviderKind,
    Workload,
)
from placement.planner import PlanOptions, gpu_mix, make_plan
from placement.scenario import Scenario, cross_check
from placement.yamlio import error_problems, parse_yaml, validation_problems

OUTAGE_REASON = "outage (what-if)"
WHATIF_INPUT = "whatif"
WHATIF_FILE = "whatif.yaml"
BASE_NAME = "base"


class WhatIfError(PlacementError):
    """A what-if change that cannot be applied to the scenario (it selects nothing, or breaks a rule)."""


def _canon_gpu(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    found = resolve_gpu(value)
    if found is None:
        raise ValueError(f"unknown GPU model {value!r}; known models: {', '.join(known_gpu_names())}")
    return found[0]


# --------------------------------------------------------------------------------------------------
# Changes
# --------------------------------------------------------------------------------------------------


class TrafficChange(Frozen):
    kind: Literal["traffic"] = "traffic"
    factor: Annotated[float, Field(gt=0, description="replicas × factor, rounded up")]
    workloads: tuple[str, ...] = Field(default=(), description="workload names (none: no name filter)")
    team: str | None = None
    labels: dict[str, str] = Field(default_factory=dict, description="every key=value must match")
    scale_budget: bool = Field(default=False, description="scale the workload's own budget_hourly_usd too")


class OutageChange(Frozen):
    kind: Literal["outage"] = "outage"
    provider: Name
    region: Name | None = None
    zone: Name | None = None


class PriceChange(Frozen):
    kind: Literal["price"] = "price"
    percent: Annotated[float, Field(gt=-100, description="+30 means 30% dearer")]
    provider: Name | None = None
    gpu_model: str | None = None
    capacity_type: CapacityType | None = None
    region: Name | None = None

    @field_validator("gpu_model", mode="before")
    @classmethod
    def _gpu(cls, value: Any) -> Any:
        return _canon_gpu(value)


class ShortageChange(Frozen):
    kind: Literal["shortage"] = "shortage"
    gpu_model: str
    percent: Annotated[float, Field(gt=0, le=100, description="capacity lost, in percent")]
    provider: Name | None = None
    unlimited: Literal["base-use", "keep"] = Field(
        default="base-use", description="offers with no known limit: capped at the base plan's use, or kept unlimited"
    )

    @field_validator("gpu_model", mode="before")
    @classmethod
    def _gpu(cls, value: Any) -> Any:
        return _canon_gpu(value)


class ProviderInfo(Frozen):
    kind: ProviderKind
    egress_usd_per_gb: NonNegFloat = 0.0
    certifications: tuple[str, ...] = ()


class RegionInfo(Frozen):
    country: CountryCode
    jurisdiction: Annotated[str, Field(min_length=2, max_length=16)]
    location: GeoPoint
    carbon_g_per_kwh: NonNegFloat | None = None
    pue: Annotated[float, Field(ge=1.0, le=3.0)] = 1.0
    egress_usd_per_gb: NonNegFloat | None = None
    certifications: tuple[str, ...] = ()


class NewPoolChange(Frozen):
    kind: Literal["new_pool"] = "new_pool"
    providers: dict[str, ProviderInfo] = Field(default_factory=dict)
    regions: dict[str, RegionInfo] = Field(default_factory=dict, description="'provider/region' -> region facts")
    pools: tuple[CapacityPool, ...] = ()
    offers: Annotated[tuple[dict[str, Any], ...], Field(min_length=1)]

    @field_validator("regions")
    @classmethod
    def _region_keys(cls, value: dict[str, RegionInfo]) -> dict[str, RegionInfo]:
        bad = [k for k in value if k.count("/") != 1]
        if bad:
            raise ValueError(f"region keys must look like 'provider/region', not {', '.join(map(repr, bad))}")
        return value


class PolicyChange(Frozen):
    kind: Literal["policy"] = "policy"
    patch: dict[str, Any] = Field(description="merged over the loaded policies (JSON merge patch)")


Change = Annotated[
    TrafficChange | OutageChange | PriceChange | ShortageChange | NewPoolChange | PolicyChange,
    Field(discriminator="kind"),
]
CHANGE_ADAPTER: TypeAdapter[Any] = TypeAdapter(Change)


class Variant(Frozen):
    name: Name
    description: str = ""
    changes: Annotated[tuple[Change, ...], Field(min_length=1)]

    @field_validator("name")
    @classmethod
    def _not_base(cls, value: str) -> str:
        if value == BASE_NAME:
            raise ValueError(f"{BASE_NAME!r} is the name of the unchanged scenario; choose another")
        return value


class WhatIfSpec(Frozen):
    format_version: Literal[1] = 1
    variants: Annotated[tuple[Variant, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> WhatIfSpec:
        seen: set[str] = set()
        for v in self.variants:
            if v.name in seen:
                raise ValueError(f"variant name {v.name!r} is used twice")
            seen.add(v.name)
        return self


def load_whatif(path: Path) -> tuple[Variant, ...]:
    """Read a what-if file: ``variants: [{name, description, changes: [...]}, ...]`` or that list alone."""
    src = parse_yaml(path)
    bare_list = isinstance(src.data, list)
    data = {"variants": src.data} if bare_list else src.data
    if not isinstance(data, dict):
        raise InputError([src.problem((), "expected a mapping with a list under 'variants'")])
    try:
        spec = WhatIfSpec.model_validate(data)
    except ValidationError as exc:
        if not bare_list:
            raise InputError(validation_problems(exc, src)) from None
        # The list is the whole document: locate errors without the 'variants' key it was wrapped in.
        errors = [{**e, "loc": e["loc"][1:]} if e["loc"][:1] == ("variants",) else e
                  for e in exc.errors(include_url=False)]
        raise InputError(error_problems(errors, src)) from None
    return spec.variants


def describe_change(change: Any) -> str:
    """One line for tables: what the change does."""
    if isinstance(change, TrafficChange):
        sel = _traffic_selector(change)
        budget = ", budgets scaled" if change.scale_budget else ""
        return f"traffic ×{change.factor:g} for {sel}{budget}"
    if isinstance(change, OutageChange):
        where = "/".join(p for p in (change.provider, change.region, change.zone) if p)
        return f"outage of {where}"
    if isinstance(change, PriceChange):
        sel = ", ".join(f"{k}={v}" for k, v in (("provider", change.provider), ("gpu", change.gpu_model),
                                                 ("capacity", change.capacity_type), ("region", change.region)) if v)
        return f"price {change.percent:+g}% for {sel or 'every offer'}"
    if isinstance(change, ShortageChange):
        who = f" at {change.provider}" if change.provider else ""
        return f"{change.gpu_model} shortage −{change.percent:g}%{who}"
    if isinstance(change, NewPoolChange):
        regions = sorted({f"{o.get('provider')}/{o.get('region')}" for o in change.offers})
        gpu_pools = [p for p in change.pools if p.unit == "gpus"]
        size = f", {sum(p.limit for p in gpu_pools)} GPUs" if gpu_pools else ""
        return f"new pool in {', '.join(regions)} ({len(change.offers)} offer(s){size})"
    if isinstance(change, PolicyChange):
        text = json.dumps(change.patch, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return f"policy patch {text if len(text) <= 120 else text[:117] + '...'}"
    return str(change)


def _traffic_selector(change: TrafficChange) -> str:
    parts = []
    if change.workloads:
        parts.append(", ".join(change.workloads))
    if change.team:
        parts.append(f"team {change.team}")
    parts.extend(f"{k}={v}" for k, v in sorted(change.labels.items()))
    return " and ".join(parts) or "every workload"


# --------------------------------------------------------------------------------------------------
# Applying changes: pure functions Scenario -> Scenario
# --------------------------------------------------------------------------------------------------


def with_workloads(scenario: Scenario, workloads: Iterable[Workload]) -> Scenario:
    ordered = tuple(sorted(workloads, key=lambda w: w.name))
    loaded = replace(scenario.workloads, workloads=ordered, digest=digest_of([dump_model(w) for w in ordered]))
    return replace(scenario, workloads=loaded)


def with_inventory(scenario: Scenario, inventory: Inventory) -> Scenario:
    loaded = replace(scenario.inventory, inventory=inventory, digest=digest_of(dump_model(inventory)))
    return replace(scenario, inventory=loaded)


def with_policies(scenario: Scenario, policies: PolicySet) -> Scenario:
    loaded = replace(scenario.policies, policies=policies, digest=digest_of(dump_model(policies)))
    return replace(scenario, policies=loaded)


def _scaled(count: int, factor: float) -> int:
    # The small tolerance keeps float noise (10 × 0.3 = 3.0000000000000004) from adding a replica.
    return max(1, math.ceil(count * factor - 1e-9))


def select_workloads(scenario: Scenario, change: TrafficChange) -> list[Workload]:
    workloads = scenario.workloads.workloads
    names = {w.name for w in workloads}
    unknown = [n for n in change.workloads if n not in names]
    if unknown:
        raise WhatIfError(f"traffic change names unknown workload(s): {', '.join(unknown)}")
    chosen = [
        w for w in workloads
        if (not change.workloads or w.name in change.workloads)
        and (change.team is None or w.team == change.team)
        and all(w.labels.get(k) == v for k, v in change.labels.items())
    ]
    if not chosen:
        raise WhatIfError(f"traffic change selects no workload ({_traffic_selector(change)})")
    return chosen


def scale_traffic(scenario: Scenario, change: TrafficChange) -> Scenario:
    chosen = {w.name for w in select_workloads(scenario, change)}
    out = []
    for w in scenario.workloads.workloads:
        if w.name in chosen:
            replicas = _scaled(w.replicas, change.factor)
            update: dict[str, Any] = {"replicas": replicas}
            if w.min_replicas is not None:
                update["min_replicas"] = min(replicas, _scaled(w.min_replicas, change.factor))
            if change.scale_budget and w.budget_hourly_usd is not None:
                update["budget_hourly_usd"] = round(w.budget_hourly_usd * change.factor, 6)
            if max(w.spread.min_providers, w.spread.min_regions) > replicas:
                raise WhatIfError(f"traffic ×{change.factor:g} leaves {w.name} {replicas} replica(s), fewer than its "
                                  "spread over providers or regions needs")
            w = w.model_copy(update=update)
        out.append(w)
    return with_workloads(scenario, out)


def _offer_matches(offer: Offer, provider: str | None = None, region: str | None = None, zone: str | None = None,
                   gpu_model: str | None = None, capacity_type: str | None = None) -> bool:
    return ((provider is None or offer.provider == provider)
            and (region is None or offer.region == region)
            and (zone is None or offer.zone == zone)
            and (gpu_model is None or offer.gpu_model == gpu_model)
            and (capacity_type is None or offer.capacity_type == capacity_type))


def _replace_offers(scenario: Scenario, offers: Sequence[Offer], pools: Sequence[CapacityPool] | None = None) -> Scenario:
    inv = scenario.inventory.inventory
    update: dict[str, Any] = {"offers": tuple(offers)}
    if pools is not None:
        update["pools"] = tuple(pools)
    return with_inventory(scenario, inv.model_copy(update=update))


def mark_outage(scenario: Scenario, change: OutageChange) -> Scenario:
    offers = []
    hit = 0
    for o in scenario.inventory.inventory.offers:
        if _offer_matches(o, change.provider, change.region, change.zone):
            hit += 1
            o = o.model_copy(update={"unavailable_reason": OUTAGE_REASON})
        offers.append(o)
    if not hit:
        raise WhatIfError(f"outage of {describe_change(change).removeprefix('outage of ')} matches no offer")
    return _replace_offers(scenario, offers)


def shock_prices(scenario: Scenario, change: PriceChange) -> Scenario:
    factor = 1.0 + change.percent / 100.0
    offers = []
    hit = 0
    for o in scenario.inventory.inventory.offers:
        if _offer_matches(o, change.provider, change.region, None, change.gpu_model, change.capacity_type):
            hit += 1
            o = o.model_copy(update={"hourly_usd": round(o.hourly_usd * factor, 6)})
        offers.append(o)
    if not hit:
        raise WhatIfError(f"{describe_change(change)}: matches no offer")
    return _replace_offers(scenario, offers)


def cut_capacity(scenario: Scenario, change: ShortageChange, base_usage: Mapping[str, int] | None = None) -> Scenario:
    """Fewer instances of a GPU model; see the module docstring for offers with no known limit."""
    keep = 1.0 - change.percent / 100.0
    usage = base_usage or {}
    inv = scenario.inventory.inventory

    def matches(o: Offer) -> bool:
        return _offer_matches(o, change.provider, gpu_model=change.gpu_model)

    offers = []
    hit = 0
    for o in inv.offers:
        if matches(o):
            hit += 1
            if o.available is not None:
                o = o.model_copy(update={"available": math.floor(o.available * keep + 1e-9)})
            elif change.unlimited == "base-use":
                o = o.model_copy(update={"available": math.floor(usage.get(o.id, 0) * keep + 1e-9)})
        offers.append(o)
    if not hit:
        raise WhatIfError(f"{describe_change(change)}: matches no offer")
    members: dict[str, list[Offer]] = defaultdict(list)
    for o in inv.offers:
        for pool_id in o.pools:
            members[pool_id].append(o)
    pools = [
        p.model_copy(update={"limit": math.floor(p.limit * keep + 1e-9)})
        if p.unit == "gpus" and members.get(p.id) and all(matches(o) for o in members[p.id]) else p
        for p in inv.pools
    ]
    return _replace_offers(scenario, offers, pools)


_PROVIDER_FIELDS = ("provider_kind", "egress_usd_per_gb", "certifications")
_REGION_FIELDS = ("country", "jurisdiction", "location", "carbon_g_per_kwh", "pue", "egress_usd_per_gb",
                  "certifications")


def _errors_text(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(offer)'}: {e['msg'].removeprefix('Value error, ')}"
                     for e in exc.errors(include_url=False))


def add_pool(scenario: Scenario, change: NewPoolChange) -> Scenario:
    """Add the fragment's pools and offers; offers inherit provider and region facts as described above."""
    inv = scenario.inventory.inventory
    by_region: dict[str, Offer] = {}
    by_provider: dict[str, Offer] = {}
    for o in inv.offers:
        by_region.setdefault(o.region_key, o)
        by_provider.setdefault(o.provider, o)
    new_offers: list[Offer] = []
    for i, raw in enumerate(change.offers):
        provider, region = str(raw.get("provider")), str(raw.get("region"))
        merged: dict[str, Any] = {}
        twin = by_region.get(f"{provider}/{region}")
        kin = by_provider.get(provider)
        if twin is not None:
            merged.update({k: getattr(twin, k) for k in (*_PROVIDER_FIELDS, *_REGION_FIELDS)})
        elif kin is not None:
            merged.update({k: getattr(kin, k) for k in _PROVIDER_FIELDS})
        if provider in change.providers:
            info = change.providers[provider]
            merged.update({"provider_kind": info.kind, "egress_usd_per_gb": info.egress_usd_per_gb,
                           "certifications": info.certifications})
        region_info = change.regions.get(f"{provider}/{region}")
        if region_info is not None:
            facts = region_info.model_dump(exclude_none=True)
            certs = tuple(sorted({*merged.get("certifications", ()), *facts.pop("certifications", ())}))
            merged.update(facts)
            merged["certifications"] = certs
        merged.update(raw)
        try:
            new_offers.append(Offer.model_validate(merged))
        except ValidationError as exc:
            hint = "" if twin is not None or region_info is not None else (
                f" (describe the region {provider}/{region} under 'regions': country, jurisdiction, location)")
            raise WhatIfError(f"new_pool offers[{i}]: {_errors_text(exc)}{hint}") from None
    clash = sorted({p.id for p in change.pools} & {p.id for p in inv.pools})
    if clash:
        raise WhatIfError(f"new_pool: capacity pool {', '.join(clash)} already exists in the inventory")
    try:
        inventory = Inventory(snapshot=inv.snapshot, offers=(*inv.offers, *new_offers),
                              pools=(*inv.pools, *change.pools), latency_ms=inv.latency_ms)
    except ValidationError as exc:
        raise WhatIfError(f"new_pool: {_errors_text(exc)}") from None
    return with_inventory(scenario, inventory)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: mappings merge recursively, anything else replaces, None removes."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def patch_policies(scenario: Scenario, change: PolicyChange) -> Scenario:
    merged = merge_patch(scenario.policies.policies.model_dump(mode="json"), change.patch)
    try:
        policies = PolicySet.model_validate(merged)
    except ValidationError as exc:
        raise WhatIfError(f"policy patch: {_errors_text(exc)}") from None
    return with_policies(scenario, policies)


def apply_change(scenario: Scenario, change: Any, base_usage: Mapping[str, int] | None = None) -> Scenario:
    if isinstance(change, TrafficChange):
        return scale_traffic(scenario, change)
    if isinstance(change, OutageChange):
        return mark_outage(scenario, change)
    if isinstance(change, PriceChange):
        return shock_prices(scenario, change)
    if isinstance(change, ShortageChange):
        return cut_capacity(scenario, change, base_usage)
    if isinstance(change, NewPoolChange):
        return add_pool(scenario, change)
    if isinstance(change, PolicyChange):
        return patch_policies(scenario, change)
    raise WhatIfError(f"unknown change {change!r}")


def apply_changes(scenario: Scenario, changes: Iterable[Any], base_usage: Mapping[str, int] | None = None) -> Scenario:
    """Apply changes in order, then check the cross-file references of the result."""
    for change in changes:
        scenario = apply_change(scenario, change, base_usage)
    cross_check(scenario)
    return scenario


# --------------------------------------------------------------------------------------------------
# Measuring plans
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MoveCounts:
    """A variant's placements against the base plan's."""

    moved: int
    created: int
    deleted: int
    kept: int

    @property
    def changed(self) -> int:
        return self.moved + self.created + self.deleted


@dataclass(frozen=True)
class PoolUse:
    """Owned GPUs of one on-prem or edge capacity group (a GPU pool, or an offer with no GPU pool)."""

    pool: str
    region: str
    gpu_models: tuple[str, ...]
    used_gpus: int
    limit_gpus: int

    @property
    def idle_gpus(self) -> int:
        return max(0, self.limit_gpus - self.used_gpus)


@dataclass(frozen=True)
class OwnedUse:
    """GPUs placed on owned capacity against the owned GPUs available in the inventory."""

    used_gpus: int
    available_gpus: int
    pools: tuple[PoolUse, ...]

    @property
    def share(self) -> float | None:
        return self.used_gpus / self.available_gpus if self.available_gpus else None


def offer_usage(plan: Plan) -> dict[str, int]:
    """Instances (nodes) the plan uses per offer."""
    used: dict[str, int] = defaultdict(int)
    for p in plan.placements:
        used[p.offer_id] += p.nodes
    return dict(sorted(used.items()))


def owned_capacity(plan: Plan, scenario: Scenario) -> OwnedUse:
    """Owned GPUs used by the plan, against the GPU pools of the owned offers that are available.

    A capacity group is a GPU-counted pool that owned offers draw on, or an owned offer with a known
    ``available`` and no such pool. Groups whose offers are all unavailable (an outage) count for
    nothing; owned offers with neither a pool nor a limit are left out of the available figure.
    """
    inv = scenario.inventory.inventory
    pools = {p.id: p for p in inv.pools}
    groups: dict[str, dict[str, Any]] = {}
    offer_groups: dict[str, list[str]] = {}
    for o in inv.offers:
        if o.capacity_type != "owned":
            continue
        gpu_pools = [pid for pid in o.pools if pid in pools and pools[pid].unit == "gpus"]
        keys = gpu_pools or ([o.id] if o.available is not None else [])
        offer_groups[o.id] = keys
        for key in keys:
            group = groups.setdefault(key, {"region": o.region_key, "models": set(), "live": False, "limit": 0})
            group["models"].add(o.gpu_model)
            group["live"] = group["live"] or not o.unavailable_reason
            group["limit"] = pools[key].limit if key in pools else (o.available or 0) * o.gpu_count
    used_by_group: dict[str, int] = defaultdict(int)
    used = 0
    for p in plan.placements:
        if p.capacity_type != "owned":
            continue
        gpus = p.nodes * p.gpus_per_node
        used += gpus
        for key in offer_groups.get(p.offer_id, []):
            used_by_group[key] += gpus
    uses = tuple(
        PoolUse(pool=key, region=g["region"], gpu_models=tuple(sorted(g["models"])),
                used_gpus=used_by_group.get(key, 0), limit_gpus=g["limit"] if g["live"] else 0)
        for key, g in sorted(groups.items())
    )
    return OwnedUse(used_gpus=used, available_gpus=sum(u.limit_gpus for u in uses), pools=uses)


def base_view(plan: Plan) -> StateView:
    """The base plan's placements as if they were running: what a variant is diffed against."""
    replicas = tuple(CurrentReplica(p.workload, p.replica, p.provider, p.offer_id, (), p.total_hourly_usd)
                     for p in plan.placements)
    return StateView(serial=0, lineage=None, replicas=replicas)


def move_counts(variant: Plan, base: Plan) -> MoveCounts:
    diffed = attach_state(variant, base_view(base))
    count = {k: sum(1 for a in diffed.actions if a.action == k) for k in ("move", "create", "delete", "keep")}
    return MoveCounts(moved=count["move"], created=count["create"], deleted=count["delete"], kept=count["keep"])


# --------------------------------------------------------------------------------------------------
# Running a what-if
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One column of the comparison: the base scenario or a variant, planned."""

    name: str
    description: str
    changes: tuple[Any, ...]
    plan: Plan
    owned: OwnedUse
    moves: MoveCounts | None  # None for the base


@dataclass(frozen=True)
class WhatIfResult:
    base: Outcome
    variants: tuple[Outcome, ...]

    @property
    def outcomes(self) -> tuple[Outcome, ...]:
        return (self.base, *self.variants)


def whatif_detail(variant: Variant, base_usage: Mapping[str, int]) -> dict[str, Any]:
    """What a variant plan records under its ``whatif`` input, enough to rebuild its scenario."""
    detail: dict[str, Any] = {
        "variant": variant.name,
        "description": variant.description,
        "changes": [CHANGE_ADAPTER.dump_python(c, mode="json") for c in variant.changes],
    }
    shortages = [c for c in variant.changes if isinstance(c, ShortageChange) and c.unlimited == "base-use"]
    if shortages:
        detail["base_usage"] = {k: n for k, n in base_usage.items()}
    return detail


def variant_of_plan(plan: Plan) -> tuple[Variant, dict[str, int]] | None:
    """The variant a what-if plan was made from, and the base usage it used; None for other plans."""
    found = plan.inputs.get(WHATIF_INPUT)
    if found is None:
        return None
    detail = found.detail
    try:
        variant = Variant.model_validate({"name": detail["variant"], "description": detail.get("description", ""),
                                          "changes": detail["changes"]})
    except (KeyError, ValidationError) as exc:
        raise WhatIfError(f"the plan's what-if record is not readable ({exc})") from None
    usage = {str(k): int(v) for k, v in (detail.get("base_usage") or {}).items()}
    return variant, usage


def run_whatif(
    scenario: Scenario,
    variants: Sequence[Variant],
    current: StateView,
    options: PlanOptions | None = None,
) -> WhatIfResult:
    """Plan the base scenario and every variant against the current state, and measure each."""
    opts = options or PlanOptions()
    hint = hint_from_state(current)
    base_plan = attach_state(make_plan(scenario, replace(opts, hint=hint)), current)
    usage = offer_usage(base_plan)
    base = Outcome(BASE_NAME, "the scenario as it is", (), base_plan, owned_capacity(base_plan, scenario), None)
    outcomes = []
    for v in variants:
        try:
            changed = apply_changes(scenario, v.changes, usage)
        except WhatIfError as exc:
            raise WhatIfError(f"variant {v.name!r}: {exc}") from None
        detail = whatif_detail(v, usage)
        extra = dict(opts.extra_inputs or {})
        extra[WHATIF_INPUT] = InputDigest(digest=digest_of(detail), detail=detail)
        raw = make_plan(changed, replace(opts, hint=hint, extra_inputs=extra))
        plan = attach_state(raw, current)
        outcomes.append(Outcome(v.name, v.description, v.changes, plan, owned_capacity(plan, changed),
                                move_counts(raw, base_plan)))
    return WhatIfResult(base=base, variants=tuple(outcomes))


def _r(value: float, digits: int = 4) -> float:
    return round(value + 0.0, digits)


def outcome_document(outcome: Outcome, base: Outcome) -> dict[str, Any]:
    t = outcome.plan.totals
    bt = base.plan.totals
    delta = t.hourly_usd - bt.hourly_usd
    owned = outcome.owned
    return {
        "name": outcome.name,
        "description": outcome.description,
        "changes": [CHANGE_ADAPTER.dump_python(c, mode="json") for c in outcome.changes],
        "changes_text": [describe_change(c) for c in outcome.changes],
        "hourly_usd": t.hourly_usd,
        "monthly_usd": t.monthly_usd,
        "delta_hourly_usd": _r(delta),
        "delta_monthly_usd": _r(delta * HOURS_PER_MONTH, 2),
        "delta_percent": _r(100.0 * delta / bt.hourly_usd, 2) if bt.hourly_usd else None,
        "replicas_placed": t.replicas_placed,
        "replicas_unplaced": t.replicas_unplaced,
        "unplaced": [{"workload": u.workload, "team": u.team, "replicas": u.replicas, "summary": u.summary,
                      "reasons": dict(u.reasons)} for u in outcome.plan.unplaced],
        "moves": None if outcome.moves is None else {
            "moved": outcome.moves.moved, "created": outcome.moves.created, "deleted": outcome.moves.deleted,
            "kept": outcome.moves.kept},
        "gpus": t.gpus,
        "gpu_mix": gpu_mix(outcome.plan),
        "owned": {
            "used_gpus": owned.used_gpus,
            "available_gpus": owned.available_gpus,
            "share": None if owned.share is None else _r(owned.share),
            "pools": [{"pool": u.pool, "region": u.region, "gpu_models": list(u.gpu_models), "used_gpus": u.used_gpus,
                       "limit_gpus": u.limit_gpus} for u in owned.pools],
        },
        "carbon_kg_per_hour": t.carbon_kg_per_hour,
        "delta_carbon_kg_per_hour": _r(t.carbon_kg_per_hour - bt.carbon_kg_per_hour),
        "by_provider": dict(t.by_provider),
        "by_team": dict(t.by_team),
        "solver": {"status": outcome.plan.solver.status, "gap": outcome.plan.solver.gap},
        "plan_digest": outcome.plan.digest,
    }


def whatif_document(result: WhatIfResult) -> dict[str, Any]:
    """The comparison as one JSON-ready document (the same data as the table)."""
    base = result.base
    inputs = {k: v.digest for k, v in sorted(base.plan.inputs.items())}
    return {
        "format_version": 1,
        "kind": "placement-whatif",
        "inputs": inputs,
        "base": outcome_document(base, base),
        "variants": [outcome_document(o, base) for o in result.variants],
    }
