"""Builders for small, self-contained scenarios written into a temporary folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REGIONS: dict[str, dict[str, Any]] = {
    "aws/us-east-1": {"country": "US", "jurisdiction": "US", "location": {"lat": 38.9, "lon": -77.4},
                      "carbon_g_per_kwh": 350, "pue": 1.15},
    "aws/eu-central-1": {"country": "DE", "jurisdiction": "EU", "location": {"lat": 50.1, "lon": 8.7},
                         "carbon_g_per_kwh": 350, "pue": 1.15},
    "gcp/europe-west4": {"country": "NL", "jurisdiction": "EU", "location": {"lat": 53.4, "lon": 6.8},
                         "carbon_g_per_kwh": 300, "pue": 1.1},
    "gcp/asia-northeast1": {"country": "JP", "jurisdiction": "JP", "location": {"lat": 35.7, "lon": 139.7},
                            "carbon_g_per_kwh": 450, "pue": 1.1},
    "corp/fra": {"country": "DE", "jurisdiction": "EU", "location": {"lat": 50.1, "lon": 8.7},
                 "carbon_g_per_kwh": 350, "pue": 1.5},
}

PROVIDERS = {
    "aws": {"kind": "hyperscaler", "egress_usd_per_gb": 0.09, "certifications": ["ISO27001"]},
    "gcp": {"kind": "hyperscaler", "egress_usd_per_gb": 0.12},
    "corp": {"kind": "on-prem", "egress_usd_per_gb": 0.0, "certifications": ["ISO27001"]},
}


def offer(provider: str, region: str, instance_type: str, gpu: str, count: int, price: float, **extra: Any) -> dict[str, Any]:
    memory = {"H100": 80, "A100": 80, "L4": 24, "L40S": 48}.get(gpu, 24)
    base = {
        "provider": provider, "region": region, "instance_type": instance_type, "gpu_model": gpu,
        "gpu_count": count, "gpu_memory_gib": memory, "vcpus": 12 * count, "memory_gib": 96.0 * count,
        "capacity_type": "on-demand", "hourly_usd": price,
    }
    base.update(extra)
    return base


def small_offers() -> list[dict[str, Any]]:
    return [
        offer("aws", "us-east-1", "p5.48xlarge", "H100", 8, 98.32),
        offer("aws", "us-east-1", "p5.48xlarge", "H100", 8, 39.0, capacity_type="spot", available=2),
        offer("aws", "eu-central-1", "p5.48xlarge", "H100", 8, 110.0, available=1),
        offer("aws", "eu-central-1", "g6.xlarge", "L4", 1, 0.98),
        offer("gcp", "europe-west4", "a3-highgpu-1g", "H100", 1, 11.06, available=3),
        offer("gcp", "europe-west4", "g2-standard-4", "L4", 1, 0.71, available=2),
        offer("gcp", "asia-northeast1", "g2-standard-4", "L4", 1, 0.86),
        offer("corp", "fra", "h100-1g", "H100", 1, 1.6, capacity_type="owned", pools=["corp/fra/h100"]),
        offer("corp", "fra", "h100-8g", "H100", 8, 12.8, capacity_type="owned", pools=["corp/fra/h100"]),
    ]


def inventory_doc(offers: list[dict[str, Any]] | None = None, pools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "format_version": 1,
        "snapshot": {"name": "test", "taken_on": "2026-11-20", "prices": "public list prices (test copy)"},
        "providers": PROVIDERS,
        "regions": REGIONS,
        "pools": pools if pools is not None else [{"id": "corp/fra/h100", "limit": 8, "unit": "gpus"}],
        "offers": offers if offers is not None else small_offers(),
    }


def write_scenario(
    folder: Path,
    workloads: list[dict[str, Any]],
    inventory: dict[str, Any] | None = None,
    policies: dict[str, dict[str, Any]] | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "workloads.yaml").write_text(yaml.safe_dump({"format_version": 1, "workloads": workloads}))
    (folder / "inventory.yaml").write_text(yaml.safe_dump(inventory or inventory_doc()))
    if policies:
        pdir = folder / "policies"
        pdir.mkdir(exist_ok=True)
        for name, doc in policies.items():
            (pdir / name).write_text(yaml.safe_dump(doc))
    return folder
