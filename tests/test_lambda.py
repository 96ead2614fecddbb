"""The Lambda Cloud adapter against a local stub of the Lambda Cloud API, over loopback HTTP.

What is real: the adapter's httpx requests (paths, JSON bodies, Bearer authentication, retries) and its
parsing of the answers. What is substituted: Lambda's API, by the stub in ``tests/lambda_stub.py``,
whose answers are shaped by Lambda's published OpenAPI description (Cloud API 1.10.0) and which
records every request that departs from it (each test fails on such a violation). There is no
Lambda emulator; the stub's capacity, quota and lifecycle are a small model, not Lambda's behaviour.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from placement.errors import PlacementError
from placement.models import GeoPoint, Offer
from providers import (
    TAG_KEY,
    TAG_MANAGED,
    TAG_WORKLOAD,
    Denied,
    InsufficientCapacity,
    ManagedResource,
    NotFound,
    ProviderError,
    QuotaExceeded,
    ResourceSpec,
    Transient,
)
from providers.lambda_cloud import (
    API_KEY_ENV,
    NO_CAPACITY,
    LambdaCompute,
    LambdaSettings,
    error_from_lambda,
    instance_name,
    instance_tags,
    lambda_tag_key,
    parse_gpu,
)
from tests.lambda_stub import API_KEY, InstanceType, LambdaStub

PLAN = "sha256:" + "cd" * 32
A100 = "gpu_1x_a100_sxm4"
H100 = "gpu_8x_h100_sxm5"


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[LambdaStub]:
    server = LambdaStub().start()
    server.types = {
        A100: InstanceType(A100, "1x A100 (40 GB SXM4)", "A100 (40 GB SXM4)", 129, 30, 200, 512, 1, ["us-east-1"]),
        H100: InstanceType(H100, "8x H100 (80 GB SXM5)", "H100 (80 GB SXM5)", 2392, 208, 1800, 24780, 8,
                           ["us-west-1", "us-south-1"]),
        "gpu_8x_v100": InstanceType("gpu_8x_v100", "8x Tesla V100 (16 GB)", "Tesla V100 (16 GB)", 440, 92, 448,
                                    5800, 8, []),
        "gpu_1x_rtx6000": InstanceType("gpu_1x_rtx6000", "1x RTX 6000 (24 GB)", "Quadro RTX 6000 (24 GB)", 50, 14,
                                       46, 512, 1, ["us-east-1"]),
        "cpu_4x_general": InstanceType("cpu_4x_general", "4x CPU", "", 20, 4, 16, 64, 0, ["us-east-1"]),
    }
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    try:
        yield server
        assert server.violations == [], "requests departed from the Lambda API description"
    finally:
        server.stop()


@pytest.fixture
def settings(stub: LambdaStub) -> LambdaSettings:
    return LambdaSettings(regions=("us-east-1", "us-west-1"), ssh_key_names=("ops",), base_url=stub.url)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_adapter(settings: LambdaSettings, **kwargs: Any) -> LambdaCompute:
    kwargs.setdefault("sleep", Sleeps())
    kwargs.setdefault("poll_interval_s", 0.0)
    return LambdaCompute("lambda", settings, **kwargs)


def offer(instance_type: str = A100, region: str = "us-east-1", gpu: str = "A100", gpus: int = 1,
          capacity: str = "on-demand") -> Offer:
    return Offer(provider="lambda", provider_kind="specialist", region=region, country="US", jurisdiction="US",
                 instance_type=instance_type, gpu_model=gpu, gpu_count=gpus, gpu_memory_gib=40, vcpus=30,
                 memory_gib=200, capacity_type=capacity, hourly_usd=1.29, location=GeoPoint(lat=38.9, lon=-77.4))


def spec_for(o: Offer, *, workload: str = "llm-serve", replica: int = 0, nodes: int = 1) -> ResourceSpec:
    return ResourceSpec.for_replica(plan_digest=PLAN, workload=workload, replica=replica, team="research", offer=o,
                                    nodes=nodes, labels={"env": "test"})


def launches(stub: LambdaStub) -> int:
    return sum(1 for method, path in stub.requests if method == "POST" and path.endswith("/launch"))


# --------------------------------------------------------------------------------------------------
# Helpers and settings
# --------------------------------------------------------------------------------------------------


def test_names_tags_and_gpu_parsing() -> None:
    assert instance_name("llm-serve-r0-abc") == "plc-llm-serve-r0-abc"
    assert len(instance_name("k" * 64)) == 64 and instance_name("k" * 64) != instance_name("k" * 63 + "j")
    assert lambda_tag_key(TAG_KEY) == "placement-dev:key"
    assert lambda_tag_key("Cost Center") == "cost-center" and lambda_tag_key("9lives") == "k-9lives"
    assert parse_gpu("H100 (80 GB SXM5)") is not None and parse_gpu("H100 (80 GB SXM5)").memory_gib == 80  # type: ignore[union-attr]
    assert parse_gpu("Tesla V100 (16 GB)").model == "V100"  # type: ignore[union-attr]
    assert parse_gpu("RTX A6000 (48 GB)").model == "A6000"  # type: ignore[union-attr]
    assert parse_gpu("GH200 (96 GB)").model == "GH200"  # type: ignore[union-attr]
    assert parse_gpu("", "gpu_1x_a10").model == "A10"  # type: ignore[union-attr]
    assert parse_gpu("Quadro RTX 6000 (24 GB)", "gpu_1x_rtx6000") is None
    tags = instance_tags({"name": "plc-some-key", "tags": [{"key": "placement-dev:workload", "value": "w"}]})
    assert tags == {TAG_WORKLOAD: "w", TAG_KEY: "some-key", TAG_MANAGED: "true"}


def test_settings_validation() -> None:
    LambdaSettings(regions=("us-east-1",))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"regions": ["mars-1"]}, "no location data"),
        ({"ssh_key_names": ["a", "b"]}, "exactly one SSH key"),
        ({"api_key": "x"}, "Extra inputs are not permitted"),
        ({"base_url": "ftp://x"}, "base_url"),
    ]
    for change, message in cases:
        with pytest.raises(ValidationError, match=message):
            LambdaSettings.model_validate({"regions": ["us-east-1"], **change})


@pytest.mark.parametrize(
    ("status", "code", "kind", "scope"),
    [
        (400, "instance-operations/launch/insufficient-capacity", InsufficientCapacity, "region"),
        (400, "global/quota-exceeded", QuotaExceeded, "account"),
        (401, "global/invalid-api-key", Denied, "account"),
        (403, "global/account-inactive", Denied, "account"),
        (429, "global/too-many-requests", Transient, "region"),
        (503, "provider/internal-unavailable", Transient, "region"),
        (404, "global/object-does-not-exist", NotFound, "region"),
        (400, "global/invalid-parameters", ProviderError, "region"),
    ],
)
def test_error_codes_map_to_types(status: int, code: str, kind: type[ProviderError], scope: str) -> None:
    err = error_from_lambda(status, {"error": {"code": code, "message": "m", "suggestion": "s"}}, provider="lambda",
                            region="us-east-1", what=A100, action=f"launch {A100}")
    assert type(err) is kind and err.scope == scope and err.code == code
    assert err.retryable is (kind is Transient)


# --------------------------------------------------------------------------------------------------
# Inventory
# --------------------------------------------------------------------------------------------------


def test_offers_list_regions_without_capacity_as_unavailable(stub: LambdaStub, settings: LambdaSettings) -> None:
    offers = {o.id: o for o in make_adapter(settings).offers()}
    assert set(offers) == {f"lambda/{r}/{t}/on-demand" for r in ("us-east-1", "us-west-1")
                           for t in (A100, H100, "gpu_8x_v100")}
    a100 = offers[f"lambda/us-east-1/{A100}/on-demand"]
    assert (a100.gpu_model, a100.gpu_count, a100.gpu_memory_gib, a100.vcpus, a100.memory_gib) == ("A100", 1, 40, 30, 200)
    assert a100.hourly_usd == 1.29 and a100.unavailable_reason is None and a100.provider_kind == "specialist"
    assert offers[f"lambda/us-west-1/{A100}/on-demand"].unavailable_reason == NO_CAPACITY
    h100 = offers[f"lambda/us-west-1/{H100}/on-demand"]
    assert (h100.gpu_model, h100.gpu_count, h100.hourly_usd, h100.unavailable_reason) == ("H100", 8, 23.92, None)
    v100 = offers["lambda/us-east-1/gpu_8x_v100/on-demand"]
    assert v100.gpu_memory_gib == 16 and v100.unavailable_reason == NO_CAPACITY
    assert all(o.zone is None and o.capacity_type == "on-demand" and o.egress_usd_per_gb == 0 for o in offers.values())


def test_only_listed_instance_types(stub: LambdaStub, settings: LambdaSettings) -> None:
    narrowed = settings.model_copy(update={"instance_types": ("gpu_8x_*",)})
    assert {o.instance_type for o in make_adapter(narrowed).offers()} == {H100, "gpu_8x_v100"}


# --------------------------------------------------------------------------------------------------
# Actuation
# --------------------------------------------------------------------------------------------------


def test_round_trip_launch_adopt_list_terminate(stub: LambdaStub, settings: LambdaSettings) -> None:
    adapter = make_adapter(settings)
    chosen = next(o for o in adapter.offers() if o.id == f"lambda/us-east-1/{A100}/on-demand")
    spec = spec_for(chosen)

    created = adapter.create(spec)
    assert len(created.resource_ids) == 1 and created.state == "booting" and created.key == spec.key
    body = stub.launch_bodies[-1]
    assert set(body) == {"region_name", "instance_type_name", "ssh_key_names", "name", "tags"}
    assert (body["region_name"], body["instance_type_name"], body["ssh_key_names"], body["name"]) == (
        "us-east-1", A100, ["ops"], f"plc-{spec.key}")
    tags = {t["key"]: t["value"] for t in body["tags"]}
    assert tags["placement-dev:key"] == spec.key and tags["placement-dev:plan"] == PLAN and tags["env"] == "test"

    # Again, and from a fresh adapter (a new process after a crash): adopted by name, no second launch.
    again = adapter.create(spec)
    assert again.resource_ids == created.resource_ids and again.state == "booting"
    assert make_adapter(settings).create(spec).resource_ids == created.resource_ids
    assert launches(stub) == 1

    # An instance someone launched by hand is not the engine's.
    stub.instances["hand"] = {**stub.instances[created.resource_ids[0]], "id": "hand", "name": "jupyter", "tags": []}
    managed = adapter.list_managed()
    assert managed == [ManagedResource(
        provider="lambda", resource_ids=created.resource_ids, region="us-east-1", zone=None, key=spec.key,
        workload="llm-serve", replica=0, offer_id=chosen.id, plan_digest=PLAN, state="active",
    )]

    adapter.delete(created)
    assert adapter.list_managed() == []
    assert stub.instances[created.resource_ids[0]]["status"] == "terminated"
    assert stub.instances["hand"]["status"] == "active"
    adapter.delete(created)  # already gone: done
    assert sum(1 for m, p in stub.requests if p.endswith("/terminate")) == 1


def test_multi_node_launches_one_at_a_time_and_resumes(stub: LambdaStub, settings: LambdaSettings) -> None:
    sleeps = Sleeps()
    adapter = make_adapter(settings, sleep=sleeps, launch_interval_s=12.0)
    spec = spec_for(offer(H100, "us-west-1", "H100", 8), workload="trainer", nodes=3)
    # The second launch is throttled: the first instance stays and is adopted on the next try.
    original = stub._launch
    calls = {"n": 0}

    def throttled(body: dict[str, Any]) -> tuple[int, Any]:
        calls["n"] += 1
        if calls["n"] == 2:
            stub.launch_bodies.append(body)
            return 429, {"error": {"code": "global/too-many-requests", "message": "Too many requests."}}
        return original(body)

    stub._launch = throttled  # type: ignore[method-assign]
    with pytest.raises(Transient) as info:
        adapter.create(spec)
    assert info.value.retryable and info.value.region == "us-west-1"
    assert sleeps.calls == [12.0]
    resumed = adapter.create(spec)
    assert len(resumed.resource_ids) == 3 and launches(stub) == 4
    managed = adapter.list_managed()
    assert [(m.workload, len(m.resource_ids)) for m in managed] == [("trainer", 3)]
    # Delete by key alone terminates all three.
    adapter.delete(ManagedResource(provider="lambda", resource_ids=(), region="us-west-1", zone=None, key=spec.key,
                                   workload="", replica=-1, offer_id="", plan_digest="", state="unknown"))
    assert adapter.list_managed() == []


def test_create_checks_the_offer_and_the_ssh_key(stub: LambdaStub, settings: LambdaSettings) -> None:
    with pytest.raises(PlacementError, match="on-demand capacity only"):
        make_adapter(settings).create(spec_for(offer(capacity="spot")))
    with pytest.raises(PlacementError, match="no SSH key"):
        make_adapter(settings.model_copy(update={"ssh_key_names": ()})).create(spec_for(offer()))
    with pytest.raises(PlacementError, match="not configured"):
        make_adapter(settings).create(spec_for(offer(region="us-south-1")))
    assert launches(stub) == 0


# --------------------------------------------------------------------------------------------------
# Errors through the stub
# --------------------------------------------------------------------------------------------------


def test_no_capacity_is_region_scoped(stub: LambdaStub, settings: LambdaSettings) -> None:
    with pytest.raises(InsufficientCapacity) as info:
        make_adapter(settings).create(spec_for(offer(region="us-west-1")))
    err = info.value
    assert (err.scope, err.region, err.code) == ("region", "us-west-1", "instance-operations/launch/insufficient-capacity")
    assert str(err).startswith(f"lambda us-west-1: insufficient capacity for {A100}")


def test_quota_exceeded(stub: LambdaStub, settings: LambdaSettings) -> None:
    stub.max_instances = 1
    adapter = make_adapter(settings)
    adapter.create(spec_for(offer(), replica=0))
    with pytest.raises(QuotaExceeded) as info:
        adapter.create(spec_for(offer(), replica=1))
    assert info.value.code == "global/quota-exceeded" and "Contact Support" in str(info.value)


def test_provider_outage_on_launch_is_transient(stub: LambdaStub, settings: LambdaSettings) -> None:
    stub.launch_errors = [(503, "provider/internal-unavailable", "Provider unavailable")]
    with pytest.raises(Transient):
        make_adapter(settings).create(spec_for(offer()))
    assert launches(stub) == 1  # launches are not retried blindly: the next create adopts or launches


def test_reads_are_retried_on_throttling(stub: LambdaStub, settings: LambdaSettings) -> None:
    original = stub.handle
    state = {"throttled": 0}

    def flaky(method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        if path.endswith("/instance-types") and state["throttled"] < 2:
            state["throttled"] += 1
            return 429, {"error": {"code": "global/too-many-requests", "message": "slow down"}}
        return original(method, path, headers, raw)

    stub.handle = flaky  # type: ignore[method-assign]
    sleeps = Sleeps()
    assert make_adapter(settings, sleep=sleeps).offers()
    assert len(sleeps.calls) == 2


def test_api_key_problems_are_denied(stub: LambdaStub, settings: LambdaSettings,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "wrong-key")
    with pytest.raises(Denied) as info:
        make_adapter(settings).offers()
    assert info.value.code == "global/invalid-api-key" and "wrong-key" not in str(info.value)
    assert stub.violations == ["GET /api/v1/instance-types: missing or wrong API key"]
    stub.violations.clear()
    monkeypatch.delenv(API_KEY_ENV)
    requests_before = len(stub.requests)
    with pytest.raises(Denied, match="set the LAMBDA_API_KEY environment variable"):
        make_adapter(settings).list_managed()
    assert len(stub.requests) == requests_before


def test_unreachable_api_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    settings = LambdaSettings(regions=("us-east-1",), base_url="http://127.0.0.1:9/api/v1")
    with pytest.raises(Transient, match="cannot reach the Lambda API"):
        make_adapter(settings, max_retries=1, http=httpx.Client(timeout=2)).offers()


def test_stub_rejects_what_the_api_description_does_not_allow(stub: LambdaStub) -> None:
    body = {"region_name": "us-east-1", "instance_type_name": A100, "ssh_key_names": ["ops", "other"],
            "quantity": 2, "tags": [{"key": "Bad/Key", "value": "x"}]}
    response = httpx.post(f"{stub.url}/instance-operations/launch", json=body,
                          headers={"Authorization": f"Bearer {API_KEY}"})
    basic = httpx.get(f"{stub.url}/instances", auth=(API_KEY, ""))
    assert response.status_code == 400 and response.json()["error"]["code"] == "global/invalid-parameters"
    assert basic.status_code == 200 and basic.json() == {"data": []}
    assert stub.violations == [
        "launch: unknown member 'quantity' of InstanceLaunchRequest",
        "launch: ssh_key_names must list exactly one SSH key",
        "launch: tag key 'Bad/Key' does not match ^[a-z][a-z0-9-:]+$ (at most 55)",
    ]
    stub.violations.clear()


def test_registry_builds_the_lambda_adapter(tmp_path: Any) -> None:
    from placement.errors import InputError
    from providers import registry

    config = registry.ProvidersConfig.model_validate(
        {"providers": {"lambda": {"type": "lambda", "regions": ["us-east-1"], "ssh_key_names": ["ops"]}}})
    assert isinstance(registry.build_compute("lambda", config), LambdaCompute)
    path = tmp_path / "providers.yaml"
    path.write_text("providers:\n  lambda:\n    type: lambda\n    regions: [us-east-1]\n    api_key: do-not-keep-me\n",
                    encoding="utf-8")
    with pytest.raises(InputError, match="credentials do not belong") as info:
        registry.load_providers_config(path)
    assert "do-not-keep-me" not in str(info.value)
