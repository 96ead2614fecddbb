"""Benchmark instances, built directly as engine model objects (no YAML).

Every instance is a pure function of its name: the same name gives the same workloads, offers and
policies on every machine (fixed seeds, ``random.Random`` only, sorted iteration everywhere).

Synthetic instances
-------------------
``<size>-<variant>`` with sizes

    small  100 workloads x 50 offers        medium  1,000 x 200       large  10,000 x 1,000
    xl     50,000 x 2,500                    xxl     100,000 x 5,000

and variants

    loose       plenty of capacity; few residency rules; shared limits rarely bind
    tight       every offer has a small availability: per GPU model, the offers together hold ~2.2x
                the GPUs requested (first-choice model), spread unevenly; since an instance is the
                unit (a 1-GPU replica on an 8-GPU offer takes the whole instance) only ~80-90 % of
                the replicas fit. Quota pools at 70-100 % of what their offers could give, team
                budgets on a third of the teams: capacity binds everywhere
    residency   70 % of workloads carry residency (jurisdiction / country / region), 30 % a data class,
                25 % of services a latency limit to their users; capacity as in loose
    infeasible  capacity as tight, plus ~15 % of workloads that cannot be placed at all (GPU model
                offered nowhere, memory no GPU has, a jurisdiction with no offers, a 1 ms latency
                limit, a $0.01/h budget)

Offers are drawn over 12 GPU models, ~30 metros on four continents, hyperscalers (zones, on-demand and
spot, vCPU quota pools), specialist clouds (on-demand, some spot, per-offer availability) and on-prem
sites (owned capacity in GPU pools). Prices are list-price-like per-GPU rates x a regional factor x
noise; spot is 35-60 % of on-demand.

Real-data instances (need /work/shared/data; see SOURCE.md files there)
-----------------------------------------------------------------------
``catalog-1k`` / ``catalog-10k``
    Real offers: GCP (SkyPilot v9 excerpt, machine + GPU rows joined by the engine's reader),
    Nebius, Verda, Hyperstack (SkyPilot CSVs via ``placement.catalog.read_skypilot_catalog``), AWS
    (moto's instance shapes joined with libcloud on-demand prices) and Azure (libcloud on-demand
    prices; GPU counts and shapes of the NCv2/NCv3/NCasT4_v3/NDv2 sizes typed in from Azure's public
    size tables; K80/M60/P40/MI25 sizes are skipped because the engine does not know those GPUs).
    Country, jurisdiction and location per region come from the table ``REAL_REGIONS`` below. The
    catalogs carry no capacity: availability and quota pools are synthetic (seeded), and the
    workloads are synthetic (the generator below, restricted to the GPU models the catalogs offer).
``alibaba-pooled`` / ``alibaba-nodes`` / ``alibaba-nodes-8th`` / ``alibaba-hybrid``
    Alibaba cluster-trace-gpu-v2023, pod list ``openb_pod_list_gpuspec33.csv`` (33 % of pods carry a
    ``gpu_spec``): every pod with num_gpu >= 1 is a one-replica service workload whose GPU
    alternatives are its ``gpu_spec`` (all cluster models when empty). GPU nodes
    (``openb_node_list_gpu_node.csv``) are owned capacity:
      * pooled  - one capacity pool (unit gpus) per node shape (model, GPUs, CPU, memory), with slice
                  offers of 1/2/4/8 GPUs; the engine's documented idiom for on-prem clusters
                  (fragmentation ignored)
      * nodes   - one pool per node (1,213 pools) with slice offers per node: real bin packing
      * nodes-8th - a seeded 1/8 sample of nodes and pods of the above, small enough for the engine
      * hybrid  - pooled, plus real cloud offers (AWS, Azure, Verda) of the trace's public GPU models
                  (T4, P100, V100) for bursting
    Limitations, all forced by the engine's model: GPU-sharing pods (gpu_milli < 1000, 3,078 pods)
    take a whole GPU (no fractional GPUs); a slice offers its node's full CPU and memory (pools
    count GPUs; the engine cannot pool a workload's own vCPU request); G2/G3 are undisclosed models
    and stand in as ``A40`` / ``L40`` (neither occurs elsewhere in those instances); V100M16/V100M32
    become V100 with 16/32 GiB. Owned capacity is priced at an assumed amortised cost per GPU-hour
    (``ALIBABA_GPU_HOURLY_USD``) so that the objective is not flat.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from placement.models import (
    CapacityPool,
    DataClassRule,
    Inventory,
    Offer,
    PolicySet,
    SnapshotInfo,
    TeamRule,
    Workload,
)

DATA_DIR = Path("/work/shared/data")
CATALOG_DIR = DATA_DIR / "catalog"
TRACE_DIR = DATA_DIR / "traces" / "alibaba-gpu-2023"

SIZES: dict[str, tuple[int, int]] = {
    "small": (100, 50),
    "medium": (1_000, 200),
    "large": (10_000, 1_000),
    "xl": (50_000, 2_500),
    "xxl": (100_000, 5_000),
}
VARIANTS = ("loose", "tight", "residency", "infeasible")
REAL_INSTANCES = ("catalog-1k", "catalog-10k", "alibaba-pooled", "alibaba-hybrid", "alibaba-nodes-8th",
                  "alibaba-nodes")


@dataclass
class Instance:
    name: str
    group: str  # size name, "catalog" or "alibaba"
    description: str
    workloads: tuple[Workload, ...]
    inventory: Inventory
    policies: PolicySet
    notes: list[str] = field(default_factory=list)

    @property
    def pairs(self) -> int:
        return len(self.workloads) * len(self.inventory.offers)

    def stats(self) -> dict[str, Any]:
        return {
            "workloads": len(self.workloads),
            "offers": len(self.inventory.offers),
            "pools": len(self.inventory.pools),
            "replicas": sum(w.replicas for w in self.workloads),
            "gpus_requested": sum(w.replicas * w.gpu.count for w in self.workloads),
            "pairs": self.pairs,
        }


def all_names() -> list[str]:
    return [f"{s}-{v}" for s in SIZES for v in VARIANTS] + list(REAL_INSTANCES)


def group_of(name: str) -> str:
    head = name.split("-")[0]
    return head


def data_available() -> tuple[bool, str]:
    missing = [p for p in (CATALOG_DIR, TRACE_DIR) if not p.is_dir()]
    if missing:
        return False, f"{', '.join(map(str, missing))} not found"
    return True, ""


def build(name: str) -> Instance:
    if name.startswith("catalog-"):
        return _catalog_instance(name)
    if name.startswith("alibaba-"):
        return _alibaba_instance(name)
    size, _, variant = name.partition("-")
    if size not in SIZES or variant not in VARIANTS:
        raise ValueError(f"unknown instance {name!r}; known: {', '.join(all_names())}")
    return _synthetic_instance(name, size, variant)


def _seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"placement-bench/{name}".encode()).digest()[:8], "big")


def _snapshot(name: str, prices: str) -> SnapshotInfo:
    return SnapshotInfo(name=f"bench-{name}", taken_on=dt.date(2026, 11, 20), prices=prices)


# ==================================================================================================
# Synthetic instances
# ==================================================================================================

# metro -> (country, jurisdiction, lat, lon, grid gCO2/kWh)
METROS: dict[str, tuple[str, str, float, float, float]] = {
    "us-east": ("US", "US", 39.04, -77.49, 370), "us-ohio": ("US", "US", 39.96, -83.0, 450),
    "us-central": ("US", "US", 41.26, -95.86, 430), "us-texas": ("US", "US", 32.78, -96.8, 400),
    "us-west": ("US", "US", 45.84, -119.7, 180), "us-calif": ("US", "US", 37.34, -121.89, 210),
    "ca-mtl": ("CA", "CA", 45.5, -73.57, 30), "ca-tor": ("CA", "CA", 43.65, -79.38, 60),
    "br-sao": ("BR", "BR", -23.55, -46.63, 100), "eu-fra": ("DE", "EU", 50.11, 8.68, 380),
    "eu-ams": ("NL", "EU", 52.37, 4.9, 300), "eu-par": ("FR", "EU", 48.86, 2.35, 55),
    "eu-dub": ("IE", "EU", 53.35, -6.26, 290), "eu-sto": ("SE", "EU", 59.33, 18.07, 35),
    "eu-hel": ("FI", "EU", 60.17, 24.94, 70), "eu-mil": ("IT", "EU", 45.46, 9.19, 330),
    "eu-mad": ("ES", "EU", 40.42, -3.7, 160), "eu-war": ("PL", "EU", 52.23, 21.01, 650),
    "uk-lon": ("GB", "UK", 51.51, -0.13, 200), "no-osl": ("NO", "NO", 59.91, 10.75, 30),
    "ch-zrh": ("CH", "CH", 47.37, 8.54, 40), "il-tlv": ("IL", "IL", 32.08, 34.78, 500),
    "ae-dxb": ("AE", "AE", 25.2, 55.27, 450), "in-bom": ("IN", "IN", 19.08, 72.88, 700),
    "sg-sin": ("SG", "SG", 1.35, 103.7, 400), "jp-tyo": ("JP", "JP", 35.68, 139.69, 460),
    "jp-osa": ("JP", "JP", 34.69, 135.5, 460), "kr-sel": ("KR", "KR", 37.57, 126.98, 420),
    "tw-tpe": ("TW", "TW", 25.03, 121.57, 500), "au-syd": ("AU", "AU", -33.87, 151.21, 600),
}

# model -> (list $/GPU-hour, GPU memory GiB, relative weight in demand)
SYN_GPUS: dict[str, tuple[float, float, float]] = {
    "H100": (3.0, 80, 10), "H200": (3.8, 141, 5), "B200": (5.5, 180, 3), "A100": (1.8, 80, 8),
    "L40S": (1.2, 48, 6), "L4": (0.7, 24, 8), "A10G": (1.0, 24, 5), "T4": (0.5, 16, 4),
    "MI300X": (2.8, 192, 2), "A6000": (0.8, 48, 3), "V100": (1.2, 32, 2), "RTX6000-Ada": (0.9, 48, 3),
}
# Alternatives a workload may list after its first model (same class of work).
ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "H100": ("H200", "B200", "A100", "MI300X"), "H200": ("H100", "B200", "MI300X"),
    "B200": ("H200", "H100"), "A100": ("H100", "L40S", "A6000"), "L40S": ("A100", "L4", "RTX6000-Ada", "A6000"),
    "L4": ("A10G", "T4", "L40S"), "A10G": ("L4", "T4", "A6000"), "T4": ("L4", "A10G"),
    "MI300X": ("H100", "H200"), "A6000": ("RTX6000-Ada", "L40S", "A10G"), "V100": ("A100", "T4"),
    "RTX6000-Ada": ("A6000", "L40S"),
}
THROUGHPUT: dict[str, float] = {
    "H100": 1.0, "H200": 1.2, "B200": 2.2, "A100": 0.45, "L40S": 0.4, "L4": 0.15, "A10G": 0.12,
    "T4": 0.07, "MI300X": 1.1, "A6000": 0.2, "V100": 0.15, "RTX6000-Ada": 0.25,
}


def _pick(rng: random.Random, weights: dict[Any, float]) -> Any:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


@dataclass
class _ProviderSpec:
    name: str
    kind: str
    metros: list[str]
    zones: int
    spot: bool
    price_factor: float
    egress: float
    certifications: tuple[str, ...]
    models: list[str]


def _providers(rng: random.Random, n_offers: int, models: list[str]) -> list[_ProviderSpec]:
    metros = sorted(METROS)
    specs: list[_ProviderSpec] = []
    n_spec = max(2, n_offers // 60)
    n_prem = max(1, n_offers // 250)
    for name in ("aws", "gcp", "azure"):
        k = min(len(metros), max(3, n_offers // 80))
        specs.append(_ProviderSpec(name, "hyperscaler", sorted(rng.sample(metros, k)), 3 if n_offers >= 200 else 1,
                                   True, rng.uniform(1.05, 1.3), rng.choice([0.087, 0.09, 0.12]),
                                   ("ISO27001", "SOC2"), list(models)))
    for i in range(n_spec):
        k = rng.randint(1, 4)
        specs.append(_ProviderSpec(f"spec{i:02d}", "specialist", sorted(rng.sample(metros, k)), 1, rng.random() < 0.4,
                                   rng.uniform(0.6, 1.0), 0.0, ("ISO27001",) if rng.random() < 0.5 else (),
                                   sorted(rng.sample(models, rng.randint(2, min(6, len(models)))))))
    eu = [m for m in metros if METROS[m][1] == "EU"]
    for i in range(n_prem):
        k = rng.randint(1, 2)
        specs.append(_ProviderSpec(f"corp{i:02d}", "on-prem", sorted(rng.sample(eu if i % 2 == 0 else metros, k)), 1,
                                   False, 0.35, 0.01, ("ISO27001",),
                                   sorted(rng.sample(models, rng.randint(1, 3)))))
    return specs


def _offer_dicts(rng: random.Random, n_offers: int, models: list[str]) -> list[dict[str, Any]]:
    """Shapes and prices of ``n_offers`` distinct offers (availability is set later)."""
    specs = _providers(rng, n_offers, models)
    region_factor = {m: rng.uniform(0.9, 1.25) for m in METROS}
    out: dict[str, dict[str, Any]] = {}
    guard = 0
    weights = {s.name: (6.0 if s.kind == "hyperscaler" else 2.0 if s.kind == "specialist" else 1.0) for s in specs}
    by_name = {s.name: s for s in specs}
    while len(out) < n_offers and guard < n_offers * 200:
        guard += 1
        s = by_name[_pick(rng, weights)]
        metro = rng.choice(s.metros)
        model = rng.choice(s.models)
        count = rng.choice((1, 1, 2, 4, 8, 8)) if s.kind != "on-prem" else rng.choice((1, 2, 4, 8))
        if s.kind == "on-prem":
            capacity = "owned"
        elif s.spot and rng.random() < 0.4:
            capacity = "spot"
        else:
            capacity = "on-demand"
        zone = f"{metro}-{'abc'[rng.randrange(s.zones)]}" if s.zones > 1 else None
        itype = f"{model.lower()}-{count}g"
        key = "/".join([s.name, metro, *([zone] if zone else []), itype, capacity])
        if key in out:
            continue
        base, mem, _ = SYN_GPUS[model]
        price = base * count * s.price_factor * region_factor[metro] * rng.uniform(0.92, 1.08)
        if capacity == "spot":
            price *= rng.uniform(0.35, 0.6)
        country, juris, lat, lon, carbon = METROS[metro]
        out[key] = {
            "provider": s.name, "provider_kind": s.kind, "region": metro, "zone": zone, "country": country,
            "jurisdiction": juris, "certifications": s.certifications, "instance_type": itype,
            "gpu_model": model, "gpu_count": count, "gpu_memory_gib": mem, "vcpus": 12 * count,
            "memory_gib": 96.0 * count, "capacity_type": capacity, "hourly_usd": round(price, 4),
            "carbon_g_per_kwh": carbon, "pue": 1.15 if s.kind != "on-prem" else 1.4,
            "location": {"lat": lat, "lon": lon}, "egress_usd_per_gb": s.egress,
        }
    return [out[k] for k in sorted(out)]


def _workload_dicts(
    rng: random.Random,
    n: int,
    variant: str,
    models: list[str],
    metros: dict[str, tuple[str, str, float, float, float]],
    region_keys: list[str],
    juris_present: list[str],
) -> list[dict[str, Any]]:
    teams = [f"team{i:03d}" for i in range(max(4, n // 200))]
    demand_w = {m: SYN_GPUS[m][2] for m in models}
    residency_share = {"loose": 0.1, "tight": 0.15, "residency": 0.7, "infeasible": 0.15}[variant]
    dc_share = 0.3 if variant == "residency" else 0.1
    latency_share = 0.25 if variant == "residency" else 0.08
    countries_present = sorted({c for c, *_ in metros.values()})
    out = []
    for i in range(n):
        kind = "service" if rng.random() < 0.7 else "batch"
        first = _pick(rng, demand_w)
        alts = [m for m in ALTERNATIVES.get(first, ()) if m in models]
        rng.shuffle(alts)
        chosen = [first, *alts[: rng.choice((0, 0, 1, 1, 2, 3))]]
        if kind == "service":
            count = rng.choices((1, 2, 4, 8), weights=(60, 20, 12, 8))[0]
            replicas = rng.choices((1, 2, 3, 4, 6), weights=(55, 20, 10, 10, 5))[0]
        else:
            count = rng.choices((1, 2, 4, 8, 16), weights=(30, 25, 20, 20, 5))[0]
            replicas = 1
        w: dict[str, Any] = {
            "name": f"w{i:06d}", "team": rng.choice(teams), "kind": kind, "replicas": replicas,
            "gpu": {"models": chosen, "count": count,
                    "throughput": {m: THROUGHPUT[m] for m in chosen} if len(chosen) > 1 else {}},
            "vcpus": max(1, count * rng.choice((4, 8, 12)) // 2), "memory_gib": float(count * rng.choice((16, 32, 64))),
            "interruptible": rng.random() < (0.6 if kind == "batch" else 0.15),
            "priority": rng.choices((50, 100, 200, 500), weights=(20, 50, 20, 10))[0],
        }
        if kind == "batch" and count >= 8:
            w["gpu"]["max_nodes"] = rng.choice((2, 4))
        if rng.random() < 0.1 and SYN_GPUS[first][1] >= 48:
            w["gpu"]["min_memory_gib"] = SYN_GPUS[first][1]
        if replicas > 1 and rng.random() < 0.25:
            w["min_replicas"] = rng.randint(1, replicas)
        if replicas >= 2 and rng.random() < 0.1:
            w["spread"] = {"min_providers": 2} if rng.random() < 0.5 else {"min_regions": 2}
        if rng.random() < residency_share:
            r = rng.random()
            if r < 0.5:
                common = [j for j in ("EU", "US") if j in juris_present]
                pool = common if common and rng.random() < 0.7 else juris_present
                w["residency"] = {"jurisdictions": [rng.choice(pool)]}
            elif r < 0.8:
                w["residency"] = {"countries": sorted(rng.sample(countries_present, rng.randint(1, 3)))}
            else:
                w["residency"] = {"regions": sorted(rng.sample(region_keys, min(len(region_keys), rng.randint(2, 6))))}
        if rng.random() < dc_share:
            w["data_class"] = rng.choice(("restricted", "regulated"))
        if kind == "service" and rng.random() < latency_share:
            metro = rng.choice(sorted(metros))
            _, _, lat, lon, _ = metros[metro]
            w["users"] = [{"name": "users-" + metro.replace("/", "-"), "location": {"lat": lat, "lon": lon},
                           "max_latency_ms": float(rng.choice((30, 50, 80, 120)))}]
        if rng.random() < 0.15:
            provider_region = rng.choice(region_keys)
            p, _, r = provider_region.partition("/")
            w["dataset"] = {"provider": p, "region": r, "size_gb": float(rng.choice((100, 1000, 10000, 50000)))}
        if rng.random() < 0.1:
            base = SYN_GPUS[first][0] * count
            w["budget_hourly_usd"] = round(base * replicas * rng.uniform(1.2, 3.0), 2)
        out.append(w)
    if variant == "infeasible":
        for w in out:
            if rng.random() >= 0.15:
                continue
            how = rng.randrange(5)
            if how == 0:
                w["gpu"] = {"models": ["GB200"], "count": w["gpu"]["count"]}
            elif how == 1:
                w["gpu"] = {**w["gpu"], "min_memory_gib": 500.0}
            elif how == 2:
                w["residency"] = {"jurisdictions": ["ZZ"]}
            elif how == 3:
                w["kind"] = "service"
                w["users"] = [{"name": "users-impossible", "location": {"lat": 0.0, "lon": -160.0},
                               "max_latency_ms": 1.0}]
            else:
                w["budget_hourly_usd"] = 0.01
    return out


def _policies(rng: random.Random, workloads: list[dict[str, Any]], variant: str) -> PolicySet:
    teams = sorted({w["team"] for w in workloads})
    est: dict[str, float] = defaultdict(float)
    for w in workloads:
        est[w["team"]] += SYN_GPUS.get(w["gpu"]["models"][0], (3.0, 0, 0))[0] * w["gpu"]["count"] * w["replicas"]
    rules: dict[str, TeamRule] = {}
    budget_share = 0.33 if variant in ("tight", "infeasible") else 0.1
    budget_factor = (0.9, 1.4) if variant in ("tight", "infeasible") else (2.0, 4.0)
    for t in teams:
        kw: dict[str, Any] = {}
        if rng.random() < budget_share:
            kw["budget_hourly_usd"] = round(est[t] * rng.uniform(*budget_factor), 2)
        if rng.random() < 0.3:
            kw["max_interruptible_share"] = rng.choice((0.25, 0.5))
        rules[t] = TeamRule(**kw)
    return PolicySet(
        data_classes={
            "restricted": DataClassRule(description="EU only, no spot, no specialist clouds",
                                        allowed_jurisdictions=("EU",), interruptible_allowed=False,
                                        allowed_provider_kinds=("hyperscaler", "on-prem")),
            "regulated": DataClassRule(description="ISO 27001 certified providers only",
                                       required_certifications=("ISO27001",)),
        },
        teams=rules,
    )


TIGHT_SUPPLY = 2.2  # offered GPUs per requested GPU (first-choice model), per model, in the tight variants


def _set_capacity(
    rng: random.Random, offers: list[dict[str, Any]], workloads: list[dict[str, Any]], variant: str
) -> list[CapacityPool]:
    """Per-offer availability and shared pools. Tight variants size capacity to ~85 % of demand."""
    demand: dict[str, float] = defaultdict(float)
    for w in workloads:
        demand[w["gpu"]["models"][0]] += w["gpu"]["count"] * w["replicas"]
    supply_gpus: dict[str, float] = defaultdict(float)
    for o in offers:
        supply_gpus[o["gpu_model"]] += o["gpu_count"]
    tight = variant in ("tight", "infeasible")
    pools: dict[str, CapacityPool] = {}
    for o in offers:
        per_gpu_share = demand[o["gpu_model"]] / max(1.0, supply_gpus[o["gpu_model"]])  # instances' worth per GPU
        if tight:
            # TIGHT_SUPPLY x demand (GPUs) spread over this model's offers, unevenly; stochastic rounding
            want = per_gpu_share * TIGHT_SUPPLY * rng.uniform(0.2, 1.8)
            o["available"] = int(want) + (1 if rng.random() < want - int(want) else 0)
        elif o["provider_kind"] == "hyperscaler" and rng.random() < 0.6:
            o["available"] = None
        else:
            o["available"] = max(1, round(per_gpu_share * 3.0 * rng.uniform(0.5, 2.0)) + rng.randint(0, 4))
        pool_ids = []
        if o["provider_kind"] == "hyperscaler":
            fam = "spot" if o["capacity_type"] == "spot" else "ondemand"
            pid = f"{o['provider']}/{o['region']}/{fam}-vcpus"
            pool_ids.append(pid)
            if pid not in pools:
                pools[pid] = CapacityPool(id=pid, unit="vcpus", limit=0)
        elif o["provider_kind"] == "on-prem":
            pid = f"{o['provider']}/{o['region']}/{o['gpu_model'].lower()}"
            pool_ids.append(pid)
            if pid not in pools:
                pools[pid] = CapacityPool(id=pid, unit="gpus", limit=0)
        o["pools"] = tuple(pool_ids)
    # Pool limits: a share of what the offers drawing on them could give.
    reach: dict[str, float] = defaultdict(float)
    for o in offers:
        for pid in o["pools"]:
            unit = pools[pid].unit
            per = o["vcpus"] if unit == "vcpus" else o["gpu_count"]
            avail = o["available"]
            if avail is None:
                per_gpu_share = demand[o["gpu_model"]] / max(1.0, supply_gpus[o["gpu_model"]])
                avail = max(2, round(per_gpu_share * 2))
            reach[pid] += per * avail
    for pid in sorted(pools):
        frac = rng.uniform(0.7, 1.0) if tight else rng.uniform(1.0, 2.0)
        pools[pid] = pools[pid].model_copy(update={"limit": max(0, int(reach[pid] * frac))})
    return [pools[k] for k in sorted(pools)]


def _synthetic_instance(name: str, size: str, variant: str) -> Instance:
    n_w, n_o = SIZES[size]
    rng = random.Random(_seed(name))
    # 50 offers cannot cover 12 GPU models x sizes x places: small instances use the six commonest.
    models = sorted(SYN_GPUS) if n_o >= 200 else ["A100", "A10G", "H100", "L4", "L40S", "T4"]
    offers = _offer_dicts(rng, n_o, models)
    region_keys = sorted({f"{o['provider']}/{o['region']}" for o in offers})
    juris = sorted({o["jurisdiction"] for o in offers})
    workloads = _workload_dicts(rng, n_w, variant, models, METROS, region_keys, juris)
    pools = _set_capacity(rng, offers, workloads, variant)
    policies = _policies(rng, workloads, variant)
    inv = Inventory(snapshot=_snapshot(name, "synthetic list-price-like prices (seeded)"),
                    offers=tuple(Offer.model_validate(o) for o in offers), pools=tuple(pools))
    wl = tuple(Workload.model_validate(w) for w in workloads)
    return Instance(name, size, f"synthetic {variant}: {n_w:,} workloads x {len(offers):,} offers", wl, inv, policies)


# ==================================================================================================
# Real catalogs
# ==================================================================================================

# provider/region -> (country, lat, lon). Jurisdiction: EU for EU member states, UK for GB, else country.
REAL_REGIONS: dict[str, tuple[str, float, float]] = {
    # GCP
    "gcp/us-central1": ("US", 41.26, -95.86), "gcp/us-east1": ("US", 33.2, -80.0), "gcp/us-east4": ("US", 39.04, -77.49),
    "gcp/us-east5": ("US", 39.96, -83.0), "gcp/us-west1": ("US", 45.6, -121.18), "gcp/us-west2": ("US", 34.05, -118.24),
    "gcp/us-west3": ("US", 40.76, -111.89), "gcp/us-west4": ("US", 36.17, -115.14), "gcp/us-south1": ("US", 32.78, -96.8),
    "gcp/northamerica-northeast1": ("CA", 45.5, -73.57), "gcp/northamerica-northeast2": ("CA", 43.65, -79.38),
    "gcp/europe-west1": ("BE", 50.47, 3.82), "gcp/europe-west2": ("GB", 51.51, -0.13), "gcp/europe-west3": ("DE", 50.11, 8.68),
    "gcp/europe-west4": ("NL", 53.44, 6.83), "gcp/europe-west6": ("CH", 47.37, 8.54), "gcp/europe-west9": ("FR", 48.86, 2.35),
    "gcp/europe-north1": ("FI", 60.57, 27.19), "gcp/me-west1": ("IL", 32.08, 34.78), "gcp/me-central2": ("SA", 26.43, 50.1),
    "gcp/asia-east1": ("TW", 24.05, 120.52), "gcp/asia-northeast1": ("JP", 35.68, 139.69),
    "gcp/asia-northeast3": ("KR", 37.57, 126.98), "gcp/asia-south1": ("IN", 19.08, 72.88),
    "gcp/asia-south2": ("IN", 28.61, 77.21), "gcp/asia-southeast1": ("SG", 1.35, 103.7),
    "gcp/australia-southeast1": ("AU", -33.87, 151.21),
    # Nebius, Verda, Hyperstack
    "nebius/eu-north1": ("FI", 60.63, 25.32), "nebius/eu-west1": ("FR", 48.86, 2.35),
    "nebius/us-central1": ("US", 39.1, -94.58), "nebius/me-west1": ("IL", 32.17, 34.9),
    "verda/FIN-01": ("FI", 60.17, 24.94), "verda/FIN-02": ("FI", 60.17, 24.94), "verda/FIN-03": ("FI", 60.17, 24.94),
    "hyperstack/CANADA-1": ("CA", 45.5, -73.57), "hyperstack/NORWAY-1": ("NO", 59.91, 10.75),
    "hyperstack/US-1": ("US", 41.88, -87.63),
    # AWS
    "aws/af-south-1": ("ZA", -33.92, 18.42), "aws/ap-east-1": ("HK", 22.32, 114.17), "aws/ap-northeast-1": ("JP", 35.68, 139.69),
    "aws/ap-northeast-2": ("KR", 37.57, 126.98), "aws/ap-northeast-3": ("JP", 34.69, 135.5), "aws/ap-south-1": ("IN", 19.08, 72.88),
    "aws/ap-southeast-1": ("SG", 1.35, 103.7), "aws/ap-southeast-2": ("AU", -33.87, 151.21),
    "aws/ap-southeast-3": ("ID", -6.2, 106.85), "aws/ap-southeast-5": ("MY", 3.14, 101.69),
    "aws/ca-central-1": ("CA", 45.5, -73.57), "aws/eu-central-1": ("DE", 50.11, 8.68), "aws/eu-central-2": ("CH", 47.37, 8.54),
    "aws/eu-north-1": ("SE", 59.33, 18.07), "aws/eu-south-1": ("IT", 45.46, 9.19), "aws/eu-south-2": ("ES", 41.65, -0.88),
    "aws/eu-west-1": ("IE", 53.35, -6.26), "aws/eu-west-2": ("GB", 51.51, -0.13), "aws/eu-west-3": ("FR", 48.86, 2.35),
    "aws/il-central-1": ("IL", 32.08, 34.78), "aws/me-central-1": ("AE", 25.2, 55.27), "aws/me-south-1": ("BH", 26.07, 50.56),
    "aws/sa-east-1": ("BR", -23.55, -46.63), "aws/us-east-1": ("US", 39.04, -77.49), "aws/us-east-2": ("US", 39.96, -83.0),
    "aws/us-gov-east-1": ("US", 39.96, -83.0), "aws/us-gov-west-1": ("US", 45.6, -121.18),
    "aws/us-west-1": ("US", 37.34, -121.89), "aws/us-west-2": ("US", 45.84, -119.7),
    "aws/us-west-2-lax-1": ("US", 34.05, -118.24),
    # Azure
    "azure/australiaeast": ("AU", -33.87, 151.21), "azure/brazilsouth": ("BR", -23.55, -46.63),
    "azure/canadacentral": ("CA", 43.65, -79.38), "azure/centralindia": ("IN", 18.52, 73.86),
    "azure/eastus": ("US", 36.67, -78.39), "azure/eastus2": ("US", 36.67, -78.39), "azure/francecentral": ("FR", 48.86, 2.35),
    "azure/japaneast": ("JP", 35.68, 139.77), "azure/koreacentral": ("KR", 37.57, 126.98),
    "azure/northcentralus": ("US", 41.88, -87.63), "azure/northeurope": ("IE", 53.35, -6.26),
    "azure/norwaywest": ("NO", 58.97, 5.73), "azure/southafricanorth": ("ZA", -26.2, 28.05),
    "azure/southcentralus": ("US", 29.42, -98.49), "azure/southeastasia": ("SG", 1.35, 103.7),
    "azure/uaenorth": ("AE", 25.2, 55.27), "azure/uksouth": ("GB", 51.51, -0.13), "azure/usgovarizona": ("US", 33.45, -112.07),
    "azure/usgovtexas": ("US", 29.42, -98.49), "azure/usgovvirginia": ("US", 36.67, -78.39),
    "azure/westeurope": ("NL", 52.37, 4.9), "azure/westus": ("US", 37.78, -122.42), "azure/westus2": ("US", 47.23, -119.85),
}
EU_COUNTRIES = {"AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT", "LT", "LU",
                "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK"}
REAL_PROVIDERS: dict[str, tuple[str, float, tuple[str, ...]]] = {
    "aws": ("hyperscaler", 0.09, ("ISO27001", "SOC2")), "gcp": ("hyperscaler", 0.12, ("ISO27001", "SOC2")),
    "azure": ("hyperscaler", 0.087, ("ISO27001", "SOC2")), "nebius": ("specialist", 0.0, ("ISO27001", "SOC2")),
    "verda": ("specialist", 0.0, ("ISO27001",)), "hyperstack": ("specialist", 0.0, ()),
}
# Azure sizes whose GPU the engine knows: size key -> (GPU, count, GPU GiB, vCPUs, memory GiB), from Azure's
# public size tables (NCv2, NCv3, NCasT4_v3, NDv2 series).
AZURE_SIZES: dict[str, tuple[str, int, float, int, float]] = {
    "standardnc6sv2": ("P100", 1, 16, 6, 112), "standardnc12sv2": ("P100", 2, 16, 12, 224),
    "standardnc24sv2": ("P100", 4, 16, 24, 448), "standardnc24rsv2": ("P100", 4, 16, 24, 448),
    "standardnc6sv3": ("V100", 1, 16, 6, 112), "standardnc12sv3": ("V100", 2, 16, 12, 224),
    "standardnc24sv3": ("V100", 4, 16, 24, 448), "standardnc24rsv3": ("V100", 4, 16, 24, 448),
    "standardnc4ast4v3": ("T4", 1, 16, 4, 28), "standardnc8ast4v3": ("T4", 1, 16, 8, 56),
    "standardnc16ast4v3": ("T4", 1, 16, 16, 110), "standardnc64ast4v3": ("T4", 4, 16, 64, 440),
    "standardnd40rsv2": ("V100", 8, 32, 40, 672),
}


def _jurisdiction(country: str) -> str:
    return "EU" if country in EU_COUNTRIES else "UK" if country == "GB" else country


def _real_offer(raw: dict[str, Any], skipped: dict[str, int]) -> dict[str, Any] | None:
    key = f"{raw['provider']}/{raw['region']}"
    where = REAL_REGIONS.get(key)
    if where is None:
        skipped[f"region {key} not in REAL_REGIONS"] = skipped.get(f"region {key} not in REAL_REGIONS", 0) + 1
        return None
    kind, egress, certs = REAL_PROVIDERS[raw["provider"]]
    country, lat, lon = where
    return {**raw, "provider_kind": kind, "country": country, "jurisdiction": _jurisdiction(country),
            "location": {"lat": lat, "lon": lon}, "egress_usd_per_gb": egress, "certifications": certs}


def real_catalog_offers(notes: list[str] | None = None) -> list[dict[str, Any]]:
    """Raw offer dicts (engine field names) from the real catalog files, sorted by id."""
    from placement.catalog import read_skypilot_catalog
    from placement.gpus import resolve_gpu

    notes = notes if notes is not None else []
    skipped: dict[str, int] = {}
    out: list[dict[str, Any]] = []
    for provider, rel in (("gcp", "gcp/vms_gpu_excerpt.csv"), ("nebius", "nebius/vms.csv"),
                          ("verda", "verda/vms.csv"), ("hyperstack", "hyperstack/vms.csv")):
        read = read_skypilot_catalog(CATALOG_DIR / rel, provider)
        notes.append(read.summary().replace(str(CATALOG_DIR) + "/", ""))
        for raw in read.offers:
            o = _real_offer(dict(raw), skipped)
            if o is not None:
                out.append(o)
    # AWS: shapes from moto's DescribeInstanceTypes data, on-demand prices from libcloud.
    shapes: dict[str, dict[str, Any]] = {}
    with (CATALOG_DIR / "aws/gpu_instance_types.csv").open() as fh:
        for row in csv.DictReader(fh):
            found = resolve_gpu(row["AcceleratorName"])
            count = int(row["AcceleratorCount"] or 0)
            if found is None or count < 1:
                skipped["aws: GPU unknown to the engine or fractional"] = skipped.get("aws: GPU unknown to the engine or fractional", 0) + 1
                continue
            model = found[0]
            from placement.gpus import GPU_MODELS

            gib = int(row["AcceleratorMemoryMiB"] or 0) / 1024
            nominal = min(GPU_MODELS[model].memory_gib, key=lambda s: abs(s - gib))
            shapes[row["InstanceType"]] = {
                "gpu_model": model, "gpu_count": count,
                "gpu_memory_gib": float(nominal) if abs(nominal - gib) <= 0.1 * nominal else round(gib, 1),
                "vcpus": int(row["vCPUs"]), "memory_gib": int(row["MemoryMiB"]) / 1024,
            }
    aws = 0
    with (CATALOG_DIR / "aws/gpu_ondemand_prices_libcloud.csv").open() as fh:
        for row in csv.DictReader(fh):
            shape = shapes.get(row["InstanceType"])
            if shape is None:
                continue
            raw = {"provider": "aws", "region": row["Region"], "instance_type": row["InstanceType"], **shape,
                   "capacity_type": "on-demand", "hourly_usd": float(row["LinuxOnDemandUSDPerHour"])}
            o = _real_offer(raw, skipped)
            if o is not None:
                out.append(o)
                aws += 1
    notes.append(f"aws: {aws} on-demand offers (moto shapes x libcloud prices)")
    az = 0
    with (CATALOG_DIR / "azure/gpu_ondemand_prices_libcloud.csv").open() as fh:
        for row in csv.DictReader(fh):
            size = AZURE_SIZES.get(row["SizeKey"])
            if size is None:
                skipped["azure: size with a GPU unknown to the engine (K80/M60/P40/MI25)"] = \
                    skipped.get("azure: size with a GPU unknown to the engine (K80/M60/P40/MI25)", 0) + 1
                continue
            model, count, gib, vcpus, mem = size
            raw = {"provider": "azure", "region": row["Region"], "instance_type": row["SizeKey"], "gpu_model": model,
                   "gpu_count": count, "gpu_memory_gib": gib, "vcpus": vcpus, "memory_gib": mem,
                   "capacity_type": "on-demand", "hourly_usd": float(row["LinuxOnDemandUSDPerHour"])}
            o = _real_offer(raw, skipped)
            if o is not None:
                out.append(o)
                az += 1
    notes.append(f"azure: {az} on-demand offers")
    for reason, n in sorted(skipped.items()):
        notes.append(f"skipped {n}: {reason}")
    # drop duplicate ids (same provider/region/zone/type/capacity), keep the first
    seen: dict[str, dict[str, Any]] = {}
    for o in out:
        oid = "/".join([o["provider"], o["region"], *([o["zone"]] if o.get("zone") else []), o["instance_type"],
                        o["capacity_type"]])
        seen.setdefault(oid, o)
    return [seen[k] for k in sorted(seen)]


def _catalog_instance(name: str) -> Instance:
    n_w = {"catalog-1k": 1_000, "catalog-10k": 10_000}[name]
    rng = random.Random(_seed(name))
    notes: list[str] = []
    offers = real_catalog_offers(notes)
    models = sorted({o["gpu_model"] for o in offers} & set(SYN_GPUS))
    metros = {k: (c, _jurisdiction(c), lat, lon, 300.0) for k, (c, lat, lon) in REAL_REGIONS.items()}
    region_keys = sorted({f"{o['provider']}/{o['region']}" for o in offers})
    juris = sorted({o["jurisdiction"] for o in offers})
    workloads = _workload_dicts(rng, n_w, "loose", models, metros, region_keys, juris)
    # Synthetic capacity on real offers: specialists a few instances each, hyperscalers per-region
    # vCPU quota pools (on-demand), enough for ~1.2x the demand overall.
    pools = _set_capacity(rng, offers, workloads, "loose")
    policies = _policies(rng, workloads, "loose")
    inv = Inventory(snapshot=_snapshot(name, "real public list prices (SkyPilot catalogs, libcloud); capacity synthetic"),
                    offers=tuple(Offer.model_validate(o) for o in offers), pools=tuple(pools))
    wl = tuple(Workload.model_validate(w) for w in workloads)
    notes.insert(0, f"{len(offers)} real offers; GPU models used by workloads: {', '.join(models)}")
    return Instance(name, "catalog", f"real catalog offers x {n_w:,} synthetic workloads", wl, inv, policies, notes)


# ==================================================================================================
# Alibaba GPU trace
# ==================================================================================================

# trace model -> (engine model, GPU GiB)
ALIBABA_MODELS: dict[str, tuple[str, float]] = {
    "T4": ("T4", 16), "P100": ("P100", 16), "V100M16": ("V100", 16), "V100M32": ("V100", 32), "A10": ("A10", 24),
    "G2": ("A40", 48), "G3": ("L40", 48),
}
# Assumed amortised internal cost of an owned GPU per hour (hardware over 4 years + power + operations).
ALIBABA_GPU_HOURLY_USD: dict[str, float] = {
    "T4": 0.20, "P100": 0.22, "V100M16": 0.40, "V100M32": 0.45, "A10": 0.35, "G2": 0.50, "G3": 0.60,
}
QOS_PRIORITY = {"Guaranteed": 500, "LS": 300, "Burstable": 200, "BE": 100}
POD_FILE = "openb_pod_list_gpuspec33.csv"


def _alibaba_pods() -> list[dict[str, str]]:
    with (TRACE_DIR / POD_FILE).open() as fh:
        return [r for r in csv.DictReader(fh) if int(r["num_gpu"] or 0) >= 1]


def _alibaba_nodes() -> list[dict[str, str]]:
    with (TRACE_DIR / "openb_node_list_gpu_node.csv").open() as fh:
        return list(csv.DictReader(fh))


def _pod_workload(pod: dict[str, str], all_specs: list[str]) -> dict[str, Any]:
    spec = [s for s in pod["gpu_spec"].split("|") if s] or list(all_specs)
    models: list[str] = []
    mems: list[float] = []
    for s in spec:
        m, gib = ALIBABA_MODELS[s]
        if m not in models:
            models.append(m)
        mems.append(gib if m == "V100" else 0.0)
    # V100M32 alone means 32 GiB V100s; any V100M16 in the set allows 16 GiB.
    min_mem = 32.0 if spec and all(s == "V100M32" for s in spec) else 0.0
    return {
        "name": pod["name"], "team": f"qos-{pod['qos'].lower() or 'none'}", "kind": "service", "replicas": 1,
        "gpu": {"models": models, "count": int(pod["num_gpu"]), "min_memory_gib": min_mem},
        "vcpus": max(1, math.ceil(int(pod["cpu_milli"]) / 1000)),
        "memory_gib": max(0.1, int(pod["memory_mib"]) / 1024),
        "priority": QOS_PRIORITY.get(pod["qos"], 100),
        "interruptible": False,
    }


def _alibaba_instance(name: str) -> Instance:
    variant = name.removeprefix("alibaba-")
    rng = random.Random(_seed(name))
    pods = _alibaba_pods()
    nodes = _alibaba_nodes()
    if variant == "nodes-8th":
        nodes = sorted(rng.sample(nodes, len(nodes) // 8), key=lambda r: r["sn"])
        pods = sorted(rng.sample(pods, len(pods) // 8), key=lambda r: r["name"])
    specs = sorted(ALIBABA_MODELS)
    workloads = [_pod_workload(p, specs) for p in pods]
    site = {"provider": "alibaba", "provider_kind": "on-prem", "region": "openb", "country": "CN", "jurisdiction": "CN",
            "location": {"lat": 30.27, "lon": 120.15}, "capacity_type": "owned", "egress_usd_per_gb": 0.0}
    offers: list[dict[str, Any]] = []
    pools: list[CapacityPool] = []
    notes = [f"{POD_FILE}: {len(pods)} GPU pods (num_gpu >= 1); {len(nodes)} GPU nodes, "
             f"{sum(int(n['gpu']) for n in nodes)} GPUs; demand {sum(int(p['num_gpu']) for p in pods)} GPUs"]

    def slice_offer(itype: str, model_code: str, k: int, cores: int, mem_gib: float, pool: str) -> dict[str, Any]:
        m, gib = ALIBABA_MODELS[model_code]
        return {**site, "instance_type": itype, "gpu_model": m, "gpu_count": k, "gpu_memory_gib": gib, "vcpus": cores,
                "memory_gib": mem_gib, "hourly_usd": round(ALIBABA_GPU_HOURLY_USD[model_code] * k, 4), "pools": (pool,)}

    if variant in ("pooled", "hybrid"):
        shapes: dict[tuple[str, int, int, int], int] = defaultdict(int)
        for n in nodes:
            shapes[(n["model"], int(n["gpu"]), int(n["cpu_milli"]) // 1000, int(n["memory_mib"]) // 1024)] += 1
        for (model, gpus, cores, mem), count in sorted(shapes.items()):
            pid = f"alibaba/{model.lower()}-{gpus}g-{cores}c-{mem}g"
            pools.append(CapacityPool(id=pid, unit="gpus", limit=count * gpus,
                                      description=f"{count} nodes of {gpus}x {model}, {cores} cores, {mem} GiB"))
            for k in (1, 2, 4, 8):
                if k <= gpus:
                    offers.append(slice_offer(f"{model.lower()}-{gpus}g-{cores}c-{mem}g.slice{k}", model, k, cores, mem, pid))
    else:  # nodes, nodes-8th
        for n in nodes:
            gpus = int(n["gpu"])
            pid = f"alibaba/{n['sn']}"
            pools.append(CapacityPool(id=pid, unit="gpus", limit=gpus, description=f"node {n['sn']}: {gpus}x {n['model']}"))
            for k in (1, 2, 4, 8):
                if k <= gpus:
                    offers.append(slice_offer(f"{n['sn']}.slice{k}", n["model"], k, int(n["cpu_milli"]) // 1000,
                                              int(n["memory_mib"]) / 1024, pid))
    if variant == "hybrid":
        public = {"T4", "P100", "V100"}
        burst = [o for o in real_catalog_offers([]) if o["gpu_model"] in public]
        offers.extend(burst)
        notes.append(f"{len(burst)} real cloud offers of T4/P100/V100 for bursting (no capacity limit)")
    policies = PolicySet(teams={})
    inv = Inventory(snapshot=_snapshot(name, "owned capacity at assumed amortised cost; cloud at list price"),
                    offers=tuple(Offer.model_validate(o) for o in offers), pools=tuple(pools))
    wl = tuple(Workload.model_validate(w) for w in workloads)
    return Instance(name, "alibaba", f"Alibaba GPU trace ({variant})", wl, inv, policies, notes)


def scenario_of(inst: Instance) -> Any:
    """A ``placement.scenario.Scenario`` around the instance's model objects, without files.

    Input digests are stand-ins derived from the instance name (computing real ones costs seconds at
    100k workloads and is not what is measured here).
    """
    from placement.inputs import LoadedInventory, LoadedPolicies, LoadedWorkloads
    from placement.scenario import Scenario

    tag = "sha256:" + hashlib.sha256(f"bench/{inst.name}".encode()).hexdigest()
    ordered = tuple(sorted(inst.workloads, key=lambda w: w.name))
    return Scenario(
        workloads=LoadedWorkloads(ordered, (), tag, (), {}),
        inventory=LoadedInventory(inst.inventory, (), tag),
        policies=LoadedPolicies(inst.policies, (), tag, ()),
        policy_dir=None,
        inventory_path=f"bench:{inst.name}",
        policy_path=None,
    )


def class_counts(inst: Instance) -> dict[str, int]:
    """How far aggregation would shrink the model: distinct workloads ignoring the name (and team
    where no team rule exists), distinct offers ignoring id/zone/instance type name, and distinct
    offers also ignoring which pools they draw on (same shape, price and place)."""
    team_rules = set(inst.policies.teams)
    w_keys = set()
    for w in inst.workloads:
        d = w.model_dump(exclude={"name", "labels"})
        if w.team not in team_rules:
            d.pop("team")
        w_keys.add(repr(sorted(d.items())))
    o_keys, o_keys_nopool = set(), set()
    for o in inst.inventory.offers:
        d = o.model_dump(exclude={"id", "zone", "instance_type"})
        o_keys.add(repr(sorted(d.items())))
        d.pop("pools")
        d.pop("available")
        o_keys_nopool.add(repr(sorted(d.items())))
    return {"workload_classes": len(w_keys), "offer_classes": len(o_keys), "offer_shapes": len(o_keys_nopool)}
