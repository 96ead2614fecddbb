"""The GCP adapter against a local stub of the Compute Engine API, with the real client over loopback.

What is real: the official ``google-cloud-compute`` client (and ``google-cloud-billing`` for the SKU
list) with its REST transport, anonymous credentials and ``client_options={"api_endpoint":
"http://127.0.0.1:PORT"}``: every call in these tests is a real HTTP request built, sent and parsed by
the client library, including pagination, operation handling and error decoding.

What is substituted: the Compute Engine API itself (and the Cloud Billing Catalog's SKU list). There is
no maintained emulator, so ``tests/gcp_stub.py`` answers with responses shaped by the official compute v1
(and cloudbilling v1) discovery documents bundled with google-api-python-client, and checks every
request it receives against them: the method and path exist, query parameters are declared, and every
key of a request body exists in the method's request schema, recursively, with required fields present.
Any violation fails the test (see the ``stub`` fixture). Capacity and quota errors are injected as
failed zone operations, shaped the way Compute Engine reports them.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1
from pydantic import ValidationError

from placement.errors import PlacementError
from placement.gpus import GPU_MODELS, resolve_gpu
from placement.models import GeoPoint, Offer
from providers import (
    OWNERSHIP_TAG_KEYS,
    TAG_KEY,
    TAG_MANAGED,
    Denied,
    InsufficientCapacity,
    ManagedResource,
    NotFound,
    ProviderError,
    QuotaExceeded,
    ResourceSpec,
    Transient,
    label_safe,
    label_safe_key,
)
from providers.gcp import (
    GCP_ACCELERATORS,
    GCP_REGIONS,
    GcpCompute,
    GcpSettings,
    accelerator_info,
    attached_instance_type,
    classify_error,
    instance_base_name,
    instance_names,
    metadata_key,
    parse_instance_type,
    parse_sku,
    request_id,
)
from tests.gcp_stub import GcpStub, OperationFailure, seed_gpu_world

PROJECT = "test-project"
PLAN = "sha256:" + "ab" * 32
ZONE = "us-central1-a"
IMAGE = "projects/debian-cloud/global/images/family/debian-12"
PRICES = {
    ("us-central1", "g2-standard-4"): 0.7069,
    ("us-central1", "g2-standard-24"): 2.0,
    ("us-central1", "a2-highgpu-1g"): 3.67,
    ("us-central1", "a2-ultragpu-1g"): 5.07,
    ("us-central1", "a3-highgpu-8g"): 88.25,
    ("us-central1", "n1-standard-8+1xnvidia-tesla-t4"): 0.73,
    ("europe-west4", "a3-highgpu-8g"): 97.0,
}
SPOT_PRICES = {("us-central1", "n1-standard-8+1xnvidia-tesla-t4"): 0.18, ("us-central1", "g2-standard-4"): 0.28}


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def stub() -> Iterator[GcpStub]:
    """A seeded stub on a free loopback port. Any request that breaks the discovery document fails the test."""
    server = seed_gpu_world(GcpStub(project=PROJECT)).start()
    try:
        yield server
    finally:
        server.stop()
    assert server.violations == [], "requests or responses broke the compute v1 discovery document:\n" + "\n".join(
        server.violations)


def settings(**update: Any) -> GcpSettings:
    base: dict[str, Any] = {
        "project": PROJECT, "regions": ("us-central1", "europe-west4"), "image": IMAGE,
        "labels": {"cost-center": "ml"}, "subnetworks": {"us-central1": "regions/us-central1/subnetworks/gpu"},
        "service_account_email": "gpu-nodes@test-project.iam.gserviceaccount.com", "use_billing_catalog": False,
    }
    base.update(update)
    return GcpSettings(**base)


def make_adapter(stub: GcpStub, config: GcpSettings | None = None, **kwargs: Any) -> GcpCompute:
    kwargs.setdefault("prices", PRICES)
    kwargs.setdefault("spot_prices", SPOT_PRICES)
    kwargs.setdefault("retry_deadline_s", 0)
    kwargs.setdefault("poll_interval_s", 0)
    return GcpCompute("gcp", config or settings(), credentials=AnonymousCredentials(),
                      client_options={"api_endpoint": stub.url}, **kwargs)


def offer(instance_type: str = "g2-standard-4", zone: str = ZONE, capacity: str = "on-demand", gpu: str = "L4",
          gpus: int = 1, vcpus: int = 4) -> Offer:
    return Offer(
        provider="gcp", provider_kind="hyperscaler", region=zone.rsplit("-", 1)[0], zone=zone, country="US",
        jurisdiction="US", instance_type=instance_type, gpu_model=gpu, gpu_count=gpus, gpu_memory_gib=24,
        vcpus=vcpus, memory_gib=16, capacity_type=capacity, hourly_usd=1.0, location=GeoPoint(lat=41.3, lon=-95.9),
    )


def spec_for(o: Offer, *, workload: str = "llm-serve", replica: int = 0, nodes: int = 1,
             interruptible: bool | None = None, attempt: int = 0) -> ResourceSpec:
    return ResourceSpec.for_replica(
        plan_digest=PLAN, workload=workload, replica=replica, team="research", offer=o, nodes=nodes,
        interruptible=o.capacity_type == "spot" if interruptible is None else interruptible,
        labels={"env": "test"}, attempt=attempt,
    )


def foreign_instance(stub: GcpStub, zone: str, name: str, labels: dict[str, str] | None = None) -> None:
    """An instance the engine did not create, made through the real client."""
    options = {"api_endpoint": stub.url}
    client = compute_v1.InstancesClient(transport="rest", credentials=AnonymousCredentials(), client_options=options)
    instance = compute_v1.Instance(
        name=name, machine_type=f"zones/{zone}/machineTypes/e2-standard-4", labels=labels or {},
        disks=[compute_v1.AttachedDisk(boot=True, auto_delete=True, initialize_params=compute_v1.
                                       AttachedDiskInitializeParams(source_image=IMAGE))],
        network_interfaces=[compute_v1.NetworkInterface(network="global/networks/default")],
    )
    operation = client.insert(request=compute_v1.InsertInstanceRequest(
        project=PROJECT, zone=zone, instance_resource=instance, request_id=str(uuid.uuid4())))
    # Not operation.result(): the ExtendedOperation polls through a ZoneOperationsClient of its own that
    # ignores client_options and would ask compute.googleapis.com.
    waiter = compute_v1.ZoneOperationsClient(transport="rest", credentials=AnonymousCredentials(),
                                             client_options=options)
    assert waiter.wait(project=PROJECT, zone=zone, operation=operation.name).status == compute_v1.Operation.Status.DONE


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------------
# Settings, names and tables
# --------------------------------------------------------------------------------------------------


def test_settings_reject_mistakes() -> None:
    assert settings().type == "gcp"
    with pytest.raises(ValidationError, match="zones outside the configured regions"):
        settings(zones=("us-central1-a", "asia-east1-a"))
    with pytest.raises(ValidationError, match="subnetworks names regions not in regions"):
        settings(subnetworks={"asia-east1": "regions/asia-east1/subnetworks/x"})
    with pytest.raises(ValidationError, match="lowercase keys"):
        settings(labels={"Cost-Center": "ml"})
    with pytest.raises(ValidationError, match="reserved prefixes"):
        settings(labels={"placement_dev_key": "forged"})
    with pytest.raises(ValidationError, match="extra"):
        GcpSettings.model_validate({"project": PROJECT, "regions": ["us-central1"], "credentials": "x"})
    with pytest.raises(ValidationError):
        settings(project="Not A Project")
    with pytest.raises(PlacementError, match="no location data for GCP region"):
        GcpCompute("gcp", settings(regions=("mars-north1",), subnetworks={}))


def test_region_table_covers_the_main_gpu_regions() -> None:
    for region in ("us-central1", "us-east4", "us-west1", "europe-west4", "europe-west1", "europe-west3",
                   "asia-northeast1", "asia-southeast1"):
        place = GCP_REGIONS[region]
        assert place.carbon_g_per_kwh > 0 and -90 <= place.lat <= 90 and len(place.country) == 2
    assert (GCP_REGIONS["europe-west4"].country, GCP_REGIONS["europe-west4"].jurisdiction) == ("NL", "EU")
    assert GCP_REGIONS["asia-northeast1"].jurisdiction == "JP"


def test_accelerator_table_resolves_through_the_gpu_catalogue() -> None:
    expected = {"nvidia-h100-80gb": ("H100", 80), "nvidia-l4": ("L4", 24), "nvidia-tesla-a100": ("A100", 40),
                "nvidia-a100-80gb": ("A100", 80), "nvidia-tesla-t4": ("T4", 16)}
    for name, (model, memory) in expected.items():
        accel = GCP_ACCELERATORS[name]
        assert (accel.gpu_model, accel.memory_gib) == (model, memory)
    for accel in GCP_ACCELERATORS.values():
        assert resolve_gpu(accel.catalogue_name) is not None
        assert accel.memory_gib in GPU_MODELS[accel.gpu_model].memory_gib
        assert accel.quota_metric.startswith("NVIDIA_") and accel.quota_metric.endswith("_GPUS")
    assert accelerator_info("nvidia-tesla-t4-vws") is None
    assert accelerator_info("nvidia-made-up-9000") is None
    rtx = accelerator_info("nvidia-rtx-pro-6000")
    assert rtx is not None and rtx.gpu_model == "RTXPRO6000" and rtx.quota_metric == ""


def test_instance_names_and_request_ids_are_deterministic() -> None:
    key = spec_for(offer()).key
    names = instance_names(key, 3)
    assert names == instance_names(key, 3) and len(set(names)) == 3
    assert all(len(n) <= 63 and n[0].isalpha() and n == n.lower() for n in names)
    long_key = "W_" * 31 + "xy"
    assert len(instance_base_name(long_key)) <= 57 and instance_base_name(long_key) != instance_base_name(long_key[:-1])
    assert request_id(key, names[0]) == request_id(key, names[0]) != request_id(key, names[1])
    assert uuid.UUID(request_id(key, names[0])).version == 5
    assert parse_instance_type(attached_instance_type("n1-standard-8", "nvidia-tesla-t4", 2)) == (
        "n1-standard-8", "nvidia-tesla-t4", 2)
    assert parse_instance_type("a3-highgpu-8g") == ("a3-highgpu-8g", None, 0)
    assert metadata_key(TAG_KEY) == "placement-dev-key"


def test_importing_the_adapter_does_not_import_the_google_clients() -> None:
    # The providers registry imports GcpSettings from this module; the client libraries take seconds.
    code = "import sys, providers.gcp; print('google.cloud.compute_v1' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_registry_builds_the_gcp_adapter() -> None:
    from providers import registry

    config = registry.ProvidersConfig.model_validate({"providers": {"gcp": {
        "type": "gcp", "project": PROJECT, "regions": ["us-central1"], "image": IMAGE}}})
    assert isinstance(config.providers["gcp"], GcpSettings)
    assert isinstance(registry.build_compute("gcp", config), GcpCompute)


# --------------------------------------------------------------------------------------------------
# Inventory
# --------------------------------------------------------------------------------------------------


def test_offers_from_machine_types_accelerators_and_quotas(stub: GcpStub) -> None:
    inventory = make_adapter(stub).inventory()
    by_id = {o.id: o for o in inventory.offers}

    a3 = by_id["gcp/us-central1/us-central1-a/a3-highgpu-8g/on-demand"]
    assert (a3.gpu_model, a3.gpu_count, a3.gpu_memory_gib, a3.vcpus, a3.memory_gib) == ("H100", 8, 80, 208, 1872)
    assert a3.hourly_usd == 88.25 and a3.unavailable_reason is None
    assert a3.pools == ("gcp/us-central1/NVIDIA_H100_GPUS", "gcp/global/GPUS_ALL_REGIONS")
    assert (a3.country, a3.jurisdiction, a3.carbon_g_per_kwh, a3.pue) == ("US", "US", 394, 1.10)
    # Spot H100s draw on the preemptible quota the region grants (16, 8 in use).
    a3_spot = by_id["gcp/us-central1/us-central1-a/a3-highgpu-8g/spot"]
    assert a3_spot.pools == ("gcp/us-central1/PREEMPTIBLE_NVIDIA_H100_GPUS", "gcp/global/GPUS_ALL_REGIONS")
    assert a3_spot.unavailable_reason == "no spot price known for a3-highgpu-8g in us-central1"

    g2 = by_id["gcp/us-central1/us-central1-a/g2-standard-4/on-demand"]
    assert (g2.gpu_model, g2.gpu_count, g2.gpu_memory_gib, g2.vcpus, g2.memory_gib) == ("L4", 1, 24, 4, 16)
    g2_spot = by_id["gcp/us-central1/us-central1-a/g2-standard-4/spot"]
    # No preemptible L4 quota in the region: Spot L4s draw on the on-demand L4 quota.
    assert g2_spot.pools[0] == "gcp/us-central1/NVIDIA_L4_GPUS" and g2_spot.hourly_usd == 0.28
    assert by_id["gcp/us-central1/us-central1-a/g2-standard-24/on-demand"].gpu_count == 2

    a100 = by_id["gcp/us-central1/us-central1-a/a2-highgpu-1g/on-demand"]
    assert (a100.gpu_model, a100.gpu_memory_gib) == ("A100", 40) and a100.unavailable_reason is None
    a100_80 = by_id["gcp/us-central1/us-central1-a/a2-ultragpu-1g/on-demand"]
    assert (a100_80.gpu_model, a100_80.gpu_memory_gib) == ("A100", 80)
    assert a100_80.unavailable_reason == ("quota headroom 0 GPUs is less than the 1 GPUs of a2-ultragpu-1g "
                                          "(NVIDIA_A100_80GB_GPUS)")

    t4 = by_id["gcp/us-central1/us-central1-a/n1-standard-8+1xnvidia-tesla-t4/on-demand"]
    assert (t4.gpu_model, t4.gpu_count, t4.gpu_memory_gib, t4.vcpus, t4.memory_gib) == ("T4", 1, 16, 8, 30)
    assert t4.hourly_usd == 0.73 and t4.pools[0] == "gcp/us-central1/NVIDIA_T4_GPUS"
    assert "gcp/us-central1/us-central1-a/n1-standard-32+4xnvidia-tesla-t4/on-demand" in by_id
    # T4s go up to four per instance; virtual workstation T4s and CPU-only machine types are not offers.
    assert not any("8xnvidia-tesla-t4" in o.id or "vws" in o.id or "e2-" in o.id for o in inventory.offers)

    down = by_id["gcp/us-central1/us-central1-f/n1-standard-8+1xnvidia-tesla-t4/on-demand"]
    assert down.unavailable_reason == "zone us-central1-f is DOWN"
    eu = by_id["gcp/europe-west4/europe-west4-a/a3-highgpu-8g/on-demand"]
    assert (eu.country, eu.jurisdiction, eu.hourly_usd) == ("NL", "EU", 97.0)
    assert eu.unavailable_reason == ("quota headroom 4 GPUs is less than the 8 GPUs of a3-highgpu-8g "
                                     "(NVIDIA_H100_GPUS)")
    unpriced = by_id["gcp/europe-west4/europe-west4-a/g2-standard-4/on-demand"]
    assert unpriced.unavailable_reason == "no on-demand price known for g2-standard-4 in europe-west4"

    assert {o.region for o in inventory.offers} == {"us-central1", "europe-west4"}
    assert {o.capacity_type for o in inventory.offers} == {"on-demand", "spot"}
    pools = {p.id: p for p in inventory.pools}
    assert pools["gcp/us-central1/NVIDIA_L4_GPUS"].limit == 3 and pools["gcp/us-central1/NVIDIA_L4_GPUS"].unit == "gpus"
    assert "gcp/us-central1/CPUS" not in pools and pools["gcp/global/GPUS_ALL_REGIONS"].limit == 31
    assert all(pid in pools for o in inventory.offers for pid in o.pools)
    assert inventory.notes == ()
    # Pagination: the stub pages lists three items at a time, and the client's pagers follow.
    assert len(stub.calls("compute.machineTypes.list")) > len(stub.calls("compute.acceleratorTypes.list"))


def test_offers_honour_zones_machine_types_and_spot_settings(stub: GcpStub) -> None:
    config = settings(regions=("us-central1",), zones=("us-central1-b",), machine_types=("g2-*",), spot=False,
                      subnetworks={})
    offers = make_adapter(stub, config).offers()
    assert {(o.zone, o.instance_type, o.capacity_type) for o in offers} == {
        ("us-central1-b", "g2-standard-4", "on-demand"), ("us-central1-b", "g2-standard-24", "on-demand")}


def test_unknown_gpu_machine_types_are_noted(stub: GcpStub) -> None:
    stub.add_machine_type(ZONE, "x9-futuregpu-1g", 16, 65536, (("nvidia-made-up-9000", 1),))
    inventory = make_adapter(stub, settings(regions=("us-central1",), subnetworks={})).inventory()
    assert not any("x9-" in o.id for o in inventory.offers)
    assert inventory.notes == ("us-central1-a: skipped machine types with GPUs the catalogue does not know "
                               "(nvidia-made-up-9000)",)


def _sku(description: str, regions: list[str], usd: float, usage: str = "OnDemand", unit: str = "h",
         group: str = "GPU") -> dict[str, Any]:
    units, nanos = int(usd), round((usd - int(usd)) * 1e9)
    sku_id = uuid.uuid5(uuid.NAMESPACE_DNS, description + usage).hex[:12].upper()
    return {
        "name": f"services/6F81-5844-456A/skus/{sku_id}", "skuId": sku_id, "description": description,
        "category": {"serviceDisplayName": "Compute Engine", "resourceFamily": "Compute", "resourceGroup": group,
                     "usageType": usage},
        "serviceRegions": regions,
        "pricingInfo": [{
            "summary": "", "effectiveTime": "2026-11-20T00:00:00Z", "currencyConversionRate": 1,
            "pricingExpression": {
                "usageUnit": unit, "usageUnitDescription": "hour", "baseUnit": "s", "baseUnitDescription": "second",
                "baseUnitConversionFactor": 3600, "displayQuantity": 1,
                "tieredRates": [{"startUsageAmount": 0, "unitPrice": {"currencyCode": "USD", "units": str(units),
                                                                       "nanos": nanos}}],
            },
        }],
        "serviceProviderName": "Google",
    }


BILLING_SKUS = [
    _sku("G2 Instance Core running in Americas", ["us-central1", "us-east4"], 0.02486622, group="CPU"),
    _sku("G2 Instance Ram running in Americas", ["us-central1", "us-east4"], 0.00291225, unit="GiBy.h",
         group="RAM"),
    _sku("Nvidia L4 GPU running in Americas", ["us-central1", "us-east4"], 0.56),
    _sku("Spot Preemptible G2 Instance Core running in Americas", ["us-central1"], 0.00994649, "Preemptible",
         group="CPU"),
    _sku("Spot Preemptible G2 Instance Ram running in Americas", ["us-central1"], 0.0011649, "Preemptible",
         unit="GiBy.h", group="RAM"),
    _sku("Nvidia L4 GPU attached to Spot Preemptible VMs running in Americas", ["us-central1"], 0.224,
         "Preemptible"),
    _sku("N1 Predefined Instance Core running in Americas", ["us-central1"], 0.031611, group="N1Standard"),
    _sku("N1 Predefined Instance Ram running in Americas", ["us-central1"], 0.004237, unit="GiBy.h",
         group="N1Standard"),
    _sku("Nvidia Tesla T4 GPU running in Americas", ["us-central1"], 0.35),
    # Not list prices of the shapes: a commitment, a custom machine, a DWS variant, another region.
    _sku("Commitment v1: Nvidia L4 GPU in Americas for 1 Year", ["us-central1"], 0.35, "Commit1Yr"),
    _sku("N1 Custom Instance Core running in Americas", ["us-central1"], 9.0, group="CPU"),
    _sku("Nvidia L4 GPU DWS Defined Duration running in Americas", ["us-central1"], 0.01),
    _sku("Nvidia L4 GPU running in Netherlands", ["europe-west4"], 0.6163),
]


def test_prices_from_the_billing_catalog(stub: GcpStub) -> None:
    stub.skus = list(BILLING_SKUS)
    adapter = make_adapter(stub, settings(use_billing_catalog=True), prices={}, spot_prices={})
    inventory = adapter.inventory()
    by_id = {o.id: o for o in inventory.offers}
    g2 = by_id["gcp/us-central1/us-central1-a/g2-standard-4/on-demand"]
    assert g2.hourly_usd == pytest.approx(4 * 0.02486622 + 16 * 0.00291225 + 0.56, abs=1e-6)
    g2_spot = by_id["gcp/us-central1/us-central1-a/g2-standard-4/spot"]
    assert g2_spot.hourly_usd == pytest.approx(4 * 0.00994649 + 16 * 0.0011649 + 0.224, abs=1e-6)
    t4 = by_id["gcp/us-central1/us-central1-a/n1-standard-16+2xnvidia-tesla-t4/on-demand"]
    assert t4.hourly_usd == pytest.approx(16 * 0.031611 + 60 * 0.004237 + 2 * 0.35, abs=1e-6)
    # europe-west4 has a GPU price but no G2 core or memory price in this catalog.
    assert by_id["gcp/europe-west4/europe-west4-a/g2-standard-4/on-demand"].unavailable_reason is not None
    assert inventory.notes == ()
    request = stub.calls("cloudbilling.services.skus.list")[0]
    assert request.query["currencyCode"] == ["USD"]


def test_billing_catalog_failures_fall_back_to_given_prices(stub: GcpStub, monkeypatch: pytest.MonkeyPatch) -> None:
    stub.fail_http("cloudbilling.services.skus.list", 403, "forbidden",
                   "Cloud Billing API has not been used in project 123 before or it is disabled.")
    inventory = make_adapter(stub, settings(use_billing_catalog=True)).inventory()
    assert any(n.startswith("Cloud Billing Catalog unavailable") and "Denied" not in n for n in inventory.notes)
    g2 = next(o for o in inventory.offers if o.id == "gcp/us-central1/us-central1-a/g2-standard-4/on-demand")
    assert g2.hourly_usd == 0.7069

    monkeypatch.setitem(sys.modules, "google.cloud.billing_v1", None)
    inventory = make_adapter(stub, settings(use_billing_catalog=True)).inventory()
    assert "google-cloud-billing is not installed, using the prices given instead" in inventory.notes


def test_sku_descriptions() -> None:
    assert parse_sku("A2 Instance Core running in Americas", "Compute", "OnDemand", ["us-central1"], "h", 0.03) == {
        ("core", "a2 instance", "us-central1", "on-demand"): 0.03}
    assert parse_sku("Nvidia H100 80GB GPU attached to Spot Preemptible VMs running in Belgium", "Compute",
                     "Preemptible", ["europe-west1"], "h", 2.5) == {
        ("gpu", "nvidia h100 80gb", "europe-west1", "spot"): 2.5}
    assert parse_sku("Nvidia H100 80GB Mega GPU running in Americas", "Compute", "OnDemand", ["us-central1"], "h",
                     12.0) == {("gpu", "nvidia h100 80gb mega", "us-central1", "on-demand"): 12.0}
    assert parse_sku("A2 Instance Ram running in Americas", "Compute", "OnDemand", ["us-central1"], "h", 1.0) == {}
    assert parse_sku("Storage PD Capacity", "Storage", "OnDemand", ["us-central1"], "GiBy.mo", 0.04) == {}


def test_a_new_project_without_global_gpu_quota(stub: GcpStub) -> None:
    stub.set_quota("global", "GPUS_ALL_REGIONS", 0)
    offers = make_adapter(stub, settings(regions=("us-central1",), subnetworks={})).offers()
    assert all(o.unavailable_reason is not None for o in offers)
    g2 = next(o for o in offers if o.id == "gcp/us-central1/us-central1-a/g2-standard-4/on-demand")
    assert g2.unavailable_reason == ("quota headroom 0 GPUs is less than the 1 GPUs of g2-standard-4 "
                                     "(GPUS_ALL_REGIONS)")


def test_quota_read_failure_is_a_note(stub: GcpStub) -> None:
    stub.fail_http("compute.regions.get", 403, "forbidden", "Required 'compute.regions.get' permission")
    stub.fail_http("compute.projects.get", 403, "forbidden", "Required 'compute.projects.get' permission")
    inventory = make_adapter(stub, settings(regions=("us-central1",), subnetworks={})).inventory()
    assert inventory.pools == () and all(o.pools == () for o in inventory.offers)
    assert [n.split(":")[0] for n in inventory.notes] == ["project GPU quota (GPUS_ALL_REGIONS) unknown, no limit "
                                                          "assumed", "us-central1"]
    assert inventory.notes[1].startswith("us-central1: GPU quotas unknown, no limit assumed")


# --------------------------------------------------------------------------------------------------
# Actuation
# --------------------------------------------------------------------------------------------------


def test_round_trip_spot_t4_create_adopt_list_delete(stub: GcpStub) -> None:
    adapter = make_adapter(stub)
    by_id = {o.id: o for o in adapter.offers()}
    chosen = by_id["gcp/us-central1/us-central1-a/n1-standard-8+1xnvidia-tesla-t4/spot"]
    spec = spec_for(chosen)
    (name,) = instance_names(spec.key, 1)

    created = adapter.create(spec)
    assert created.resource_ids == (f"zones/{ZONE}/instances/{name}",)
    assert (created.zone, created.region, created.key, created.state) == (ZONE, "us-central1", spec.key, "RUNNING")

    (insert,) = stub.calls("compute.instances.insert")
    body = insert.body
    assert insert.query["requestId"] == [request_id(spec.key, name)]
    assert body["name"] == name
    assert body["machineType"] == f"zones/{ZONE}/machineTypes/n1-standard-8"
    assert body["guestAccelerators"] == [{"acceleratorType": f"zones/{ZONE}/acceleratorTypes/nvidia-tesla-t4",
                                          "acceleratorCount": 1}]
    assert body["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": False,
                                  "provisioningModel": "SPOT", "instanceTerminationAction": "DELETE"}
    assert body["labels"] == {**spec.ownership_labels(), "cost-center": "ml", "env": "test"}
    assert set(body["labels"]) >= {label_safe_key(k) for k in OWNERSHIP_TAG_KEYS}
    assert all(len(v) <= 63 for v in body["labels"].values())
    metadata = {i["key"]: i["value"] for i in body["metadata"]["items"]}
    assert metadata[metadata_key(TAG_KEY)] == spec.key and metadata["placement-dev-plan"] == PLAN
    (disk,) = body["disks"]
    assert disk["boot"] and disk["initializeParams"]["sourceImage"] == IMAGE
    assert disk["initializeParams"]["labels"] == body["labels"]
    assert disk["initializeParams"]["diskType"] == f"zones/{ZONE}/diskTypes/pd-balanced"
    (nic,) = body["networkInterfaces"]
    assert nic["subnetwork"] == "regions/us-central1/subnetworks/gpu"
    assert nic["accessConfigs"] == [{"name": "External NAT", "type": "ONE_TO_ONE_NAT"}]
    assert body["serviceAccounts"][0]["email"] == "gpu-nodes@test-project.iam.gserviceaccount.com"

    # The same key again, from a fresh adapter (a new process after a crash): adopted, no second insert.
    again = make_adapter(stub).create(spec)
    assert again.resource_ids == created.resource_ids
    assert len(stub.calls("compute.instances.insert")) == 1 and len(stub.instances) == 1

    assert adapter.list_managed() == [ManagedResource(
        provider="gcp", resource_ids=created.resource_ids, region="us-central1", zone=ZONE, key=spec.key,
        workload="llm-serve", replica=0, offer_id=chosen.id, plan_digest=PLAN, state="RUNNING",
    )]
    (listing,) = stub.calls("compute.instances.aggregatedList")
    assert listing.query["filter"] == [f'labels.{label_safe_key(TAG_MANAGED)} = "true"']

    adapter.delete(created)
    assert stub.instances == {} and adapter.list_managed() == []
    # Deleting again is not an error: the instance's 404 counts as done.
    adapter.delete(created)
    assert len(stub.calls("compute.instances.delete")) == 2


def test_multi_node_built_in_gpus_on_demand(stub: GcpStub) -> None:
    adapter = make_adapter(stub)
    chosen = offer("a3-highgpu-8g", gpu="H100", gpus=8, vcpus=208)
    spec = spec_for(chosen, nodes=2, workload="Trainer.Big", replica=3)
    created = adapter.create(spec)
    names = instance_names(spec.key, 2)
    assert created.resource_ids == tuple(f"zones/{ZONE}/instances/{n}" for n in names)
    inserts = stub.calls("compute.instances.insert")
    assert [i.body["name"] for i in inserts] == names
    assert len({i.query["requestId"][0] for i in inserts}) == 2
    for insert in inserts:
        assert "guestAccelerators" not in insert.body
        assert insert.body["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": True,
                                             "provisioningModel": "STANDARD"}
    # Label values are label-safe; list_managed reads the exact values back from metadata.
    assert inserts[0].body["labels"][label_safe_key("placement.dev/workload")] == "trainer_big"
    (managed,) = adapter.list_managed()
    assert (managed.workload, managed.replica, managed.key, managed.resource_ids) == (
        "Trainer.Big", 3, spec.key, created.resource_ids)
    adapter.delete(managed)
    assert stub.instances == {}


def test_lost_operation_wait_then_retry_adopts(stub: GcpStub) -> None:
    spec = spec_for(offer())
    stub.fail_http("compute.zoneOperations.wait", 503, "backendError", "Backend Error")
    with pytest.raises(Transient) as info:
        make_adapter(stub).create(spec)
    assert info.value.retryable and len(stub.instances) == 1
    # The retry adopts the instance as it is (still provisioning: its operation was never waited on).
    resource = make_adapter(stub).create(spec)
    assert len(stub.calls("compute.instances.insert")) == 1 and resource.state == "PROVISIONING"


def test_operations_are_waited_on_until_done(stub: GcpStub) -> None:
    stub.operation_polls = 3
    make_adapter(stub).create(spec_for(offer()))
    assert len(stub.calls("compute.zoneOperations.wait")) == 3
    stub.operation_polls = 1000
    with pytest.raises(Transient, match="still RUNNING") as info:
        make_adapter(stub, operation_timeout_s=0).create(spec_for(offer(), replica=1))
    assert info.value.code == "OperationTimeout" and info.value.scope == "zone"


def test_spot_offer_needs_an_interruptible_spec(stub: GcpStub) -> None:
    with pytest.raises(PlacementError, match="not interruptible"):
        make_adapter(stub).create(spec_for(offer(capacity="spot"), interruptible=False))
    with pytest.raises(PlacementError, match="no boot image"):
        make_adapter(stub, settings(image=None)).create(spec_for(offer()))
    assert stub.calls("compute.instances.insert") == []


def test_name_taken_by_a_foreign_instance(stub: GcpStub) -> None:
    spec = spec_for(offer())
    foreign_instance(stub, ZONE, instance_names(spec.key, 1)[0])
    with pytest.raises(ProviderError, match="taken by an instance not created for key") as info:
        make_adapter(stub).create(spec)
    assert info.value.code == "NameInUse"


def test_list_managed_finds_only_labelled_instances_in_configured_regions(stub: GcpStub) -> None:
    adapter = make_adapter(stub)
    created = adapter.create(spec_for(offer(), workload="trainer", replica=2))
    foreign_instance(stub, ZONE, "someone-elses-vm")
    foreign_instance(stub, ZONE, "not-ours", {label_safe_key(TAG_MANAGED): "false"})
    foreign_instance(stub, "asia-east1-a", "other-region", {label_safe_key(TAG_MANAGED): "true"})
    managed = adapter.list_managed()
    assert [m.resource_ids for m in managed] == [created.resource_ids]
    assert (managed[0].workload, managed[0].replica) == ("trainer", 2)


def test_delete_by_key_when_ids_are_unknown(stub: GcpStub) -> None:
    adapter = make_adapter(stub)
    created = adapter.create(spec_for(offer(), nodes=2))
    adapter.delete(ManagedResource(provider="gcp", resource_ids=(), region="us-central1", zone=None,
                                   key=created.key, workload="", replica=-1, offer_id="", plan_digest="",
                                   state="recorded"))
    assert stub.instances == {}
    ghost = ManagedResource(provider="gcp", resource_ids=("zones/us-central1-a/instances/pl-gone-n0", "pl-gone-n1"),
                            region="us-central1", zone=ZONE, key="gone", workload="w", replica=0, offer_id="x",
                            plan_digest=PLAN, state="RUNNING")
    adapter.delete(ghost)


# --------------------------------------------------------------------------------------------------
# Error mapping
# --------------------------------------------------------------------------------------------------

POOL_EXHAUSTED = OperationFailure(
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "The zone 'projects/test-project/zones/us-central1-a' does not have enough resources available to fulfill "
    "the request.  Try a different zone, or try again later.",
)
POOL_EXHAUSTED_WITH_DETAILS = OperationFailure(
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "The zone 'projects/test-project/zones/us-central1-a' does not have enough resources available to fulfill "
    "the request.  '(resource type:compute)'.",
    details=(
        {"help": {"links": [{"description": "Troubleshooting documentation",
                             "url": "https://cloud.google.com/compute/docs/resource-error"}]}},
        {"localizedMessage": {"locale": "en-US", "message": "A g2-standard-4 VM instance is currently "
                              "unavailable in the us-central1-a zone."}},
        {"errorInfo": {"domain": "compute.googleapis.com", "reason": "resource_availability",
                       "metadatas": {"vmType": "g2-standard-4", "zone": "us-central1-a", "zonesAvailable": ""}}},
    ),
)
QUOTA = OperationFailure(
    "QUOTA_EXCEEDED", "Quota 'NVIDIA_L4_GPUS' exceeded.  Limit: 4.0 in region us-central1.", 403, "FORBIDDEN",
    details=({"quotaInfo": {"metricName": "compute.googleapis.com/nvidia_l4_gpus",
                            "limitName": "NVIDIA-L4-GPUS-per-project-region",
                            "dimensions": {"region": "us-central1"}, "limit": 4}},),
)
GLOBAL_QUOTA = OperationFailure(
    "QUOTA_EXCEEDED", "Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: 0.0 globally.", 403, "FORBIDDEN",
)


@pytest.mark.parametrize("failure", [POOL_EXHAUSTED, POOL_EXHAUSTED_WITH_DETAILS], ids=["plain", "with-details"])
def test_resource_pool_exhausted_is_zone_scoped_capacity(stub: GcpStub, failure: OperationFailure) -> None:
    stub.insert_failures.append(failure)
    with pytest.raises(InsufficientCapacity) as info:
        make_adapter(stub).create(spec_for(offer()))
    err = info.value
    assert (err.scope, err.zone, err.region, err.code, err.retryable) == (
        "zone", ZONE, "us-central1", failure.code, False)
    assert str(err) == f"gcp us-central1-a: insufficient capacity for g2-standard-4 ({failure.code})"
    assert err.applies_to(offer()) and not err.applies_to(offer(zone="us-central1-b"))
    assert stub.instances == {} and stub.calls("compute.instances.delete") == []


def test_quota_exceeded_is_region_scoped(stub: GcpStub) -> None:
    stub.insert_failures.append(QUOTA)
    with pytest.raises(QuotaExceeded) as info:
        make_adapter(stub).create(spec_for(offer()))
    err = info.value
    assert (err.scope, err.region, err.code) == ("region", "us-central1", "QUOTA_EXCEEDED")
    assert "NVIDIA_L4_GPUS" in str(err) and err.applies_to(offer(zone="us-central1-b"))

    stub.insert_failures.append(GLOBAL_QUOTA)
    with pytest.raises(QuotaExceeded) as info:
        make_adapter(stub).create(spec_for(offer(), replica=1))
    assert info.value.scope == "account"


def test_failed_multi_node_create_leaves_no_orphans(stub: GcpStub) -> None:
    stub.insert_failures.extend([None, POOL_EXHAUSTED])
    with pytest.raises(InsufficientCapacity):
        make_adapter(stub).create(spec_for(offer(), nodes=2))
    assert len(stub.calls("compute.instances.insert")) == 2 and stub.instances == {}
    # Only the node that was created is deleted.
    (delete,) = stub.calls("compute.instances.delete")
    assert delete.path.endswith(instance_names(spec_for(offer(), nodes=2).key, 2)[0])


@pytest.mark.parametrize(
    ("status", "reason", "kind", "scope"),
    [
        (403, "forbidden", Denied, "account"),
        (403, "accessNotConfigured", Denied, "account"),
        (429, "rateLimitExceeded", Transient, "region"),
        (503, "backendError", Transient, "region"),
        (500, "internalError", Transient, "region"),
        (404, "notFound", NotFound, "region"),
    ],
)
def test_http_errors_map_to_types(stub: GcpStub, status: int, reason: str, kind: type[ProviderError],
                                  scope: str) -> None:
    stub.fail_http("compute.instances.insert", status, reason, "Request had a problem (access_token=ya29.secret)")
    with pytest.raises(ProviderError) as info:
        make_adapter(stub).create(spec_for(offer()))
    err = info.value
    assert type(err) is kind and err.scope == scope and err.code == reason
    assert err.retryable is (kind is Transient)
    assert "ya29.secret" not in str(err)


def test_rejected_credentials_are_denied(stub: GcpStub) -> None:
    # A 401 makes google-auth refresh the credentials; anonymous ones cannot be refreshed.
    stub.fail_http("compute.instances.insert", 401, "authError", "Invalid Credentials")
    with pytest.raises(Denied, match="credentials were rejected") as info:
        make_adapter(stub).create(spec_for(offer()))
    assert info.value.scope == "account"


def test_classify_error_reasons() -> None:
    common: dict[str, Any] = {"provider": "gcp", "region": "us-central1", "zone": ZONE, "what": "g2-standard-4"}
    assert isinstance(classify_error(["ZONE_RESOURCE_POOL_EXHAUSTED"], 503, "", **common), InsufficientCapacity)
    stockout = classify_error([], 503, "The zone does not have enough resources available to fulfill", **common)
    assert isinstance(stockout, InsufficientCapacity) and stockout.code == "ZONE_RESOURCE_POOL_EXHAUSTED"
    assert isinstance(classify_error(["quotaExceeded"], 403, "Quota 'NVIDIA_L4_GPUS' exceeded", **common),
                      QuotaExceeded)
    rate = classify_error(["RESOURCE_OPERATION_RATE_EXCEEDED"], None, "Operation rate exceeded", **common)
    assert isinstance(rate, Transient)
    other = classify_error(["INVALID_FIELD_VALUE"], 400, "Invalid value", **common)
    assert type(other) is ProviderError and "Invalid value" in str(other)


def test_unreachable_endpoint_raises_transient() -> None:
    adapter = GcpCompute("gcp", settings(), credentials=AnonymousCredentials(), retry_deadline_s=0,
                         client_options={"api_endpoint": f"http://127.0.0.1:{_free_port()}"})
    with pytest.raises(Transient, match="cannot reach the Google API endpoint"):
        adapter.list_managed()


def test_missing_application_default_credentials_is_denied(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    adapter = GcpCompute("gcp", settings())
    with pytest.raises(Denied, match="no application default credentials") as info:
        adapter.offers()
    assert info.value.scope == "account"


# --------------------------------------------------------------------------------------------------
# The stub's own checks
# --------------------------------------------------------------------------------------------------


def test_stub_rejects_requests_that_break_the_discovery_document(stub: GcpStub) -> None:
    """The checks the round trip relies on do catch mistakes (unknown fields, missing required fields)."""
    url = f"{stub.url}/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances?requestId={uuid.uuid4()}&dryRun=true"
    body = {"machineType": f"zones/{ZONE}/machineTypes/g2-standard-4", "gpuCount": 1,
            "scheduling": {"onHostMaintenance": "TERMINATE", "spot": True, "provisioningModel": "CHEAP"},
            "metadata": {"items": [{"value": "x"}]}}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400
    found = "\n".join(stub.violations)
    for expected in ("query parameter 'dryRun' is not declared", "unknown field 'gpuCount'",
                     "unknown field 'spot'", "'CHEAP' is not one of", "field 'name' is required",
                     "field 'key' is required"):
        assert expected in found
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{stub.url}/compute/v1/projects/{PROJECT}/zones/{ZONE}/gpus", timeout=10)
    assert "no method of the discovery documents" in stub.violations[-1]
    stub.violations.clear()


def test_stub_deduplicates_inserts_by_request_id(stub: GcpStub) -> None:
    client = compute_v1.InstancesClient(transport="rest", credentials=AnonymousCredentials(),
                                        client_options={"api_endpoint": stub.url})
    spec = spec_for(offer())
    adapter = make_adapter(stub)
    name = instance_names(spec.key, 1)[0]
    request = compute_v1.InsertInstanceRequest(project=PROJECT, zone=ZONE, request_id=request_id(spec.key, name),
                                               instance_resource=adapter._instance_resource(spec, ZONE, name))
    first, second = client.insert(request=request), client.insert(request=request)
    assert first.name == second.name and len(stub.instances) == 1
    assert label_safe(spec.key) == stub.instances[(ZONE, name)]["labels"][label_safe_key(TAG_KEY)]
