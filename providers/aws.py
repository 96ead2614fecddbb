"""AWS adapter: EC2 GPU instances through boto3.

Inventory: instance types with GPUs (``describe_instance_types``), where each is offered
(``describe_instance_type_offerings`` per availability zone), on-demand prices from the Pricing API
(falling back to prices passed in), current spot prices per zone (``describe_spot_price_history``) and
vCPU quota headroom from Service Quotas minus the vCPUs of running instances, as capacity pools.

Actuation: ``run_instances`` with the spec's key as ClientToken and the engine's ownership tags on
instances and volumes; before launching, instances already tagged with the key are adopted, so that a
new process after a crash finds what an earlier one launched. ``delete`` terminates and waits until
the instances are shutting down or gone.

Credentials come from boto3's default chain only. Endpoints follow boto3's own settings, including
the ``AWS_ENDPOINT_URL`` environment variable (used by the tests to reach a local moto server).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from placement.errors import PlacementError
from placement.gpus import GPU_MODELS, resolve_gpu
from placement.models import CapacityPool, GeoPoint, Offer
from providers.base import (
    MANAGED_VALUE,
    TAG_KEY,
    TAG_MANAGED,
    Compute,
    Denied,
    InsufficientCapacity,
    ManagedResource,
    NotFound,
    OfferUnavailable,
    ProviderError,
    QuotaExceeded,
    ResourceSpec,
    Transient,
)
from providers.registry import AwsSettings

log = logging.getLogger(__name__)

PRICING_REGION = "us-east-1"
# AWS's reported fleet-wide power usage effectiveness (2023 sustainability report).
AWS_PUE = 1.15

Market = Literal["on-demand", "spot"]

# Instance states that still hold (or will hold) capacity, and the ones that count as gone.
LIVE_STATES: tuple[str, ...] = ("pending", "running", "stopping", "stopped")
GONE_STATES: frozenset[str] = frozenset({"shutting-down", "terminated"})


@dataclass(frozen=True)
class AwsRegion:
    """Where a region is and whose law applies there.

    ``carbon_g_per_kwh`` is an approximate annual average grid intensity of the region's location (a
    static snapshot, not live data); ``egress_usd_per_gb`` is the first-tier internet egress list price.
    """

    metro: str
    country: str
    jurisdiction: str
    lat: float
    lon: float
    carbon_g_per_kwh: float
    egress_usd_per_gb: float


AWS_REGIONS: dict[str, AwsRegion] = {
    "us-east-1": AwsRegion("N. Virginia", "US", "US", 39.04, -77.49, 379, 0.09),
    "us-east-2": AwsRegion("Ohio", "US", "US", 39.96, -83.00, 411, 0.09),
    "us-west-1": AwsRegion("N. California", "US", "US", 37.35, -121.96, 322, 0.09),
    "us-west-2": AwsRegion("Oregon", "US", "US", 45.84, -119.70, 322, 0.09),
    "ca-central-1": AwsRegion("Montreal", "CA", "CA", 45.50, -73.57, 130, 0.09),
    "eu-central-1": AwsRegion("Frankfurt", "DE", "EU", 50.11, 8.68, 338, 0.09),
    "eu-west-1": AwsRegion("Dublin", "IE", "EU", 53.35, -6.26, 316, 0.09),
    "eu-west-2": AwsRegion("London", "GB", "UK", 51.51, -0.13, 228, 0.09),
    "eu-west-3": AwsRegion("Paris", "FR", "EU", 48.86, 2.35, 52, 0.09),
    "eu-north-1": AwsRegion("Stockholm", "SE", "EU", 59.33, 18.07, 9, 0.09),
    "eu-south-1": AwsRegion("Milan", "IT", "EU", 45.46, 9.19, 233, 0.09),
    "ap-northeast-1": AwsRegion("Tokyo", "JP", "JP", 35.68, 139.69, 465, 0.114),
    "ap-northeast-2": AwsRegion("Seoul", "KR", "KR", 37.57, 126.98, 416, 0.126),
    "ap-southeast-1": AwsRegion("Singapore", "SG", "SG", 1.35, 103.82, 408, 0.12),
    "ap-southeast-2": AwsRegion("Sydney", "AU", "AU", -33.87, 151.21, 790, 0.114),
    "ap-south-1": AwsRegion("Mumbai", "IN", "IN", 19.08, 72.88, 708, 0.1093),
    "sa-east-1": AwsRegion("Sao Paulo", "BR", "BR", -23.55, -46.63, 62, 0.15),
}


@dataclass(frozen=True)
class QuotaSpec:
    """A regional EC2 vCPU quota and the instance families (by leading letters) it covers."""

    code: str
    name: str
    market: Market
    family_prefixes: tuple[str, ...]


AWS_GPU_QUOTAS: tuple[QuotaSpec, ...] = (
    QuotaSpec("L-417A185B", "Running On-Demand P instances", "on-demand", ("p",)),
    QuotaSpec("L-DB2E81BA", "Running On-Demand G and VT instances", "on-demand", ("g", "vt")),
    QuotaSpec("L-7212CCBC", "All P Spot Instance Requests", "spot", ("p",)),
    QuotaSpec("L-3819A6DF", "All G and VT Spot Instance Requests", "spot", ("g", "vt")),
)

_FAMILY_LETTERS = re.compile(r"^[a-z]+")


def quota_for(instance_type: str, market: Market) -> QuotaSpec | None:
    """The vCPU quota an instance type draws on in a market, or None when it is none of ours."""
    match = _FAMILY_LETTERS.match(instance_type.split(".", 1)[0].lower())
    letters = match.group(0) if match else ""
    for quota in AWS_GPU_QUOTAS:
        if quota.market == market and letters.startswith(quota.family_prefixes):
            return quota
    return None


@dataclass(frozen=True)
class GpuType:
    """What the inventory needs to know about one EC2 instance type with GPUs."""

    instance_type: str
    gpu_name: str
    gpu_model: str | None
    gpu_count: int
    gpu_memory_gib: float
    vcpus: int
    memory_gib: float
    usage_classes: tuple[str, ...]
    partial_gpu: bool


@dataclass(frozen=True)
class AwsInventory:
    """Offers of all configured regions, the quota pools they draw on, and notes on fallbacks taken."""

    offers: tuple[Offer, ...]
    pools: tuple[CapacityPool, ...]
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------
# Error mapping
# --------------------------------------------------------------------------------------------------

_CAPACITY_CODES = frozenset({"InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientCapacity"})
_QUOTA_CODES = frozenset({"VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "InstanceLimitExceeded"})
_UNSUPPORTED_CODES = frozenset({"Unsupported"})
_TRANSIENT_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException",
    "InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable", "ServiceUnavailableException",
})
_DENIED_CODES = frozenset({
    "UnauthorizedOperation", "AuthFailure", "AccessDenied", "AccessDeniedException", "InvalidClientTokenId",
    "SignatureDoesNotMatch", "ExpiredToken", "UnrecognizedClientException", "OptInRequired",
})
_NOT_FOUND_SUFFIXES = (".NotFound", ".Malformed", "NotFound", "NotFoundException")
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b")


def _scrub(text: str, limit: int = 300) -> str:
    """An AWS error message fit for a user: access key ids removed, first sentence-ish, bounded length."""
    text = _ACCESS_KEY_ID.sub("<access key id>", " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_from_boto(
    exc: Exception,
    *,
    provider: str,
    region: str | None,
    zone: str | None = None,
    instance_type: str | None = None,
    action: str = "call AWS",
) -> ProviderError:
    """The typed provider error for a botocore exception. Messages never carry credentials."""
    what = instance_type or "the request"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "") or "Unknown")
        aws_message = _scrub(str(error.get("Message", "") or ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        common: dict[str, Any] = {"provider": provider, "code": code, "region": region, "zone": zone}
        if code in _CAPACITY_CODES:
            return InsufficientCapacity(f"insufficient capacity for {what}", scope="zone", **common)
        if code in _QUOTA_CODES:
            detail = f"quota exceeded launching {what}"
            return QuotaExceeded(f"{detail}: {aws_message}" if aws_message else detail, scope="region", **common)
        if code in _UNSUPPORTED_CODES:
            scope: Literal["zone", "region"] = "zone" if zone else "region"
            return OfferUnavailable(f"{what} is not offered here", scope=scope, **common)
        if code in _DENIED_CODES:
            if code == "OptInRequired":
                return Denied(f"the account is not opted in to use {region or 'this region'}", scope="region",
                              **common)
            return Denied(f"not permitted to {action}; check the credentials boto3's default chain finds and "
                          "their IAM permissions", scope="account", **common)
        if code in _TRANSIENT_CODES or status >= 500:
            return Transient(f"temporary failure trying to {action}", scope="region", **common)
        if code.endswith(_NOT_FOUND_SUFFIXES):
            return NotFound(aws_message or f"not found trying to {action}", scope="region", **common)
        return ProviderError(f"failed to {action}: {aws_message}" if aws_message else f"failed to {action}",
                             scope="region", **common)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return Denied("no usable AWS credentials found by boto3's default chain (environment, ~/.aws, SSO, "
                      "instance role)", provider=provider, code=type(exc).__name__, region=region)
    if isinstance(exc, BotoConnectionError | ReadTimeoutError | ConnectionClosedError):
        return Transient(f"cannot reach the AWS endpoint trying to {action}", provider=provider,
                         code=type(exc).__name__, region=region)
    if isinstance(exc, BotoCoreError):
        return ProviderError(f"failed to {action}: {_scrub(str(exc))}", provider=provider,
                             code=type(exc).__name__, region=region, scope="region")
    return ProviderError(f"failed to {action}: {exc}", provider=provider, code=type(exc).__name__,
                         region=region, scope="region")


# --------------------------------------------------------------------------------------------------
# Parsing helpers
# --------------------------------------------------------------------------------------------------


def _gpu_memory_gib(model: str | None, implied: int | None, reported_mib: float) -> float:
    """Per-GPU memory in GiB, named the way the GPU catalogue names it.

    EC2 reports usable memory (22,888 MiB for a 24 GB A10G); a reported size within 10% of one of the
    catalogue's sizes for the model is taken as that size.
    """
    if implied:
        return float(implied)
    reported = reported_mib / 1024
    if model is not None:
        sizes = GPU_MODELS[model].memory_gib
        nearest = min(sizes, key=lambda size: abs(size - reported))
        if abs(nearest - reported) <= 0.1 * nearest:
            return float(nearest)
    return round(reported, 1)


def parse_gpu_type(item: Mapping[str, Any]) -> GpuType | None:
    """A GpuType from one ``describe_instance_types`` entry, or None when the type has no GPUs."""
    info = item.get("GpuInfo") or {}
    gpus = info.get("Gpus") or []
    if not gpus:
        return None
    first = gpus[0]
    name = str(first.get("Name", ""))
    found = resolve_gpu(name) if name else None
    count = sum(int(g.get("Count", 0) or 0) for g in gpus)
    partial = any(float(g.get("GpuPartitionSize", 1.0) or 1.0) < 1.0 for g in gpus)
    reported_mib = float((first.get("MemoryInfo") or {}).get("SizeInMiB", 0) or 0)
    if not reported_mib and count:
        reported_mib = float(info.get("TotalGpuMemoryInMiB", 0) or 0) / count
    model = found[0] if found else None
    return GpuType(
        instance_type=str(item["InstanceType"]),
        gpu_name=name,
        gpu_model=model,
        gpu_count=count,
        gpu_memory_gib=_gpu_memory_gib(model, found[1] if found else None, reported_mib),
        vcpus=int(item.get("VCpuInfo", {}).get("DefaultVCpus", 0) or 0),
        memory_gib=round(float(item.get("MemoryInfo", {}).get("SizeInMiB", 0) or 0) / 1024, 3),
        usage_classes=tuple(item.get("SupportedUsageClasses") or ("on-demand",)),
        partial_gpu=partial,
    )


def parse_price_item(item: str | Mapping[str, Any]) -> tuple[str, float, str] | None:
    """(instance type, hourly USD, operation) from one Pricing API ``PriceList`` entry, if it has one."""
    data = json.loads(item) if isinstance(item, str) else item
    attributes = data.get("product", {}).get("attributes", {})
    instance_type = attributes.get("instanceType")
    if not instance_type:
        return None
    for term in data.get("terms", {}).get("OnDemand", {}).values():
        for dimension in term.get("priceDimensions", {}).values():
            if dimension.get("unit") not in ("Hrs", "Hours"):
                continue
            try:
                usd = float(dimension.get("pricePerUnit", {}).get("USD", ""))
            except ValueError:
                continue
            if usd > 0:
                return str(instance_type), usd, str(attributes.get("operation", ""))
    return None


def _tags(instance: Mapping[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in instance.get("Tags") or []}


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------------


class AwsCompute(Compute):
    """One AWS account across the configured regions.

    ``prices`` maps (region, instance type) to the on-demand USD per hour used when the Pricing API
    cannot be asked or has no price. ``session`` replaces the boto3 session (tests pass one in);
    ``max_attempts`` is botocore's retry budget per call; ``delete_timeout_s`` bounds the wait in
    :meth:`delete`.
    """

    def __init__(
        self,
        name: str,
        settings: AwsSettings,
        *,
        prices: Mapping[tuple[str, str], float] | None = None,
        session: Any = None,
        max_attempts: int = 3,
        delete_timeout_s: float = 300.0,
        poll_interval_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        unknown = [r for r in settings.regions if r not in AWS_REGIONS]
        if unknown:
            raise PlacementError(
                f"provider {name!r}: no location data for AWS region(s) {', '.join(unknown)}; "
                f"known regions: {', '.join(sorted(AWS_REGIONS))}"
            )
        self.name = name
        self.settings = settings
        self._prices = dict(prices or {})
        self._session = session if session is not None else boto3.session.Session(region_name=settings.regions[0])
        self._config = Config(retries={"max_attempts": max_attempts, "mode": "standard"},
                              user_agent_extra="placement-engine")
        self._clients: dict[tuple[str, str], Any] = {}
        self._images: dict[str, str] = {}
        self._delete_timeout_s = delete_timeout_s
        self._poll_interval_s = poll_interval_s
        self._sleep = sleep

    # -- clients and errors ------------------------------------------------------------------------

    def client(self, service: str, region: str) -> Any:
        """The boto3 client for a service in a region, created once per adapter."""
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = self._session.client(service, region_name=region, config=self._config)
        return self._clients[key]

    @contextlib.contextmanager
    def _aws_errors(
        self, action: str, region: str | None, zone: str | None = None, instance_type: str | None = None
    ) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise error_from_boto(exc, provider=self.name, region=region, zone=zone,
                                  instance_type=instance_type, action=action) from exc

    def _check_offer(self, offer: Offer) -> None:
        if offer.provider != self.name:
            raise PlacementError(f"offer {offer.id!r} belongs to provider {offer.provider!r}, not {self.name!r}")
        if offer.region not in self.settings.regions:
            raise PlacementError(f"offer {offer.id!r} is in region {offer.region!r}, which provider "
                                 f"{self.name!r} is not configured for ({', '.join(self.settings.regions)})")

    # -- inventory ---------------------------------------------------------------------------------

    def offers(self) -> list[Offer]:
        return list(self.inventory().offers)

    def inventory(self) -> AwsInventory:
        """Offers and quota pools of every configured region."""
        offers: list[Offer] = []
        pools: list[CapacityPool] = []
        notes: list[str] = []
        for region in self.settings.regions:
            region_offers, region_pools, region_notes = self._region_inventory(region)
            offers.extend(region_offers)
            pools.extend(region_pools)
            notes.extend(region_notes)
        return AwsInventory(tuple(offers), tuple(pools), tuple(notes))

    def gpu_types(self, region: str) -> dict[str, GpuType]:
        """Every instance type with GPUs in a region (restricted to ``instance_types`` when configured)."""
        ec2 = self.client("ec2", region)
        kwargs: dict[str, Any] = {}
        if self.settings.instance_types:
            kwargs["Filters"] = [{"Name": "instance-type", "Values": list(self.settings.instance_types)}]
        found: dict[str, GpuType] = {}
        with self._aws_errors("list instance types", region):
            for page in ec2.get_paginator("describe_instance_types").paginate(**kwargs):
                for item in page.get("InstanceTypes", []):
                    gpu_type = parse_gpu_type(item)
                    if gpu_type is not None:
                        found[gpu_type.instance_type] = gpu_type
        return found

    def zone_offerings(self, region: str) -> dict[str, set[str]]:
        """Instance type -> availability zones where it is offered, for every type in the region."""
        ec2 = self.client("ec2", region)
        zones: dict[str, set[str]] = defaultdict(set)
        with self._aws_errors("list instance type offerings", region):
            paginator = ec2.get_paginator("describe_instance_type_offerings")
            for page in paginator.paginate(LocationType="availability-zone"):
                for item in page.get("InstanceTypeOfferings", []):
                    zones[str(item["InstanceType"])].add(str(item["Location"]))
        return dict(zones)

    def on_demand_prices(self, region: str) -> dict[str, float]:
        """Linux, shared-tenancy on-demand prices of one region from the Pricing API.

        Raises the mapped ProviderError when the API cannot be asked; :meth:`inventory` then falls back
        to the prices passed in.
        """
        pricing = self.client("pricing", PRICING_REGION)
        filters = [
            {"Type": "TERM_MATCH", "Field": field, "Value": value}
            for field, value in (
                ("ServiceCode", "AmazonEC2"),
                ("regionCode", region),
                ("operatingSystem", "Linux"),
                ("tenancy", "Shared"),
                ("preInstalledSw", "NA"),
                ("capacitystatus", "Used"),
            )
        ]
        best: dict[str, tuple[bool, float]] = {}
        with self._aws_errors("read on-demand prices", region):
            paginator = pricing.get_paginator("get_products")
            for page in paginator.paginate(ServiceCode="AmazonEC2", Filters=filters, FormatVersion="aws_v1"):
                for item in page.get("PriceList", []):
                    parsed = parse_price_item(item)
                    if parsed is None:
                        continue
                    instance_type, usd, operation = parsed
                    # Plain Linux is the "RunInstances" operation; other operations are licensed variants.
                    rank = (operation != "RunInstances", usd)
                    if instance_type not in best or rank < best[instance_type]:
                        best[instance_type] = rank
        return {instance_type: rank[1] for instance_type, rank in best.items()}

    def spot_prices(self, region: str, instance_types: Iterable[str]) -> dict[tuple[str, str], float]:
        """(instance type, zone) -> the latest Linux spot price in USD per hour."""
        ec2 = self.client("ec2", region)
        latest: dict[tuple[str, str], tuple[dt.datetime, float]] = {}
        now = dt.datetime.now(dt.UTC)
        with self._aws_errors("read spot prices", region):
            paginator = ec2.get_paginator("describe_spot_price_history")
            for chunk in _chunks(sorted(instance_types), 100):
                pages = paginator.paginate(InstanceTypes=chunk, ProductDescriptions=["Linux/UNIX"], StartTime=now)
                for page in pages:
                    for item in page.get("SpotPriceHistory", []):
                        if not str(item.get("ProductDescription", "")).startswith("Linux/UNIX"):
                            continue
                        key = (str(item["InstanceType"]), str(item["AvailabilityZone"]))
                        stamp = item.get("Timestamp") or dt.datetime.min.replace(tzinfo=dt.UTC)
                        price = float(item["SpotPrice"])
                        if key not in latest or stamp >= latest[key][0]:
                            latest[key] = (stamp, price)
        return {key: value[1] for key, value in latest.items()}

    def quota_values(self, region: str) -> tuple[dict[str, float], list[str]]:
        """Applied vCPU quota values by quota code, and a note per quota that could not be read."""
        client = self.client("service-quotas", region)
        values: dict[str, float] = {}
        notes: list[str] = []
        for quota in AWS_GPU_QUOTAS:
            try:
                response = client.get_service_quota(ServiceCode="ec2", QuotaCode=quota.code)
                values[quota.code] = float(response["Quota"]["Value"])
            except (ClientError, BotoCoreError) as exc:
                err = error_from_boto(exc, provider=self.name, region=region, action="read service quotas")
                notes.append(f"{region}: quota {quota.code} ({quota.name}) unknown, no limit assumed: {err}")
        return values, notes

    def vcpus_in_use(self, region: str, vcpus_by_type: Mapping[str, int]) -> dict[str, int]:
        """Quota code -> vCPUs of pending and running instances counted against it.

        Spot instances (``InstanceLifecycle`` spot) count against the spot quotas, others against the
        on-demand ones. vCPUs come from the instance's CPU options, else from its type.
        """
        ec2 = self.client("ec2", region)
        used: dict[str, int] = defaultdict(int)
        with self._aws_errors("list running instances", region):
            paginator = ec2.get_paginator("describe_instances")
            filters = [{"Name": "instance-state-name", "Values": ["pending", "running"]}]
            for page in paginator.paginate(Filters=filters):
                for reservation in page.get("Reservations", []):
                    for instance in reservation.get("Instances", []):
                        instance_type = str(instance.get("InstanceType", ""))
                        market: Market = "spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand"
                        quota = quota_for(instance_type, market)
                        if quota is None:
                            continue
                        cpu = instance.get("CpuOptions") or {}
                        if cpu.get("CoreCount") and cpu.get("ThreadsPerCore"):
                            vcpus = int(cpu["CoreCount"]) * int(cpu["ThreadsPerCore"])
                        else:
                            vcpus = vcpus_by_type.get(instance_type, 0)
                        used[quota.code] += vcpus
        return dict(used)

    def _region_inventory(self, region: str) -> tuple[list[Offer], list[CapacityPool], list[str]]:
        notes: list[str] = []
        types = self.gpu_types(region)
        offerings = self.zone_offerings(region)
        zones = sorted({zone for type_zones in offerings.values() for zone in type_zones})

        on_demand: dict[str, float] = {}
        if self.settings.use_pricing_api:
            try:
                on_demand = self.on_demand_prices(region)
            except ProviderError as exc:
                notes.append(f"{region}: Pricing API unavailable, using the prices given instead: {exc}")
        spot: dict[tuple[str, str], float] = {}
        if self.settings.spot:
            spot = self.spot_prices(region, [t for t, info in types.items() if "spot" in info.usage_classes])

        pools: dict[str, CapacityPool] = {}
        if self.settings.use_service_quotas:
            limits, quota_notes = self.quota_values(region)
            notes.extend(quota_notes)
            used = self.vcpus_in_use(region, {t: info.vcpus for t, info in types.items()}) if limits else {}
            for quota in AWS_GPU_QUOTAS:
                if quota.code not in limits:
                    continue
                limit = int(limits[quota.code])
                in_use = used.get(quota.code, 0)
                pools[quota.code] = CapacityPool(
                    id=f"{self.name}/{region}/{quota.code}",
                    limit=max(0, limit - in_use),
                    unit="vcpus",
                    description=f"{quota.name} in {region}: quota {limit} vCPUs, {in_use} in use",
                )

        place = AWS_REGIONS[region]
        offers: list[Offer] = []
        for instance_type in sorted(types):
            info = types[instance_type]
            if info.gpu_model is None or info.partial_gpu or info.gpu_count < 1 or info.vcpus < 1:
                continue
            type_zones = offerings.get(instance_type, set())
            if not type_zones:
                continue
            markets: list[Market] = ["on-demand"] if "on-demand" in info.usage_classes else []
            if self.settings.spot and "spot" in info.usage_classes:
                markets.append("spot")
            for zone in zones:
                for market in markets:
                    price: float | None
                    if market == "on-demand":
                        price = on_demand.get(instance_type, self._prices.get((region, instance_type)))
                    else:
                        price = spot.get((instance_type, zone))
                    offer_quota = quota_for(instance_type, market)
                    pool = pools.get(offer_quota.code) if offer_quota else None
                    reason: str | None = None
                    if zone not in type_zones:
                        reason = f"{instance_type} is not offered in {zone}"
                    elif price is None:
                        where = zone if market == "spot" else region
                        reason = f"no {market} price known for {instance_type} in {where}"
                    elif offer_quota is not None and pool is not None and pool.limit < info.vcpus:
                        reason = (f"quota headroom {pool.limit} vCPUs is less than the {info.vcpus} vCPUs of "
                                  f"{instance_type} ({offer_quota.name}, {offer_quota.code})")
                    offers.append(Offer(
                        provider=self.name,
                        provider_kind="hyperscaler",
                        region=region,
                        zone=zone,
                        country=place.country,
                        jurisdiction=place.jurisdiction,
                        instance_type=instance_type,
                        gpu_model=info.gpu_model,
                        gpu_count=info.gpu_count,
                        gpu_memory_gib=info.gpu_memory_gib,
                        vcpus=info.vcpus,
                        memory_gib=info.memory_gib,
                        capacity_type=market,
                        hourly_usd=price if price is not None else 0.0,
                        pools=(pool.id,) if pool is not None else (),
                        carbon_g_per_kwh=place.carbon_g_per_kwh,
                        pue=AWS_PUE,
                        location=GeoPoint(lat=place.lat, lon=place.lon),
                        egress_usd_per_gb=place.egress_usd_per_gb,
                        unavailable_reason=reason,
                    ))
        for note in notes:
            log.warning("%s: %s", self.name, note)
        return offers, list(pools.values()), notes

    # -- actuation ---------------------------------------------------------------------------------

    def image_id(self, region: str) -> str:
        """The AMI to launch in a region: from ``image_ids``, else read from ``image_ssm_parameter``."""
        if region in self.settings.image_ids:
            return self.settings.image_ids[region]
        if region in self._images:
            return self._images[region]
        parameter = self.settings.image_ssm_parameter
        if not parameter:
            raise PlacementError(f"provider {self.name!r} has no image for {region}: set image_ids.{region} or "
                                 "image_ssm_parameter in the providers config")
        with self._aws_errors(f"read the image id from SSM parameter {parameter}", region):
            value = str(self.client("ssm", region).get_parameter(Name=parameter)["Parameter"]["Value"])
        self._images[region] = value
        return value

    def _instances(self, region: str, filters: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
        ec2 = self.client("ec2", region)
        found: list[dict[str, Any]] = []
        with self._aws_errors(action, region):
            for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
                for reservation in page.get("Reservations", []):
                    found.extend(reservation.get("Instances", []))
        return found

    def instances_with_key(self, region: str, key: str) -> list[dict[str, Any]]:
        """Live (not shutting down or terminated) instances tagged with an idempotency key."""
        return self._instances(region, [
            {"Name": f"tag:{TAG_KEY}", "Values": [key]},
            {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
        ], "look up instances by key")

    def _run_params(self, spec: ResourceSpec) -> dict[str, Any]:
        offer = spec.offer
        region, zone = offer.region, offer.zone
        tags = [{"Key": k, "Value": v} for k, v in sorted(spec.tags(self.settings.tags).items())]
        params: dict[str, Any] = {
            "ImageId": self.image_id(region),
            "InstanceType": offer.instance_type,
            "MinCount": spec.nodes,
            "MaxCount": spec.nodes,
            "ClientToken": spec.key,
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
        }
        subnet = self.settings.subnet_ids.get(zone) if zone else None
        if subnet:
            # A subnet lives in one zone, so it fixes the zone by itself.
            params["SubnetId"] = subnet
        elif zone:
            params["Placement"] = {"AvailabilityZone": zone}
        groups = self.settings.security_group_ids.get(region)
        if groups:
            params["SecurityGroupIds"] = list(groups)
        if self.settings.key_name:
            params["KeyName"] = self.settings.key_name
        profile = self.settings.instance_profile
        if profile:
            params["IamInstanceProfile"] = {"Arn": profile} if profile.startswith("arn:") else {"Name": profile}
        if offer.capacity_type == "spot":
            params["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
            }
        return params

    def _managed(self, spec: ResourceSpec, instances: list[dict[str, Any]]) -> ManagedResource:
        zones = {str(i.get("Placement", {}).get("AvailabilityZone", "")) for i in instances} - {""}
        return ManagedResource(
            provider=self.name,
            resource_ids=tuple(sorted(str(i["InstanceId"]) for i in instances)),
            region=spec.offer.region,
            zone=zones.pop() if len(zones) == 1 else spec.offer.zone,
            key=spec.key,
            workload=spec.workload,
            replica=spec.replica,
            offer_id=spec.offer.id,
            plan_digest=spec.plan_digest,
            state=",".join(sorted({str(i.get("State", {}).get("Name", "unknown")) for i in instances})),
        )

    def create(self, spec: ResourceSpec) -> ManagedResource:
        offer = spec.offer
        self._check_offer(offer)
        if offer.capacity_type == "spot" and not spec.interruptible:
            raise PlacementError(f"{spec.workload} replica {spec.replica}: offer {offer.id!r} is spot capacity "
                                 "but the workload is not interruptible")
        if offer.capacity_type not in ("on-demand", "spot"):
            raise PlacementError(f"offer {offer.id!r}: capacity type {offer.capacity_type!r} cannot be "
                                 "launched by the AWS adapter")
        existing = self.instances_with_key(offer.region, spec.key)
        if existing:
            log.info("%s: adopting %d instance(s) with key %s", self.name, len(existing), spec.key)
            return self._managed(spec, existing)
        params = self._run_params(spec)
        with self._aws_errors(f"launch {offer.instance_type}", offer.region, offer.zone, offer.instance_type):
            response = self.client("ec2", offer.region).run_instances(**params)
        instances = list(response.get("Instances", []))
        live = [i for i in instances if i.get("State", {}).get("Name") not in GONE_STATES]
        if not live:
            # EC2 answers a repeated ClientToken with the original launch, even once it is terminated.
            raise ProviderError(
                f"idempotency key {spec.key} was already used for instances that are now terminated; "
                "re-create with a new key (next attempt)",
                provider=self.name, code="IdempotencyKeyUsed", region=offer.region, zone=offer.zone,
                scope="zone",
            )
        return self._managed(spec, live)

    def _live_ids(self, region: str, ids: Iterable[str]) -> set[str]:
        live: set[str] = set()
        for chunk in _chunks(sorted(set(ids)), 200):
            for instance in self._instances(region, [{"Name": "instance-id", "Values": chunk}],
                                            "look up instances"):
                if instance.get("State", {}).get("Name") not in GONE_STATES:
                    live.add(str(instance["InstanceId"]))
        return live

    def delete(self, resource: ManagedResource) -> None:
        region = resource.region
        ids = set(resource.resource_ids)
        if resource.key:
            ids |= {str(i["InstanceId"]) for i in self.instances_with_key(region, resource.key)}
        live = self._live_ids(region, ids) if ids else set()
        if not live:
            return
        ec2 = self.client("ec2", region)
        try:
            ec2.terminate_instances(InstanceIds=sorted(live))
        except (ClientError, BotoCoreError) as exc:
            code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
            if code != "InvalidInstanceID.NotFound":
                raise error_from_boto(exc, provider=self.name, region=region, zone=resource.zone,
                                      action="terminate instances") from exc
            # Some vanished between the lookup and the call: terminate the ones still there.
            remaining = self._live_ids(region, live)
            if remaining:
                with self._aws_errors("terminate instances", region, resource.zone):
                    ec2.terminate_instances(InstanceIds=sorted(remaining))
        deadline = time.monotonic() + self._delete_timeout_s
        while True:
            remaining = self._live_ids(region, live)
            if not remaining:
                return
            if time.monotonic() >= deadline:
                raise Transient(
                    f"instances {', '.join(sorted(remaining))} still not terminating after "
                    f"{self._delete_timeout_s:.0f} s", provider=self.name, code="DeleteTimeout", region=region,
                )
            self._sleep(self._poll_interval_s)

    def list_managed(self) -> list[ManagedResource]:
        found: list[ManagedResource] = []
        for region in self.settings.regions:
            groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
            instances = self._instances(region, [
                {"Name": f"tag:{TAG_MANAGED}", "Values": [MANAGED_VALUE]},
                {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
            ], "list managed instances")
            for instance in instances:
                key = _tags(instance).get(TAG_KEY) or f"instance:{instance['InstanceId']}"
                groups[key].append(instance)
            for _, members in sorted(groups.items()):
                zones = {str(i.get("Placement", {}).get("AvailabilityZone", "")) for i in members} - {""}
                found.append(ManagedResource.from_tags(
                    provider=self.name,
                    resource_ids=tuple(sorted(str(i["InstanceId"]) for i in members)),
                    region=region,
                    zone=zones.pop() if len(zones) == 1 else None,
                    state=",".join(sorted({str(i.get("State", {}).get("Name", "unknown")) for i in members})),
                    tags=_tags(members[0]),
                ))
        return found

