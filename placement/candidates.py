"""Hard filters: which (workload, offer) pairs can hold a replica at all, and why the others cannot.

The solver never sees an impossible pair. Every rejected pair is counted under the first rule that
rejects it, so that an unplaced workload can be explained the way kube-scheduler does:
"0/412 offers fit: 230 GPU model not requested, 150 outside residency, ...".

Latency
-------
Round-trip latency from a users' location to an offer is taken from the inventory's ``latency_ms``
matrix when it has an entry for (users' location name, "provider/region"). Otherwise it is estimated
from the great-circle (haversine, Earth radius 6,371 km) distance ``d`` between the users and the
offer's location::

    rtt_ms = 5 ms + 2 × 1.5 × d / 200 km/ms

200 km/ms is the speed of light in fibre (refractive index ≈ 1.5), 1.5 is the ratio of real fibre
paths to the great circle, 2 makes it a round trip and 5 ms covers last-mile and processing.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from placement.gpus import GPU_POWER_KW
from placement.models import GeoPoint, Inventory, Offer, PolicySet, Workload

EARTH_RADIUS_KM = 6371.0
FIBRE_KM_PER_MS = 200.0
ROUTE_FACTOR = 1.5
BASE_RTT_MS = 5.0
HOURS_PER_MONTH = 730.0
NODE_TIE_BREAK_USD = 0.01


def great_circle_km(a: GeoPoint, b: GeoPoint) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a.lat, a.lon, b.lat, b.lon))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def estimated_rtt_ms(a: GeoPoint, b: GeoPoint) -> float:
    return BASE_RTT_MS + 2 * ROUTE_FACTOR * great_circle_km(a, b) / FIBRE_KM_PER_MS


def latency_ms(inventory: Inventory, user_name: str, user_at: GeoPoint, offer: Offer) -> float:
    measured = inventory.latency_ms.get(user_name, {}).get(offer.region_key)
    return measured if measured is not None else estimated_rtt_ms(user_at, offer.location)


@dataclass(frozen=True)
class Candidate:
    """One way to run one replica of a workload: which offer, how many nodes, at what cost."""

    offer_index: int
    gpus_needed: int
    nodes: int
    instance_hourly_usd: float
    egress_hourly_usd: float
    carbon_kg_per_hour: float | None
    preference_hourly_usd: float  # soft preferences in $/h (positive = penalty, negative = bonus)
    latency_ms: dict[str, float]
    rules: tuple[str, ...]  # the rules that admitted this pair, for explanations

    @property
    def hourly_usd(self) -> float:
        return self.instance_hourly_usd + self.egress_hourly_usd

    @property
    def objective_hourly_usd(self) -> float:
        return self.hourly_usd + self.preference_hourly_usd


@dataclass
class WorkloadCandidates:
    workload: Workload
    candidates: list[Candidate] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    offers_total: int = 0

    def summary(self) -> str:
        fit = len(self.candidates)
        parts = [f"{n} {reason}" for reason, n in sorted(self.rejected.items(), key=lambda kv: (-kv[1], kv[0]))]
        head = f"{fit}/{self.offers_total} offers fit"
        return head + (": " + ", ".join(parts) if parts else "")


def throughput_of(workload: Workload, policies: PolicySet) -> dict[str, float]:
    """Relative throughput per requested model: the workload's own table, else the policy's."""
    models = workload.gpu.models
    if workload.gpu.throughput:
        return {m: workload.gpu.throughput.get(m, 1.0) for m in models}
    table = policies.gpus.throughput
    if all(m in table for m in models):
        return {m: table[m] for m in models}
    return dict.fromkeys(models, 1.0)


def gpus_needed(workload: Workload, model: str, throughput: dict[str, float]) -> int:
    """GPUs of ``model`` that do the work of ``count`` GPUs of the reference (first listed) model."""
    ref = workload.gpu.models[0]
    need = workload.gpu.count * throughput[ref] / throughput[model]
    return max(1, math.ceil(need - 1e-9))


def _residency_reason(workload: Workload, offer: Offer) -> str | None:
    res = workload.residency
    if res.jurisdictions and offer.jurisdiction not in res.jurisdictions:
        return f"outside residency (jurisdiction {'/'.join(res.jurisdictions)})"
    if res.countries and offer.country not in res.countries:
        return f"outside residency (countries {'/'.join(res.countries)})"
    if res.regions and offer.region_key not in res.regions and offer.region not in res.regions:
        return "outside residency (regions)"
    return None


def _policy_reason(workload: Workload, offer: Offer, policies: PolicySet) -> str | None:
    if policies.allowed_providers and offer.provider not in policies.allowed_providers:
        return "provider not allowed by policy"
    if offer.provider in policies.forbidden_providers:
        return "provider forbidden by policy"
    if offer.region_key in policies.forbidden_regions or offer.region in policies.forbidden_regions:
        return "region forbidden by policy"
    if policies.gpus.allowed and offer.gpu_model not in policies.gpus.allowed:
        return "GPU model not allowed by policy"
    if offer.gpu_model in policies.gpus.forbidden:
        return "GPU model forbidden by policy"
    rule = policies.data_classes.get(workload.data_class) if workload.data_class else None
    if rule is not None:
        dc = workload.data_class
        if rule.allowed_jurisdictions and offer.jurisdiction not in rule.allowed_jurisdictions:
            return f"data class {dc}: jurisdiction not allowed"
        if rule.allowed_countries and offer.country not in rule.allowed_countries:
            return f"data class {dc}: country not allowed"
        if rule.allowed_providers and offer.provider not in rule.allowed_providers:
            return f"data class {dc}: provider not allowed"
        if rule.allowed_provider_kinds and offer.provider_kind not in rule.allowed_provider_kinds:
            return f"data class {dc}: provider kind not allowed"
        missing = set(rule.required_certifications) - set(offer.certifications)
        if missing:
            return f"data class {dc}: missing certification {', '.join(sorted(missing))}"
        if not rule.interruptible_allowed and offer.capacity_type == "spot":
            return f"data class {dc}: spot capacity not allowed"
    return None


def _admitting_rules(workload: Workload, offer: Offer, policies: PolicySet) -> tuple[str, ...]:
    rules = [f"gpu: {offer.gpu_model} is one of {', '.join(workload.gpu.models)}"]
    if not workload.residency.is_empty():
        rules.append(f"residency: {offer.country}/{offer.jurisdiction} allowed")
    if workload.data_class and workload.data_class in policies.data_classes:
        rules.append(f"data_classes.{workload.data_class}: allowed")
    if workload.users:
        rules.append("latency: within every users' limit")
    if offer.capacity_type == "spot":
        rules.append("interruptible: spot allowed")
    return tuple(rules)


def egress_rate(inventory_egress: dict[str, float], workload: Workload) -> float | None:
    if workload.dataset is None:
        return None
    return inventory_egress.get(workload.dataset.region_key)


def region_egress_table(inventory: Inventory) -> dict[str, float]:
    table: dict[str, float] = {}
    for offer in inventory.offers:
        table.setdefault(offer.region_key, offer.egress_usd_per_gb)
    return table


def carbon_kg_per_hour(offer: Offer, nodes: int) -> float | None:
    if offer.carbon_g_per_kwh is None:
        return None
    kw = offer.gpu_power_kw if offer.gpu_power_kw is not None else GPU_POWER_KW.get(offer.gpu_model, 0.5)
    return nodes * offer.gpu_count * kw * offer.pue * offer.carbon_g_per_kwh / 1000.0


def candidates_for(
    workload: Workload, inventory: Inventory, policies: PolicySet, egress_table: dict[str, float]
) -> WorkloadCandidates:
    out = WorkloadCandidates(workload, offers_total=len(inventory.offers))
    tp = throughput_of(workload, policies)
    models = set(workload.gpu.models)
    prefs = policies.preferences
    data_rate = egress_rate(egress_table, workload)
    for index, offer in enumerate(inventory.offers):
        reason: str | None = None
        nodes = 0
        need = 0
        lat: dict[str, float] = {}
        if offer.unavailable_reason:
            reason = "offer unavailable"
        elif offer.gpu_model not in models:
            reason = "GPU model not requested"
        elif offer.gpu_memory_gib + 1e-9 < workload.gpu.min_memory_gib:
            reason = f"GPU memory under {workload.gpu.min_memory_gib:g} GiB"
        elif offer.capacity_type == "spot" and not workload.interruptible:
            reason = "spot capacity (workload not interruptible)"
        else:
            reason = _residency_reason(workload, offer) or _policy_reason(workload, offer, policies)
        if reason is None:
            need = gpus_needed(workload, offer.gpu_model, tp)
            nodes = math.ceil(need / offer.gpu_count)
            if workload.max_nodes is not None and nodes > workload.max_nodes:
                reason = "too few GPUs per node" if workload.max_nodes == 1 else f"needs more than {workload.max_nodes} nodes"
            elif offer.vcpus * nodes < workload.vcpus:
                reason = "not enough vCPUs"
            elif offer.memory_gib * nodes + 1e-9 < workload.memory_gib:
                reason = "not enough memory"
        if reason is None:
            for user in workload.users:
                ms = latency_ms(inventory, user.name, user.location, offer)
                if ms > user.max_latency_ms:
                    reason = f"latency to {user.name} over {user.max_latency_ms:g} ms"
                    break
                lat[user.name] = round(ms, 1)
        if reason is None and offer.available is not None and offer.available < nodes:
            reason = "no capacity left"
        if reason is not None:
            out.rejected[reason] += 1
            continue
        egress = 0.0
        if workload.dataset is not None and data_rate is not None and workload.dataset.region_key != offer.region_key:
            egress = workload.dataset.size_gb * data_rate / workload.dataset.amortization_hours
        carbon = carbon_kg_per_hour(offer, nodes)
        # Every node beyond the first costs a cent an hour: among equal prices, fewer larger nodes win.
        pref = NODE_TIE_BREAK_USD * (nodes - 1)
        if carbon is not None and prefs.carbon_usd_per_tonne:
            pref += carbon / 1000.0 * prefs.carbon_usd_per_tonne
        if offer.capacity_type == "owned" and prefs.owned_bonus_usd_per_gpu_hour:
            pref -= prefs.owned_bonus_usd_per_gpu_hour * need
        pref -= prefs.provider_bonus_usd_per_hour.get(offer.provider, 0.0)
        out.candidates.append(
            Candidate(
                offer_index=index,
                gpus_needed=need,
                nodes=nodes,
                instance_hourly_usd=nodes * offer.hourly_usd,
                egress_hourly_usd=egress,
                carbon_kg_per_hour=carbon,
                preference_hourly_usd=pref,
                latency_ms=lat,
                rules=_admitting_rules(workload, offer, policies),
            )
        )
    _drop_over_budget(out)
    return out


def _drop_over_budget(wc: WorkloadCandidates) -> None:
    budget = wc.workload.budget_hourly_usd
    if budget is None or not wc.candidates:
        return
    cheapest = min(c.hourly_usd for c in wc.candidates)
    extra = (wc.workload.fewest_replicas - 1) * cheapest
    kept = []
    for c in wc.candidates:
        if c.hourly_usd + extra > budget + 1e-9:
            wc.rejected[f"over workload budget ${budget:,.2f}/h"] += 1
        else:
            kept.append(c)
    wc.candidates = kept
