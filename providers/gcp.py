"""GCP adapter: Compute Engine GPU instances through the official ``google-cloud-compute`` client.

Inventory, per configured zone: machine types (``MachineTypesClient.list``; A2, A3 and G2 machine types
carry their GPUs in the ``accelerators`` field), accelerator types (``AcceleratorTypesClient.list``; T4,
V100 and P100 are attached to N1 machine types as guest accelerators), regional GPU quotas
(``RegionsClient.get``) and the project's ``GPUS_ALL_REGIONS`` quota (``ProjectsClient.get``) -- limit
minus usage becomes a capacity pool in GPUs that offers reference -- and, optionally, prices from
the Cloud Billing Catalog API (cores, memory and GPUs priced separately, as Compute Engine bills them),
falling back to prices passed in. Each shape is offered on-demand and, unless disabled, as Spot.

Actuation: ``instances.insert`` per node with a ``requestId`` derived from the spec's key (a retried
insert is deduplicated by Compute Engine), an instance name derived from the key, the engine's ownership
labels in label-safe form (and exactly, in instance metadata), ``onHostMaintenance: TERMINATE`` and Spot
provisioning for interruptible work. Before inserting, an instance already carrying the name is adopted
when its key matches, so that a new process after a crash finds what an earlier one created. Every zone
operation is waited on (``ZoneOperationsClient.wait``) and its errors are mapped to typed errors.

Credentials come from application default credentials (``google.auth.default()``) unless passed in
(tests pass ``AnonymousCredentials`` and ``client_options={"api_endpoint": "http://127.0.0.1:PORT"}``);
they are never logged or put in messages.

Importing this module is cheap: the Google client libraries (a few seconds to import) are imported only
when an adapter first talks to the API, so that the providers registry can import :class:`GcpSettings`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import logging
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from placement.errors import PlacementError
from placement.gpus import GPU_MODELS, resolve_gpu
from placement.models import CapacityPool, GeoPoint, Name, Offer
from providers.base import (
    MANAGED_VALUE,
    OWNERSHIP_TAG_KEYS,
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
    Scope,
    Transient,
    label_safe,
    label_safe_key,
)

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud import compute_v1

log = logging.getLogger(__name__)

Market = Literal["on-demand", "spot"]

# Compute Engine's service id in the Cloud Billing Catalog.
COMPUTE_ENGINE_SERVICE_ID = "6F81-5844-456A"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Google's reported fleet-wide trailing twelve-month power usage effectiveness (2023 environmental report).
GCP_PUE = 1.10
# Labels per resource (Compute Engine allows 64); the engine's seven ownership labels come on top.
MAX_LABELS = 64

PROJECT_ID_PATTERN = r"^(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$"
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_RESERVED_LABEL_PREFIXES = (label_safe_key("placement.dev/"), "goog-")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_RFC1035 = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


class GcpSettings(BaseModel):
    """One GCP project as the engine uses it (an entry of ``providers.yaml`` with ``type: gcp``).

    Holds no credentials: the adapter uses application default credentials.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["gcp"] = "gcp"
    project: Annotated[str, Field(pattern=PROJECT_ID_PATTERN, description="project id")]
    regions: Annotated[tuple[Name, ...], Field(min_length=1)]
    zones: tuple[Name, ...] = Field(default=(), description="zones to use; empty: every zone of the regions")
    image: str | None = Field(
        default=None,
        description="boot image as a URL or partial URL, e.g. "
        "projects/deeplearning-platform-release/global/images/family/common-cu128-ubuntu-2204-nvidia-570",
    )
    boot_disk_gb: int = Field(default=200, ge=10, le=65536)
    boot_disk_type: Name = Field(default="pd-balanced", description="disk type name, e.g. pd-balanced, pd-ssd")
    network: str = Field(default="global/networks/default", description="VPC network URL or partial URL")
    subnetworks: dict[str, str] = Field(default_factory=dict, description="subnetwork URL per region")
    external_ip: bool = Field(default=True, description="give each instance an ephemeral external IP")
    service_account_email: str | None = Field(default=None, description="service account the instances run as")
    labels: dict[str, str] = Field(default_factory=dict, description="extra labels on every resource")
    machine_types: tuple[str, ...] = Field(
        default=(), description="instance type patterns to list (e.g. 'a3-*', 'g2-*'); empty: every GPU shape"
    )
    spot: bool = Field(default=True, description="list Spot offers")
    use_billing_catalog: bool = Field(
        default=True, description="ask the Cloud Billing Catalog for prices (needs google-cloud-billing)"
    )

    @model_validator(mode="after")
    def _check(self) -> GcpSettings:
        regions = set(self.regions)
        if len(regions) != len(self.regions):
            raise ValueError("regions lists a region twice")
        stray = sorted(z for z in self.zones if region_of_zone(z) not in regions)
        if stray:
            raise ValueError(f"zones outside the configured regions: {', '.join(stray)}")
        unknown = sorted(set(self.subnetworks) - regions)
        if unknown:
            raise ValueError(f"subnetworks names regions not in regions: {', '.join(unknown)}")
        bad = sorted(k for k, v in self.labels.items() if not _LABEL_KEY.match(k) or not _LABEL_VALUE.match(v))
        if bad:
            raise ValueError(f"labels must have lowercase keys starting with a letter and values of lowercase "
                             f"letters, digits, '_' and '-' (at most 63 characters): {', '.join(bad)}")
        reserved = sorted(k for k in self.labels if k.startswith(_RESERVED_LABEL_PREFIXES))
        if reserved:
            raise ValueError(f"labels may not use the reserved prefixes {', '.join(_RESERVED_LABEL_PREFIXES)}: "
                             f"{', '.join(reserved)}")
        if len(self.labels) > MAX_LABELS - len(OWNERSHIP_TAG_KEYS):
            raise ValueError(f"at most {MAX_LABELS - len(OWNERSHIP_TAG_KEYS)} labels (the engine adds "
                             f"{len(OWNERSHIP_TAG_KEYS)} of its own)")
        if self.service_account_email is not None and not _EMAIL.match(self.service_account_email):
            raise ValueError("service_account_email must be an email address")
        return self


# --------------------------------------------------------------------------------------------------
# Static facts: regions and accelerators
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GcpRegion:
    """Where a region is and whose law applies there.

    ``carbon_g_per_kwh`` is the approximate grid carbon intensity Google published for the region
    (region-carbon-info, a static snapshot, not live data); ``egress_usd_per_gb`` is the first-tier
    Premium Tier internet egress list price.
    """

    metro: str
    country: str
    jurisdiction: str
    lat: float
    lon: float
    carbon_g_per_kwh: float
    egress_usd_per_gb: float


GCP_REGIONS: dict[str, GcpRegion] = {
    "us-central1": GcpRegion("Council Bluffs, Iowa", "US", "US", 41.26, -95.86, 394, 0.12),
    "us-east1": GcpRegion("Moncks Corner, South Carolina", "US", "US", 33.20, -80.01, 434, 0.12),
    "us-east4": GcpRegion("Ashburn, Virginia", "US", "US", 39.04, -77.49, 309, 0.12),
    "us-east5": GcpRegion("Columbus, Ohio", "US", "US", 39.96, -83.00, 309, 0.12),
    "us-south1": GcpRegion("Dallas, Texas", "US", "US", 32.78, -96.80, 296, 0.12),
    "us-west1": GcpRegion("The Dalles, Oregon", "US", "US", 45.60, -121.18, 60, 0.12),
    "us-west2": GcpRegion("Los Angeles", "US", "US", 34.05, -118.24, 190, 0.12),
    "us-west4": GcpRegion("Las Vegas", "US", "US", 36.17, -115.14, 365, 0.12),
    "northamerica-northeast1": GcpRegion("Montreal", "CA", "CA", 45.50, -73.57, 142, 0.12),
    "southamerica-east1": GcpRegion("Sao Paulo", "BR", "BR", -23.55, -46.63, 129, 0.12),
    "europe-west1": GcpRegion("St. Ghislain", "BE", "EU", 50.45, 3.82, 110, 0.12),
    "europe-west2": GcpRegion("London", "GB", "UK", 51.51, -0.13, 172, 0.12),
    "europe-west3": GcpRegion("Frankfurt", "DE", "EU", 50.11, 8.68, 269, 0.12),
    "europe-west4": GcpRegion("Eemshaven", "NL", "EU", 53.44, 6.83, 283, 0.12),
    "europe-west9": GcpRegion("Paris", "FR", "EU", 48.86, 2.35, 59, 0.12),
    "europe-north1": GcpRegion("Hamina", "FI", "EU", 60.57, 27.19, 127, 0.12),
    "asia-east1": GcpRegion("Changhua County", "TW", "TW", 24.05, 120.52, 456, 0.12),
    "asia-northeast1": GcpRegion("Tokyo", "JP", "JP", 35.68, 139.69, 464, 0.12),
    "asia-south1": GcpRegion("Mumbai", "IN", "IN", 19.08, 72.88, 633, 0.12),
    "asia-southeast1": GcpRegion("Jurong West", "SG", "SG", 1.34, 103.71, 372, 0.12),
    "australia-southeast1": GcpRegion("Sydney", "AU", "AU", -33.87, 151.21, 723, 0.19),
}


@dataclass(frozen=True)
class GcpAccelerator:
    """What the engine needs to know about one Compute Engine accelerator type.

    ``catalogue_name`` is the spelling handed to :func:`placement.gpus.resolve_gpu`; ``quota_metric`` is
    the regional on-demand quota (Spot draws on ``PREEMPTIBLE_`` + the metric when the region has that
    quota); ``billing_name`` is how Cloud Billing SKU descriptions name the GPU (``<name> GPU running in
    ...``); ``attachable`` accelerators are attached to N1 machine types, the others come built into
    A2/A3/G2 machine types.
    """

    name: str
    catalogue_name: str
    memory_gib: int
    quota_metric: str
    billing_name: str
    attachable: bool = False

    @property
    def gpu_model(self) -> str:
        found = resolve_gpu(self.catalogue_name)
        if found is None:  # pragma: no cover - guarded by a test over the whole table
            raise PlacementError(f"GPU {self.catalogue_name!r} of accelerator {self.name!r} is not in the catalogue")
        return found[0]


# The billing names of T4, V100, P100, L4, A100 and H100 follow SKU descriptions as published; those of
# H100 Mega, H200 and B200 follow the same pattern but are unverified: a mismatch only means no catalog
# price (the prices passed in are used instead).
GCP_ACCELERATORS: dict[str, GcpAccelerator] = {
    a.name: a
    for a in (
        GcpAccelerator("nvidia-tesla-t4", "T4", 16, "NVIDIA_T4_GPUS", "Nvidia Tesla T4", attachable=True),
        GcpAccelerator("nvidia-tesla-v100", "V100", 16, "NVIDIA_V100_GPUS", "Nvidia Tesla V100", attachable=True),
        GcpAccelerator("nvidia-tesla-p100", "P100", 16, "NVIDIA_P100_GPUS", "Nvidia Tesla P100", attachable=True),
        GcpAccelerator("nvidia-l4", "NVIDIA-L4", 24, "NVIDIA_L4_GPUS", "Nvidia L4"),
        GcpAccelerator("nvidia-tesla-a100", "A100-40GB", 40, "NVIDIA_A100_GPUS", "Nvidia Tesla A100"),
        GcpAccelerator("nvidia-a100-80gb", "A100-80GB", 80, "NVIDIA_A100_80GB_GPUS", "Nvidia Tesla A100 80GB"),
        GcpAccelerator("nvidia-h100-80gb", "H100-SXM", 80, "NVIDIA_H100_GPUS", "Nvidia H100 80GB"),
        GcpAccelerator("nvidia-h100-mega-80gb", "H100-MEGA", 80, "NVIDIA_H100_MEGA_GPUS", "Nvidia H100 80GB Mega"),
        GcpAccelerator("nvidia-h200-141gb", "H200-SXM", 141, "NVIDIA_H200_GPUS", "Nvidia H200 141GB"),
        GcpAccelerator("nvidia-b200", "B200", 180, "NVIDIA_B200_GPUS", "Nvidia B200"),
    )
}

# Attached GPUs go on an N1 machine type with this many vCPUs per GPU (n1-standard-8 for one GPU,
# n1-standard-64 for eight), within every attachable GPU's vCPU limit.
N1_VCPUS_PER_GPU = 8
ATTACH_COUNTS: tuple[int, ...] = (1, 2, 4, 8)

# Machine type prefix -> how Cloud Billing SKU descriptions name its cores and memory
# ("A2 Instance Core running in Americas", "N1 Predefined Instance Ram running in Belgium").
MACHINE_BILLING_FAMILIES: tuple[tuple[str, str], ...] = (
    ("a3-megagpu-", "A3Plus Instance"),
    ("a3-highgpu-", "A3 Instance"),
    ("a3-edgegpu-", "A3 Instance"),
    ("a2-", "A2 Instance"),
    ("g2-", "G2 Instance"),
    ("n1-", "N1 Predefined Instance"),
)

_ATTACHED_TYPE = re.compile(r"^(?P<machine>[a-z0-9-]+)\+(?P<count>\d+)x(?P<accelerator>[a-z0-9-]+)$")


def region_of_zone(zone: str) -> str:
    """``us-central1-a`` -> ``us-central1``."""
    return zone.rsplit("-", 1)[0]


def _last_segment(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def attached_instance_type(machine_type: str, accelerator: str, count: int) -> str:
    """The offer's instance type for GPUs attached to a machine type: ``n1-standard-8+1xnvidia-tesla-t4``."""
    return f"{machine_type}+{count}x{accelerator}"


def parse_instance_type(instance_type: str) -> tuple[str, str | None, int]:
    """(machine type, attached accelerator or None, attached count) of an offer's instance type."""
    match = _ATTACHED_TYPE.match(instance_type)
    if match is None:
        return instance_type, None, 0
    return match["machine"], match["accelerator"], int(match["count"])


def accelerator_info(name: str) -> GcpAccelerator | None:
    """The table entry of an accelerator type, or one made up from the catalogue for an unlisted GPU.

    Virtual workstation variants (``-vws``, licensed for graphics) are not offered.
    """
    if name.endswith("-vws"):
        return None
    if name in GCP_ACCELERATORS:
        return GCP_ACCELERATORS[name]
    found = resolve_gpu(name)
    if found is None:
        return None
    model, implied = found
    memory = implied or GPU_MODELS[model].memory_gib[0]
    return GcpAccelerator(name, model, memory, quota_metric="", billing_name="")


# The project-wide GPU quota (a new project has 0): every GPU offer also draws on it.
GLOBAL_GPU_QUOTA = "GPUS_ALL_REGIONS"


def spot_quota_metric(metric: str) -> str:
    return f"PREEMPTIBLE_{metric}"


# --------------------------------------------------------------------------------------------------
# Names, request ids, labels and metadata
# --------------------------------------------------------------------------------------------------

_NAME_PREFIX = "pl-"
# Room left for the node suffix ("-n" and up to four digits).
_NODE_SUFFIX_ROOM = 6
_REQUEST_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://placement.dev/gcp/instances.insert")


def instance_base_name(key: str) -> str:
    """An RFC 1035 name (lowercase, starts with a letter) derived from an idempotency key.

    Leaves room for a node suffix within Compute Engine's 63 characters; a key too long to fit is cut
    and ends in a short hash of the whole key, so that distinct keys keep distinct names.
    """
    safe = re.sub(r"[^a-z0-9-]", "-", key.lower()).strip("-") or "x"
    name = f"{_NAME_PREFIX}{safe}"
    limit = 63 - _NODE_SUFFIX_ROOM
    if len(name) > limit:
        digest = hashlib.sha256(key.encode()).hexdigest()[:8]
        name = f"{name[: limit - 9].rstrip('-')}-{digest}"
    return name


def instance_names(key: str, nodes: int) -> list[str]:
    """One instance name per node: ``<base>-n0``, ``<base>-n1``, ..."""
    base = instance_base_name(key)
    names = [f"{base}-n{i}" for i in range(nodes)]
    for name in names:
        if not _RFC1035.match(name):
            raise PlacementError(f"cannot derive a valid instance name from key {key!r} ({name!r})")
    return names


def request_id(key: str, name: str) -> str:
    """The deterministic ``requestId`` (a UUID) of the insert of one node of a key."""
    return str(uuid.uuid5(_REQUEST_NAMESPACE, f"{key}\n{name}"))


def metadata_key(tag_key: str) -> str:
    """The instance metadata key holding a tag exactly: ``placement.dev/key`` -> ``placement-dev-key``."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", tag_key)


_LABEL_TO_TAG: dict[str, str] = {label_safe_key(k): k for k in OWNERSHIP_TAG_KEYS}
_METADATA_TO_TAG: dict[str, str] = {metadata_key(k): k for k in OWNERSHIP_TAG_KEYS}


def instance_labels(spec: ResourceSpec, extra: Mapping[str, str]) -> dict[str, str]:
    """Config labels, then the spec's labels (label-safe), then the ownership labels, which always win."""
    labels = dict(extra)
    for key, value in spec.labels.items():
        labels[label_safe_key(key)] = label_safe(value)
    labels.update(spec.ownership_labels())
    return labels


def ownership_tags(labels: Mapping[str, str], metadata: Mapping[str, str]) -> dict[str, str]:
    """The ownership tags of an instance: exact values from its metadata, else label-safe ones from labels."""
    tags = {tag: labels[label] for label, tag in _LABEL_TO_TAG.items() if label in labels}
    tags.update({tag: metadata[key] for key, tag in _METADATA_TO_TAG.items() if key in metadata})
    return tags


def _owned_by(instance: compute_v1.Instance, key: str) -> bool:
    tags = ownership_tags(dict(instance.labels), _metadata(instance))
    return tags.get(TAG_KEY) in (key, label_safe(key))


def _metadata(instance: compute_v1.Instance) -> dict[str, str]:
    return {item.key: item.value for item in instance.metadata.items}


# --------------------------------------------------------------------------------------------------
# Prices from the Cloud Billing Catalog
# --------------------------------------------------------------------------------------------------

_SKU_DESCRIPTION = re.compile(
    r"^(?:spot preemptible )?(?P<what>.+?) (?P<kind>core|ram|gpu)(?: attached to spot preemptible vms)? "
    r"running in (?P<where>.+)$"
)
_USAGE_MARKETS: dict[str, Market] = {"OnDemand": "on-demand", "Preemptible": "spot"}
_USAGE_UNITS: dict[str, str] = {"core": "h", "gpu": "h", "ram": "GiBy.h"}

RateKey = tuple[str, str, str, Market]


def parse_sku(
    description: str, resource_family: str, usage_type: str, regions: Iterable[str], usage_unit: str,
    unit_usd: float,
) -> dict[RateKey, float]:
    """Rates of one Compute Engine SKU: (kind, what, region, market) -> USD per unit hour.

    ``kind`` is ``core``, ``ram`` (per GiB) or ``gpu``; ``what`` is the lowercase family or GPU name of
    the description (``a2 instance``, ``nvidia h100 80gb``). Commitments, sole tenancy, custom machines
    and other variants have descriptions or usage types that do not match and give no rates.
    """
    market = _USAGE_MARKETS.get(usage_type)
    match = _SKU_DESCRIPTION.match(" ".join(description.lower().split()))
    if resource_family != "Compute" or market is None or match is None or unit_usd <= 0:
        return {}
    kind, what = match["kind"], match["what"]
    if usage_unit != _USAGE_UNITS[kind] or "custom" in what:
        return {}
    return {(kind, what, region, market): unit_usd for region in regions}


def _unit_usd(sku: Any) -> tuple[str, float]:
    """(usage unit, USD per unit) of a billing ``Sku``: the first non-zero tier of its current price."""
    for info in sku.pricing_info:
        expression = info.pricing_expression
        rates = sorted(expression.tiered_rates, key=lambda r: r.start_usage_amount)
        for rate in rates:
            money = rate.unit_price
            if money.currency_code and money.currency_code != "USD":
                continue
            usd = int(money.units) + int(money.nanos) / 1e9
            if usd > 0:
                return str(expression.usage_unit), usd
    return "", 0.0


@dataclass(frozen=True)
class GpuShape:
    """One purchasable machine shape with GPUs: a machine type, plus attached GPUs for N1 machines."""

    instance_type: str
    machine_type: str
    accelerator: GcpAccelerator
    gpu_count: int
    vcpus: int
    memory_gib: float
    attached: bool

    def billing_family(self) -> str | None:
        for prefix, family in MACHINE_BILLING_FAMILIES:
            if self.machine_type.startswith(prefix):
                return family.lower()
        return None


def price_from_rates(rates: Mapping[RateKey, float], shape: GpuShape, region: str, market: Market) -> float | None:
    """Hourly USD of a shape from billing rates: vCPUs x core + GiB x memory + GPUs x GPU, or None."""
    family = shape.billing_family()
    gpu_name = shape.accelerator.billing_name.lower()
    if family is None or not gpu_name:
        return None
    core = rates.get(("core", family, region, market))
    ram = rates.get(("ram", family, region, market))
    gpu = rates.get(("gpu", gpu_name, region, market))
    if core is None or ram is None or gpu is None:
        return None
    return round(shape.vcpus * core + shape.memory_gib * ram + shape.gpu_count * gpu, 6)


# --------------------------------------------------------------------------------------------------
# Error mapping
# --------------------------------------------------------------------------------------------------

_CAPACITY_CODES = frozenset({
    "ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "RESOURCE_POOL_EXHAUSTED",
    "resource_availability", "STOCKOUT",
})
_QUOTA_CODES = frozenset({"QUOTA_EXCEEDED", "quotaExceeded", "QUOTA_LIMIT_EXCEEDED"})
_NOT_FOUND_CODES = frozenset({"RESOURCE_NOT_FOUND", "notFound", "NOT_FOUND"})
_DENIED_CODES = frozenset({
    "forbidden", "insufficientPermissions", "PERMISSION_DENIED", "accessNotConfigured", "SERVICE_DISABLED",
    "authError", "UNAUTHENTICATED", "ACCESS_TOKEN_SCOPE_INSUFFICIENT", "IAM_PERMISSION_DENIED",
})
_TRANSIENT_CODES = frozenset({
    "rateLimitExceeded", "userRateLimitExceeded", "RESOURCE_OPERATION_RATE_EXCEEDED", "RATE_LIMIT_EXCEEDED",
    "backendError", "internalError", "INTERNAL_ERROR", "SERVICE_UNAVAILABLE", "TIMEOUT", "UNAVAILABLE",
})
_UNAVAILABLE_CODES = frozenset({"UNSUPPORTED_OPERATION", "ZONE_NOT_SUPPORTED", "RESOURCE_NOT_AVAILABLE"})
_GLOBAL_QUOTA = re.compile(r"_ALL_REGIONS|\bglobal(?:ly)?\b", re.IGNORECASE)
_SECRETS = re.compile(r"(?i)(bearer\s+|access_token[=:]\s*|ya29\.)[A-Za-z0-9._\-]+")
_CAPACITY_TEXT = "does not have enough resources available"
_CODE_WORD = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")


def _scrub(text: str, limit: int = 300) -> str:
    """A Google error message fit for a user: no tokens, one line, bounded length."""
    text = _SECRETS.sub("<redacted>", " ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def classify_error(
    codes: Sequence[str],
    status: int | None,
    message: str,
    *,
    provider: str,
    region: str | None,
    zone: str | None = None,
    what: str | None = None,
    action: str = "call the Compute Engine API",
) -> ProviderError:
    """The typed error for Compute Engine error codes (operation ``error.errors[].code`` or HTTP error
    reasons), an HTTP status when there is one, and the message."""
    code = next((c for c in codes if c), "") or (f"HTTP {status}" if status else "Unknown")
    found = set(codes)
    text = _scrub(message)
    thing = what or "the request"
    common: dict[str, Any] = {"provider": provider, "code": code, "region": region, "zone": zone}
    if found & _CAPACITY_CODES or _CAPACITY_TEXT in message:
        common["code"] = next((c for c in codes if c in _CAPACITY_CODES), "ZONE_RESOURCE_POOL_EXHAUSTED")
        return InsufficientCapacity(f"insufficient capacity for {thing}", scope="zone", **common)
    if found & _QUOTA_CODES:
        scope: Scope = "account" if _GLOBAL_QUOTA.search(message) else "region"
        detail = f"quota exceeded launching {thing}"
        return QuotaExceeded(f"{detail}: {text}" if text else detail, scope=scope, **common)
    if status == 404 or found & _NOT_FOUND_CODES:
        return NotFound(text or f"not found trying to {action}", scope="region", **common)
    if status in (401, 403) or found & _DENIED_CODES:
        if "accessNotConfigured" in found or "SERVICE_DISABLED" in found:
            return Denied(f"the Compute Engine API is not enabled for the project trying to {action}",
                          scope="account", **common)
        return Denied(f"not permitted to {action}; check the application default credentials (gcloud auth "
                      "application-default login, GOOGLE_APPLICATION_CREDENTIALS or the attached service "
                      "account) and their IAM roles", scope="account", **common)
    if status == 429 or (status is not None and status >= 500) or found & _TRANSIENT_CODES:
        return Transient(f"temporary failure trying to {action}", scope="region", **common)
    if found & _UNAVAILABLE_CODES:
        unavailable_scope: Scope = "zone" if zone else "region"
        return OfferUnavailable(f"{thing} cannot be created here: {text}", scope=unavailable_scope, **common)
    return ProviderError(f"failed to {action}: {text}" if text else f"failed to {action}", scope="region",
                         **common)


def _exception_codes(exc: Any) -> list[str]:
    codes: list[str] = []
    reason = getattr(exc, "reason", None)
    if reason:
        codes.append(str(reason))
    for item in getattr(exc, "errors", None) or []:
        if isinstance(item, Mapping):
            codes.extend(str(item[k]) for k in ("reason", "code") if item.get(k))
    message = str(getattr(exc, "message", "") or "")
    codes.extend(c for c in _CODE_WORD.findall(message) if c in _CAPACITY_CODES or c in _QUOTA_CODES)
    return codes


def error_from_google(
    exc: Exception,
    *,
    provider: str,
    region: str | None,
    zone: str | None = None,
    what: str | None = None,
    action: str = "call the Compute Engine API",
) -> ProviderError:
    """The typed provider error for an exception raised by the Google client libraries."""
    import requests
    from google.api_core import exceptions as core
    from google.auth import exceptions as auth

    where: dict[str, Any] = {"provider": provider, "region": region, "zone": zone, "what": what, "action": action}
    if isinstance(exc, core.RetryError):
        cause = exc.cause
        if isinstance(cause, Exception) and cause is not exc:
            return error_from_google(cause, **where)
        return Transient(f"gave up retrying trying to {action}", provider=provider, code="RetryError", region=region)
    if isinstance(exc, core.GoogleAPICallError):
        status = int(exc.code) if isinstance(exc.code, int) else None
        return classify_error(_exception_codes(exc), status, str(exc.message or ""), **where)
    if isinstance(exc, auth.RefreshError | auth.InvalidOperation):
        return Denied(f"the credentials were rejected or could not be refreshed trying to {action}",
                      provider=provider, code=type(exc).__name__, region=region)
    if isinstance(exc, auth.DefaultCredentialsError):
        return Denied("no application default credentials found (run 'gcloud auth application-default login', "
                      "set GOOGLE_APPLICATION_CREDENTIALS or attach a service account)", provider=provider,
                      code=type(exc).__name__, region=region)
    if isinstance(exc, auth.TransportError | requests.ConnectionError | requests.Timeout | ConnectionError):
        return Transient(f"cannot reach the Google API endpoint trying to {action}", provider=provider,
                         code=type(exc).__name__, region=region)
    return ProviderError(f"failed to {action}: {_scrub(str(exc))}", provider=provider, code=type(exc).__name__,
                         region=region, scope="region")


def error_from_operation(
    operation: compute_v1.Operation,
    *,
    provider: str,
    region: str | None,
    zone: str | None = None,
    what: str | None = None,
    action: str = "call the Compute Engine API",
) -> ProviderError:
    """The typed provider error of a finished zone operation that has errors."""
    codes: list[str] = []
    messages: list[str] = []
    for error in operation.error.errors:
        codes.append(str(error.code))
        messages.append(str(error.message))
        for detail in error.error_details:
            if detail.error_info.reason:
                codes.append(str(detail.error_info.reason))
    status = int(operation.http_error_status_code) if operation.http_error_status_code else None
    message = "; ".join(m for m in messages if m) or str(operation.http_error_message or "")
    return classify_error(codes, status, message, provider=provider, region=region, zone=zone, what=what,
                          action=action)


# --------------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GcpInventory:
    """Offers of all configured zones, the quota pools they draw on, and notes on fallbacks taken."""

    offers: tuple[Offer, ...]
    pools: tuple[CapacityPool, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegionQuota:
    """One regional quota of GPUs: its limit and usage, and the pool of headroom offers draw on."""

    metric: str
    limit: float
    usage: float
    pool: CapacityPool


@dataclass
class _ZoneFacts:
    name: str
    region: str
    status: str
    machine_types: dict[str, Any] = field(default_factory=dict)
    accelerators: dict[str, int] = field(default_factory=dict)


_C = TypeVar("_C")


class GcpCompute(Compute):
    """One GCP project across the configured regions.

    ``prices`` maps (region, instance type) to the on-demand USD per hour used when the Billing Catalog
    is not asked or has no price; ``spot_prices`` does the same for Spot. ``credentials`` and
    ``client_options`` go to every Google client (tests pass anonymous credentials and a local endpoint);
    without credentials, application default credentials are used. ``retry_deadline_s`` bounds the
    client library's retries of one call (0: no retries); ``operation_timeout_s`` bounds the wait for one
    zone operation.
    """

    def __init__(
        self,
        name: str,
        settings: GcpSettings,
        *,
        prices: Mapping[tuple[str, str], float] | None = None,
        spot_prices: Mapping[tuple[str, str], float] | None = None,
        credentials: Any = None,
        client_options: Mapping[str, Any] | None = None,
        retry_deadline_s: float = 60.0,
        request_timeout_s: float = 120.0,
        operation_timeout_s: float = 900.0,
        poll_interval_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        unknown = [r for r in settings.regions if r not in GCP_REGIONS]
        if unknown:
            raise PlacementError(
                f"provider {name!r}: no location data for GCP region(s) {', '.join(unknown)}; "
                f"known regions: {', '.join(sorted(GCP_REGIONS))}"
            )
        self.name = name
        self.settings = settings
        self._prices = dict(prices or {})
        self._spot_prices = dict(spot_prices or {})
        self._credentials = credentials
        self._client_options = dict(client_options) if client_options is not None else None
        self._retry_deadline_s = retry_deadline_s
        self._request_timeout_s = request_timeout_s
        self._operation_timeout_s = operation_timeout_s
        self._poll_interval_s = poll_interval_s
        self._sleep = sleep
        self._clients: dict[type, Any] = {}

    # -- clients and errors ------------------------------------------------------------------------

    def _credentials_or_default(self) -> Any:
        if self._credentials is None:
            import google.auth
            from google.auth import exceptions as auth

            try:
                self._credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
            except auth.DefaultCredentialsError as exc:
                raise error_from_google(exc, provider=self.name, region=None) from None
        return self._credentials

    def client(self, cls: type[_C]) -> _C:
        """The Google client of a class (``compute_v1.InstancesClient``, ...), created once per adapter."""
        if cls not in self._clients:
            factory: Callable[..., _C] = cls
            self._clients[cls] = factory(
                transport="rest", credentials=self._credentials_or_default(), client_options=self._client_options,
            )
        client: _C = self._clients[cls]
        return client

    def _retry(self) -> Retry | None:
        if self._retry_deadline_s <= 0:
            return None
        from google.api_core import exceptions as core
        from google.api_core.retry import Retry, if_exception_type

        return Retry(
            initial=0.5, maximum=10.0, multiplier=2.0, timeout=self._retry_deadline_s,
            predicate=if_exception_type(core.ServiceUnavailable, core.TooManyRequests, core.InternalServerError,
                                        core.DeadlineExceeded),
        )

    def _call(self, action: str, region: str | None, zone: str | None, what: str | None,
              fn: Callable[..., _C], /, *args: Any, **kwargs: Any) -> _C:
        """``fn(*args, **kwargs)`` with this adapter's retry and timeout, Google errors mapped."""
        kwargs.setdefault("timeout", self._request_timeout_s)
        try:
            return fn(*args, retry=self._retry(), **kwargs)
        except ProviderError:
            raise
        except Exception as exc:
            if not _is_google_error(exc):
                raise
            raise error_from_google(exc, provider=self.name, region=region, zone=zone, what=what,
                                    action=action) from None

    def _check_offer(self, offer: Offer) -> str:
        if offer.provider != self.name:
            raise PlacementError(f"offer {offer.id!r} belongs to provider {offer.provider!r}, not {self.name!r}")
        if offer.region not in self.settings.regions:
            raise PlacementError(f"offer {offer.id!r} is in region {offer.region!r}, which provider "
                                 f"{self.name!r} is not configured for ({', '.join(self.settings.regions)})")
        if not offer.zone:
            raise PlacementError(f"offer {offer.id!r} has no zone; Compute Engine instances are zonal")
        return offer.zone

    # -- inventory ---------------------------------------------------------------------------------

    def offers(self) -> list[Offer]:
        return list(self.inventory().offers)

    def inventory(self) -> GcpInventory:
        """Offers and GPU quota pools of every configured zone."""
        notes: list[str] = []
        zones = self.zone_facts(notes)
        rates: dict[RateKey, float] = {}
        if self.settings.use_billing_catalog:
            try:
                rates = self.billing_rates()
            except ProviderError as exc:
                notes.append(f"Cloud Billing Catalog unavailable, using the prices given instead: {exc}")
            except ImportError:
                notes.append("google-cloud-billing is not installed, using the prices given instead")
        offers: list[Offer] = []
        pools: list[CapacityPool] = []
        global_quota, global_notes = self.global_gpu_quota()
        notes.extend(global_notes)
        if global_quota is not None:
            pools.append(global_quota.pool)
        for region in self.settings.regions:
            region_zones = [z for z in zones if z.region == region]
            quotas, quota_notes = self.quotas(region)
            notes.extend(quota_notes)
            pools.extend(q.pool for q in quotas.values())
            offers.extend(self._region_offers(region, region_zones, quotas, global_quota, rates, notes))
        for note in notes:
            log.warning("%s: %s", self.name, note)
        return GcpInventory(tuple(offers), tuple(pools), tuple(notes))

    def zone_facts(self, notes: list[str] | None = None) -> list[_ZoneFacts]:
        """The configured zones with their status, GPU machine types and accelerator types."""
        from google.cloud import compute_v1

        project = self.settings.project
        zones_client = self.client(compute_v1.ZonesClient)
        pager = self._call("list zones", None, None, None, zones_client.list, project=project)
        wanted = set(self.settings.zones)
        found: list[_ZoneFacts] = []
        with self._errors("list zones", None):
            for zone in pager:
                region = _last_segment(zone.region) if zone.region else region_of_zone(zone.name)
                if region not in self.settings.regions or (wanted and zone.name not in wanted):
                    continue
                found.append(_ZoneFacts(zone.name, region, str(zone.status or "UP")))
        missing = sorted(wanted - {z.name for z in found})
        if missing and notes is not None:
            notes.append(f"configured zones not found in project {project}: {', '.join(missing)}")
        types_client = self.client(compute_v1.MachineTypesClient)
        accel_client = self.client(compute_v1.AcceleratorTypesClient)
        for facts in sorted(found, key=lambda z: z.name):
            with self._errors("list machine types", facts.region, facts.name):
                for machine in self._call("list machine types", facts.region, facts.name, None,
                                          types_client.list, project=project, zone=facts.name):
                    facts.machine_types[machine.name] = machine
            with self._errors("list accelerator types", facts.region, facts.name):
                for accel in self._call("list accelerator types", facts.region, facts.name, None,
                                        accel_client.list, project=project, zone=facts.name):
                    facts.accelerators[accel.name] = int(accel.maximum_cards_per_instance or 0)
        return sorted(found, key=lambda z: z.name)

    def quotas(self, region: str) -> tuple[dict[str, RegionQuota], list[str]]:
        """Quota metric -> limit, usage and pool of GPU headroom (limit minus usage) for the GPU quotas of a
        region, and a note when the quotas cannot be read (then no limit is assumed)."""
        from google.cloud import compute_v1

        known = {a.quota_metric for a in GCP_ACCELERATORS.values()}
        known |= {spot_quota_metric(m) for m in known}
        try:
            answer = self._call("read regional quotas", region, None, None,
                                self.client(compute_v1.RegionsClient).get, project=self.settings.project,
                                region=region)
        except ProviderError as exc:
            return {}, [f"{region}: GPU quotas unknown, no limit assumed: {exc}"]
        found: dict[str, RegionQuota] = {}
        for quota in answer.quotas:
            metric = str(quota.metric)
            if metric not in known:
                continue
            limit, usage = float(quota.limit), float(quota.usage)
            found[metric] = RegionQuota(metric, limit, usage, CapacityPool(
                id=f"{self.name}/{region}/{metric}", limit=max(0, int(limit - usage)), unit="gpus",
                description=f"{metric} in {region}: quota {limit:g} GPUs, {usage:g} in use",
            ))
        return found, []

    def global_gpu_quota(self) -> tuple[RegionQuota | None, list[str]]:
        """The project's GPUS_ALL_REGIONS quota as a pool of GPU headroom, and a note when it is unknown."""
        from google.cloud import compute_v1

        try:
            project = self._call("read project quotas", None, None, None, self.client(compute_v1.ProjectsClient).get,
                                 project=self.settings.project)
        except ProviderError as exc:
            return None, [f"project GPU quota ({GLOBAL_GPU_QUOTA}) unknown, no limit assumed: {exc}"]
        for quota in project.quotas:
            if str(quota.metric) == GLOBAL_GPU_QUOTA:
                limit, usage = float(quota.limit), float(quota.usage)
                return RegionQuota(GLOBAL_GPU_QUOTA, limit, usage, CapacityPool(
                    id=f"{self.name}/global/{GLOBAL_GPU_QUOTA}", limit=max(0, int(limit - usage)), unit="gpus",
                    description=f"{GLOBAL_GPU_QUOTA} of project {self.settings.project}: quota {limit:g} GPUs, "
                                f"{usage:g} in use",
                )), []
        return None, []

    def billing_rates(self) -> dict[RateKey, float]:
        """Compute Engine core, memory and GPU rates from the Cloud Billing Catalog (USD).

        Raises ImportError when google-cloud-billing is not installed and the mapped ProviderError when
        the catalog cannot be read; :meth:`inventory` then falls back to the prices passed in.
        """
        import google.cloud.billing_v1 as billing_v1

        catalog = self.client(billing_v1.CloudCatalogClient)
        request = billing_v1.ListSkusRequest(parent=f"services/{COMPUTE_ENGINE_SERVICE_ID}", currency_code="USD",
                                             page_size=5000)
        rates: dict[RateKey, float] = {}
        with self._errors("read the Cloud Billing Catalog", None):
            for sku in self._call("read the Cloud Billing Catalog", None, None, None, catalog.list_skus,
                                  request=request):
                unit, usd = _unit_usd(sku)
                rates.update(parse_sku(str(sku.description), str(sku.category.resource_family),
                                       str(sku.category.usage_type), list(sku.service_regions), unit, usd))
        return rates

    def shapes(self, zone: _ZoneFacts, notes: list[str] | None = None) -> list[GpuShape]:
        """GPU shapes of a zone: machine types with built-in GPUs, and N1 machine types with attached GPUs."""
        shapes: list[GpuShape] = []
        unknown: set[str] = set()
        for machine in zone.machine_types.values():
            built_in = [a for a in machine.accelerators if a.guest_accelerator_count]
            if not built_in:
                continue
            accel = accelerator_info(str(built_in[0].guest_accelerator_type))
            if accel is None:
                unknown.add(str(built_in[0].guest_accelerator_type))
                continue
            shapes.append(GpuShape(
                instance_type=machine.name, machine_type=machine.name, accelerator=accel,
                gpu_count=sum(int(a.guest_accelerator_count) for a in built_in), vcpus=int(machine.guest_cpus),
                memory_gib=round(float(machine.memory_mb) / 1024, 3), attached=False,
            ))
        for name, max_cards in sorted(zone.accelerators.items()):
            accel = accelerator_info(name)
            if accel is None or not accel.attachable:
                continue
            for count in ATTACH_COUNTS:
                machine = zone.machine_types.get(f"n1-standard-{N1_VCPUS_PER_GPU * count}")
                if count > max_cards or machine is None:
                    continue
                shapes.append(GpuShape(
                    instance_type=attached_instance_type(machine.name, name, count), machine_type=machine.name,
                    accelerator=accel, gpu_count=count, vcpus=int(machine.guest_cpus),
                    memory_gib=round(float(machine.memory_mb) / 1024, 3), attached=True,
                ))
        if unknown and notes is not None:
            notes.append(f"{zone.name}: skipped machine types with GPUs the catalogue does not know "
                         f"({', '.join(sorted(unknown))})")
        patterns = self.settings.machine_types
        if patterns:
            shapes = [s for s in shapes if any(fnmatch.fnmatchcase(s.instance_type, p) for p in patterns)]
        return sorted(shapes, key=lambda s: s.instance_type)

    def _price(self, rates: Mapping[RateKey, float], shape: GpuShape, region: str, market: Market) -> float | None:
        price = price_from_rates(rates, shape, region, market)
        if price is None:
            given = self._prices if market == "on-demand" else self._spot_prices
            price = given.get((region, shape.instance_type))
        return price

    def _region_offers(self, region: str, zones: list[_ZoneFacts], quotas: Mapping[str, RegionQuota],
                       global_quota: RegionQuota | None, rates: Mapping[RateKey, float],
                       notes: list[str]) -> list[Offer]:
        place = GCP_REGIONS[region]
        markets: tuple[Market, ...] = ("on-demand", "spot") if self.settings.spot else ("on-demand",)
        offers: list[Offer] = []
        for zone in zones:
            for shape in self.shapes(zone, notes):
                for market in markets:
                    price = self._price(rates, shape, region, market)
                    pool = self._pool_for(shape.accelerator, market, quotas)
                    offer_pools = [p for p in (pool, global_quota.pool if global_quota else None) if p is not None]
                    short = next((p for p in offer_pools if p.limit < shape.gpu_count), None)
                    reason: str | None = None
                    if zone.status != "UP":
                        reason = f"zone {zone.name} is {zone.status}"
                    elif price is None:
                        reason = f"no {market} price known for {shape.instance_type} in {region}"
                    elif short is not None:
                        metric = short.id.rsplit("/", 1)[-1]
                        reason = (f"quota headroom {short.limit} GPUs is less than the {shape.gpu_count} GPUs of "
                                  f"{shape.instance_type} ({metric})")
                    offers.append(Offer(
                        provider=self.name, provider_kind="hyperscaler", region=region, zone=zone.name,
                        country=place.country, jurisdiction=place.jurisdiction, instance_type=shape.instance_type,
                        gpu_model=shape.accelerator.gpu_model, gpu_count=shape.gpu_count,
                        gpu_memory_gib=shape.accelerator.memory_gib, vcpus=shape.vcpus, memory_gib=shape.memory_gib,
                        capacity_type=market, hourly_usd=price if price is not None else 0.0,
                        pools=tuple(p.id for p in offer_pools), carbon_g_per_kwh=place.carbon_g_per_kwh,
                        pue=GCP_PUE, location=GeoPoint(lat=place.lat, lon=place.lon),
                        egress_usd_per_gb=place.egress_usd_per_gb, unavailable_reason=reason,
                    ))
        return offers

    @staticmethod
    def _pool_for(accel: GcpAccelerator, market: Market, quotas: Mapping[str, RegionQuota]) -> CapacityPool | None:
        """The quota pool an offer draws on. Spot uses the preemptible GPU quota when the region grants
        one (a limit above zero), and the on-demand GPU quota otherwise, as Compute Engine does."""
        if not accel.quota_metric:
            return None
        if market == "spot":
            spot = quotas.get(spot_quota_metric(accel.quota_metric))
            if spot is not None and spot.limit > 0:
                return spot.pool
        on_demand = quotas.get(accel.quota_metric)
        return on_demand.pool if on_demand is not None else None

    # -- actuation ---------------------------------------------------------------------------------

    def _instance_resource(self, spec: ResourceSpec, zone: str, name: str) -> compute_v1.Instance:
        from google.cloud import compute_v1

        if not self.settings.image:
            raise PlacementError(f"provider {self.name!r} has no boot image: set image in the providers config")
        machine, accelerator, count = parse_instance_type(spec.offer.instance_type)
        labels = instance_labels(spec, self.settings.labels)
        spot = spec.offer.capacity_type == "spot"
        items = [compute_v1.Items(key=metadata_key(k), value=v) for k, v in sorted(spec.ownership_tags().items())]
        interface = compute_v1.NetworkInterface(network=self.settings.network)
        subnetwork = self.settings.subnetworks.get(spec.offer.region)
        if subnetwork:
            interface.subnetwork = subnetwork
        if self.settings.external_ip:
            interface.access_configs = [compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")]
        scheduling = compute_v1.Scheduling(
            on_host_maintenance="TERMINATE",
            automatic_restart=not spot,
            provisioning_model="SPOT" if spot else "STANDARD",
        )
        if spot:
            scheduling.instance_termination_action = "DELETE"
        instance = compute_v1.Instance(
            name=name,
            machine_type=f"zones/{zone}/machineTypes/{machine}",
            labels=labels,
            metadata=compute_v1.Metadata(items=items),
            scheduling=scheduling,
            disks=[compute_v1.AttachedDisk(
                boot=True, auto_delete=True, type_="PERSISTENT",
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    source_image=self.settings.image, disk_size_gb=self.settings.boot_disk_gb,
                    disk_type=f"zones/{zone}/diskTypes/{self.settings.boot_disk_type}", labels=labels,
                ),
            )],
            network_interfaces=[interface],
        )
        if accelerator is not None:
            instance.guest_accelerators = [compute_v1.AcceleratorConfig(
                accelerator_type=f"zones/{zone}/acceleratorTypes/{accelerator}", accelerator_count=count,
            )]
        if self.settings.service_account_email:
            instance.service_accounts = [compute_v1.ServiceAccount(email=self.settings.service_account_email,
                                                                   scopes=[CLOUD_PLATFORM_SCOPE])]
        return instance

    def get_instance(self, zone: str, name: str) -> compute_v1.Instance | None:
        """The instance of that name in a zone, or None when there is none."""
        from google.cloud import compute_v1

        try:
            return self._call(f"look up instance {name}", region_of_zone(zone), zone, None,
                              self.client(compute_v1.InstancesClient).get, project=self.settings.project,
                              zone=zone, instance=name)
        except NotFound:
            return None

    def wait_operation(self, zone: str, operation: str, *, what: str | None = None,
                       action: str = "wait for an operation", check: bool = True) -> compute_v1.Operation:
        """Wait until a zone operation is DONE and return it. When ``check``, raise the mapped error of a
        failed operation; otherwise the caller reads ``error`` itself.

        Uses ``ZoneOperationsClient.wait`` (the server holds the call until the operation is done or about
        two minutes pass) rather than ``ExtendedOperation.result()``: the latter polls through a
        ZoneOperationsClient the transport makes without this adapter's ``client_options``, and maps an
        operation error to its HTTP status only, losing codes such as ZONE_RESOURCE_POOL_EXHAUSTED.
        """
        from google.cloud import compute_v1

        ops = self.client(compute_v1.ZoneOperationsClient)
        region = region_of_zone(zone)
        deadline = time.monotonic() + self._operation_timeout_s
        while True:
            # The server holds a wait for up to about two minutes: give the HTTP call more than that.
            answer = self._call(action, region, zone, what, ops.wait, project=self.settings.project, zone=zone,
                                operation=operation, timeout=max(self._request_timeout_s, 150.0))
            if answer.status == compute_v1.Operation.Status.DONE:
                break
            if time.monotonic() >= deadline:
                raise Transient(f"operation {operation} still {answer.status.name} after "
                                f"{self._operation_timeout_s:.0f} s trying to {action}", provider=self.name,
                                code="OperationTimeout", region=region, zone=zone, scope="zone")
            self._sleep(self._poll_interval_s)
        if check and _failed(answer):
            raise error_from_operation(answer, provider=self.name, region=region, zone=zone, what=what,
                                       action=action)
        return answer

    def _insert(self, spec: ResourceSpec, zone: str, name: str) -> str:
        from google.cloud import compute_v1

        request = compute_v1.InsertInstanceRequest(
            project=self.settings.project, zone=zone, instance_resource=self._instance_resource(spec, zone, name),
            request_id=request_id(spec.key, name),
        )
        what = spec.offer.instance_type
        operation = self._call(f"create {what}", spec.offer.region, zone, what,
                               self.client(compute_v1.InstancesClient).insert, request=request)
        return str(operation.name)

    def _managed(self, spec: ResourceSpec, zone: str, instances: list[compute_v1.Instance]) -> ManagedResource:
        return ManagedResource(
            provider=self.name,
            resource_ids=tuple(sorted(f"zones/{zone}/instances/{i.name}" for i in instances)),
            region=spec.offer.region,
            zone=zone,
            key=spec.key,
            workload=spec.workload,
            replica=spec.replica,
            offer_id=spec.offer.id,
            plan_digest=spec.plan_digest,
            state=",".join(sorted({str(i.status or "UNKNOWN") for i in instances})),
        )

    def create(self, spec: ResourceSpec) -> ManagedResource:
        offer = spec.offer
        zone = self._check_offer(offer)
        if offer.capacity_type == "spot" and not spec.interruptible:
            raise PlacementError(f"{spec.workload} replica {spec.replica}: offer {offer.id!r} is spot capacity "
                                 "but the workload is not interruptible")
        if offer.capacity_type not in ("on-demand", "spot"):
            raise PlacementError(f"offer {offer.id!r}: capacity type {offer.capacity_type!r} cannot be "
                                 "created by the GCP adapter")
        names = instance_names(spec.key, spec.nodes)
        what = offer.instance_type
        found: dict[str, compute_v1.Instance] = {}
        for name in names:
            existing = self.get_instance(zone, name)
            if existing is None:
                continue
            if not _owned_by(existing, spec.key):
                raise ProviderError(f"instance name {name} is taken by an instance not created for key {spec.key}",
                                    provider=self.name, code="NameInUse", region=offer.region, zone=zone,
                                    scope="zone")
            found[name] = existing
        if found:
            log.info("%s: adopting %d instance(s) with key %s", self.name, len(found), spec.key)
        # Insert every missing node, then wait for every insert, so that no insert is still running when a
        # failure is reported and the instances of a failed multi-node create are cleaned up.
        operations: dict[str, str] = {}
        errors: list[ProviderError] = []
        failed: set[str] = set()
        for name in names:
            if name in found:
                continue
            try:
                operations[name] = self._insert(spec, zone, name)
            except ProviderError as exc:
                errors.append(exc)
                failed.add(name)
                break
        for name, operation in operations.items():
            try:
                done = self.wait_operation(zone, operation, what=what, action=f"create {what}", check=False)
            except ProviderError as exc:  # the outcome of this insert is unknown
                errors.append(exc)
                continue
            if _failed(done):
                failed.add(name)
                errors.append(error_from_operation(done, provider=self.name, region=offer.region, zone=zone,
                                                   what=what, action=f"create {what}"))
        if errors:
            # A capacity or quota failure makes the caller move elsewhere: remove what this key holds.
            # A retryable one leaves the instances to be adopted by the retry.
            first = next((e for e in errors if not e.retryable), errors[0])
            if not first.retryable:
                self._clean_up(zone, [n for n in names if n in found or (n in operations and n not in failed)])
            raise first
        instances: list[compute_v1.Instance] = []
        for name in names:
            instance = self.get_instance(zone, name)
            if instance is None:
                # Compute Engine answered a repeated requestId with the original, finished insert, but that
                # instance has since been deleted.
                raise ProviderError(
                    f"idempotency key {spec.key} was already used for instance {name}, which is now deleted; "
                    "re-create with a new key (next attempt)",
                    provider=self.name, code="IdempotencyKeyUsed", region=offer.region, zone=zone, scope="zone",
                )
            instances.append(instance)
        return self._managed(spec, zone, instances)

    def _clean_up(self, zone: str, names: list[str]) -> None:
        """Best-effort delete of a failed multi-node create's instances, so that no orphan is left."""
        try:
            self._delete_instances([(zone, n) for n in names])
        except ProviderError as exc:
            log.warning("%s: could not clean up instances %s after a failed create: %s", self.name,
                        ", ".join(names), exc)

    def _delete_instances(self, targets: Iterable[tuple[str, str]]) -> None:
        from google.cloud import compute_v1

        instances = self.client(compute_v1.InstancesClient)
        operations: list[tuple[str, str, str]] = []
        for zone, name in sorted(set(targets)):
            try:
                started = self._call(f"delete instance {name}", region_of_zone(zone), zone, None,
                                     instances.delete, project=self.settings.project, zone=zone, instance=name)
            except NotFound:
                continue
            operations.append((zone, name, str(started.name)))
        for zone, name, operation in operations:
            try:
                self.wait_operation(zone, operation, action=f"delete instance {name}")
            except NotFound:
                continue

    def _parse_resource_id(self, resource_id: str, zone: str | None) -> tuple[str, str] | None:
        match = re.search(r"zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)$", resource_id)
        if match:
            return match["zone"], match["name"]
        if zone and _RFC1035.match(resource_id):
            return zone, resource_id
        return None

    def instances_with_key(self, key: str, regions: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """(zone, name) of every instance carrying the key label, restricted to ``regions``."""
        allowed = set(regions if regions is not None else self.settings.regions)
        found: list[tuple[str, str]] = []
        selector = f'labels.{label_safe_key(TAG_KEY)} = "{label_safe(key)}"'
        for zone, instance in self._aggregated_instances(selector, "look up instances by key"):
            if region_of_zone(zone) in allowed and _owned_by(instance, key):
                found.append((zone, str(instance.name)))
        return found

    def delete(self, resource: ManagedResource) -> None:
        targets: set[tuple[str, str]] = set()
        for resource_id in resource.resource_ids:
            parsed = self._parse_resource_id(resource_id, resource.zone)
            if parsed is not None:
                targets.add(parsed)
        if resource.key:
            targets.update(self.instances_with_key(resource.key, [resource.region]))
        self._delete_instances(targets)

    def _aggregated_instances(self, selector: str, action: str) -> Iterator[tuple[str, compute_v1.Instance]]:
        from google.cloud import compute_v1

        request = compute_v1.AggregatedListInstancesRequest(project=self.settings.project, filter=selector)
        pager = self._call(action, None, None, None, self.client(compute_v1.InstancesClient).aggregated_list,
                           request=request)
        with self._errors(action, None):
            for scope, scoped in pager:
                if not scope.startswith("zones/"):
                    continue
                zone = scope.split("/", 1)[1]
                for instance in scoped.instances:
                    yield zone, instance

    def list_managed(self) -> list[ManagedResource]:
        groups: dict[str, list[tuple[str, compute_v1.Instance]]] = defaultdict(list)
        selector = f'labels.{label_safe_key(TAG_MANAGED)} = "{MANAGED_VALUE}"'
        for zone, instance in self._aggregated_instances(selector, "list managed instances"):
            if region_of_zone(zone) not in self.settings.regions:
                continue
            tags = ownership_tags(dict(instance.labels), _metadata(instance))
            key = tags.get(TAG_KEY) or f"instance:{zone}/{instance.name}"
            groups[key].append((zone, instance))
        found: list[ManagedResource] = []
        for _, members in sorted(groups.items()):
            zones = {zone for zone, _ in members}
            first_zone, first = members[0]
            found.append(ManagedResource.from_tags(
                provider=self.name,
                resource_ids=tuple(sorted(f"zones/{z}/instances/{i.name}" for z, i in members)),
                region=region_of_zone(first_zone),
                zone=first_zone if len(zones) == 1 else None,
                state=",".join(sorted({str(i.status or "UNKNOWN") for _, i in members})),
                tags=ownership_tags(dict(first.labels), _metadata(first)),
            ))
        return found

    # -- helpers -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, action: str, region: str | None, zone: str | None = None) -> Iterator[None]:
        """Maps Google errors raised while iterating a pager (later pages are fetched lazily)."""
        try:
            yield
        except ProviderError:
            raise
        except Exception as exc:
            if not _is_google_error(exc):
                raise
            raise error_from_google(exc, provider=self.name, region=region, zone=zone, action=action) from None


def _failed(operation: compute_v1.Operation) -> bool:
    return bool(operation.error.errors) or operation.http_error_status_code >= 400


def _is_google_error(exc: BaseException) -> bool:
    """Whether an exception comes from the Google client libraries or their HTTP transport."""
    import requests
    from google.api_core import exceptions as core
    from google.auth import exceptions as auth

    return isinstance(exc, core.GoogleAPICallError | core.RetryError | auth.GoogleAuthError | requests.RequestException)
