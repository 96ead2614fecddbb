"""Owned clusters in one global plan: internal cost, owned capacity used first, idle capacity reported.

The Kubernetes cluster is the local API stub of tests/k8s_stub.py (see tests/test_kubernetes.py for
what it substitutes); the `placement` CLI runs in real processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from providers.onprem import HOURS_PER_YEAR, OnPremSettings, OwnedNode, gpu_from_product, slice_offers
from tests.helpers import PROVIDERS, REGIONS, offer
from tests.k8s_stub import K8sStub
from tests.test_kubernetes import H100, write_kubeconfig

SITE = {"region": "fra-dc1", "country": "DE", "jurisdiction": "EU", "location": {"lat": 50.11, "lon": 8.68},
        "pue": 1.5, "electricity_usd_per_kwh": 0.2}
H100_NODE = {"capital_usd": 300000, "lifetime_years": 4, "power_kw": 10.2}
GPU_HOUR = (300000 / (4 * HOURS_PER_YEAR) + 10.2 * 1.5 * 0.2) / 8  # $1.4527


def test_internal_cost_is_capital_plus_power_per_gpu_hour() -> None:
    settings = OnPremSettings.model_validate({"site": SITE, "costs": {"NVIDIA-H100-80GB-HBM3": H100_NODE}})
    assert settings.gpu_hour_usd("H100", 8) == pytest.approx(1.4527, abs=1e-4)
    assert settings.gpu_hour_usd("L40S", 4) is None  # unpriced: such offers are listed unavailable
    with_ops = OnPremSettings.model_validate({"site": SITE, "costs": {"H100": {**H100_NODE, "operations_usd_per_hour": 0.8}}})
    assert with_ops.gpu_hour_usd("H100", 8) == pytest.approx(GPU_HOUR + 0.1)
    assert gpu_from_product("NVIDIA-A100-SXM4-80GB") == ("A100", 80)
    assert gpu_from_product("Tesla-T4") == ("T4", None)
    # two memory variants of one node size get offers and pools of their own
    nodes = [OwnedNode("a", "H100", 80, 8, 8, 200, 2000), OwnedNode("b", "H100", 94, 8, 2, 200, 2000)]
    offers, pools, owned = slice_offers("corp", settings, nodes, type_prefix="k8s")
    assert sorted(p.id for p in pools) == ["corp/fra-dc1/h100-80gb-8g", "corp/fra-dc1/h100-94gb-8g"]
    assert len({o.id for o in offers}) == len(offers) == 8
    assert [(c.gpus_total, c.gpus_free) for c in owned] == [(8, 8), (8, 2)]
    with pytest.raises(ValueError, match="unknown GPU model 'Z900'"):
        OnPremSettings.model_validate({"site": SITE, "costs": {"Z900": H100_NODE}})


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[K8sStub, Path]]:
    stub = K8sStub().start()
    for n in range(2):
        stub.add_node(f"h100-{n}", H100, 8)
    stub.add_pod("someone-elses", "h100-0", 4)  # 12 of 16 GPUs free
    providers = {"providers": {"corp-k8s": {
        "type": "kubernetes", "kubeconfig": str(write_kubeconfig(tmp_path / "kubeconfig", stub.url)),
        "context": "stub", "namespace": "placement", "site": SITE, "costs": {"H100": H100_NODE}}}}
    (tmp_path / "providers.yaml").write_text(yaml.safe_dump(providers))
    try:
        yield stub, tmp_path
    finally:
        stub.stop()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "placement.cli", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode in (0, 2), f"placement {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def _scenario(folder: Path, workloads: list[dict[str, Any]]) -> None:
    folder.mkdir()
    cloud = {
        "format_version": 1,
        "include": ["../inv/latest.yaml"],
        "snapshot": {"name": "cloud", "taken_on": "2026-11-20", "prices": "list prices (test copy)"},
        "providers": {"aws": PROVIDERS["aws"]},
        "regions": {"aws/eu-central-1": REGIONS["aws/eu-central-1"]},
        "offers": [offer("aws", "eu-central-1", "p5.4xlarge", "H100", 1, 3.10),   # $3.10/GPU-h, dearer than owned
                   offer("aws", "eu-central-1", "p5.48xlarge", "H100", 8, 24.80)],
    }
    (folder / "inventory.yaml").write_text(yaml.safe_dump(cloud))
    (folder / "workloads.yaml").write_text(yaml.safe_dump({"format_version": 1, "workloads": workloads}))


def _train(name: str, gpus: int) -> dict[str, Any]:
    return {"name": name, "team": "research", "kind": "batch", "gpu": {"models": ["H100"], "count": gpus},
            "residency": {"jurisdictions": ["EU"]}}


def test_owned_gpus_fill_first_and_idle_capacity_is_reported(cluster: tuple[K8sStub, Path]) -> None:
    stub, root = cluster
    refreshed = _cli("inventory", "refresh", "--providers", "providers.yaml", "--out-dir", "inv", cwd=root)
    assert "corp-k8s" in refreshed.stdout
    inventory = yaml.safe_load((root / "inv" / "latest.yaml").read_text())
    pool = next(p for p in inventory["pools"] if p["id"].startswith("corp-k8s/fra-dc1/h100"))
    assert pool["limit"] == 12
    one = next(o for o in inventory["offers"] if o["instance_type"].endswith("slice-1g"))
    assert one["hourly_usd"] == pytest.approx(GPU_HOUR, abs=1e-4) and one["capacity_type"] == "owned"

    # 20 GPUs wanted, 12 owned free: owned first (cheaper), the rest from AWS.
    _scenario(root / "busy", [_train("a", 4), _train("b", 4), _train("c", 4), _train("d", 8)])
    _cli("plan", "busy", "--out", "busy.json", "--providers", "providers.yaml", cwd=root)
    plan = json.loads((root / "busy.json").read_text())
    owned = sum(p["gpus_per_node"] * p["nodes"] for p in plan["placements"] if p["provider"] == "corp-k8s")
    assert owned == 12
    assert {p["provider"] for p in plan["placements"] if p["workload"] == "d"} == {"aws"}
    [idle] = plan["idle_owned"]
    assert (idle["gpus_free"], idle["gpus_planned"], idle["gpus_idle"], idle["idle_hourly_usd"]) == (12, 12, 0, 0.0)

    # 6 GPUs wanted: all owned, 6 of the 12 free GPUs stay idle at their internal cost.
    _scenario(root / "quiet", [_train("a", 4), _train("b", 2)])
    table = _cli("plan", "quiet", "--out", "quiet.json", cwd=root).stdout
    plan = json.loads((root / "quiet.json").read_text())
    assert {p["provider"] for p in plan["placements"]} == {"corp-k8s"}
    [idle] = plan["idle_owned"]
    assert idle["gpus_idle"] == 6 and idle["idle_hourly_usd"] == pytest.approx(6 * GPU_HOUR, abs=1e-3)
    assert "idle owned capacity: 6 GPU(s)" in table

    status = _cli("status", "--refresh", "--providers", "providers.yaml", cwd=root).stdout
    assert "Owned GPU capacity" in status
    assert f"idle owned capacity: 12 GPU(s), ${12 * GPU_HOUR:,.2f}/h that buys nothing (75% of" in status

    # Applied through the Kubernetes adapter: one Job per batch replica, GPUs as limits.
    _cli("apply", "quiet.json", "--auto-approve", "--providers", "providers.yaml", cwd=root)
    jobs = sorted(stub.objects["jobs"].values(), key=lambda j: j["metadata"]["name"])
    limits = sorted(j["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
                    for j in jobs)
    assert limits == ["2", "4"]
    assert {j["metadata"]["labels"]["placement.dev/workload"] for j in jobs} == {"a", "b"}
    assert all(j["metadata"]["labels"]["placement.dev/managed"] == "true" for j in jobs)
    after = _cli("status", "--refresh", "--providers", "providers.yaml", cwd=root).stdout
    assert "2 replica(s)" in after and "no drift" in after
