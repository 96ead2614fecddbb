"""The Azure adapter against a local ARM stub, with the real azure-mgmt-compute client over loopback.

What is real: the official ``azure-mgmt-compute`` ComputeManagementClient, its request building,
serialisation, bearer-token policy (fed by a fake TokenCredential), retry policy, paging and
long-running-operation polling (``Azure-AsyncOperation``), and the HTTP requests it sends; httpx for
the Retail Prices API. What is substituted: Azure Resource Manager and the Retail Prices API, by the
stub in ``tests/azure_stub.py``, whose answers are shaped by the published REST API description and
which records every request that departs from it (each test fails on such a violation).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken
from pydantic import ValidationError

from placement.errors import PlacementError
from placement.models import GeoPoint, Offer
from providers import (
    OWNERSHIP_TAG_KEYS,
    TAG_KEY,
    TAG_MANAGED,
    Denied,
    InsufficientCapacity,
    ManagedResource,
    ProviderError,
    QuotaExceeded,
    ResourceSpec,
    Transient,
)
from providers.azure import (
    AZURE_GPU_SIZES,
    AzureCompute,
    AzureSettings,
    azure_tag_key,
    error_from_azure,
    from_azure_tags,
    parse_retail_item,
    vm_base_name,
    vm_names,
)
from tests.azure_stub import TOKEN, AzureStub, Failure, Sku

SUB = "11111111-2222-3333-4444-555555555555"
RG = "gpu-rg"
LOC = "eastus"
PLAN = "sha256:" + "ab" * 32
A100 = "Standard_NC24ads_A100_v4"
H100 = "Standard_ND96isr_H100_v5"
T4 = "Standard_NC4as_T4_v3"
SUBNET = f"/subscriptions/{SUB}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/vnet/subnets/gpu"


class FakeCredential:
    """A TokenCredential that hands out the stub's token without asking Entra ID."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(TOKEN, int(time.time()) + 3600)


def seed(stub: AzureStub) -> None:
    stub.skus.extend([
        Sku(A100, "standardNCADSA100v4Family", 24, 220, 1, {LOC: ["1", "2", "3"], "westeurope": ["1"]},
            zone_restricted={LOC: ["3"]}),
        Sku(H100, "standardNDSH100v5Family", 96, 1900, 8, {LOC: ["1", "2"]}, location_restricted={LOC}),
        Sku(T4, "standardNCASv3_T4Family", 4, 28, 1, {LOC: []}, low_priority=False),
        Sku("Standard_NV12ads_A10_v5", "StandardNVADSA10v5Family", 12, 110, 1, {LOC: ["1"]}),
        Sku("Standard_NC8ads_Z99_v9", "standardNCZ99Family", 8, 64, 1, {LOC: ["1"]}),
        Sku("Standard_D4s_v5", "standardDSv5Family", 4, 16, 0, {LOC: ["1", "2", "3"]}),
        Sku("Premium_LRS", "", 0, 0, 0, {LOC: ["1"]}, resource_type="disks"),
    ])
    stub.add_usage(LOC, "cores", "Total Regional vCPUs", 100, 10)
    stub.add_usage(LOC, "lowPriorityCores", "Total Regional Low-priority vCPUs", 48)
    stub.add_usage(LOC, "standardNCADSA100v4Family", "Standard NCADS_A100_v4 Family vCPUs", 48)
    stub.add_usage(LOC, "standardNDSH100v5Family", "Standard NDSH100v5 Family vCPUs", 0)
    stub.add_usage(LOC, "standardNCASv3_T4Family", "Standard NCASv3_T4 Family vCPUs", 2)
    stub.add_price(LOC, A100, 3.673)
    stub.add_price(LOC, A100, 0.7346, spot=True)
    stub.add_price(LOC, A100, 4.407, windows=True)
    stub.add_price(LOC, A100, 0.7346, low_priority=True)
    stub.add_price(LOC, T4, 0.526)
    stub.add_price("westeurope", A100, 4.04)


@pytest.fixture
def stub() -> Iterator[AzureStub]:
    server = AzureStub(SUB).start()
    seed(server)
    try:
        yield server
        assert server.violations == [], "requests departed from the Azure REST API description"
    finally:
        server.stop()


@pytest.fixture
def pubkey(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519.pub"
    path.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlacementEngineTestKeyOnly test@example\n", encoding="utf-8")
    return path


@pytest.fixture
def settings(pubkey: Path) -> AzureSettings:
    return AzureSettings(subscription_id=SUB, resource_group=RG, locations=(LOC,), subnet_ids={LOC: SUBNET},
                         ssh_public_key_path=str(pubkey), tags={"cost-center": "ml"})


def make_adapter(stub: AzureStub, settings: AzureSettings, **kwargs: Any) -> AzureCompute:
    kwargs.setdefault("credential", FakeCredential())
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("poll_interval_s", 0)
    return AzureCompute("azure", settings, base_url=stub.url, prices_url=f"{stub.url}/api/retail/prices", **kwargs)


def offer(size: str = A100, zone: str | None = "eastus-1", capacity: str = "on-demand", gpu: str = "A100",
          gpus: int = 1, vcpus: int = 24) -> Offer:
    return Offer(
        provider="azure", provider_kind="hyperscaler", region=LOC, zone=zone, country="US", jurisdiction="US",
        instance_type=size, gpu_model=gpu, gpu_count=gpus, gpu_memory_gib=80, vcpus=vcpus, memory_gib=220,
        capacity_type=capacity, hourly_usd=3.673, location=GeoPoint(lat=37.4, lon=-79.8),
    )


def spec_for(o: Offer, *, workload: str = "llm-serve", replica: int = 0, nodes: int = 1,
             interruptible: bool | None = None) -> ResourceSpec:
    return ResourceSpec.for_replica(
        plan_digest=PLAN, workload=workload, replica=replica, team="research", offer=o, nodes=nodes,
        interruptible=o.capacity_type == "spot" if interruptible is None else interruptible,
        labels={"env": "test"},
    )


def puts(stub: AzureStub) -> list[str]:
    return [path for method, path in stub.requests if method == "PUT"]


# --------------------------------------------------------------------------------------------------
# Names, tags, settings
# --------------------------------------------------------------------------------------------------


def test_vm_names_fit_azure_rules() -> None:
    short = vm_base_name("llm-serve-r0-0123456789abcdef01234567")
    assert short == "plc-llm-serve-r0-0123456789abcdef01234567"
    long_a, long_b = vm_base_name("k" * 64), vm_base_name("k" * 63 + "j")
    assert len(long_a) <= 64 and long_a != long_b
    nodes = vm_names("w" * 64, 12)
    assert len(set(nodes)) == 12 and all(len(n) <= 64 and n[-1].isalnum() for n in nodes)
    assert vm_names("key", 1) == ["plc-key"]


def test_tags_are_azure_safe_and_read_back() -> None:
    assert azure_tag_key(TAG_KEY) == "placement.dev_key"
    spec = spec_for(offer())
    stored = {azure_tag_key(k): v for k, v in spec.ownership_tags().items()}
    assert from_azure_tags(stored) == spec.ownership_tags()
    assert set(from_azure_tags(stored)) == set(OWNERSHIP_TAG_KEYS)


def test_settings_validation(pubkey: Path) -> None:
    base: dict[str, Any] = {"subscription_id": SUB, "resource_group": RG, "locations": [LOC]}
    AzureSettings.model_validate(base)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"locations": ["marsnorth"]}, "no location data"),
        ({"subnet_ids": {"westeurope": SUBNET}}, "not in locations"),
        ({"subnet_ids": {LOC: "subnet-123"}}, "subnet resource ids"),
        ({"tags": {"placement.dev/team": "x"}}, "reserved prefix"),
        ({"tags": {"a/b": "x"}}, "may not contain"),
        ({"image": {"id": "/subscriptions/x/images/y", "publisher": "p"}}, "not both"),
        ({"subscription_id": "not-a-uuid"}, "subscription_id"),
        ({"client_secret": "x"}, "Extra inputs are not permitted"),
    ]
    for change, message in cases:
        with pytest.raises(ValidationError, match=message):
            AzureSettings.model_validate({**base, **change})


def test_retail_item_parsing() -> None:
    item = {"armSkuName": A100, "retailPrice": 3.673, "skuName": "NC24ads A100 v4", "meterName": "NC24ads A100 v4",
            "productName": "Virtual Machines NCads A100 v4 Series", "type": "Consumption", "unitOfMeasure": "1 Hour",
            "currencyCode": "USD"}
    assert parse_retail_item(item) == (A100, "on-demand", 3.673)
    assert parse_retail_item({**item, "skuName": "NC24ads A100 v4 Spot", "retailPrice": 0.73}) == (A100, "spot", 0.73)
    assert parse_retail_item({**item, "productName": "Virtual Machines NCads A100 v4 Series Windows"}) is None
    assert parse_retail_item({**item, "meterName": "NC24ads A100 v4 Low Priority"}) is None
    assert parse_retail_item({**item, "type": "Reservation"}) is None
    assert AZURE_GPU_SIZES["Standard_ND96isr_H100_v5"].gpu_count == 8
    assert AZURE_GPU_SIZES["Standard_NC40ads_H100_v5"].gpu_memory_gib == 94


# --------------------------------------------------------------------------------------------------
# Inventory
# --------------------------------------------------------------------------------------------------


def test_offers_flag_restrictions_and_quota(stub: AzureStub, settings: AzureSettings) -> None:
    credential = FakeCredential()
    inventory = make_adapter(stub, settings, credential=credential).inventory()
    by_id = {o.id: o for o in inventory.offers}

    a100 = by_id[f"azure/{LOC}/eastus-1/{A100}/on-demand"]
    assert (a100.gpu_model, a100.gpu_count, a100.gpu_memory_gib, a100.vcpus, a100.memory_gib) == ("A100", 1, 80, 24, 220)
    assert a100.hourly_usd == 3.673 and a100.unavailable_reason is None
    assert (a100.country, a100.jurisdiction, a100.provider_kind) == ("US", "US", "hyperscaler")
    assert a100.pools == (f"azure/{LOC}/standardNCADSA100v4Family", f"azure/{LOC}/cores")
    spot = by_id[f"azure/{LOC}/eastus-2/{A100}/spot"]
    assert spot.hourly_usd == 0.7346 and spot.pools == (f"azure/{LOC}/lowPriorityCores",)

    # A size restricted in one zone is listed there and flagged; restricted in the location: every offer.
    zone3 = by_id[f"azure/{LOC}/eastus-3/{A100}/on-demand"]
    assert zone3.unavailable_reason == (f"{A100} is not available to this subscription in zone 3 of {LOC} "
                                        "(NotAvailableForSubscription)")
    h100 = [o for o in inventory.offers if o.instance_type == H100]
    assert len(h100) == 4 and all("not available to this subscription in eastus" in (o.unavailable_reason or "")
                                  for o in h100)
    assert h100[0].gpu_count == 8 and h100[0].gpu_memory_gib == 80

    # A size without zones gets one regional offer; no LowPriorityCapable: no spot offer; quota 2 < 4 vCPUs.
    t4 = [o for o in inventory.offers if o.instance_type == T4]
    assert [(o.zone, o.capacity_type) for o in t4] == [(None, "on-demand")]
    assert t4[0].unavailable_reason == "quota headroom 2 vCPUs is less than the 4 vCPUs of Standard_NC4as_T4_v3 " \
                                       "(standardNCASv3_T4Family)"

    assert {o.instance_type for o in inventory.offers} == {A100, H100, T4}
    assert any("Standard_NV12ads_A10_v5 gets a fraction of one GPU" in n for n in inventory.notes)
    assert any("Standard_NC8ads_Z99_v9 reports 1 GPU(s) but is not in the GPU size table" in n for n in inventory.notes)

    pools = {p.id: p for p in inventory.pools}
    assert pools[f"azure/{LOC}/cores"].limit == 90 and pools[f"azure/{LOC}/standardNDSH100v5Family"].limit == 0
    assert all(p.unit == "vcpus" for p in pools.values())
    # The real client asked for an ARM token; prices were read page by page without one.
    assert credential.scopes and credential.scopes[0] == ("https://management.azure.com/.default",)
    assert len(stub.price_requests) >= 2
    assert stub.api_versions["skus"] and stub.api_versions["usages"]


def test_prices_fall_back_when_the_retail_api_is_unreachable(stub: AzureStub, settings: AzureSettings) -> None:
    adapter = AzureCompute("azure", settings, credential=FakeCredential(), base_url=stub.url, max_retries=0,
                           prices_url="http://127.0.0.1:9/api/retail/prices", prices={(LOC, A100): 3.5},
                           http=httpx.Client(timeout=2))
    inventory = adapter.inventory()
    by_id = {o.id: o for o in inventory.offers}
    assert by_id[f"azure/{LOC}/eastus-1/{A100}/on-demand"].hourly_usd == 3.5
    assert by_id[f"azure/{LOC}/eastus-1/{A100}/spot"].unavailable_reason == f"no spot price known for {A100} in {LOC}"
    assert any("Retail Prices API unavailable" in n for n in inventory.notes)


def test_regional_offers_when_zones_are_off(stub: AzureStub, settings: AzureSettings) -> None:
    flat = settings.model_copy(update={"zonal": False, "spot": False, "vm_sizes": ("Standard_NC*",)})
    offers = make_adapter(stub, flat).offers()
    assert [(o.zone, o.instance_type, o.capacity_type) for o in offers] == [
        (None, A100, "on-demand"), (None, T4, "on-demand"),
    ]


# --------------------------------------------------------------------------------------------------
# Actuation
# --------------------------------------------------------------------------------------------------


def test_round_trip_create_adopt_list_delete(stub: AzureStub, settings: AzureSettings) -> None:
    adapter = make_adapter(stub, settings)
    offers = {o.id: o for o in adapter.offers()}
    chosen = offers[f"azure/{LOC}/eastus-1/{A100}/spot"]
    spec = spec_for(chosen)

    created = adapter.create(spec)
    name = vm_base_name(spec.key)
    assert created.resource_ids == (f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/"
                                    f"virtualMachines/{name}",)
    assert (created.zone, created.state, created.key) == ("eastus-1", "Succeeded", spec.key)

    body = stub.received_bodies[-1]
    props = body["properties"]
    assert body["location"] == LOC and body["zones"] == ["1"]
    assert props["hardwareProfile"] == {"vmSize": A100}
    assert props["priority"] == "Spot" and props["evictionPolicy"] == "Delete"
    assert props["billingProfile"] == {"maxPrice": -1}
    assert props["storageProfile"]["imageReference"]["offer"] == "ubuntu-hpc"
    assert props["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    nic = props["networkProfile"]["networkInterfaceConfigurations"][0]["properties"]
    assert nic["deleteOption"] == "Delete" and nic["ipConfigurations"][0]["properties"]["subnet"]["id"] == SUBNET
    assert props["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] is True
    tags = body["tags"]
    assert all("/" not in k for k in tags)
    assert tags["placement.dev_key"] == spec.key and tags["placement.dev_managed"] == "true"
    assert tags["cost-center"] == "ml" and tags["env"] == "test"

    # Again, and from a fresh adapter (a new process): adopted, no second PUT.
    assert adapter.create(spec) == created
    assert make_adapter(stub, settings).create(spec).resource_ids == created.resource_ids
    assert len(puts(stub)) == 1

    managed = adapter.list_managed()
    assert managed == [ManagedResource(
        provider="azure", resource_ids=created.resource_ids, region=LOC, zone="eastus-1", key=spec.key,
        workload="llm-serve", replica=0, offer_id=chosen.id, plan_digest=PLAN, state="Succeeded",
    )]
    assert stub.usages[LOC]["lowPriorityCores"][1] == 24

    adapter.delete(created)
    assert adapter.list_managed() == [] and stub.vms == {}
    assert stub.usages[LOC]["lowPriorityCores"][1] == 0
    adapter.delete(created)  # already gone: done


def test_on_demand_multi_node_and_list_ignores_unmanaged(stub: AzureStub, settings: AzureSettings) -> None:
    adapter = make_adapter(stub, settings)
    spec = spec_for(offer(zone="eastus-2"), workload="trainer", replica=1, nodes=2)
    created = adapter.create(spec)
    assert len(created.resource_ids) == 2
    body = stub.received_bodies[-1]["properties"]
    assert "priority" not in body and "evictionPolicy" not in body and "billingProfile" not in body
    # A VM the engine did not create, in the same resource group: not listed, not touched.
    stub.vms[(RG.lower(), "hand-made")] = {"id": "/x/hand-made", "name": "hand-made", "location": LOC,
                                            "type": "Microsoft.Compute/virtualMachines", "tags": {"env": "prod"},
                                            "properties": {"provisioningState": "Succeeded"}}
    managed = adapter.list_managed()  # three VMs: more than one page of two
    assert [(m.key, m.replica, len(m.resource_ids), m.zone) for m in managed] == [(spec.key, 1, 2, "eastus-2")]
    # Delete found by key alone (ids unknown, e.g. after a crash before the ids were recorded).
    adapter.delete(ManagedResource(provider="azure", resource_ids=(), region=LOC, zone=None, key=spec.key,
                                   workload="", replica=-1, offer_id="", plan_digest="", state="unknown"))
    assert adapter.list_managed() == [] and list(stub.vms) == [(RG.lower(), "hand-made")]


def test_a_foreign_vm_with_the_same_name_is_not_adopted(stub: AzureStub, settings: AzureSettings) -> None:
    spec = spec_for(offer())
    name = vm_base_name(spec.key)
    stub.vms[(RG.lower(), name)] = {"id": f"/x/{name}", "name": name, "location": LOC, "tags": {},
                                     "type": "Microsoft.Compute/virtualMachines",
                                     "properties": {"provisioningState": "Succeeded"}}
    with pytest.raises(ProviderError, match=r"already exists .* not created for this placement"):
        make_adapter(stub, settings).create(spec)


def test_spot_offer_needs_an_interruptible_spec(stub: AzureStub, settings: AzureSettings) -> None:
    with pytest.raises(PlacementError, match="not interruptible"):
        make_adapter(stub, settings).create(spec_for(offer(capacity="spot"), interruptible=False))


def test_create_needs_a_subnet_and_a_key(stub: AzureStub, settings: AzureSettings) -> None:
    with pytest.raises(PlacementError, match="no subnet for eastus"):
        make_adapter(stub, settings.model_copy(update={"subnet_ids": {}})).create(spec_for(offer()))
    with pytest.raises(PlacementError, match="no SSH public key"):
        make_adapter(stub, settings.model_copy(update={"ssh_public_key_path": None})).create(spec_for(offer()))
    assert puts(stub) == []


# --------------------------------------------------------------------------------------------------
# Error mapping
# --------------------------------------------------------------------------------------------------


def test_allocation_failure_is_zone_scoped_and_leaves_nothing(stub: AzureStub, settings: AzureSettings) -> None:
    stub.failures[A100] = Failure("AllocationFailed", "Allocation failed. We do not have sufficient capacity for "
                                  "the requested VM size in this zone.", asynchronous=True)
    adapter = make_adapter(stub, settings)
    with pytest.raises(InsufficientCapacity) as info:
        adapter.create(spec_for(offer()))
    err = info.value
    assert (err.scope, err.zone, err.region, err.code) == ("zone", "eastus-1", LOC, "AllocationFailed")
    assert str(err) == f"azure eastus-1: insufficient capacity for {A100} (AllocationFailed)"
    # The VM Azure left in state Failed was removed, and its quota given back.
    assert stub.vms == {} and adapter.list_managed() == []
    assert stub.usages[LOC]["standardNCADSA100v4Family"][1] == 0


def test_restricted_zone_answers_sku_not_available(stub: AzureStub, settings: AzureSettings) -> None:
    with pytest.raises(InsufficientCapacity) as info:
        make_adapter(stub, settings).create(spec_for(offer(zone="eastus-3")))
    assert (info.value.code, info.value.scope, info.value.zone) == ("SkuNotAvailable", "zone", "eastus-3")
    with pytest.raises(InsufficientCapacity) as regional:
        make_adapter(stub, settings).create(spec_for(offer(size=H100, zone=None, gpu="H100", gpus=8, vcpus=96)))
    assert (regional.value.scope, regional.value.region, regional.value.zone) == ("region", LOC, None)


def test_quota_exceeded_is_region_scoped(stub: AzureStub, settings: AzureSettings) -> None:
    adapter = make_adapter(stub, settings)
    adapter.create(spec_for(offer(), replica=0))
    adapter.create(spec_for(offer(), replica=1))
    with pytest.raises(QuotaExceeded) as info:  # a third 24-vCPU VM exceeds the family's 48
        adapter.create(spec_for(offer(), replica=2))
    err = info.value
    assert (err.scope, err.region, err.code) == ("region", LOC, "OperationNotAllowed")
    assert "standardNCADSA100v4Family Cores quota" in str(err)
    assert len(adapter.list_managed()) == 2


@pytest.mark.parametrize(
    ("failure", "kind", "scope"),
    [
        (Failure("ZonalAllocationFailed", "Allocation failed in zone 1.", asynchronous=True), InsufficientCapacity,
         "zone"),
        (Failure("OverconstrainedAllocationRequest", "Allocation failed: constraints."), InsufficientCapacity, "zone"),
        (Failure("QuotaExceeded", "Quota exceeded for this subscription."), QuotaExceeded, "region"),
        (Failure("TooManyRequests", "The request is being throttled.", status=429), Transient, "region"),
        (Failure("InternalExecutionError", "An internal execution error occurred.", status=500), Transient, "region"),
        (Failure("OperationNotAllowed", "The operation is not allowed on a VM in this state."), ProviderError,
         "region"),
    ],
)
def test_error_codes_map_to_types(stub: AzureStub, settings: AzureSettings, failure: Failure,
                                  kind: type[ProviderError], scope: str) -> None:
    stub.failures[A100] = failure
    with pytest.raises(ProviderError) as info:
        make_adapter(stub, settings).create(spec_for(offer()))
    assert type(info.value) is kind and info.value.scope == scope and info.value.code == failure.code
    assert info.value.retryable is (kind is Transient)


def test_authorization_failure_is_denied(stub: AzureStub, settings: AzureSettings) -> None:
    stub.deny_writes = True
    with pytest.raises(Denied) as info:
        make_adapter(stub, settings).create(spec_for(offer()))
    assert info.value.scope == "account" and info.value.code == "AuthorizationFailed"
    assert TOKEN not in str(info.value)


def test_missing_credentials_and_unreachable_endpoint() -> None:
    from azure.identity import CredentialUnavailableError

    err = error_from_azure(CredentialUnavailableError("no az login"), provider="azure", region=LOC)
    assert isinstance(err, Denied) and "DefaultAzureCredential" in str(err)
    settings = AzureSettings(subscription_id=SUB, resource_group=RG, locations=(LOC,))
    adapter = AzureCompute("azure", settings, credential=FakeCredential(), base_url="http://127.0.0.1:9",
                           max_retries=0)
    with pytest.raises(Transient, match="cannot reach the Azure endpoint"):
        adapter.list_managed()


def test_stub_rejects_what_the_api_description_does_not_allow(stub: AzureStub) -> None:
    url = f"{stub.url}/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/-bad"
    body = {"location": LOC, "bogus": 1, "id": "x", "properties": {"hardwareProfile": {"vmSize": A100},
                                                                      "priority": "Regular", "evictionPolicy": "Delete"}}
    with stub.expect_violations() as caught:
        response = httpx.put(url, params={"api-version": "2024-07-01"}, json=body,
                             headers={"Authorization": f"Bearer {TOKEN}"})
        unauthenticated = httpx.get(url, params={"api-version": "2024-07-01"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "InvalidRequestContent"
    assert unauthenticated.status_code == 401
    text = "\n".join(caught)
    for expected in ("unknown member 'bogus'", "read-only member 'id'", "imageReference is required",
                     "osProfile is required", "networkProfile is required", "apply to Spot VMs only",
                     "VM name '-bad'", "missing or wrong bearer token"):
        assert expected in text
    assert TAG_MANAGED not in text


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def test_importing_the_settings_does_not_load_the_sdk() -> None:
    import subprocess
    import sys

    code = "import sys, providers.azure; print(sorted(m for m in sys.modules if m.startswith('azure')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "[]"


def test_registry_builds_the_azure_adapter(tmp_path: Path) -> None:
    from placement.errors import InputError
    from providers import registry

    path = tmp_path / "providers.yaml"
    path.write_text(
        "providers:\n"
        "  azure:\n"
        "    type: azure\n"
        f"    subscription_id: {SUB}\n"
        f"    resource_group: {RG}\n"
        "    locations: [eastus, westeurope]\n"
        f"    subnet_ids: {{eastus: {SUBNET}}}\n"
        "    ssh_public_key_path: ~/.ssh/id_ed25519.pub\n", encoding="utf-8")
    compute = registry.build_compute("azure", registry.load_providers_config(path))
    assert isinstance(compute, AzureCompute) and compute.settings.locations == ("eastus", "westeurope")
    path.write_text(f"providers:\n  az:\n    type: azure\n    subscription_id: {SUB}\n    resource_group: {RG}\n"
                    "    locations: [eastus]\n    client_secret: do-not-keep-me\n", encoding="utf-8")
    with pytest.raises(InputError, match="credentials do not belong") as info:
        registry.load_providers_config(path)
    assert "do-not-keep-me" not in str(info.value)
