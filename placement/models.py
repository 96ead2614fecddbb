"""The engine's value types: workloads, offers (inventory), policies and plans.

Every model is a frozen pydantic v2 model that rejects unknown fields, so a typo in a YAML file is an
error rather than a silently ignored key. Names carry their units (``hourly_usd``, ``memory_gib``,
``max_latency_ms``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from placement.gpus import GPU_MODELS, known_gpu_names, resolve_gpu

ProviderKind = Literal["hyperscaler", "specialist", "on-prem", "edge"]
CapacityType = Literal["on-demand", "spot", "reserved", "owned"]
WorkloadKind = Literal["service", "batch"]
PoolUnit = Literal["instances", "gpus", "vcpus"]

NonNegFloat = Annotated[float, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 country code")]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _gpu_name(value: str) -> str:
    found = resolve_gpu(value)
    if found is None:
        raise ValueError(f"unknown GPU model {value!r}; known models: {', '.join(known_gpu_names())}")
    return found[0]


class GeoPoint(Frozen):
    lat: float = Field(ge=-90, le=90, description="latitude in degrees")
    lon: float = Field(ge=-180, le=180, description="longitude in degrees")


# --------------------------------------------------------------------------------------------------
# Inventory
# --------------------------------------------------------------------------------------------------


class Offer(Frozen):
    """One purchasable shape: an instance type (or on-prem node shape) in one place and capacity type.

    ``available`` is how many more instances can be had (capacity or quota headroom); None means no
    known limit. Shared limits (a regional vCPU quota, an on-prem pool's GPUs) are capacity pools that
    several offers draw from. An offer that cannot be bought right now keeps its place in the
    inventory with ``unavailable_reason`` set, so that explanations can name it.
    """

    id: str = Field(default="", description="unique id; derived from provider/region/zone/type/capacity")
    provider: Name
    provider_kind: ProviderKind
    region: Name
    zone: Name | None = None
    country: CountryCode
    jurisdiction: Annotated[str, Field(min_length=2, max_length=16)]
    certifications: tuple[str, ...] = ()
    instance_type: Annotated[str, Field(min_length=1)]
    gpu_model: str
    gpu_count: PosInt
    gpu_memory_gib: Annotated[float, Field(gt=0)]
    vcpus: PosInt
    memory_gib: Annotated[float, Field(gt=0)]
    capacity_type: CapacityType
    hourly_usd: NonNegFloat = Field(description="price of one instance per hour, USD")
    available: NonNegInt | None = Field(default=None, description="instances obtainable; null = unlimited")
    pools: tuple[str, ...] = Field(default=(), description="ids of shared capacity pools this offer draws on")
    carbon_g_per_kwh: NonNegFloat | None = None
    pue: Annotated[float, Field(ge=1.0, le=3.0)] = 1.0
    gpu_power_kw: Annotated[float, Field(gt=0)] | None = None
    location: GeoPoint
    egress_usd_per_gb: NonNegFloat = 0.0
    unavailable_reason: str | None = None

    @field_validator("gpu_model", mode="before")
    @classmethod
    def _canon_gpu(cls, value: Any) -> Any:
        return _gpu_name(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _derive_id(self) -> Offer:
        if not self.id:
            parts = [self.provider, self.region, *([self.zone] if self.zone else []), self.instance_type,
                     self.capacity_type]
            object.__setattr__(self, "id", "/".join(parts))
        return self

    @property
    def region_key(self) -> str:
        return f"{self.provider}/{self.region}"

    @property
    def gpu_family(self) -> str:
        return GPU_MODELS[self.gpu_model].family


class CapacityPool(Frozen):
    """A limit shared by several offers: quota headroom, an on-prem cluster's free GPUs, ..."""

    id: Annotated[str, Field(min_length=1)]
    limit: NonNegInt
    unit: PoolUnit
    description: str = ""


class SnapshotInfo(Frozen):
    name: str
    taken_on: dt.date
    prices: str = Field(description="what the prices are, e.g. 'public list prices'")
    sources: tuple[str, ...] = ()
    notes: str = ""
    # Providers whose offers were carried over from an older snapshot because a refresh failed.
    stale_providers: tuple[str, ...] = ()
    # When each provider's offers were read (UTC ISO 8601), for refreshed snapshots.
    provider_taken_at: dict[str, str] = Field(default_factory=dict)


class Inventory(Frozen):
    snapshot: SnapshotInfo
    offers: tuple[Offer, ...]
    pools: tuple[CapacityPool, ...] = ()
    # Measured latency in ms from a users' location name to "provider/region". Wins over estimates.
    latency_ms: dict[str, dict[str, NonNegFloat]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Inventory:
        seen: set[str] = set()
        for offer in self.offers:
            if offer.id in seen:
                raise ValueError(f"duplicate offer id {offer.id!r}")
            seen.add(offer.id)
        pool_ids = {p.id for p in self.pools}
        for offer in self.offers:
            for pool in offer.pools:
                if pool not in pool_ids:
                    raise ValueError(f"offer {offer.id!r} refers to unknown capacity pool {pool!r}")
        return self

    def region_keys(self) -> set[str]:
        return {o.region_key for o in self.offers}


# --------------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------------


class GpuRequest(Frozen):
    """GPUs per replica.

    ``count`` is in GPUs of the reference model, the first model listed. An alternative model needs
    ``ceil(count × t_ref / t_model)`` GPUs, where ``t`` is the relative throughput: with
    ``throughput: {A100: 1, H100: 2}`` and ``count: 2``, one H100 stands in for two A100s.

    ``max_nodes`` caps how many instances one replica may span. It defaults to 1 for services
    (a replica is one machine) and to no limit for batch work (multi-node training).
    """

    models: Annotated[tuple[str, ...], Field(min_length=1)]
    count: PosInt
    min_memory_gib: NonNegFloat = 0.0
    throughput: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    max_nodes: PosInt | None = None

    @field_validator("models", mode="before")
    @classmethod
    def _canon_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            return tuple(_gpu_name(v) if isinstance(v, str) else v for v in value)
        return value

    @field_validator("throughput", mode="before")
    @classmethod
    def _canon_throughput(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {(_gpu_name(k) if isinstance(k, str) else k): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _check(self) -> GpuRequest:
        if len(set(self.models)) != len(self.models):
            raise ValueError("models lists the same GPU model twice")
        extra = set(self.throughput) - set(self.models)
        if extra:
            raise ValueError(f"throughput names models not in models: {', '.join(sorted(extra))}")
        return self


class UserLocation(Frozen):
    name: Name
    location: GeoPoint
    max_latency_ms: Annotated[float, Field(gt=0)]


class Residency(Frozen):
    countries: tuple[CountryCode, ...] = ()
    regions: tuple[str, ...] = Field(default=(), description="'provider/region' or a bare region name")
    jurisdictions: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (self.countries or self.regions or self.jurisdictions)


class Spread(Frozen):
    min_providers: PosInt = 1
    min_regions: PosInt = 1


class Dataset(Frozen):
    """Where a workload's data lives. Compute elsewhere pays egress from the data's region."""

    provider: Name
    region: Name
    size_gb: NonNegFloat
    amortization_hours: Annotated[float, Field(gt=0)] = Field(
        default=730.0, description="hours over which a one-off copy of the data is spread (default: a month)"
    )

    @property
    def region_key(self) -> str:
        return f"{self.provider}/{self.region}"


class Migration(Frozen):
    """What moving a running workload costs, and whether it may be moved by re-optimisation at all."""

    do_not_move: bool = Field(default=False, description="never moved by `placement reoptimize`")
    restart_minutes: NonNegFloat | None = Field(
        default=None, description="time a replica needs to start serving again elsewhere; default: policy")
    state_gb: NonNegFloat | None = Field(
        default=None, description="checkpoint or data carried to the new place per move; default: policy")
    remaining_hours: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="batch work: expected remaining runtime, the horizon a move must pay back in")


class Workload(Frozen):
    name: Name
    team: Name
    kind: WorkloadKind = "service"
    replicas: PosInt = 1
    min_replicas: PosInt | None = Field(
        default=None, description="fewest replicas worth running; default: all replicas or none"
    )
    gpu: GpuRequest
    vcpus: PosInt = 1
    memory_gib: Annotated[float, Field(gt=0)] = 1.0
    interruptible: bool = Field(default=False, description="spot / preemptible capacity allowed")
    priority: Annotated[int, Field(ge=1, le=1000)] = 100
    data_class: Name | None = None
    residency: Residency = Field(default_factory=Residency)
    users: tuple[UserLocation, ...] = ()
    budget_hourly_usd: NonNegFloat | None = None
    spread: Spread = Field(default_factory=Spread)
    dataset: Dataset | None = None
    migration: Migration = Field(default_factory=Migration)
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Workload:
        if self.min_replicas is not None and self.min_replicas > self.replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is larger than replicas ({self.replicas})")
        if self.spread.min_providers > self.replicas or self.spread.min_regions > self.replicas:
            raise ValueError("spread asks for more distinct providers or regions than there are replicas")
        return self

    @property
    def max_nodes(self) -> int | None:
        """Most instances one replica may span: the request's limit, else 1 for services."""
        if self.gpu.max_nodes is not None:
            return self.gpu.max_nodes
        return 1 if self.kind == "service" else None

    @property
    def fewest_replicas(self) -> int:
        return self.replicas if self.min_replicas is None else self.min_replicas


class WorkloadSet(Frozen):
    workloads: tuple[Workload, ...]

    @model_validator(mode="after")
    def _unique(self) -> WorkloadSet:
        seen: set[str] = set()
        for w in self.workloads:
            if w.name in seen:
                raise ValueError(f"duplicate workload name {w.name!r}")
            seen.add(w.name)
        return self


# --------------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------------


class DataClassRule(Frozen):
    description: str = ""
    allowed_jurisdictions: tuple[str, ...] = ()
    allowed_countries: tuple[CountryCode, ...] = ()
    allowed_providers: tuple[str, ...] = ()
    allowed_provider_kinds: tuple[ProviderKind, ...] = ()
    required_certifications: tuple[str, ...] = ()
    interruptible_allowed: bool = True


class TeamRule(Frozen):
    budget_hourly_usd: NonNegFloat | None = None
    budget_monthly_usd: NonNegFloat | None = None
    max_interruptible_share: Annotated[float, Field(ge=0, le=1)] | None = None

    @property
    def hourly_limit_usd(self) -> float | None:
        """The tighter of the hourly budget and the monthly budget spread over 730 hours."""
        limits = [b for b in (self.budget_hourly_usd,
                              None if self.budget_monthly_usd is None else self.budget_monthly_usd / 730.0)
                  if b is not None]
        return min(limits) if limits else None


class GpuPolicy(Frozen):
    allowed: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()
    # Relative throughput per model, used for workloads that give none of their own.
    throughput: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)

    @field_validator("allowed", "forbidden", mode="before")
    @classmethod
    def _canon(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(_gpu_name(v) if isinstance(v, str) else v for v in value)
        return value

    @field_validator("throughput", mode="before")
    @classmethod
    def _canon_tp(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {(_gpu_name(k) if isinstance(k, str) else k): v for k, v in value.items()}
        return value


class Preferences(Frozen):
    """Soft preferences, in USD per hour so that they trade off against cost honestly."""

    carbon_usd_per_tonne: NonNegFloat = Field(default=0.0, description="shadow price of CO2e")
    owned_bonus_usd_per_gpu_hour: NonNegFloat = 0.0
    provider_bonus_usd_per_hour: dict[str, NonNegFloat] = Field(default_factory=dict)


class SpreadPolicy(Frozen):
    """Spread every workload of these kinds must have, when it has enough replicas for it."""

    min_providers: PosInt = 1
    min_regions: PosInt = 1
    kinds: tuple[WorkloadKind, ...] = ("service",)


class DisruptionBudget(Frozen):
    """How many workloads one re-optimisation run may move, optionally only inside a cron window.

    Like Karpenter's disruption budgets: a budget with ``schedule`` applies from each time the cron
    expression fires until ``duration`` later (in ``timezone``); a budget without one always applies.
    ``teams`` and ``providers`` narrow it to workloads of those teams or currently on those providers.
    Where several budgets apply to a workload, each of them holds.
    """

    max_moves: NonNegInt | None = None
    max_moves_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    teams: tuple[Name, ...] = ()
    providers: tuple[Name, ...] = ()
    schedule: str | None = Field(default=None, description="cron expression (5 fields) opening the window")
    duration: str | None = Field(default=None, description="window length, e.g. '2h', '90m', '1h30m'")
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _check(self) -> DisruptionBudget:
        if (self.max_moves is None) == (self.max_moves_percent is None):
            raise ValueError("give exactly one of max_moves and max_moves_percent")
        if (self.schedule is None) != (self.duration is None):
            raise ValueError("schedule and duration go together")
        if self.schedule is not None:
            from placement.cron import check_cron, parse_duration

            check_cron(self.schedule, self.timezone)
            parse_duration(self.duration or "")
        return self


class AutoApply(Frozen):
    """When `placement reoptimize --apply` may apply without review."""

    enabled: bool = False
    same_jurisdiction_only: bool = Field(default=True, description="every move stays in its jurisdiction")
    min_saving_usd_per_hour: NonNegFloat = Field(default=0.0, description="the run's moves save at least this")
    max_moves: NonNegInt | None = None
    providers: tuple[Name, ...] = Field(default=(), description="moves only to and from these; empty: any")


def _per_kind(service: float, batch: float) -> dict[WorkloadKind, float]:
    return {"service": service, "batch": batch}


class ReoptimizationPolicy(Frozen):
    """When `placement reoptimize` moves running work: only when the saving pays for the move."""

    min_saving_usd_per_hour: NonNegFloat = Field(default=0.10, description="per moved workload")
    min_saving_percent: Annotated[float, Field(ge=0, le=100)] = Field(
        default=5.0, description="per moved workload, of its current hourly cost")
    max_payback_hours: Annotated[float, Field(gt=0)] = Field(
        default=168.0, description="migration cost / hourly saving must not exceed this")
    service_horizon_hours: Annotated[float, Field(gt=0)] = Field(
        default=720.0, description="hours over which a service's move is amortised")
    batch_remaining_hours: Annotated[float, Field(gt=0)] = Field(
        default=24.0, description="expected remaining runtime of batch work that states none")
    restart_minutes: dict[WorkloadKind, NonNegFloat] = Field(
        default_factory=lambda: _per_kind(10.0, 20.0), description="default per kind when a workload states none")
    state_gb: dict[WorkloadKind, NonNegFloat] = Field(
        default_factory=lambda: _per_kind(0.0, 0.0), description="default per kind when a workload states none")
    max_moves: NonNegInt | None = Field(default=None, description="moves per run; none: no count limit")
    max_moves_percent: Annotated[float, Field(ge=0, le=100)] | None = Field(
        default=10.0, description="moves per run, percent of running workloads (rounded down, at least 1)")
    disruption_budgets: tuple[DisruptionBudget, ...] = ()
    do_not_move: tuple[str, ...] = Field(default=(), description="workload names or glob patterns")
    auto_apply: AutoApply = Field(default_factory=AutoApply)


class SolverSettings(Frozen):
    max_deterministic_time: Annotated[float, Field(gt=0)] = 30.0
    workers: Annotated[int, Field(ge=1, le=64)] = 2
    seed: int = 0


class PolicySet(Frozen):
    data_classes: dict[str, DataClassRule] = Field(default_factory=dict)
    teams: dict[str, TeamRule] = Field(default_factory=dict)
    gpus: GpuPolicy = Field(default_factory=GpuPolicy)
    allowed_providers: tuple[str, ...] = ()
    forbidden_providers: tuple[str, ...] = ()
    forbidden_regions: tuple[str, ...] = ()
    preferences: Preferences = Field(default_factory=Preferences)
    spread: SpreadPolicy = Field(default_factory=SpreadPolicy)
    reoptimization: ReoptimizationPolicy = Field(default_factory=ReoptimizationPolicy)
    solver: SolverSettings = Field(default_factory=SolverSettings)


# --------------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------------

PLAN_FORMAT_VERSION: Literal[1] = 1


class InputDigest(Frozen):
    digest: str
    files: tuple[str, ...] = ()
    detail: dict[str, Any] = Field(default_factory=dict)


class Placement(Frozen):
    workload: str
    replica: NonNegInt
    team: str
    offer_id: str
    provider: str
    provider_kind: ProviderKind
    region: str
    zone: str | None
    country: str
    jurisdiction: str
    instance_type: str
    capacity_type: CapacityType
    gpu_model: str
    gpus_per_node: int
    nodes: PosInt
    hourly_usd: float = Field(description="instance cost of this replica per hour")
    egress_hourly_usd: float = Field(description="data egress amortised per hour")
    carbon_kg_per_hour: float | None
    latency_ms: dict[str, float] = Field(default_factory=dict)
    reasons: tuple[str, ...] = ()

    @property
    def total_hourly_usd(self) -> float:
        return self.hourly_usd + self.egress_hourly_usd


class Unplaced(Frozen):
    workload: str
    team: str
    replicas: PosInt
    summary: str
    reasons: dict[str, int] = Field(default_factory=dict)


class SolverStats(Frozen):
    method: str
    status: str
    objective: float
    best_bound: float
    gap: float
    deterministic_time: float
    variables: int
    candidates_total: int
    candidates_kept: int
    wall_time_s: float | None = None
    # Penalty that every plan pays for the workloads no plan can place (in objective and bound
    # alike). Where it is set, gap = (objective - best_bound) / (objective - fixed_penalty), so
    # that the gap is not flattered by it. Left out of the plan file when 0, so that plans of the
    # exact path, and plans written before the field existed, keep their bytes and digest.
    fixed_penalty: float = 0.0

    @model_serializer(mode="wrap")
    def _without_zero_fixed_penalty(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if not self.fixed_penalty:
            out.pop("fixed_penalty", None)
        return out


_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class Totals(Frozen):
    hourly_usd: float
    monthly_usd: float
    instance_hourly_usd: float
    egress_hourly_usd: float
    gpus: int
    replicas_placed: int
    replicas_unplaced: int
    carbon_kg_per_hour: float
    by_provider: dict[str, float]
    by_team: dict[str, float]


class IdleOwned(Frozen):
    """Owned GPUs of one pool that no planned replica uses, and what they cost per hour anyway."""

    pool: str
    provider: str
    region: str
    gpu_model: str
    gpus_free: int = Field(description="free GPUs in the inventory (the pool's limit)")
    gpus_planned: int = Field(description="GPUs the plan starts there")
    gpus_idle: int
    gpu_hour_usd: float = Field(description="internal cost of one GPU-hour")
    idle_hourly_usd: float


ActionKind = Literal["create", "delete", "move", "keep"]


class Action(Frozen):
    """One change against the current state. Moves are make-before-break: create, then delete."""

    id: str
    action: ActionKind
    workload: str
    replica: NonNegInt
    provider: str | None = Field(default=None, description="where the replica will run (create, move, keep)")
    offer_id: str | None = None
    from_provider: str | None = Field(default=None, description="where it runs now (delete, move, keep)")
    from_offer_id: str | None = None
    from_resource_ids: tuple[str, ...] = ()
    hourly_usd_delta: float = 0.0
    reason: str = ""
    # Moves found by `placement reoptimize`: one-off cost of moving and the hours it takes to pay back.
    migration_usd: float | None = None
    payback_hours: float | None = None


class Reoptimization(Frozen):
    """What a re-optimisation run found, moved and held back, in $/h."""

    current_hourly_usd: float
    planned_hourly_usd: float
    unconstrained_hourly_usd: float = Field(description="cost of a fresh plan that ignores moving costs and budgets")
    saving_usd_per_hour: float = Field(description="what the moved workloads save, at today's prices")
    available_saving_usd_per_hour: float = Field(description="what the unconstrained re-plan's moves would save")
    migration_usd: float
    moves: int
    moves_allowed: int | None
    forced_moves: tuple[str, ...] = Field(
        default=(), description="workloads moved because where they run is no longer admitted (outside the budgets)")
    running_workloads: int
    held_back: dict[str, str] = Field(default_factory=dict, description="workload -> why it was not moved")
    stale_providers: tuple[str, ...] = ()
    budgets: tuple[str, ...] = Field(default=(), description="the budgets that applied at planning time")
    evaluated_at: str


class Plan(Frozen):
    format_version: Literal[1] = PLAN_FORMAT_VERSION
    kind: Literal["placement-plan"] = "placement-plan"
    inputs: dict[str, InputDigest]
    placements: tuple[Placement, ...]
    unplaced: tuple[Unplaced, ...]
    totals: Totals
    solver: SolverStats
    actions: tuple[Action, ...] = ()
    idle_owned: tuple[IdleOwned, ...] = ()
    reoptimization: Reoptimization | None = None
    digest: str = ""

    def changes(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.action != "keep")

    @field_validator("digest")
    @classmethod
    def _digest_shape(cls, value: str) -> str:
        if value and not _DIGEST_RE.match(value):
            raise ValueError("digest must look like 'sha256:<64 hex digits>'")
        return value
