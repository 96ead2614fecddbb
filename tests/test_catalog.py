"""SkyPilot catalog files become raw offers; the bundled default inventory is complete and loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from placement.catalog import SkyPilotCatalogError, read_skypilot_catalog, read_skypilot_csv
from placement.errors import PlacementError
from placement.inputs import load_inventory

HEADER = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,SpotPrice"


def _write(tmp_path: Path, *lines: str, name: str = "vms.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _by_key(offers: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["instance_type"], o["capacity_type"]): o for o in offers}


# --------------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------------


def test_on_demand_and_spot_rows(tmp_path: Path) -> None:
    path = _write(
        tmp_path, HEADER,
        "gpu-h100_8gpu,H100,8,128,1600,23.60,eu-north1,,10.00",
        "gpu-l40s_1gpu,L40S,1,8.0,32,1.5484,eu-north1,,",
    )
    offers = _by_key(read_skypilot_csv(path, provider="nebius"))
    assert set(offers) == {("gpu-h100_8gpu", "on-demand"), ("gpu-h100_8gpu", "spot"), ("gpu-l40s_1gpu", "on-demand")}
    assert offers[("gpu-h100_8gpu", "on-demand")] == {
        "provider": "nebius", "region": "eu-north1", "instance_type": "gpu-h100_8gpu", "gpu_model": "H100",
        "gpu_count": 8, "gpu_memory_gib": 80.0, "vcpus": 128, "memory_gib": 1600.0,
        "capacity_type": "on-demand", "hourly_usd": 23.6,
    }
    assert offers[("gpu-h100_8gpu", "spot")]["hourly_usd"] == 10.0
    # "8.0" vCPUs become an integer; no AvailabilityZone column means no zone key at all
    assert offers[("gpu-l40s_1gpu", "on-demand")]["vcpus"] == 8
    assert all("zone" not in o for o in offers.values())


def test_capacity_type_and_region_filters(tmp_path: Path) -> None:
    path = _write(
        tmp_path, HEADER,
        "a,H100,1,16,200,2.95,eu-north1,,1.25",
        "b,H100,1,16,200,2.95,us-central1,,1.25",
    )
    spot = read_skypilot_csv(path, provider="nebius", capacity_types=["spot"])
    assert {(o["instance_type"], o["capacity_type"]) for o in spot} == {("a", "spot"), ("b", "spot")}
    eu = read_skypilot_csv(path, provider="nebius", regions=["eu-north1"])
    assert {o["region"] for o in eu} == {"eu-north1"} and len(eu) == 2
    with pytest.raises(SkyPilotCatalogError, match="unknown capacity type"):
        read_skypilot_csv(path, provider="nebius", capacity_types=["reserved"])
    with pytest.raises(SkyPilotCatalogError, match="must be a list"):
        read_skypilot_csv(path, provider="nebius", regions="eu-north1")  # type: ignore[arg-type]


def test_zone_column(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone",
        "g2-standard-8,L4,1,8,32,0.85,0.40,us-central1,us-central1-a",
        "g2-standard-8,L4,1,8,32,0.85,0.40,us-central1,us-central1-b",
        "g2-standard-8,L4,1,8,32,0.85,0.40,us-central1,",
    )
    offers = read_skypilot_csv(path, provider="gcp", capacity_types=["on-demand"])
    assert [o.get("zone") for o in offers] == ["us-central1-a", "us-central1-b", None]


def test_gpu_memory_from_gpu_info(tmp_path: Path) -> None:
    path = _write(
        tmp_path, HEADER,
        # JSON, per-GPU size of a part whose nominal size is 80 GB: reported 79.6 GiB -> nominal 80
        'x1,H100,1,75,722,1.29,default,"{""Gpus"": [{""Name"": ""H100"", ""Count"": 1, '
        '""MemoryInfo"": {""SizeInMiB"": 81559}}], ""TotalGpuMemoryInMiB"": 81559}",',
        # Python literal with JSON's null; the total is divided by the GPU count
        "x2,A100,2,60,240,2.7,CANADA-1,\"{'Gpus': [{'Name': 'A100', 'Manufacturer': null, 'Count': 2, "
        "'MemoryInfo': {'SizeInMiB': 81920}}], 'TotalGpuMemoryInMiB': 163840}\",",
        # a size that is no nominal size of the model is kept, rounded
        "x3,A100,1,8,64,1.0,r,\"{'Gpus': [{'Count': 1, 'MemoryInfo': {'SizeInMiB': 20480}}]}\",",
        # size 0 means unknown: the model's first memory size is used
        "x4,H200,1,16,200,3.5,r,\"{'Gpus': [{'Name': 'H200', 'MemoryInfo': {'SizeInMiB': 0}}]}\",",
        # unreadable GpuInfo is ignored rather than fatal
        "x5,L4,1,8,32,0.8,r,{not a dict,",
    )
    memory = {o["instance_type"]: o["gpu_memory_gib"] for o in read_skypilot_csv(path, provider="p")}
    assert memory == {"x1": 80.0, "x2": 80.0, "x3": 20.0, "x4": 141.0, "x5": 24.0}


def test_aliases_resolve_to_canonical_models(tmp_path: Path) -> None:
    path = _write(
        tmp_path, HEADER,
        "a,A100-80GB,1,22,120,1.29,FIN-01,,",
        "b,H100-80G-PCIe,1,28,180,1.9,CANADA-1,,",
        "c,H100-80G-SXM5,8,192,960,19.2,US-1,,",
        "d,A100,1,12,85,3.67,us-central1,,",
        "e,RTX-A6000,1,28,58,0.5,CANADA-1,,",
    )
    offers = {o["instance_type"]: (o["gpu_model"], o["gpu_memory_gib"]) for o in read_skypilot_csv(path, "p")}
    assert offers == {"a": ("A100", 80.0), "b": ("H100", 80.0), "c": ("H100", 80.0), "d": ("A100", 40.0),
                      "e": ("A6000", 48.0)}


def test_unknown_gpus_cpu_rows_and_fractions_are_skipped_and_counted(tmp_path: Path) -> None:
    path = _write(
        tmp_path, HEADER,
        "gpu,L4,1,8,32,0.8,r,,",
        "rtx,RTX4090,1,16,64,0.4,r,,",
        "rtx2,RTX4090,2,32,128,0.8,r,,",
        "cpu-only,,,4,16,0.1,r,,0.05",
        "cpu-zero,,0,4,16,0.1,r,,",
        "slice,L4,0.5,4,16,0.4,r,,",
        "no-price,L4,1,8,32,,r,,",
    )
    result = read_skypilot_catalog(path, provider="p")
    assert [o["instance_type"] for o in result.offers] == ["gpu"]
    assert result.rows == 7
    assert dict(result.unknown_gpus) == {"RTX4090": 2}
    assert dict(result.skipped) == {
        "rows without GPUs": 2,
        "rows with a fraction of a GPU": 1,
        "rows without a price for the chosen capacity types": 1,
    }
    assert "RTX4090 (2)" in result.summary()


def test_gcp_machines_with_built_in_gpus_add_the_gpu_price_row(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,GpuInfo,Region,AvailabilityZone,Price,SpotPrice",
        "a2-highgpu-1g,12.0,85.0,,,,us-central1,us-central1-a,0.73948,0.38812",
        "a2-highgpu-1g,12.0,85.0,,,,us-central1,us-central1-b,0.73948,",
        "n1-standard-8,8.0,30.0,,,,us-central1,us-central1-a,0.38,0.08",
        ",,,A100,1,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 40960}}]},us-central1,us-central1-a,2.93391,1.5399",
        ",,,A100,1,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 40960}}]},us-central1,us-central1-b,2.93391,1.5399",
        ",,,T4,1,,us-central1,us-central1-a,0.35,0.14",
    )
    result = read_skypilot_catalog(path, provider="gcp")
    offers = {(o["zone"], o["capacity_type"]): o for o in result.offers}
    assert set(offers) == {("us-central1-a", "on-demand"), ("us-central1-a", "spot"), ("us-central1-b", "on-demand")}
    first = offers[("us-central1-a", "on-demand")]
    assert first["hourly_usd"] == pytest.approx(3.67339)
    assert (first["gpu_model"], first["gpu_count"], first["gpu_memory_gib"]) == ("A100", 1, 40.0)
    assert (first["vcpus"], first["memory_gib"]) == (12, 85.0)
    assert offers[("us-central1-a", "spot")]["hourly_usd"] == pytest.approx(1.92802)
    skipped = dict(result.skipped)
    assert skipped["rows without GPUs"] == 1  # the n1 machine: GPUs are attached separately
    assert skipped["GPU price rows not tied to a machine type"] == 1  # the T4 row


def test_missing_file_and_columns_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SkyPilotCatalogError, match="not found") as info:
        read_skypilot_csv(tmp_path / "nope.csv", provider="p")
    assert "nope.csv" in str(info.value)
    assert isinstance(info.value, PlacementError)

    path = _write(tmp_path, "InstanceType,AcceleratorName,vCPUs,Price,Region", "a,L4,8,0.8,r", name="bad.csv")
    with pytest.raises(SkyPilotCatalogError) as info:
        read_skypilot_csv(path, provider="p")
    message = str(info.value)
    assert "bad.csv" in message and "missing column(s) AcceleratorCount, MemoryGiB (found: " in message

    empty = _write(tmp_path, "", name="empty.csv")
    with pytest.raises(SkyPilotCatalogError, match="empty file"):
        read_skypilot_csv(empty, provider="p")


def test_malformed_number_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER, "a,L4,1,8,32,0.8,r,,", "b,L4,1,eight,32,0.8,r,,")
    with pytest.raises(SkyPilotCatalogError, match=r"line 3: vCPUs 'eight' is not a number"):
        read_skypilot_csv(path, provider="p")


# --------------------------------------------------------------------------------------------------
# Inventory integration
# --------------------------------------------------------------------------------------------------


def test_skypilot_entry_in_an_inventory_file(tmp_path: Path) -> None:
    _write(
        tmp_path, HEADER,
        "gpu-h100_1gpu,H100,1,16,200,2.95,eu-north1,,1.25",
        "gpu-h200_8gpu,H200,8,128,1600,28.00,eu-north1,,",
        "cpu-d3_4vcpu,,0,4,16,0.0992,eu-north1,,",
    )
    doc = {
        "format_version": 1,
        "snapshot": {"name": "test", "taken_on": "2026-11-20", "prices": "public list prices"},
        "providers": {"nebius": {"kind": "specialist", "egress_usd_per_gb": 0.0, "certifications": ["ISO27001"]}},
        "regions": {"nebius/eu-north1": {"country": "FI", "jurisdiction": "EU",
                                         "location": {"lat": 60.6, "lon": 25.3}, "carbon_g_per_kwh": 70}},
        "skypilot": [{"path": "vms.csv", "provider": "nebius"}],
    }
    inventory_path = tmp_path / "inventory.yaml"
    inventory_path.write_text(yaml.safe_dump(doc), encoding="utf-8")

    offers = load_inventory(inventory_path).inventory.offers
    assert sorted(o.id for o in offers) == [
        "nebius/eu-north1/gpu-h100_1gpu/on-demand",
        "nebius/eu-north1/gpu-h100_1gpu/spot",
        "nebius/eu-north1/gpu-h200_8gpu/on-demand",
    ]
    h200 = next(o for o in offers if o.gpu_model == "H200")
    assert (h200.provider_kind, h200.country, h200.jurisdiction) == ("specialist", "FI", "EU")
    assert (h200.gpu_count, h200.gpu_memory_gib, h200.hourly_usd) == (8, 141.0, 28.0)
    assert h200.certifications == ("ISO27001",)


# --------------------------------------------------------------------------------------------------
# The bundled default inventory
# --------------------------------------------------------------------------------------------------


def test_default_inventory_loads_and_is_complete() -> None:
    inventory = load_inventory("default").inventory
    offers = inventory.offers
    assert len(offers) >= 40
    assert len({o.region_key for o in offers}) >= 10
    assert len({o.jurisdiction for o in offers}) >= 3
    assert {o.provider_kind for o in offers} == {"hyperscaler", "specialist", "on-prem", "edge"}
    assert {"H100", "H200", "A100", "L40S", "L4"} <= {o.gpu_model for o in offers}
    assert {40.0, 80.0} <= {o.gpu_memory_gib for o in offers if o.gpu_model == "A100"}
    assert any(o.capacity_type == "spot" for o in offers)
    assert len({o.region_key for o in offers if o.provider_kind == "on-prem"}) >= 2
    assert len({o.region_key for o in offers if o.provider_kind == "edge"}) >= 1
    assert inventory.snapshot.taken_on.isoformat() == "2026-11-20"
    assert "list prices" in inventory.snapshot.prices and inventory.snapshot.sources


def test_default_inventory_has_the_regions_scenarios_name() -> None:
    keys = load_inventory("default").inventory.region_keys()
    expected = {
        "aws/us-east-1", "aws/us-west-2", "aws/eu-central-1", "aws/eu-west-1", "aws/ap-northeast-1",
        "gcp/us-central1", "gcp/europe-west4", "gcp/asia-southeast1", "azure/eastus", "azure/westeurope",
        "azure/swedencentral", "azure/japaneast", "nebius/eu-north1", "nebius/us-central1", "lambda/us-east-1",
        "lambda/us-west-1", "verda/FIN-01", "corp/fra-dc1", "corp/ams-dc2", "corp-edge/paris-pop",
    }
    assert expected <= keys


def test_default_inventory_owned_capacity_draws_on_pools() -> None:
    inventory = load_inventory("default").inventory
    pools = {p.id: p for p in inventory.pools}
    assert pools["corp/fra-dc1/h100"].unit == "gpus" and pools["corp/fra-dc1/h100"].limit == 48
    owned = [o for o in inventory.offers if o.capacity_type == "owned"]
    assert owned and all(o.pools and o.provider in ("corp", "corp-edge") for o in owned)
    # specialist clouds and our own sites have finite capacity
    assert all(o.available is not None for o in inventory.offers if o.provider_kind != "hyperscaler")
