"""What Kubernetes and Slurm pools have in common: the site, the internal cost and the slice offers.

An owned cluster is sold to the planner as *slices*: 1, 2, 4, … GPUs of one node shape, priced at the
site's internal amortised cost per GPU-hour, with ``available`` = how many such slices fit in the GPUs
free right now (node by node, so fragmentation counts) and a GPU pool per site and model bounding
their total. The internal cost per node-hour is

    capital_usd / (lifetime_years × 8,760 h)          amortised purchase (and installation)
  + power_kw × site PUE × electricity_usd_per_kwh     energy at the wall, cooling included
  + operations_usd_per_hour                           support contracts, staff, space

divided by the node's GPUs. Without a cost section an owned GPU would look free (as dstack's SSH
fleets record it); the comparison with clouds is only honest with the cost in.

Example (one pool in ``providers.yaml``)::

    site:
      region: fra-dc1
      country: DE
      jurisdiction: EU
      location: {lat: 50.11, lon: 8.68}
      pue: 1.5
      electricity_usd_per_kwh: 0.20
      carbon_g_per_kwh: 380
      certifications: [ISO27001]
    costs:
      H100: {capital_usd: 300000, lifetime_years: 4, power_kw: 10.2}
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from placement.gpus import GPU_MODELS, GPU_POWER_KW, resolve_gpu
from placement.models import CapacityPool, CountryCode, GeoPoint, Name, Offer

HOURS_PER_YEAR = 8760.0


class NodeCost(BaseModel):
    """Cost of owning one node of a GPU model, as finance states it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    capital_usd: Annotated[float, Field(ge=0, description="purchase and installation of one node")]
    lifetime_years: Annotated[float, Field(gt=0, le=15)] = 4.0
    power_kw: Annotated[float | None, Field(gt=0, description="node draw at load; default: GPUs' board power × 1.4")] = None
    operations_usd_per_hour: Annotated[float, Field(ge=0, description="support, staff and space per node-hour")] = 0.0


class Site(BaseModel):
    """Where an owned cluster stands and what running it costs per kWh."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: Name
    kind: Literal["on-prem", "edge"] = "on-prem"
    country: CountryCode
    jurisdiction: Annotated[str, Field(min_length=2, max_length=16)]
    location: GeoPoint
    pue: Annotated[float, Field(ge=1.0, le=3.0)] = 1.4
    electricity_usd_per_kwh: Annotated[float, Field(ge=0)] = 0.20
    carbon_g_per_kwh: Annotated[float | None, Field(ge=0)] = None
    certifications: tuple[str, ...] = ()
    egress_usd_per_gb: Annotated[float, Field(ge=0)] = 0.0


def _canonical_model(value: str) -> str:
    found = gpu_from_product(value)
    if found is None:
        raise ValueError(f"unknown GPU model {value!r} (known: {', '.join(sorted(GPU_MODELS))})")
    return found[0]


class OnPremSettings(BaseModel):
    """The part of a Kubernetes or Slurm pool's settings that prices and places it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    site: Site
    costs: dict[str, NodeCost] = Field(
        default_factory=dict, description="internal cost per GPU model (canonical name or alias)"
    )
    gpu_models: dict[str, str] = Field(
        default_factory=dict, description="product name as the cluster reports it -> GPU model"
    )
    slice_sizes: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        default=(), description="GPU counts sold as slices; empty: 1, 2, 4, … up to a whole node"
    )

    @field_validator("costs", mode="after")
    @classmethod
    def _canon_costs(cls, value: dict[str, NodeCost]) -> dict[str, NodeCost]:
        return {_canonical_model(k): v for k, v in value.items()}

    @field_validator("gpu_models", mode="after")
    @classmethod
    def _canon_models(cls, value: dict[str, str]) -> dict[str, str]:
        return {k: _canonical_model(v) for k, v in value.items()}

    def model_of(self, product: str) -> tuple[str, int | None] | None:
        """Canonical GPU model (and memory in GiB when the name says) of a product name."""
        found = gpu_from_product(product)
        if product in self.gpu_models:
            return self.gpu_models[product], found[1] if found else None
        return found

    def gpu_hour_usd(self, model: str, gpus_per_node: int) -> float | None:
        """Internal cost of one GPU-hour of ``model`` on nodes with ``gpus_per_node`` GPUs; None if unpriced."""
        cost = self.costs.get(model)
        if cost is None:
            return None
        power = cost.power_kw if cost.power_kw is not None else GPU_POWER_KW.get(model, 0.3) * gpus_per_node * 1.4
        node_hour = (
            cost.capital_usd / (cost.lifetime_years * HOURS_PER_YEAR)
            + power * self.site.pue * self.site.electricity_usd_per_kwh
            + cost.operations_usd_per_hour
        )
        return node_hour / gpus_per_node


_MEMORY = re.compile(r"(\d{2,3})\s*G(?:B|I?B)?\b", re.IGNORECASE)


def gpu_from_product(product: str) -> tuple[str, int | None] | None:
    """Canonical model and memory of a product name such as ``NVIDIA-H100-80GB-HBM3`` or ``a100_80g``.

    Tries the catalogue's aliases first, then the longest known model name found as a token.
    """
    direct = resolve_gpu(product)
    if direct is not None:
        return direct
    text = product.upper().replace("_", "-").replace(" ", "-")
    tokens = [t for t in re.split(r"[-/]", text) if t]
    best: str | None = None
    for name in GPU_MODELS:
        upper = name.upper()
        hit = upper in tokens or ("-" in upper and f"-{upper}-" in f"-{text}-")
        if hit and (best is None or len(name) > len(best)):
            best = name
    if best is None:
        return None
    memory = _MEMORY.search(text.replace(best.upper(), ""))
    mem = int(memory.group(1)) if memory else None
    if mem is not None and mem not in GPU_MODELS[best].memory_gib:
        mem = None
    return best, mem


@dataclass(frozen=True)
class OwnedNode:
    """One node of an owned cluster as the cluster reports it."""

    name: str
    gpu_model: str  # canonical
    gpu_memory_gib: float
    gpus_total: int
    gpus_free: int
    vcpus: int
    memory_gib: float
    schedulable: bool = True


@dataclass(frozen=True)
class OwnedCapacity:
    """Owned GPUs of one model at one site: what exists, what is free, what one GPU-hour costs."""

    pool_id: str
    gpu_model: str
    gpus_total: int
    gpus_free: int
    gpu_hour_usd: float | None


def default_slice_sizes(gpus_per_node: int) -> list[int]:
    sizes, k = [], 1
    while k < gpus_per_node:
        sizes.append(k)
        k *= 2
    sizes.append(gpus_per_node)
    return sizes


def pool_id(provider: str, region: str, model: str, gpus_per_node: int) -> str:
    return f"{provider}/{region}/{model.lower()}-{gpus_per_node}g"


def slice_offers(
    provider: str,
    settings: OnPremSettings,
    nodes: Iterable[OwnedNode],
    *,
    type_prefix: str,
) -> tuple[list[Offer], list[CapacityPool], list[OwnedCapacity]]:
    """Slice offers, GPU pools and the owned-capacity summary of a cluster's nodes.

    Nodes are grouped by shape (model, GPUs per node, GPU memory). Unschedulable nodes count as owned
    but not free. A shape without an internal cost is still listed, with ``unavailable_reason`` saying
    the cost is missing, so that the gap is visible rather than priced at zero.
    """
    site = settings.site
    groups: dict[tuple[str, int, float], list[OwnedNode]] = defaultdict(list)
    for node in nodes:
        if node.gpus_total > 0:
            groups[(node.gpu_model, node.gpus_total, node.gpu_memory_gib)].append(node)
    offers: list[Offer] = []
    pools: list[CapacityPool] = []
    owned: list[OwnedCapacity] = []
    shapes: dict[tuple[str, int], int] = defaultdict(int)
    for model, per_node, _memory in groups:
        shapes[(model, per_node)] += 1
    for (model, per_node, memory), members in sorted(groups.items()):
        free = [max(0, min(n.gpus_free, n.gpus_total)) if n.schedulable else 0 for n in members]
        # Two memory variants of one model and node size (H100 80 and 94 GB) need names of their own.
        variant = f"{model}-{memory:g}gb" if shapes[(model, per_node)] > 1 else model
        pid = pool_id(provider, site.region, variant, per_node)
        price = settings.gpu_hour_usd(model, per_node)
        total = sum(n.gpus_total for n in members)
        pools.append(CapacityPool(
            id=pid, unit="gpus", limit=sum(free),
            description=f"{site.region}: {len(members)} node(s) with {per_node}x {model} {memory:g} GiB, "
                        f"{sum(free)} of {total} GPUs free",
        ))
        owned.append(OwnedCapacity(pid, model, total, sum(free), price))
        vcpus = min(n.vcpus for n in members)
        mem_gib = min(n.memory_gib for n in members)
        sizes = [k for k in (settings.slice_sizes or default_slice_sizes(per_node)) if k <= per_node]
        for k in sizes:
            offers.append(Offer(
                provider=provider,
                provider_kind=site.kind,
                region=site.region,
                country=site.country,
                jurisdiction=site.jurisdiction,
                certifications=site.certifications,
                instance_type=f"{type_prefix}-{variant.lower()}-{per_node}g-slice-{k}g",
                gpu_model=model,
                gpu_count=k,
                gpu_memory_gib=memory,
                vcpus=max(1, vcpus * k // per_node),
                memory_gib=max(1.0, round(mem_gib * k / per_node, 1)),
                capacity_type="owned",
                hourly_usd=round((price or 0.0) * k, 4),
                available=sum(f // k for f in free),
                pools=(pid,),
                carbon_g_per_kwh=site.carbon_g_per_kwh,
                pue=site.pue,
                location=site.location,
                egress_usd_per_gb=site.egress_usd_per_gb,
                unavailable_reason=None if price is not None else
                f"no internal cost configured for {model} (costs.{model} in the pool's settings)",
            ))
    return offers, pools, owned
