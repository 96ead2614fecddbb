"""One plan across AWS, GCP, Azure and Lambda Cloud, applied and destroyed through the real adapters.

What is real: the engine's planner, apply loop and state store; boto3, google-cloud-compute,
azure-mgmt-compute and httpx making their HTTP calls. What is substituted: the clouds, by moto's EC2
server (AWS) and by local stubs that answer as the published API descriptions say and record every
request that departs from them (GCP, Azure, Lambda).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import tests.test_azure as az
import tests.test_gcp as gc
import tests.test_lambda as lc
from placement.apply import ApplyOptions, apply_plan, destroy_all
from placement.diff import attach_state, view_from_snapshot
from placement.models import Offer
from placement.planner import make_plan, plan_to_json
from placement.refresh import read_provider
from placement.scenario import load_scenario
from placement.state import StateStore
from providers.aws import AwsCompute
from providers.base import Compute
from providers.registry import AwsSettings
from tests.gcp_stub import GcpStub, seed_gpu_world
from tests.lambda_stub import LambdaStub
from tests.test_aws import REGION, ami, ec2, moto, moto_url  # noqa: F401  (fixtures)


@pytest.fixture
def clouds(moto: str, ami: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:  # noqa: F811
    gstub = seed_gpu_world(GcpStub(project=gc.PROJECT)).start()
    astub = az.AzureStub(az.SUB).start()
    az.seed(astub)
    lstub = LambdaStub().start()
    lstub.types = {lc.A100: lc.InstanceType(lc.A100, "1x A100 (40 GB SXM4)", "A100 (40 GB SXM4)", 129, 30, 200,
                                            512, 1, ["us-east-1"])}
    monkeypatch.setenv(lc.API_KEY_ENV, lc.API_KEY)
    pubkey = tmp_path / "id.pub"
    pubkey.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlacementEngineTestKeyOnly test@example\n")
    try:
        yield {
            "aws": AwsCompute("aws", AwsSettings(regions=(REGION,), image_ids={REGION: ami}),
                              prices={(REGION, "g6.xlarge"): 0.8048}),
            "gcp": gc.make_adapter(gstub),
            "azure": az.make_adapter(astub, az.AzureSettings(
                subscription_id=az.SUB, resource_group=az.RG, locations=(az.LOC,), subnet_ids={az.LOC: az.SUBNET},
                ssh_public_key_path=str(pubkey))),
            "lambda": lc.make_adapter(lc.LambdaSettings(regions=("us-east-1",), ssh_key_names=("ops",),
                                                        base_url=lstub.url)),
            "stubs": {"gcp": gstub, "azure": astub},
        }
        assert gstub.violations == [] and astub.violations == [] and lstub.violations == []
    finally:
        gstub.stop()
        astub.stop()
        lstub.stop()


def _pick(offers: list[Offer], provider: str) -> Offer:
    usable = [o for o in offers if o.provider == provider and not o.unavailable_reason
              and o.capacity_type == "on-demand" and o.gpu_count == 1]
    assert usable, f"{provider} offers nothing usable"
    return sorted(usable, key=lambda o: (o.hourly_usd, o.id))[0]


def _scenario(clouds: dict[str, Compute], tmp_path: Path, workloads: Any = None) -> tuple[Path, dict[str, Offer]]:
    read = {name: read_provider(compute) for name, compute in clouds.items()}
    chosen = {name: _pick(offers, name) for name, (offers, _) in read.items()}
    pool_ids = {p for o in chosen.values() for p in o.pools}
    inventory = {
        "format_version": 1,
        "snapshot": {"name": "adapters", "taken_on": "2026-11-20", "prices": "as the adapters reported them"},
        "pools": [p.model_dump(mode="json") for _, pools in read.values() for p in pools if p.id in pool_ids],
        "offers": [{**o.model_dump(mode="json"), "available": 2} for o in chosen.values()],
    }
    workloads = workloads(chosen) if workloads else [
        {"name": f"on-{name}", "team": "t", "gpu": {"models": [o.gpu_model], "count": 1},
         "vcpus": 1, "memory_gib": 1, "residency": {"regions": [o.region_key]}}
        for name, o in chosen.items()
    ]
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "inventory.yaml").write_text(yaml.safe_dump(inventory))
    (folder / "workloads.yaml").write_text(yaml.safe_dump({"format_version": 1, "workloads": workloads}))
    return folder, chosen


def test_plan_across_four_clouds_applies_and_destroys_cleanly(clouds: dict[str, Any], tmp_path: Path) -> None:
    stubs = clouds.pop("stubs")
    assert stubs
    folder, _ = _scenario(clouds, tmp_path)
    store = StateStore.open(tmp_path / "state.db")
    plan = attach_state(make_plan(load_scenario(folder)), view_from_snapshot(store.snapshot()))
    assert not plan.unplaced, plan.unplaced
    assert {p.provider for p in plan.placements} == set(clouds)
    path = tmp_path / "plan.json"
    path.write_text(plan_to_json(plan))
    report = apply_plan(path, store, lambda n: clouds[n], ApplyOptions(owner="test", auto_approve=True))
    assert report.ok, report.failed
    for name, compute in clouds.items():
        managed = compute.list_managed()
        assert [m.workload for m in managed] == [f"on-{name}"], name
    records = {r.workload: r for r in store.placements()}
    assert set(records) == {f"on-{n}" for n in clouds}
    again = apply_plan(path, store, lambda n: clouds[n], ApplyOptions(owner="test", auto_approve=True))
    assert again.done == []
    assert destroy_all(store, lambda n: clouds[n], "test", 0) == []
    for name, compute in clouds.items():
        assert compute.list_managed() == [], name
    assert store.placements() == []
    store.close()


def test_capacity_error_on_one_cloud_fails_over_to_another(clouds: dict[str, Any], tmp_path: Path) -> None:
    stubs = clouds.pop("stubs")

    def one_of_two(chosen: dict[str, Offer]) -> list[dict[str, Any]]:
        g, a = chosen["gcp"], chosen["azure"]
        return [{"name": "web", "team": "t", "gpu": {"models": sorted({g.gpu_model, a.gpu_model}), "count": 1},
                 "vcpus": 1, "memory_gib": 1, "residency": {"regions": [g.region_key, a.region_key]}}]

    folder, chosen = _scenario(clouds, tmp_path, one_of_two)
    store = StateStore.open(tmp_path / "state.db")
    plan = attach_state(make_plan(load_scenario(folder)), view_from_snapshot(store.snapshot()))
    (first,) = plan.placements
    if first.provider == "gcp":
        stubs["gcp"].insert_failures.append(gc.POOL_EXHAUSTED)
        other = "azure"
    else:
        stubs["azure"].failures[chosen["azure"].instance_type] = az.Failure(
            "AllocationFailed", "Allocation failed. We do not have sufficient capacity.", asynchronous=True)
        other = "gcp"
    path = tmp_path / "plan.json"
    path.write_text(plan_to_json(plan))
    report = apply_plan(path, store, lambda n: clouds[n], ApplyOptions(owner="test", auto_approve=True))
    assert report.ok, report.failed
    assert len(report.failovers) == 1 and f"-> {chosen[other].id}" in report.failovers[0]
    assert [m.workload for m in clouds[other].list_managed()] == ["web"]
    assert clouds[first.provider].list_managed() == []
    record = store.get_placement("web", 0)
    assert record is not None and record.provider == other
    store.close()
