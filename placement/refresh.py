"""Inventory refresh: a dated snapshot of what the configured providers offer now.

Each provider's offers (and quota pools) are read through its adapter. A provider that fails is
reported, and its offers from the newest earlier snapshot that has them are carried over and the
provider is listed under ``snapshot.stale_providers``, so that plans say which prices are old.
Snapshots are written as ordinary inventory files (``inventory-YYYYMMDDTHHMMSSZ.yaml``) plus a
``latest.yaml`` copy, so ``placement plan --inventory DIR/latest.yaml`` plans on them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from placement.errors import InputError, PlacementError
from placement.inputs import load_inventory
from placement.models import CapacityPool, Offer

SNAPSHOT_GLOB = "inventory-*.yaml"


@dataclass
class RefreshReport:
    path: Path
    offers: int = 0
    fresh: dict[str, int] = field(default_factory=dict)
    stale: dict[str, str] = field(default_factory=dict)  # provider -> error
    missing: dict[str, str] = field(default_factory=dict)  # failed with no earlier snapshot to use


def read_provider(compute: Any) -> tuple[list[Offer], list[CapacityPool]]:
    inventory = getattr(compute, "inventory", None)
    if callable(inventory):
        got = inventory()
        return list(got.offers), list(got.pools)
    return list(compute.offers()), []


def _last_good(out_dir: Path, provider: str) -> tuple[list[Offer], list[CapacityPool], str] | None:
    for path in sorted(out_dir.glob(SNAPSHOT_GLOB), reverse=True):
        try:
            inv = load_inventory(path).inventory
        except InputError:
            continue
        if provider in inv.snapshot.stale_providers:
            continue
        offers = [o for o in inv.offers if o.provider == provider]
        if offers:
            pool_ids = {p for o in offers for p in o.pools}
            pools = [p for p in inv.pools if p.id in pool_ids]
            return offers, pools, inv.snapshot.provider_taken_at.get(provider, inv.snapshot.taken_on.isoformat())
    return None


def refresh_inventory(
    providers: list[str],
    computes_for: Callable[[str], Any],
    out_dir: Path,
    now: dt.datetime | None = None,
) -> RefreshReport:
    now = now or dt.datetime.now(dt.UTC)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    report = RefreshReport(path=out_dir / f"inventory-{stamp}.yaml")
    offers: list[Offer] = []
    pools: dict[str, CapacityPool] = {}
    taken_at: dict[str, str] = {}
    for name in sorted(providers):
        try:
            got_offers, got_pools = read_provider(computes_for(name))
            taken_at[name] = now.isoformat(timespec="seconds")
            report.fresh[name] = len(got_offers)
        except PlacementError as exc:
            previous = _last_good(out_dir, name)
            if previous is None:
                report.missing[name] = str(exc)
                continue
            got_offers, got_pools, taken_at[name] = previous
            report.stale[name] = str(exc)
        offers.extend(got_offers)
        for pool in got_pools:
            pools[pool.id] = pool
    if not offers:
        raise PlacementError("inventory refresh got no offers from any provider: "
                             + "; ".join(f"{k}: {v}" for k, v in sorted(report.missing.items())))
    doc = {
        "format_version": 1,
        "snapshot": {
            "name": f"refresh-{stamp}",
            "taken_on": now.date().isoformat(),
            "prices": "prices as reported by each provider's API at refresh time (on-demand list prices, "
                      "current spot prices); a stale provider's prices are from its last good snapshot",
            "sources": [f"{p}: provider API" for p in sorted(report.fresh)]
                       + [f"{p}: carried over from {taken_at[p]}" for p in sorted(report.stale)],
            "notes": "; ".join(f"{p} failed: {e}" for p, e in sorted({**report.stale, **report.missing}.items())),
            "stale_providers": sorted(report.stale),
            "provider_taken_at": taken_at,
        },
        "pools": [p.model_dump(mode="json") for p in sorted(pools.values(), key=lambda p: p.id)],
        "offers": [o.model_dump(mode="json") for o in sorted(offers, key=lambda o: o.id)],
    }
    text = yaml.safe_dump(doc, sort_keys=True, allow_unicode=True)
    report.path.write_text(text, encoding="utf-8")
    (out_dir / "latest.yaml").write_text(text, encoding="utf-8")
    report.offers = len(offers)
    load_inventory(report.path)  # what was written must load
    return report
