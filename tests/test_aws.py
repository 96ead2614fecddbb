"""The AWS adapter against moto's HTTP server, with real boto3 over loopback.

moto speaks the EC2 API (instance types, zone offerings, instances, tags, spot price history) but has
no Pricing API for EC2, no EC2 Service Quotas and no capacity errors, and it does not deduplicate
``run_instances`` calls by ClientToken. Those calls are exercised with botocore's ``Stubber`` instead;
idempotency is shown through the adapter's own tag lookup.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import ANY, Stubber

from placement.errors import InputError, PlacementError
from placement.models import GeoPoint, Offer
from providers import (
    OWNERSHIP_TAG_KEYS,
    TAG_KEY,
    TAG_MANAGED,
    TAG_OFFER,
    TAG_PLAN,
    TAG_REPLICA,
    TAG_TEAM,
    TAG_WORKLOAD,
    Denied,
    InsufficientCapacity,
    ManagedResource,
    OfferUnavailable,
    ProviderError,
    QuotaExceeded,
    ResourceSpec,
    Transient,
    label_safe,
    label_safe_key,
    resource_key,
)
from providers.aws import AWS_GPU_QUOTAS, AwsCompute, error_from_boto, parse_price_item, quota_for
from providers.registry import AwsSettings, ProvidersConfig, build_compute, load_providers_config

REGION = "us-east-1"
PLAN = "sha256:" + "ab" * 32


# --------------------------------------------------------------------------------------------------
# The moto server
# --------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer on {url} within {timeout_s} s")


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server on a free loopback port, and boto3's environment pointed at it."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    empty = tmp_path_factory.mktemp("aws-config")
    try:
        _wait_until_up(url, proc)
        with pytest.MonkeyPatch.context() as mp:
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
                mp.delenv(name, raising=False)
            mp.setenv("AWS_ENDPOINT_URL", url)
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", REGION)
            mp.setenv("AWS_CONFIG_FILE", str(empty / "config"))
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "credentials"))
            yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def moto(moto_url: str) -> str:
    """The moto server with its state reset, so that each test starts from an empty account."""
    request = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    return moto_url


@pytest.fixture
def ec2(moto: str) -> Any:
    return boto3.session.Session(region_name=REGION).client("ec2")


# An Amazon Linux 2 image from moto's bundled public AMIs; looked up by id because listing all of
# moto's images takes seconds. Any other bundled image is used if a moto release drops this one.
MOTO_AMI = "ami-04681a1dbd79675a5"


@pytest.fixture
def ami(ec2: Any) -> str:
    if ec2.describe_images(Filters=[{"Name": "image-id", "Values": [MOTO_AMI]}])["Images"]:
        return MOTO_AMI
    images = ec2.describe_images(Owners=["amazon"])["Images"]
    assert images, "moto should ship a set of public AMIs"
    return str(images[0]["ImageId"])


@pytest.fixture
def settings(ami: str) -> AwsSettings:
    return AwsSettings(regions=(REGION,), image_ids={REGION: ami}, tags={"cost-center": "ml"})


def make_adapter(settings: AwsSettings, **kwargs: Any) -> AwsCompute:
    kwargs.setdefault("max_attempts", 1)
    kwargs.setdefault("poll_interval_s", 0.05)
    return AwsCompute("aws", settings, **kwargs)


def offer(instance_type: str = "g5.xlarge", zone: str | None = "us-east-1a", capacity: str = "on-demand",
          gpu: str = "A10G", gpus: int = 1, vcpus: int = 4) -> Offer:
    return Offer(
        provider="aws", provider_kind="hyperscaler", region=REGION, zone=zone, country="US", jurisdiction="US",
        instance_type=instance_type, gpu_model=gpu, gpu_count=gpus, gpu_memory_gib=24, vcpus=vcpus,
        memory_gib=16, capacity_type=capacity, hourly_usd=1.0, location=GeoPoint(lat=39.0, lon=-77.5),
    )


def spec_for(o: Offer, *, workload: str = "llm-serve", replica: int = 0, nodes: int = 1,
             interruptible: bool | None = None) -> ResourceSpec:
    return ResourceSpec.for_replica(
        plan_digest=PLAN, workload=workload, replica=replica, team="research", offer=o, nodes=nodes,
        interruptible=o.capacity_type == "spot" if interruptible is None else interruptible,
        labels={"env": "test"},
    )


def instances_by_tag(ec2: Any, key: str, value: str, live_only: bool = True) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{key}", "Values": [value]}]
    if live_only:
        filters.append({"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]})
    reservations = ec2.describe_instances(Filters=filters)["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def tags_of(item: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags", [])}


# --------------------------------------------------------------------------------------------------
# Interface helpers
# --------------------------------------------------------------------------------------------------


def test_resource_key_is_deterministic_and_fits_a_client_token() -> None:
    o = offer()
    key = resource_key(PLAN, "llm-serve", 3, o.id)
    assert key == resource_key(PLAN, "llm-serve", 3, o.id)
    assert key != resource_key(PLAN, "llm-serve", 4, o.id)
    assert key != resource_key(PLAN, "llm-serve", 3, o.id, attempt=1)
    long = resource_key(PLAN, "W" * 128, 999999, o.id, attempt=12)
    assert len(key) <= 64 and len(long) <= 64
    with pytest.raises(ValueError, match="64"):
        ResourceSpec(key="k" * 65, workload="w", replica=0, team="t", plan_digest=PLAN, offer=o)


def test_label_safe_forms() -> None:
    assert label_safe_key(TAG_MANAGED) == "placement_dev_managed"
    assert label_safe("Train.Job/7") == "train_job_7"
    long = label_safe(PLAN)
    assert len(long) == 63 and long != label_safe(PLAN.replace("ab", "cd", 1))
    labels = spec_for(offer()).ownership_labels()
    assert set(labels) == {label_safe_key(k) for k in OWNERSHIP_TAG_KEYS}
    assert all(len(v) <= 63 and v == v.lower() for v in labels.values())


def test_ownership_tags_win_over_labels_and_config() -> None:
    s = ResourceSpec.for_replica(plan_digest=PLAN, workload="w", replica=1, team="t", offer=offer(),
                                 labels={TAG_WORKLOAD: "forged", "env": "prod"})
    tags = s.tags({"env": "config", TAG_TEAM: "forged"})
    assert tags[TAG_WORKLOAD] == "w" and tags[TAG_TEAM] == "t" and tags["env"] == "prod"


def test_error_scope_decides_which_offers_it_rules_out() -> None:
    err = InsufficientCapacity("insufficient capacity for g5.xlarge", provider="aws", code="X", region=REGION,
                               zone="us-east-1a")
    assert err.applies_to(offer(zone="us-east-1a")) and not err.applies_to(offer(zone="us-east-1b"))
    quota = QuotaExceeded("quota", provider="aws", code="Y", region=REGION, zone="us-east-1a")
    assert quota.applies_to(offer(zone="us-east-1b")) and str(quota).startswith("aws us-east-1:")
    assert Transient("t", provider="aws", code="Z").retryable


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def test_registry_builds_aws_and_names_missing_adapters(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(
        "providers:\n"
        "  aws:\n"
        "    type: aws\n"
        "    regions: [us-east-1, eu-west-1]\n"
        "    image_ids: {us-east-1: ami-12345678}\n"
        "    image_ssm_parameter: /aws/service/example/ami-id\n"
        "    subnet_ids: {us-east-1a: subnet-1}\n"
        "    security_group_ids: {us-east-1: [sg-1]}\n"
        "    tags: {cost-center: ml}\n"
        "  oci-main:\n"
        "    type: oci\n"
        "    tenancy: example\n",
        encoding="utf-8",
    )
    config = load_providers_config(path)
    compute = build_compute("aws", config, session=boto3.session.Session(region_name=REGION))
    assert isinstance(compute, AwsCompute) and compute.name == "aws"
    with pytest.raises(PlacementError, match="'oci-main' has type 'oci', which has no adapter"):
        build_compute("oci-main", config)
    with pytest.raises(PlacementError, match="no provider named 'azure'"):
        build_compute("azure", config)
    assert load_providers_config(None) == ProvidersConfig()


def test_registry_rejects_credentials_and_mistakes(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text("providers:\n  aws:\n    type: aws\n    regions: [us-east-1]\n"
                    "    aws_secret_access_key: do-not-keep-me\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_providers_config(path)
    assert "credentials do not belong" in str(info.value) and "do-not-keep-me" not in str(info.value)
    path.write_text("providers:\n  aws:\n    type: aws\n    regions: [us-east-1]\n    regoins: [x]\n",
                    encoding="utf-8")
    with pytest.raises(InputError, match=r"providers.yaml:5: providers.aws.regoins: unknown field"):
        load_providers_config(path)
    with pytest.raises(PlacementError, match="no location data for AWS region"):
        AwsCompute("aws", AwsSettings(regions=("mars-north-1",)))


# --------------------------------------------------------------------------------------------------
# Inventory
# --------------------------------------------------------------------------------------------------


def test_offers_from_moto_fall_back_to_given_prices(moto: str, settings: AwsSettings) -> None:
    narrowed = settings.model_copy(update={"instance_types": ("g5.*", "g6.*", "p5.*")})
    adapter = make_adapter(narrowed, prices={(REGION, "g5.xlarge"): 1.006, (REGION, "p5.48xlarge"): 55.04})
    inventory = adapter.inventory()
    by_id = {o.id: o for o in inventory.offers}

    g5 = by_id["aws/us-east-1/us-east-1a/g5.xlarge/on-demand"]
    assert (g5.gpu_model, g5.gpu_count, g5.gpu_memory_gib, g5.vcpus, g5.memory_gib) == ("A10G", 1, 24, 4, 16)
    assert g5.hourly_usd == 1.006 and g5.unavailable_reason is None
    assert (g5.country, g5.jurisdiction, g5.carbon_g_per_kwh) == ("US", "US", 379)
    p5 = by_id["aws/us-east-1/us-east-1b/p5.48xlarge/on-demand"]
    assert (p5.gpu_model, p5.gpu_count, p5.gpu_memory_gib, p5.vcpus) == ("H100", 8, 80, 192)

    # moto lists g5 in five of the six us-east-1 zones: the sixth is kept and flagged.
    missing = by_id["aws/us-east-1/us-east-1e/g5.xlarge/on-demand"]
    assert missing.unavailable_reason == "g5.xlarge is not offered in us-east-1e"
    unpriced = by_id["aws/us-east-1/us-east-1a/g6.xlarge/on-demand"]
    assert unpriced.unavailable_reason == "no on-demand price known for g6.xlarge in us-east-1"
    spot = by_id["aws/us-east-1/us-east-1a/g5.xlarge/spot"]
    assert spot.unavailable_reason is None and spot.hourly_usd > 0

    assert {o.zone for o in inventory.offers} >= {"us-east-1a", "us-east-1b", "us-east-1c"}
    assert all(o.provider == "aws" and o.region == REGION for o in inventory.offers)
    # moto has no Pricing API for EC2 and no EC2 quotas: both are reported as notes, not errors.
    assert any("Pricing API unavailable" in n for n in inventory.notes)
    assert sum("quota" in n and "unknown" in n for n in inventory.notes) == len(AWS_GPU_QUOTAS)
    assert inventory.pools == ()
    assert adapter.offers() == list(inventory.offers)


def _price_item(instance_type: str, usd: str, operation: str = "RunInstances") -> str:
    return json.dumps({
        "product": {"attributes": {"instanceType": instance_type, "operation": operation,
                                   "regionCode": REGION, "operatingSystem": "Linux"}},
        "terms": {"OnDemand": {"SKU.TERM": {"priceDimensions": {
            "SKU.TERM.DIM": {"unit": "Hrs", "pricePerUnit": {"USD": usd}},
        }}}},
    })


def test_pricing_and_quotas_through_stubber(moto: str, settings: AwsSettings, ec2: Any, ami: str) -> None:
    # A running g5.12xlarge (48 vCPUs) uses part of the G on-demand quota.
    ec2.run_instances(ImageId=ami, InstanceType="g5.12xlarge", MinCount=1, MaxCount=1)
    narrowed = settings.model_copy(update={"instance_types": ("g5.*", "p5.*")})
    adapter = make_adapter(narrowed)

    pricing = Stubber(adapter.client("pricing", "us-east-1"))
    pricing.add_response("get_products", {
        "FormatVersion": "aws_v1",
        "PriceList": [_price_item("g5.xlarge", "1.0060000000"),
                      _price_item("g5.xlarge", "1.4000000000", operation="RunInstances:0010"),
                      _price_item("g5.12xlarge", "5.6720000000"),
                      _price_item("p5.48xlarge", "55.0400000000")],
    }, {"ServiceCode": "AmazonEC2", "FormatVersion": "aws_v1", "Filters": ANY})
    quotas = Stubber(adapter.client("service-quotas", REGION))
    values = {"L-417A185B": 384.0, "L-DB2E81BA": 64.0, "L-7212CCBC": 0.0, "L-3819A6DF": 32.0}
    for quota in AWS_GPU_QUOTAS:
        quotas.add_response("get_service_quota",
                            {"Quota": {"QuotaCode": quota.code, "QuotaName": quota.name, "Value": values[quota.code]}},
                            {"ServiceCode": "ec2", "QuotaCode": quota.code})
    with pricing, quotas:
        inventory = adapter.inventory()
    pricing.assert_no_pending_responses()
    quotas.assert_no_pending_responses()

    pools = {p.id: p for p in inventory.pools}
    assert pools["aws/us-east-1/L-DB2E81BA"].limit == 64 - 48
    assert pools["aws/us-east-1/L-417A185B"].limit == 384
    assert pools["aws/us-east-1/L-7212CCBC"].limit == 0
    assert all(p.unit == "vcpus" for p in pools.values())

    by_id = {o.id: o for o in inventory.offers}
    assert all(o.instance_type.startswith(("g5.", "p5.")) for o in inventory.offers)
    g5 = by_id["aws/us-east-1/us-east-1a/g5.xlarge/on-demand"]
    assert g5.hourly_usd == 1.006 and g5.pools == ("aws/us-east-1/L-DB2E81BA",) and g5.unavailable_reason is None
    big = by_id["aws/us-east-1/us-east-1a/g5.12xlarge/on-demand"]
    assert big.unavailable_reason is not None and "quota headroom 16 vCPUs" in big.unavailable_reason
    p5 = by_id["aws/us-east-1/us-east-1a/p5.48xlarge/on-demand"]
    assert p5.hourly_usd == 55.04 and p5.unavailable_reason is None
    p5_spot = by_id["aws/us-east-1/us-east-1a/p5.48xlarge/spot"]
    assert p5_spot.pools == ("aws/us-east-1/L-7212CCBC",) and "L-7212CCBC" in (p5_spot.unavailable_reason or "")
    assert inventory.notes == ()


def test_quota_families_and_price_parsing() -> None:
    assert quota_for("p5.48xlarge", "on-demand").code == "L-417A185B"  # type: ignore[union-attr]
    assert quota_for("gr6.4xlarge", "spot").code == "L-3819A6DF"  # type: ignore[union-attr]
    assert quota_for("vt1.3xlarge", "on-demand").code == "L-DB2E81BA"  # type: ignore[union-attr]
    assert quota_for("m5.large", "on-demand") is None
    assert parse_price_item(_price_item("g5.xlarge", "1.006")) == ("g5.xlarge", 1.006, "RunInstances")
    assert parse_price_item(_price_item("g5.xlarge", "0.0000000000")) is None


# --------------------------------------------------------------------------------------------------
# Actuation
# --------------------------------------------------------------------------------------------------


def test_create_tags_instance_and_volume_and_uses_spot(moto: str, settings: AwsSettings, ec2: Any) -> None:
    adapter = make_adapter(settings)
    spec = spec_for(offer(capacity="spot"))
    resource = adapter.create(spec)

    assert len(resource.resource_ids) == 1 and resource.key == spec.key and resource.zone == "us-east-1a"
    instance = ec2.describe_instances(InstanceIds=list(resource.resource_ids))["Reservations"][0]["Instances"][0]
    tags = tags_of(instance)
    assert tags[TAG_MANAGED] == "true" and tags[TAG_KEY] == spec.key and tags[TAG_PLAN] == PLAN
    assert tags[TAG_WORKLOAD] == "llm-serve" and tags[TAG_REPLICA] == "0" and tags[TAG_TEAM] == "research"
    assert tags[TAG_OFFER] == "aws/us-east-1/us-east-1a/g5.xlarge/spot"
    assert tags["cost-center"] == "ml" and tags["env"] == "test"
    assert set(OWNERSHIP_TAG_KEYS) <= set(tags)
    assert instance["InstanceLifecycle"] == "spot"
    assert instance["Placement"]["AvailabilityZone"] == "us-east-1a"
    assert instance["InstanceType"] == "g5.xlarge" and instance["ClientToken"] == spec.key

    volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [instance["InstanceId"]]}])
    assert volumes["Volumes"] and all(tags_of(v)[TAG_KEY] == spec.key for v in volumes["Volumes"])

    on_demand = adapter.create(spec_for(offer(zone="us-east-1b"), replica=1))
    described = ec2.describe_instances(InstanceIds=list(on_demand.resource_ids))["Reservations"][0]["Instances"][0]
    assert "InstanceLifecycle" not in described


def test_spot_offer_needs_an_interruptible_spec(moto: str, settings: AwsSettings) -> None:
    with pytest.raises(PlacementError, match="not interruptible"):
        make_adapter(settings).create(spec_for(offer(capacity="spot"), interruptible=False))


def test_moto_does_not_deduplicate_client_tokens(moto: str, ec2: Any, ami: str) -> None:
    # Documents why the adapter adopts by tag: moto (unlike EC2) launches twice for one ClientToken.
    for _ in range(2):
        ec2.run_instances(ImageId=ami, InstanceType="g5.xlarge", MinCount=1, MaxCount=1, ClientToken="same-token",
                          TagSpecifications=[{"ResourceType": "instance",
                                              "Tags": [{"Key": "probe", "Value": "client-token"}]}])
    assert len(instances_by_tag(ec2, "probe", "client-token")) == 2


def test_create_twice_with_the_same_key_adopts(moto: str, settings: AwsSettings, ec2: Any) -> None:
    spec = spec_for(offer(instance_type="p5.48xlarge", gpu="H100", gpus=8, vcpus=192), nodes=2)
    first = make_adapter(settings).create(spec)
    assert len(first.resource_ids) == 2
    # A fresh adapter (a new process after a crash) finds the instances by their key tag.
    fresh = make_adapter(settings, session=boto3.session.Session(region_name=REGION))
    second = fresh.create(spec)
    assert second.resource_ids == first.resource_ids
    assert len(instances_by_tag(ec2, TAG_KEY, spec.key)) == 2


def test_image_from_ssm_parameter(moto: str, ami: str) -> None:
    ssm = boto3.session.Session(region_name=REGION).client("ssm")
    ssm.put_parameter(Name="/placement/test/gpu-ami", Value=ami, Type="String")
    settings = AwsSettings(regions=(REGION,), image_ssm_parameter="/placement/test/gpu-ami")
    adapter = make_adapter(settings)
    assert adapter.image_id(REGION) == ami
    assert adapter.create(spec_for(offer())).resource_ids
    with pytest.raises(PlacementError, match="no image for us-east-1"):
        make_adapter(AwsSettings(regions=(REGION,))).image_id(REGION)


def test_list_managed_finds_only_tagged_instances(moto: str, settings: AwsSettings, ec2: Any, ami: str) -> None:
    adapter = make_adapter(settings)
    spec = spec_for(offer(), workload="trainer", replica=2)
    created = adapter.create(spec)
    ec2.run_instances(ImageId=ami, InstanceType="g5.xlarge", MinCount=1, MaxCount=1)
    ec2.run_instances(ImageId=ami, InstanceType="g5.xlarge", MinCount=1, MaxCount=1,
                      TagSpecifications=[{"ResourceType": "instance",
                                          "Tags": [{"Key": TAG_WORKLOAD, "Value": "not-ours"}]}])

    managed = adapter.list_managed()
    assert managed == [ManagedResource(
        provider="aws", resource_ids=created.resource_ids, region=REGION, zone="us-east-1a", key=spec.key,
        workload="trainer", replica=2, offer_id=spec.offer.id, plan_digest=PLAN, state=managed[0].state,
    )]
    assert managed[0].state in ("pending", "running")


def test_delete_terminates_and_is_idempotent(moto: str, settings: AwsSettings, ec2: Any) -> None:
    adapter = make_adapter(settings)
    resource = adapter.create(spec_for(offer(), nodes=2))
    adapter.delete(resource)

    states = {i["State"]["Name"] for i in instances_by_tag(ec2, TAG_KEY, resource.key, live_only=False)}
    assert states <= {"shutting-down", "terminated"} and states
    assert adapter.list_managed() == []
    adapter.delete(resource)
    ghost = ManagedResource(provider="aws", resource_ids=("i-0123456789abcdef0",), region=REGION, zone=None,
                            key="no-such-key", workload="w", replica=0, offer_id="x", plan_digest=PLAN,
                            state="running")
    adapter.delete(ghost)


def test_delete_found_by_key_when_ids_are_unknown(moto: str, settings: AwsSettings, ec2: Any) -> None:
    adapter = make_adapter(settings)
    created = adapter.create(spec_for(offer()))
    adapter.delete(ManagedResource(provider="aws", resource_ids=(), region=REGION, zone=None, key=created.key,
                                   workload="", replica=-1, offer_id="", plan_digest="", state="unknown"))
    assert instances_by_tag(ec2, TAG_KEY, created.key) == []


# --------------------------------------------------------------------------------------------------
# Error mapping
# --------------------------------------------------------------------------------------------------


def _stubbed_launch(settings: AwsSettings, code: str, message: str, status: int = 400) -> ProviderError:
    adapter = make_adapter(settings)
    client = adapter.client("ec2", REGION)
    with Stubber(client) as stub:
        stub.add_response("describe_instances", {"Reservations": []})
        stub.add_client_error("run_instances", service_error_code=code, service_message=message,
                              http_status_code=status)
        with pytest.raises(ProviderError) as info:
            adapter.create(spec_for(offer(instance_type="p5.48xlarge", gpu="H100", gpus=8, vcpus=192)))
        stub.assert_no_pending_responses()
    return info.value


def test_insufficient_capacity_is_zone_scoped(moto: str, settings: AwsSettings) -> None:
    err = _stubbed_launch(settings, "InsufficientInstanceCapacity",
                          "We currently do not have sufficient p5.48xlarge capacity in the Availability Zone "
                          "you requested (us-east-1a).")
    assert isinstance(err, InsufficientCapacity)
    assert (err.scope, err.zone, err.region, err.retryable) == ("zone", "us-east-1a", REGION, False)
    assert str(err) == "aws us-east-1a: insufficient capacity for p5.48xlarge (InsufficientInstanceCapacity)"


def test_vcpu_limit_is_region_scoped(moto: str, settings: AwsSettings) -> None:
    err = _stubbed_launch(settings, "VcpuLimitExceeded",
                          "You have requested more vCPU capacity than your current vCPU limit of 32 allows.")
    assert isinstance(err, QuotaExceeded)
    assert (err.scope, err.region) == ("region", REGION)
    assert str(err).startswith("aws us-east-1: quota exceeded launching p5.48xlarge")


@pytest.mark.parametrize(
    ("code", "status", "kind", "scope"),
    [
        ("Unsupported", 400, OfferUnavailable, "zone"),
        ("MaxSpotInstanceCountExceeded", 400, QuotaExceeded, "region"),
        ("InstanceLimitExceeded", 400, QuotaExceeded, "region"),
        ("RequestLimitExceeded", 503, Transient, "region"),
        ("InternalError", 500, Transient, "region"),
        ("UnauthorizedOperation", 403, Denied, "account"),
        ("AuthFailure", 401, Denied, "account"),
    ],
)
def test_error_codes_map_to_types(code: str, status: int, kind: type[ProviderError], scope: str) -> None:
    exc = ClientError({"Error": {"Code": code, "Message": "key AKIAABCDEFGHIJKLMNOP was used"},
                       "ResponseMetadata": {"HTTPStatusCode": status}}, "RunInstances")
    err = error_from_boto(exc, provider="aws", region=REGION, zone="us-east-1a", instance_type="g5.xlarge",
                          action="launch g5.xlarge")
    assert type(err) is kind and err.scope == scope and err.code == code
    assert err.retryable is (kind is Transient)
    assert "AKIAABCDEFGHIJKLMNOP" not in str(err)


def test_connection_failure_is_transient() -> None:
    err = error_from_boto(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), provider="aws",
                          region=REGION, action="list instance types")
    assert isinstance(err, Transient) and err.retryable


def test_unreachable_endpoint_raises_transient(settings: AwsSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(Transient, match="cannot reach the AWS endpoint"):
        make_adapter(settings).list_managed()

