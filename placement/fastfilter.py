"""Vectorised hard filters: the candidate set of ``placement.candidates`` as numpy arrays.

``candidate_arrays`` keeps exactly the (workload, offer) pairs that ``candidates_for`` keeps, in the
same order (workload by workload, offers in inventory order), with bit-identical nodes, GPUs,
instance cost, egress, carbon and preference terms: every float is computed with the same operations
in the same order as the scalar code. It does not count rejection reasons and builds no ``Candidate``
objects; the large-instance planner builds those only for the pairs a plan uses.

Latency is estimated with numpy's trigonometry, which may differ from ``math`` in the last bit; a pair
whose estimate lies within a hair of its limit is re-checked with the scalar function, so the decision
is always the scalar one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from placement.candidates import (
    BASE_RTT_MS,
    EARTH_RADIUS_KM,
    FIBRE_KM_PER_MS,
    NODE_TIE_BREAK_USD,
    ROUTE_FACTOR,
    gpus_needed,
    latency_ms,
    region_egress_table,
    throughput_of,
)
from placement.gpus import GPU_POWER_KW
from placement.models import Inventory, Offer, PolicySet, Workload

CHUNK_PAIRS = 4_000_000  # workload x offer cells evaluated at once


@dataclass
class CandidateArrays:
    """All candidates, grouped by workload (``start[w]:start[w + 1]``), offers ascending within a group."""

    workload: np.ndarray  # int32, workload index
    offer: np.ndarray  # int32, offer index
    gpus_needed: np.ndarray  # int32
    nodes: np.ndarray  # int32
    instance_hourly_usd: np.ndarray  # float64
    egress_hourly_usd: np.ndarray  # float64
    carbon_kg_per_hour: np.ndarray  # float64, nan where the offer has no carbon intensity
    preference_hourly_usd: np.ndarray  # float64
    start: np.ndarray  # int64, len(workloads) + 1

    @property
    def hourly_usd(self) -> np.ndarray:
        return self.instance_hourly_usd + self.egress_hourly_usd

    @property
    def objective_hourly_usd(self) -> np.ndarray:
        return (self.instance_hourly_usd + self.egress_hourly_usd) + self.preference_hourly_usd

    def __len__(self) -> int:
        return int(self.workload.shape[0])


def _codes(values: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    table: dict[str, int] = {}
    out = np.empty(len(values), np.int32)
    for i, v in enumerate(values):
        out[i] = table.setdefault(v, len(table))
    return out, table


def _in(codes: np.ndarray, table: dict[str, int], allowed: tuple[str, ...] | list[str] | set[str]) -> np.ndarray:
    wanted = [table[a] for a in allowed if a in table]
    return np.isin(codes, np.asarray(wanted, np.int32)) if wanted else np.zeros(codes.shape, bool)


def _static_mask(workload: Workload, offers: tuple[Offer, ...], cols: dict[str, tuple[np.ndarray, dict[str, int]]],
                 policies: PolicySet) -> np.ndarray:
    """Residency and data-class rules of one workload, over all offers."""
    n = len(offers)
    ok = np.ones(n, bool)
    res = workload.residency
    if res.jurisdictions:
        ok &= _in(*cols["jurisdiction"], res.jurisdictions)
    if res.countries:
        ok &= _in(*cols["country"], res.countries)
    if res.regions:
        ok &= _in(*cols["region_key"], res.regions) | _in(*cols["region"], res.regions)
    rule = policies.data_classes.get(workload.data_class) if workload.data_class else None
    if rule is not None:
        if rule.allowed_jurisdictions:
            ok &= _in(*cols["jurisdiction"], rule.allowed_jurisdictions)
        if rule.allowed_countries:
            ok &= _in(*cols["country"], rule.allowed_countries)
        if rule.allowed_providers:
            ok &= _in(*cols["provider"], rule.allowed_providers)
        if rule.allowed_provider_kinds:
            ok &= _in(*cols["provider_kind"], rule.allowed_provider_kinds)
        if rule.required_certifications:
            need = set(rule.required_certifications)
            ok &= np.fromiter((need <= set(o.certifications) for o in offers), bool, n)
        if not rule.interruptible_allowed:
            ok &= cols["capacity_type"][0] != cols["capacity_type"][1].get("spot", -1)
    return ok


def _policy_mask(offers: tuple[Offer, ...], cols: dict[str, tuple[np.ndarray, dict[str, int]]],
                 policies: PolicySet) -> np.ndarray:
    ok = np.fromiter((not o.unavailable_reason for o in offers), bool, len(offers))
    if policies.allowed_providers:
        ok &= _in(*cols["provider"], policies.allowed_providers)
    if policies.forbidden_providers:
        ok &= ~_in(*cols["provider"], policies.forbidden_providers)
    if policies.forbidden_regions:
        ok &= ~(_in(*cols["region_key"], policies.forbidden_regions) | _in(*cols["region"], policies.forbidden_regions))
    if policies.gpus.allowed:
        ok &= _in(*cols["gpu_model"], policies.gpus.allowed)
    if policies.gpus.forbidden:
        ok &= ~_in(*cols["gpu_model"], policies.gpus.forbidden)
    return ok


def _rtt_matrix(points: list[tuple[float, float]], lat_o: np.ndarray, lon_o: np.ndarray) -> np.ndarray:
    """Estimated round-trip ms from each point to each offer (numpy version of estimated_rtt_ms)."""
    lat_u = np.radians(np.asarray([p[0] for p in points]))[:, None]
    lon_u = np.radians(np.asarray([p[1] for p in points]))[:, None]
    h = np.sin((lat_o - lat_u) / 2) ** 2 + np.cos(lat_u) * np.cos(lat_o) * np.sin((lon_o - lon_u) / 2) ** 2
    km = 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(h)))
    out: np.ndarray = BASE_RTT_MS + 2 * ROUTE_FACTOR * km / FIBRE_KM_PER_MS
    return out


class FilterCache:
    """Offer-level tables and residency masks, shared by the calls of ``candidate_arrays`` on blocks
    of workloads of one inventory and policy set."""

    def __init__(self) -> None:
        self.tables: dict[str, Any] = {}
        self.static: dict[tuple[object, ...], np.ndarray] = {}


def _offer_tables(inventory: Inventory, policies: PolicySet) -> dict[str, Any]:
    offers = inventory.offers
    cols = {key: _codes([getattr(o, key) for o in offers]) for key in
            ("jurisdiction", "country", "region_key", "region", "provider", "provider_kind", "capacity_type",
             "gpu_model")}
    prefs = policies.preferences
    return {
        "cols": cols,
        "o_gpus": np.asarray([o.gpu_count for o in offers], np.int64),
        "o_mem": np.asarray([o.gpu_memory_gib for o in offers], np.float64),
        "o_vcpus": np.asarray([o.vcpus for o in offers], np.int64),
        "o_ram": np.asarray([o.memory_gib for o in offers], np.float64),
        "o_spot": np.asarray([o.capacity_type == "spot" for o in offers], bool),
        "o_avail": np.asarray([-1 if o.available is None else o.available for o in offers], np.int64),
        "o_price": np.asarray([o.hourly_usd for o in offers], np.float64),
        "o_lat": np.radians(np.asarray([o.location.lat for o in offers], np.float64))[None, :],
        "o_lon": np.radians(np.asarray([o.location.lon for o in offers], np.float64))[None, :],
        "policy_ok": _policy_mask(offers, cols, policies),
        "egress_table": region_egress_table(inventory),
        "o_cg": np.asarray([np.nan if o.carbon_g_per_kwh is None else o.carbon_g_per_kwh for o in offers], np.float64),
        "o_kw": np.asarray([o.gpu_power_kw if o.gpu_power_kw is not None else GPU_POWER_KW.get(o.gpu_model, 0.5)
                            for o in offers], np.float64),
        "o_pue": np.asarray([o.pue for o in offers], np.float64),
        "owned": np.asarray([o.capacity_type == "owned" for o in offers], bool),
        "bonus": np.asarray([prefs.provider_bonus_usd_per_hour.get(o.provider, 0.0) for o in offers], np.float64),
    }


def candidate_arrays(workloads: tuple[Workload, ...] | list[Workload], inventory: Inventory,
                     policies: PolicySet, cache: FilterCache | None = None) -> CandidateArrays:
    """``cache``: offer-level tables to reuse across calls with the same inventory and policies."""
    offers = inventory.offers
    n_o = len(offers)
    n_w = len(workloads)
    cache = cache if cache is not None else FilterCache()
    if not cache.tables:
        cache.tables = _offer_tables(inventory, policies)
    tab = cache.tables
    cols = tab["cols"]
    gpu_code, gpu_table = cols["gpu_model"]
    o_gpus, o_mem, o_vcpus, o_ram = tab["o_gpus"], tab["o_mem"], tab["o_vcpus"], tab["o_ram"]
    o_spot, o_avail, o_price = tab["o_spot"], tab["o_avail"], tab["o_price"]
    o_lat, o_lon = tab["o_lat"], tab["o_lon"]
    policy_ok = tab["policy_ok"]
    rk_code, rk_table = cols["region_key"]

    # Per workload: GPUs needed per offered model (0 = model not requested), scalars, static-mask key.
    n_g = len(gpu_table)
    need_wg = np.zeros((n_w, max(1, n_g)), np.int64)
    w_minmem = np.empty(n_w, np.float64)
    w_intr = np.empty(n_w, bool)
    w_maxn = np.empty(n_w, np.int64)
    w_vcpus = np.empty(n_w, np.int64)
    w_ram = np.empty(n_w, np.float64)
    key_of: dict[tuple[object, ...], int] = {}
    w_key = np.empty(n_w, np.int64)
    masks: list[np.ndarray] = []
    user_of: dict[tuple[str, float, float], int] = {}
    user_slots: list[list[tuple[int, float]]] = []
    for wi, w in enumerate(workloads):
        tp = throughput_of(w, policies)
        for m in w.gpu.models:
            g = gpu_table.get(m)
            if g is not None:
                need_wg[wi, g] = gpus_needed(w, m, tp)
        w_minmem[wi] = w.gpu.min_memory_gib
        w_intr[wi] = w.interruptible
        w_maxn[wi] = w.max_nodes if w.max_nodes is not None else np.iinfo(np.int64).max // 4
        w_vcpus[wi] = w.vcpus
        w_ram[wi] = w.memory_gib
        key = (w.residency, w.data_class if w.data_class in policies.data_classes else None)
        k = key_of.get(key)
        if k is None:
            k = key_of[key] = len(masks)
            mask = cache.static.get(key)
            if mask is None:
                mask = cache.static[key] = _static_mask(w, offers, cols, policies) & policy_ok
            masks.append(mask)
        w_key[wi] = k
        slots = []
        for u in w.users:
            ukey = (u.name, u.location.lat, u.location.lon)
            slots.append((user_of.setdefault(ukey, len(user_of)), u.max_latency_ms))
        user_slots.append(slots)
    static = np.stack(masks) if masks else np.zeros((0, n_o), bool)

    # Latency per distinct users' location: measured where the inventory has it, else the estimate.
    user_keys = sorted(user_of, key=lambda k: user_of[k])
    rtt = _rtt_matrix([(k[1], k[2]) for k in user_keys], o_lat, o_lon) if user_keys else np.zeros((0, n_o))
    for ui, (name, _lat, _lon) in enumerate(user_keys):
        for region_key, ms in inventory.latency_ms.get(name, {}).items():
            code = rk_table.get(region_key)
            if code is not None:
                rtt[ui, rk_code == code] = ms
    max_users = max((len(s) for s in user_slots), default=0)
    u_id = np.full((n_w, max_users), -1, np.int64)
    u_lim = np.zeros((n_w, max_users), np.float64)
    for wi, slots in enumerate(user_slots):
        for j, (ui, lim) in enumerate(slots):
            u_id[wi, j] = ui
            u_lim[wi, j] = lim

    # Only offers of a requested GPU model can be candidates: workloads are grouped by the set of models
    # they request, and each group is checked against those models' offers only. Each workload's pairs
    # come out together, offers ascending; they are then put in workload order.
    parts_w: list[np.ndarray] = []
    parts_o: list[np.ndarray] = []
    if n_g:
        sets, set_of = np.unique(need_wg > 0, axis=0, return_inverse=True)
        set_of = set_of.reshape(-1)
        for si in range(sets.shape[0]):
            o_sel = np.flatnonzero(sets[si][gpu_code])
            if o_sel.size == 0:
                continue
            rows_s = np.flatnonzero(set_of == si)
            keys_s, key_s = np.unique(w_key[rows_s], return_inverse=True)
            static_s = static[keys_s][:, o_sel]
            rtt_s = rtt[:, o_sel]
            o_gpus_s, o_mem_s, o_spot_s = o_gpus[o_sel][None, :], o_mem[o_sel][None, :], o_spot[o_sel][None, :]
            o_vcpus_s, o_ram_s, o_avail_s = o_vcpus[o_sel][None, :], o_ram[o_sel][None, :], o_avail[o_sel][None, :]
            chunk = max(1, CHUNK_PAIRS // o_sel.size)
            for a in range(0, rows_s.size, chunk):
                rows = rows_s[a:a + chunk]
                need = need_wg[rows][:, gpu_code[o_sel]]
                ok = need > 0
                ok &= static_s[key_s[a:a + chunk]]
                ok &= ~(o_mem_s + 1e-9 < w_minmem[rows, None])
                ok &= ~(o_spot_s & ~w_intr[rows, None])
                nodes = -((-need) // o_gpus_s)
                ok &= nodes <= w_maxn[rows, None]
                ok &= ~(o_vcpus_s * nodes < w_vcpus[rows, None])
                ok &= ~(o_ram_s * nodes + 1e-9 < w_ram[rows, None])
                ok &= ~((o_avail_s >= 0) & (o_avail_s < nodes))
                for j in range(max_users):
                    uid = u_id[rows, j]
                    has = uid >= 0
                    if not has.any():
                        continue
                    rtt_u = rtt_s[np.where(has, uid, 0)]
                    lim_u = u_lim[rows, j, None]
                    bad_u = rtt_u > lim_u
                    near = np.abs(rtt_u - lim_u) <= 1e-6 * np.maximum(1.0, lim_u)
                    near &= ok & has[:, None]
                    for r, c in zip(*np.nonzero(near), strict=True):
                        user = workloads[int(rows[r])].users[j]
                        offer = offers[int(o_sel[c])]
                        bad_u[r, c] = latency_ms(inventory, user.name, user.location, offer) > user.max_latency_ms
                    ok &= ~(bad_u & has[:, None])
                r_ok, c_ok = np.nonzero(ok)
                parts_w.append(rows[r_ok].astype(np.int32))
                parts_o.append(o_sel[c_ok].astype(np.int32))
    w_found = np.concatenate(parts_w) if parts_w else np.zeros(0, np.int32)
    o_found = np.concatenate(parts_o) if parts_o else np.zeros(0, np.int32)
    # Workload order without a sort: a workload's pairs are one run, moved to the workload's slot.
    n_found = w_found.shape[0]
    start = np.zeros(n_w + 1, np.int64)
    np.cumsum(np.bincount(w_found, minlength=n_w), out=start[1:])
    runs = np.flatnonzero(np.concatenate(([True], w_found[1:] != w_found[:-1]))) if n_found else w_found
    shift = start[:-1].copy()
    shift[w_found[runs]] -= runs
    dest = shift[w_found] + np.arange(n_found, dtype=np.int64)
    cw = np.empty(n_found, np.int32)
    co = np.empty(n_found, np.int32)
    cw[dest] = w_found
    co[dest] = o_found
    del w_found, o_found, dest
    c_need = need_wg[cw, gpu_code[co]].astype(np.int32) if n_found else np.zeros(0, np.int32)
    c_nodes = (-((-c_need.astype(np.int64)) // o_gpus[co])).astype(np.int32)

    # Costs, in the scalar code's order of operations.
    inst = c_nodes.astype(np.int64) * o_price[co]
    egress_table = tab["egress_table"]
    w_rate = np.full(n_w, np.nan)
    w_size = np.zeros(n_w)
    w_amort = np.ones(n_w)
    w_rk = np.full(n_w, -1, np.int64)
    for wi, w in enumerate(workloads):
        if w.dataset is not None:
            rate = egress_table.get(w.dataset.region_key)
            if rate is not None:
                w_rate[wi] = rate
                w_size[wi] = w.dataset.size_gb
                w_amort[wi] = w.dataset.amortization_hours
                w_rk[wi] = rk_table.get(w.dataset.region_key, -2)
    w_egress = w_size * np.nan_to_num(w_rate) / w_amort
    has_egress = ~np.isnan(w_rate)[cw] & (w_rk[cw] != rk_code[co])
    egress = np.where(has_egress, w_egress[cw], 0.0)
    del has_egress

    # Workload budgets: drop what cannot fit even with the cheapest candidate for the other replicas.
    hourly = inst + egress
    w_budget = np.asarray([np.inf if w.budget_hourly_usd is None else w.budget_hourly_usd for w in workloads],
                          np.float64)
    w_fewest = np.asarray([w.fewest_replicas for w in workloads], np.float64)
    cheapest = np.zeros(n_w)
    nonempty = np.flatnonzero(start[1:] > start[:-1])
    if nonempty.size:
        cheapest[nonempty] = np.minimum.reduceat(hourly, start[nonempty])
    extra = (w_fewest - 1) * cheapest
    keep = ~(hourly + extra[cw] > w_budget[cw] + 1e-9)
    del hourly
    if not keep.all():
        cw, co, c_need, c_nodes, inst, egress = cw[keep], co[keep], c_need[keep], c_nodes[keep], inst[keep], egress[keep]
        start = np.zeros(n_w + 1, np.int64)
        np.cumsum(np.bincount(cw, minlength=n_w), out=start[1:])
    del keep

    nodes64 = c_nodes.astype(np.int64)
    o_cg, o_kw, o_pue = tab["o_cg"], tab["o_kw"], tab["o_pue"]
    carbon = (nodes64 * o_gpus[co]) * o_kw[co] * o_pue[co] * o_cg[co] / 1000.0
    prefs = policies.preferences
    pref = NODE_TIE_BREAK_USD * (nodes64 - 1)
    if prefs.carbon_usd_per_tonne:
        has_c = ~np.isnan(carbon)
        pref = np.where(has_c, pref + np.nan_to_num(carbon) / 1000.0 * prefs.carbon_usd_per_tonne, pref)
    if prefs.owned_bonus_usd_per_gpu_hour:
        owned = tab["owned"][co]
        pref = np.where(owned, pref - prefs.owned_bonus_usd_per_gpu_hour * c_need.astype(np.int64), pref)
    pref -= tab["bonus"][co]
    return CandidateArrays(workload=cw, offer=co, gpus_needed=c_need, nodes=c_nodes, instance_hourly_usd=inst,
                           egress_hourly_usd=egress, carbon_kg_per_hour=carbon, preference_hourly_usd=pref,
                           start=start)
