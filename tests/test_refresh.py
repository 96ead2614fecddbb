"""Inventory refresh from a real boto3 client against moto's EC2 server, and stale carry-over."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from placement.errors import PlacementError
from placement.inputs import load_inventory
from placement.refresh import refresh_inventory
from providers.base import Transient
from providers.check import check_providers
from providers.registry import ProvidersConfig, build_compute
from tests.test_aws import REGION, ami, ec2, moto, moto_url  # noqa: F401  (fixtures)


@pytest.fixture
def config(moto: str, ami: str) -> ProvidersConfig:  # noqa: F811
    return ProvidersConfig.model_validate({"providers": {"aws": {
        "type": "aws", "regions": [REGION], "image_ids": {REGION: ami}, "instance_types": ["g6.*", "p5.*"]}}})


def test_refresh_writes_a_loadable_snapshot_and_carries_over_a_failed_provider(
    config: ProvidersConfig, tmp_path: Path
) -> None:
    first_at = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
    report = refresh_inventory(["aws"], lambda n: build_compute(n, config), tmp_path, now=first_at)
    assert report.fresh["aws"] > 0 and not report.stale
    inv = load_inventory(tmp_path / "latest.yaml").inventory
    assert {o.provider for o in inv.offers} == {"aws"}
    assert any(o.instance_type.startswith("g6.") and o.gpu_model == "L4" for o in inv.offers)
    assert inv.snapshot.stale_providers == () and inv.snapshot.provider_taken_at["aws"] == "2026-11-20T08:00:00+00:00"

    def broken(name: str) -> Any:
        raise Transient("endpoint did not answer", provider=name, code="EndpointConnectionError", region=REGION)

    later = refresh_inventory(["aws"], broken, tmp_path, now=first_at + dt.timedelta(hours=1))
    assert "aws" in later.stale and "endpoint did not answer" in later.stale["aws"]
    stale = load_inventory(later.path).inventory
    assert stale.snapshot.stale_providers == ("aws",)
    assert stale.snapshot.provider_taken_at["aws"] == "2026-11-20T08:00:00+00:00"
    assert {o.id for o in stale.offers} == {o.id for o in inv.offers}


def test_refresh_with_nothing_to_carry_over_fails(tmp_path: Path) -> None:
    def broken(name: str) -> Any:
        raise Transient("down", provider=name, code="X")

    with pytest.raises(PlacementError, match="no offers from any provider"):
        refresh_inventory(["aws"], broken, tmp_path)


def test_providers_check_reports_configured_and_missing(config: ProvidersConfig) -> None:
    rows = {r.name: r for r in check_providers(config)}
    aws = rows["aws"]
    assert aws.configured and aws.credentials and aws.reachable and "offers" in aws.detail
    assert not rows["gcp"].configured and "providers.yaml" in rows["gcp"].detail


def test_plan_on_live_inventory_through_the_cli(moto: str, ami: str, tmp_path: Path) -> None:  # noqa: F811
    import subprocess
    import sys

    import yaml

    (tmp_path / "providers.yaml").write_text(yaml.safe_dump({"providers": {"aws": {
        "type": "aws", "regions": [REGION], "image_ids": {REGION: ami}, "instance_types": ["g6.*"]}}}))
    (tmp_path / "w.yaml").write_text(yaml.safe_dump({"format_version": 1, "workloads": [
        {"name": "inf", "team": "t", "gpu": {"models": ["L4"], "count": 1}, "vcpus": 4, "memory_gib": 16}]}))
    result = subprocess.run([sys.executable, "-m", "placement.cli", "plan", "--workloads", "w.yaml",
                             "--inventory", "live", "--format", "json"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    import json

    plan = json.loads(result.stdout)
    (placement,) = plan["placements"]
    # moto has no Pricing API: the adapter falls back to the bundled snapshot's list price
    assert placement["provider"] == "aws" and placement["instance_type"] == "g6.xlarge"
    assert placement["hourly_usd"] > 0
    assert (tmp_path / "inventory" / "latest.yaml").exists()
    assert plan["inputs"]["inventory"]["detail"]["snapshot"].startswith("refresh-")
