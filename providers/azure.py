"""Azure adapter: GPU virtual machines through the official ``azure-mgmt-compute`` client.

Inventory: GPU VM sizes per location from ``resource_skus.list`` (capabilities ``vCPUs``, ``MemoryGB``,
``GPUs``, ``LowPriorityCapable``; sizes the subscription may not use there, from ``restrictions``, are
kept and flagged), vCPU quota headroom per VM family and for the regional and spot totals from
``usage.list`` as capacity pools, and list prices (pay-as-you-go and spot) from the public Retail
Prices API, falling back to prices passed in.

Actuation: one VM per node, named after the spec's key, created with ``virtual_machines.
begin_create_or_update`` and waited for. A PUT is idempotent by name, and a VM that already carries
the key is adopted without a second PUT, so a new process after a crash finds what an earlier one made.
The NIC is not created separately: the VM's ``networkInterfaceConfigurations`` has Azure create it in
the configured subnet (``subnet_ids``, one per location) and delete it, like the OS disk, with the VM;
no ``azure-mgmt-network`` is needed. Spot VMs use ``priority: Spot``, ``evictionPolicy: Delete`` and
``billingProfile.maxPrice: -1`` (pay up to the on-demand price, never evicted for price).

Ownership tags: Azure tag names may not contain ``<>%&\\?/``, so ``placement.dev/key`` is written as
``placement.dev_key`` (see :func:`azure_tag_key`) and read back under its engine name.

Credentials: ``DefaultAzureCredential`` (``az login``, managed identity, environment) unless a
credential is passed in. The SDK is imported when an adapter is built, not when this module is
imported, so that the registry can import :class:`AzureSettings` cheaply.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from placement.errors import PlacementError
from placement.models import CapacityPool, GeoPoint, Name, Offer
from providers.base import (
    MANAGED_VALUE,
    OWNERSHIP_TAG_KEYS,
    TAG_KEY,
    TAG_MANAGED,
    TAG_PREFIX,
    Compute,
    Denied,
    InsufficientCapacity,
    ManagedResource,
    NotFound,
    ProviderError,
    QuotaExceeded,
    ResourceSpec,
    Transient,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.compute.models import ResourceSku, VirtualMachine

log = logging.getLogger(__name__)

ARM_ENDPOINT = "https://management.azure.com"
RETAIL_PRICES_URL = "https://prices.azure.com/api/retail/prices"
# Microsoft's reported design PUE for new Azure datacenters.
AZURE_PUE = 1.18
# The NIC that Azure creates from networkInterfaceConfigurations is made with this Microsoft.Network API.
NETWORK_API_VERSION = "2020-11-01"

Market = Literal["on-demand", "spot"]

# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------

_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_SUBNET_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/virtualNetworks/[^/]+/subnets/[^/]+$",
    re.IGNORECASE,
)
_TAG_FORBIDDEN = re.compile(r"[<>%&\\?/]")
_TAG_RESERVED_PREFIXES = ("microsoft", "azure", "windows")


class AzureImage(BaseModel):
    """The OS image: a marketplace image (publisher, offer, sku, version) or an image resource id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    publisher: str | None = None
    offer: str | None = None
    sku: str | None = None
    version: str = "latest"
    id: str | None = Field(default=None, description="resource id of a custom or gallery image")

    @model_validator(mode="after")
    def _check(self) -> AzureImage:
        marketplace = (self.publisher, self.offer, self.sku)
        if self.id is None and not all(marketplace):
            raise ValueError("give either id, or publisher, offer and sku")
        if self.id is not None and any(marketplace):
            raise ValueError("give either id, or publisher, offer and sku, not both")
        return self


# Ubuntu 22.04 with the NVIDIA driver, CUDA and InfiniBand stack, maintained by Microsoft.
DEFAULT_IMAGE = AzureImage(publisher="microsoft-dsvm", offer="ubuntu-hpc", sku="2204", version="latest")


class AzureSettings(BaseModel):
    """One Azure subscription as the engine uses it.

    Only VMs are created by the engine; the resource group and, for :meth:`AzureCompute.create`, a
    subnet per location are made by the operator. The SSH public key is read from a file (it is not a
    secret); password login is disabled.

    Example::

        azure:
          type: azure
          subscription_id: 00000000-0000-0000-0000-000000000000
          resource_group: gpu-workloads
          locations: [eastus, westeurope]
          subnet_ids:
            eastus: /subscriptions/.../resourceGroups/net/providers/Microsoft.Network/virtualNetworks/vnet-eus/subnets/gpu
          ssh_public_key_path: ~/.ssh/id_ed25519.pub
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["azure"] = "azure"
    subscription_id: Annotated[str, Field(pattern=_UUID, description="subscription id (not a secret)")]
    resource_group: Annotated[str, Field(min_length=1, max_length=90, pattern=r"^[-\w.()]*[-\w()]$")]
    locations: Annotated[tuple[Name, ...], Field(min_length=1)]
    image: AzureImage = DEFAULT_IMAGE
    subnet_ids: dict[str, str] = Field(default_factory=dict, description="subnet resource id per location")
    admin_username: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z_][a-z0-9_-]*$")] = "azureuser"
    ssh_public_key_path: str | None = Field(default=None, description="OpenSSH public key file for the admin user")
    os_disk_gib: Annotated[int, Field(ge=30, le=4095)] | None = None
    tags: dict[str, str] = Field(default_factory=dict, description="extra tags on every VM")
    vm_sizes: tuple[str, ...] = Field(
        default=(), description="VM size patterns to list (e.g. 'Standard_ND*'); empty: every known GPU size"
    )
    spot: bool = Field(default=True, description="list spot offers")
    zonal: bool = Field(default=True, description="one offer per availability zone where the size has zones")
    use_retail_prices: bool = Field(default=True, description="ask the public Retail Prices API for prices")
    use_quotas: bool = Field(default=True, description="read vCPU quota headroom from the usage API")

    @model_validator(mode="after")
    def _check(self) -> AzureSettings:
        if len(set(self.locations)) != len(self.locations):
            raise ValueError("locations lists a location twice")
        unknown = sorted(set(self.locations) - set(AZURE_REGIONS))
        if unknown:
            raise ValueError(f"no location data for Azure location(s) {', '.join(unknown)}; "
                             f"known locations: {', '.join(sorted(AZURE_REGIONS))}")
        stray = sorted(set(self.subnet_ids) - set(self.locations))
        if stray:
            raise ValueError(f"subnet_ids names locations not in locations: {', '.join(stray)}")
        bad = sorted(loc for loc, subnet in self.subnet_ids.items() if not _SUBNET_ID.match(subnet))
        if bad:
            raise ValueError(f"subnet_ids must be subnet resource ids (/subscriptions/.../subnets/NAME): "
                             f"{', '.join(bad)}")
        reserved = sorted(k for k in self.tags if azure_tag_key(k).startswith(azure_tag_key(TAG_PREFIX)))
        if reserved:
            raise ValueError(f"tags may not use the reserved prefix {TAG_PREFIX!r}: {', '.join(reserved)}")
        invalid = sorted(k for k in self.tags
                         if _TAG_FORBIDDEN.search(k) or k.lower().startswith(_TAG_RESERVED_PREFIXES))
        if invalid:
            raise ValueError("Azure tag names may not contain <>%&\\?/ nor start with microsoft, azure or "
                             f"windows: {', '.join(invalid)}")
        return self


# --------------------------------------------------------------------------------------------------
# Static data: locations and GPU sizes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AzureRegion:
    """Where a location is and whose law applies there.

    ``carbon_g_per_kwh`` is an approximate annual average grid intensity of the location's grid (a
    static snapshot, not live data); ``egress_usd_per_gb`` is the first-tier internet egress list price.
    """

    metro: str
    country: str
    jurisdiction: str
    lat: float
    lon: float
    carbon_g_per_kwh: float
    egress_usd_per_gb: float


AZURE_REGIONS: dict[str, AzureRegion] = {
    "eastus": AzureRegion("Virginia", "US", "US", 37.37, -79.82, 379, 0.087),
    "eastus2": AzureRegion("Virginia", "US", "US", 36.67, -78.39, 379, 0.087),
    "westus2": AzureRegion("Washington", "US", "US", 47.23, -119.85, 102, 0.087),
    "westeurope": AzureRegion("Netherlands", "NL", "EU", 52.37, 4.90, 328, 0.087),
    "northeurope": AzureRegion("Ireland", "IE", "EU", 53.35, -6.26, 316, 0.087),
    "swedencentral": AzureRegion("Gavle", "SE", "EU", 60.67, 17.14, 9, 0.087),
    "germanywestcentral": AzureRegion("Frankfurt", "DE", "EU", 50.11, 8.68, 338, 0.087),
    "francecentral": AzureRegion("Paris", "FR", "EU", 46.38, 2.37, 52, 0.087),
    "uksouth": AzureRegion("London", "GB", "UK", 50.94, -0.80, 228, 0.087),
    "japaneast": AzureRegion("Tokyo", "JP", "JP", 35.68, 139.77, 465, 0.12),
    "southeastasia": AzureRegion("Singapore", "SG", "SG", 1.28, 103.83, 408, 0.12),
}


@dataclass(frozen=True)
class AzureGpuSize:
    """The GPUs of one VM size. ``fraction`` < 1 marks a size that gets a slice of one GPU."""

    gpu_model: str
    gpu_count: int
    gpu_memory_gib: float
    fraction: float = 1.0


def _sizes(model: str, memory_gib: float, counts: Mapping[str, int]) -> dict[str, AzureGpuSize]:
    return {name: AzureGpuSize(model, count, memory_gib) for name, count in counts.items()}


# GPU VM sizes by name, from Microsoft's size documentation. Sizes not listed here are not offered.
AZURE_GPU_SIZES: dict[str, AzureGpuSize] = {
    # NC A100 v4: A100 80 GB PCIe.
    **_sizes("A100", 80, {"Standard_NC24ads_A100_v4": 1, "Standard_NC48ads_A100_v4": 2,
                          "Standard_NC96ads_A100_v4": 4}),
    # ND A100 v4 (A100 40 GB SXM) and NDm A100 v4 (A100 80 GB SXM).
    **_sizes("A100", 40, {"Standard_ND96asr_v4": 8}),
    **_sizes("A100", 80, {"Standard_ND96amsr_A100_v4": 8}),
    # ND H100 v5 (H100 80 GB SXM), ND H200 v5, NC H100 v5 (H100 NVL 94 GB PCIe).
    **_sizes("H100", 80, {"Standard_ND96isr_H100_v5": 8}),
    **_sizes("H200", 141, {"Standard_ND96isr_H200_v5": 8}),
    **_sizes("H100", 94, {"Standard_NC40ads_H100_v5": 1, "Standard_NC80adis_H100_v5": 2}),
    # ND MI300X v5.
    **_sizes("MI300X", 192, {"Standard_ND96isr_MI300X_v5": 8}),
    # NCasT4_v3: T4 16 GB.
    **_sizes("T4", 16, {"Standard_NC4as_T4_v3": 1, "Standard_NC8as_T4_v3": 1, "Standard_NC16as_T4_v3": 1,
                        "Standard_NC64as_T4_v3": 4}),
    # NCv3 (V100 16 GB) and NDv2 (V100 32 GB).
    **_sizes("V100", 16, {"Standard_NC6s_v3": 1, "Standard_NC12s_v3": 2, "Standard_NC24s_v3": 4,
                          "Standard_NC24rs_v3": 4}),
    **_sizes("V100", 32, {"Standard_ND40rs_v2": 8}),
    # NVadsA10_v5: the 6, 12 and 18 vCPU sizes get 1/6, 1/3 and 1/2 of an A10 (skipped); 36 and 72 get whole GPUs.
    "Standard_NV6ads_A10_v5": AzureGpuSize("A10", 0, 4, fraction=1 / 6),
    "Standard_NV12ads_A10_v5": AzureGpuSize("A10", 0, 8, fraction=1 / 3),
    "Standard_NV18ads_A10_v5": AzureGpuSize("A10", 0, 12, fraction=1 / 2),
    **_sizes("A10", 24, {"Standard_NV36ads_A10_v5": 1, "Standard_NV36adms_A10_v5": 1,
                         "Standard_NV72ads_A10_v5": 2}),
}

# Usage (quota) names that are not per-family.
REGIONAL_QUOTA = "cores"
SPOT_QUOTA = "lowPriorityCores"


@dataclass(frozen=True)
class AzureSku:
    """What the inventory needs to know about one GPU VM size in one location."""

    name: str
    family: str
    gpu: AzureGpuSize
    vcpus: int
    memory_gib: float
    zones: tuple[str, ...]
    spot_capable: bool
    location_restriction: str | None
    restricted_zones: dict[str, str]


@dataclass(frozen=True)
class AzureInventory:
    """Offers of all configured locations, the quota pools they draw on, and notes on fallbacks taken."""

    offers: tuple[Offer, ...]
    pools: tuple[CapacityPool, ...]
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------
# Names and tags
# --------------------------------------------------------------------------------------------------

VM_NAME_PREFIX = "plc-"
VM_NAME_MAX = 64
_VM_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def azure_tag_key(tag_key: str) -> str:
    """The Azure-safe form of a tag name: ``placement.dev/key`` -> ``placement.dev_key``."""
    return _TAG_FORBIDDEN.sub("_", tag_key)


_ENGINE_TAG_BY_AZURE_KEY: dict[str, str] = {azure_tag_key(k): k for k in OWNERSHIP_TAG_KEYS}


def to_azure_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Tags with Azure-safe names and values cut to Azure's 256 characters."""
    return {azure_tag_key(k)[:512]: v[:256] for k, v in tags.items()}


def from_azure_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    """Tags as read from Azure, with the engine's ownership tags under their engine names."""
    return {_ENGINE_TAG_BY_AZURE_KEY.get(k, k): v for k, v in (tags or {}).items()}


def vm_base_name(key: str) -> str:
    """The VM name for a key: ``plc-<key>``, at most 64 characters, ending in a letter or digit.

    A key too long for the prefix keeps its start and gets a hash of the whole key, so that distinct
    keys give distinct names.
    """
    name = VM_NAME_PREFIX + _VM_NAME_BAD.sub("-", key)
    if len(name) > VM_NAME_MAX:
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        name = f"{name[: VM_NAME_MAX - 11]}-{digest}"
    return name.rstrip("._-") or "plc-vm"


def vm_names(key: str, nodes: int) -> list[str]:
    """One VM name per node: the base name for one node, ``<base>-n<i>`` (still within 64) for more."""
    base = vm_base_name(key)
    if nodes == 1:
        return [base]
    width = len(str(nodes - 1)) + 2
    trimmed = base[: VM_NAME_MAX - width].rstrip("._-")
    return [f"{trimmed}-n{i}" for i in range(nodes)]


def computer_name(vm_name: str) -> str:
    """The Linux host name for a VM name (no underscores or dots, at most 64 characters)."""
    return re.sub(r"[_.]", "-", vm_name)[:64].strip("-") or "plc-vm"


def _zone_number(offer: Offer) -> str | None:
    if offer.zone is None:
        return None
    prefix = f"{offer.region}-"
    return offer.zone[len(prefix):] if offer.zone.startswith(prefix) else offer.zone


def _offer_zone(location: str, zone: str | None) -> str | None:
    return f"{location}-{zone}" if zone else None


# --------------------------------------------------------------------------------------------------
# Error mapping
# --------------------------------------------------------------------------------------------------

_CAPACITY_CODES = frozenset({
    "SkuNotAvailable", "AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocationRequest",
    "OverconstrainedZonalAllocationRequest", "SpotAllocationFailed",
})
_QUOTA_CODES = frozenset({"QuotaExceeded", "OperationNotAllowedQuotaExceeded"})
_DENIED_CODES = frozenset({
    "AuthorizationFailed", "AuthenticationFailed", "InvalidAuthenticationToken",
    "InvalidAuthenticationTokenTenant", "LinkedAuthorizationFailed", "ExpiredAuthenticationToken",
    "SubscriptionNotFound", "SubscriptionNotRegistered", "MissingSubscriptionRegistration", "ReadOnlyDisabledSubscription",
})
_TRANSIENT_CODES = frozenset({
    "TooManyRequests", "InternalServerError", "InternalExecutionError", "ServerTimeout", "ServiceUnavailable",
    "GatewayTimeout", "RetryableError", "OperationPreempted",
})
_NOT_FOUND_CODES = frozenset({"ResourceNotFound", "NotFound", "ResourceGroupNotFound", "ParentResourceNotFound"})
_BEARER = re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+")


def _scrub(text: str, limit: int = 300) -> str:
    text = _BEARER.sub("Bearer <token>", " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_code_and_message(exc: Any) -> tuple[str, str]:
    """The ARM error code and message of an HttpResponseError (including failed long-running operations)."""
    error = getattr(exc, "error", None)
    code = str(getattr(error, "code", "") or "")
    message = str(getattr(error, "message", "") or "")
    details = getattr(error, "details", None) or []
    # A failed deployment can wrap the useful code one level down.
    if code in ("", "DeploymentFailed", "Conflict", "OperationFailed") and details:
        inner = details[0]
        code = str(getattr(inner, "code", "") or code)
        message = str(getattr(inner, "message", "") or message)
    if not code:
        code = str(getattr(exc, "reason", "") or type(exc).__name__)
    if not message:
        message = str(getattr(exc, "message", "") or "")
    return code, message


def error_from_azure(
    exc: Exception,
    *,
    provider: str,
    region: str | None,
    zone: str | None = None,
    what: str | None = None,
    action: str = "call Azure",
) -> ProviderError:
    """The typed provider error for an Azure SDK exception. Messages never carry tokens."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    subject = what or "the request"
    if isinstance(exc, HttpResponseError):
        code, message = _error_code_and_message(exc)
        detail = _scrub(message)
        status = int(exc.status_code or 0)
        common: dict[str, Any] = {"provider": provider, "code": code, "region": region, "zone": zone}
        if code in _CAPACITY_CODES:
            scope: Literal["zone", "region"] = "zone" if zone else "region"
            return InsufficientCapacity(f"insufficient capacity for {subject}", scope=scope, **common)
        if code in _QUOTA_CODES or (code == "OperationNotAllowed" and "quota" in message.lower()):
            text = f"quota exceeded creating {subject}"
            return QuotaExceeded(f"{text}: {detail}" if detail else text, scope="region", **common)
        if code in _DENIED_CODES or status == 403 or isinstance(exc, ClientAuthenticationError):
            if exc.response is None:
                return Denied("no usable Azure credentials found by DefaultAzureCredential (az login, managed "
                              "identity, AZURE_CLIENT_ID/AZURE_TENANT_ID)", scope="account", **common)
            return Denied(f"not permitted to {action}; check the identity DefaultAzureCredential finds and its "
                          f"role assignments on the subscription ({detail})", scope="account", **common)
        if code in _TRANSIENT_CODES or status == 429 or status >= 500:
            return Transient(f"temporary failure trying to {action}", scope="region", **common)
        if code in _NOT_FOUND_CODES or status == 404:
            scope_nf: Literal["region", "provider"] = "provider" if code == "ResourceGroupNotFound" else "region"
            return NotFound(detail or f"not found trying to {action}", scope=scope_nf, **common)
        return ProviderError(f"failed to {action}: {detail}" if detail else f"failed to {action}",
                             scope="region", **common)
    if isinstance(exc, ClientAuthenticationError):
        return Denied("no usable Azure credentials found by DefaultAzureCredential (az login, managed identity, "
                      "AZURE_CLIENT_ID/AZURE_TENANT_ID)", provider=provider, code=type(exc).__name__, region=region)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return Transient(f"cannot reach the Azure endpoint trying to {action}", provider=provider,
                         code=type(exc).__name__, region=region)
    if isinstance(exc, httpx.HTTPError):
        return Transient(f"cannot read Azure retail prices trying to {action}: {type(exc).__name__}",
                         provider=provider, code=type(exc).__name__, region=region)
    return ProviderError(f"failed to {action}: {_scrub(str(exc))}", provider=provider, code=type(exc).__name__,
                         region=region, scope="region")


# --------------------------------------------------------------------------------------------------
# Parsing helpers
# --------------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """A string field of an SDK model as text (the SDK may give a str-valued enum member)."""
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def _capabilities(sku: Any) -> dict[str, str]:
    return {str(c.name): str(c.value) for c in (sku.capabilities or []) if c.name is not None}


def _number(text: str | None, default: float = 0.0) -> float:
    try:
        return float(text) if text is not None else default
    except ValueError:
        return default


def parse_sku(sku: ResourceSku, location: str) -> tuple[AzureSku | None, str | None]:
    """An AzureSku for a GPU size in ``location``, or None and why it is skipped (None: not a GPU size)."""
    name = str(sku.name or "")
    caps = _capabilities(sku)
    gpu = AZURE_GPU_SIZES.get(name)
    if gpu is None:
        reported = int(_number(caps.get("GPUs")))
        return None, (f"{name} reports {reported} GPU(s) but is not in the GPU size table" if reported else None)
    if gpu.fraction < 1 or gpu.gpu_count < 1:
        return None, f"{name} gets a fraction of one GPU"
    zones: tuple[str, ...] = ()
    for info in sku.location_info or []:
        if str(info.location or "").lower() == location.lower():
            zones = tuple(sorted(str(z) for z in (info.zones or [])))
    location_restriction: str | None = None
    restricted_zones: dict[str, str] = {}
    for restriction in sku.restrictions or []:
        reason = _text(restriction.reason_code) or "restricted"
        where = restriction.restriction_info
        locations = [str(v).lower() for v in ((where.locations if where else None) or restriction.values_property or [])]
        if location.lower() not in locations:
            continue
        if _text(restriction.type) == "Location":
            location_restriction = reason
        elif _text(restriction.type) == "Zone":
            for zone in (where.zones if where else None) or []:
                restricted_zones[str(zone)] = reason
    return AzureSku(
        name=name,
        family=str(sku.family or ""),
        gpu=gpu,
        vcpus=int(_number(caps.get("vCPUs"))),
        memory_gib=_number(caps.get("MemoryGB")),
        zones=zones,
        spot_capable=caps.get("LowPriorityCapable", "False").lower() == "true",
        location_restriction=location_restriction,
        restricted_zones=restricted_zones,
    ), None


def parse_retail_item(item: Mapping[str, Any]) -> tuple[str, Market, float] | None:
    """(VM size, market, hourly USD) from one Retail Prices API item, or None for other items.

    Windows, Low Priority, reservation and non-hourly items are skipped; a ``Spot`` meter is spot.
    """
    size = str(item.get("armSkuName") or "")
    if not size or item.get("type", "Consumption") != "Consumption":
        return None
    names = " ".join(str(item.get(k) or "") for k in ("skuName", "meterName", "productName"))
    if "Windows" in str(item.get("productName") or "") or "Low Priority" in names:
        return None
    if str(item.get("unitOfMeasure") or "1 Hour") != "1 Hour":
        return None
    try:
        usd = float(item.get("retailPrice", item.get("unitPrice")))
    except (TypeError, ValueError):
        return None
    if usd <= 0 or str(item.get("currencyCode") or "USD") != "USD":
        return None
    market: Market = "spot" if "Spot" in names else "on-demand"
    return size, market, usd


# --------------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------------


class AzureCompute(Compute):
    """One Azure subscription across the configured locations, VMs in one resource group.

    ``prices`` maps (location, VM size) to the on-demand USD per hour used when the Retail Prices API
    cannot be asked or has no price. ``credential`` replaces DefaultAzureCredential; ``base_url`` the
    ARM endpoint; ``prices_url`` the Retail Prices endpoint; ``http`` the httpx client for it. Plain
    http is allowed for a loopback ``base_url`` only (tests). ``max_retries`` is the SDK's retry budget
    per call; ``poll_interval_s`` the wait between polls of a long-running operation when Azure
    does not say (``Retry-After``).
    """

    def __init__(
        self,
        name: str,
        settings: AzureSettings,
        *,
        prices: Mapping[tuple[str, str], float] | None = None,
        credential: TokenCredential | None = None,
        base_url: str = ARM_ENDPOINT,
        prices_url: str = RETAIL_PRICES_URL,
        http: httpx.Client | None = None,
        max_retries: int = 3,
        poll_interval_s: float = 5.0,
        max_price_pages: int = 50,
    ) -> None:
        self.name = name
        self.settings = settings
        self._prices = dict(prices or {})
        self._credential = credential
        self._base_url = base_url.rstrip("/")
        self._prices_url = prices_url
        self._http = http
        self._max_retries = max_retries
        self._poll_interval_s = poll_interval_s
        self._max_price_pages = max_price_pages
        self._client: ComputeManagementClient | None = None
        self._ssh_key: str | None = None

    # -- clients and errors ------------------------------------------------------------------------

    @property
    def client(self) -> ComputeManagementClient:
        """The ComputeManagementClient, created on first use."""
        if self._client is None:
            from azure.mgmt.compute import ComputeManagementClient

            credential = self._credential
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            kwargs: dict[str, Any] = {"retry_total": self._max_retries, "polling_interval": self._poll_interval_s,
                                      "user_agent": "placement-engine"}
            if _is_loopback_http(self._base_url):
                kwargs["authentication_policy"] = _loopback_auth_policy(credential)
            self._client = ComputeManagementClient(credential, self.settings.subscription_id,
                                                   base_url=self._base_url, **kwargs)
        return self._client

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=30.0, follow_redirects=True,
                                      headers={"User-Agent": "placement-engine"})
        return self._http

    def _error(self, exc: Exception, action: str, region: str | None, zone: str | None = None,
               what: str | None = None) -> ProviderError:
        return error_from_azure(exc, provider=self.name, region=region, zone=zone, what=what, action=action)

    def _azure_errors(self) -> tuple[type[Exception], ...]:
        from azure.core.exceptions import AzureError

        return (AzureError,)

    def _check_offer(self, offer: Offer) -> None:
        if offer.provider != self.name:
            raise PlacementError(f"offer {offer.id!r} belongs to provider {offer.provider!r}, not {self.name!r}")
        if offer.region not in self.settings.locations:
            raise PlacementError(f"offer {offer.id!r} is in location {offer.region!r}, which provider "
                                 f"{self.name!r} is not configured for ({', '.join(self.settings.locations)})")

    # -- inventory ---------------------------------------------------------------------------------

    def offers(self) -> list[Offer]:
        return list(self.inventory().offers)

    def inventory(self) -> AzureInventory:
        """Offers and quota pools of every configured location."""
        offers: list[Offer] = []
        pools: list[CapacityPool] = []
        notes: list[str] = []
        for location in self.settings.locations:
            loc_offers, loc_pools, loc_notes = self._location_inventory(location)
            offers.extend(loc_offers)
            pools.extend(loc_pools)
            notes.extend(loc_notes)
        return AzureInventory(tuple(offers), tuple(pools), tuple(notes))

    def _wanted(self, size: str) -> bool:
        patterns = self.settings.vm_sizes
        return not patterns or any(fnmatch.fnmatchcase(size, p) for p in patterns)

    def gpu_skus(self, location: str) -> tuple[dict[str, AzureSku], list[str]]:
        """GPU VM sizes in a location (whole GPUs only), and a note per GPU size that was skipped."""
        found: dict[str, AzureSku] = {}
        notes: list[str] = []
        try:
            for sku in self.client.resource_skus.list(filter=f"location eq '{location}'"):
                if sku.resource_type != "virtualMachines" or not self._wanted(str(sku.name or "")):
                    continue
                parsed, why = parse_sku(sku, location)
                if parsed is not None:
                    found[parsed.name] = parsed
                elif why:
                    notes.append(f"{location}: {why}; not offered")
        except self._azure_errors() as exc:
            raise self._error(exc, "list VM sizes", location) from exc
        return found, notes

    def quota_headroom(self, location: str) -> dict[str, tuple[int, int]]:
        """Usage name (VM family, ``cores``, ``lowPriorityCores``) -> (limit, current value) in vCPUs."""
        values: dict[str, tuple[int, int]] = {}
        try:
            for usage in self.client.usage.list(location):
                if usage.name is not None and usage.name.value:
                    values[str(usage.name.value)] = (int(usage.limit), int(usage.current_value))
        except self._azure_errors() as exc:
            raise self._error(exc, "read vCPU quotas", location) from exc
        return values

    def retail_prices(self, location: str, sizes: Iterable[str]) -> dict[tuple[str, Market], float]:
        """(VM size, market) -> Linux hourly USD list price from the public Retail Prices API.

        The API needs no credentials and is sent none. Raises the mapped ProviderError when it cannot be
        read; :meth:`inventory` then falls back to the prices passed in.
        """
        found: dict[tuple[str, Market], float] = {}
        names = sorted(set(sizes))
        for start in range(0, len(names), 15):
            chunk = names[start : start + 15]
            alternatives = " or ".join(f"armSkuName eq '{size}'" for size in chunk)
            query = (f"serviceName eq 'Virtual Machines' and armRegionName eq '{location}' and "
                     f"priceType eq 'Consumption' and ({alternatives})")
            url: str | None = self._prices_url
            params: dict[str, str] | None = {"$filter": query}
            pages = 0
            while url and pages < self._max_price_pages:
                try:
                    response = self.http.get(url, params=params)
                    response.raise_for_status()
                    page = response.json()
                except (httpx.HTTPError, ValueError) as exc:
                    status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None
                    kind = Transient if status is None or status == 429 or status >= 500 else ProviderError
                    raise kind(f"cannot read retail prices for {location}: {type(exc).__name__}"
                               + (f" (HTTP {status})" if status else ""), provider=self.name,
                               code=type(exc).__name__, region=location, scope="region") from exc
                for item in page.get("Items") or []:
                    parsed = parse_retail_item(item)
                    if parsed is None or item.get("armRegionName", location) != location:
                        continue
                    size, market, usd = parsed
                    key = (size, market)
                    found[key] = min(usd, found.get(key, usd))
                url, params, pages = page.get("NextPageLink"), None, pages + 1
        return found

    def _location_inventory(self, location: str) -> tuple[list[Offer], list[CapacityPool], list[str]]:
        skus, notes = self.gpu_skus(location)

        prices: dict[tuple[str, Market], float] = {}
        if self.settings.use_retail_prices and skus:
            try:
                prices = self.retail_prices(location, skus)
            except ProviderError as exc:
                notes.append(f"{location}: Retail Prices API unavailable, using the prices given instead: {exc}")

        pools: dict[str, CapacityPool] = {}
        if self.settings.use_quotas and skus:
            usages = self.quota_headroom(location)
            wanted = {sku.family for sku in skus.values()} | {REGIONAL_QUOTA, SPOT_QUOTA}
            for usage_name in sorted(wanted):
                if usage_name not in usages:
                    notes.append(f"{location}: quota {usage_name} not reported, no limit assumed")
                    continue
                limit, current = usages[usage_name]
                pools[usage_name] = CapacityPool(
                    id=f"{self.name}/{location}/{usage_name}",
                    limit=max(0, limit - current),
                    unit="vcpus",
                    description=f"{usage_name} vCPU quota in {location}: limit {limit}, {current} in use",
                )

        place = AZURE_REGIONS[location]
        offers: list[Offer] = []
        for size in sorted(skus):
            sku = skus[size]
            if sku.vcpus < 1 or sku.memory_gib <= 0:
                notes.append(f"{location}: {size} reports no vCPUs or memory; not offered")
                continue
            zones: list[str | None] = list(sku.zones) if self.settings.zonal and sku.zones else [None]
            markets: list[Market] = ["on-demand"]
            if self.settings.spot and sku.spot_capable:
                markets.append("spot")
            for zone in zones:
                for market in markets:
                    price = prices.get((size, market))
                    if price is None and market == "on-demand":
                        price = self._prices.get((location, size))
                    draws = [sku.family, REGIONAL_QUOTA] if market == "on-demand" else [SPOT_QUOTA]
                    offer_pools = [pools[p] for p in draws if p in pools]
                    reason: str | None = None
                    if sku.location_restriction:
                        reason = (f"{size} is not available to this subscription in {location} "
                                  f"({sku.location_restriction})")
                    elif zone is not None and zone in sku.restricted_zones:
                        reason = (f"{size} is not available to this subscription in zone {zone} of {location} "
                                  f"({sku.restricted_zones[zone]})")
                    elif price is None:
                        reason = f"no {market} price known for {size} in {location}"
                    else:
                        short = next((p for p in offer_pools if p.limit < sku.vcpus), None)
                        if short is not None:
                            reason = (f"quota headroom {short.limit} vCPUs is less than the {sku.vcpus} vCPUs of "
                                      f"{size} ({short.id.rsplit('/', 1)[-1]})")
                    offers.append(Offer(
                        provider=self.name,
                        provider_kind="hyperscaler",
                        region=location,
                        zone=_offer_zone(location, zone),
                        country=place.country,
                        jurisdiction=place.jurisdiction,
                        instance_type=size,
                        gpu_model=sku.gpu.gpu_model,
                        gpu_count=sku.gpu.gpu_count,
                        gpu_memory_gib=sku.gpu.gpu_memory_gib,
                        vcpus=sku.vcpus,
                        memory_gib=sku.memory_gib,
                        capacity_type=market,
                        hourly_usd=price if price is not None else 0.0,
                        pools=tuple(p.id for p in offer_pools),
                        carbon_g_per_kwh=place.carbon_g_per_kwh,
                        pue=AZURE_PUE,
                        location=GeoPoint(lat=place.lat, lon=place.lon),
                        egress_usd_per_gb=place.egress_usd_per_gb,
                        unavailable_reason=reason,
                    ))
        for note in notes:
            log.warning("%s: %s", self.name, note)
        return offers, list(pools.values()), notes

    # -- actuation ---------------------------------------------------------------------------------

    def ssh_public_key(self) -> str:
        """The admin user's OpenSSH public key, read from ``ssh_public_key_path``."""
        if self._ssh_key is None:
            path = self.settings.ssh_public_key_path
            if not path:
                raise PlacementError(f"provider {self.name!r} has no SSH public key: set ssh_public_key_path in "
                                     "the providers config (password login is disabled)")
            try:
                key = Path(path).expanduser().read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise PlacementError(f"provider {self.name!r}: cannot read ssh_public_key_path {path}: "
                                     f"{exc.strerror}") from None
            if not key.startswith(("ssh-", "ecdsa-", "sk-")) or "PRIVATE KEY" in key:
                raise PlacementError(f"provider {self.name!r}: {path} does not hold an OpenSSH public key")
            self._ssh_key = key
        return self._ssh_key

    def vm_parameters(self, spec: ResourceSpec, vm_name: str) -> VirtualMachine:
        """The VirtualMachine body of the PUT for one node of ``spec``."""
        from azure.mgmt.compute import models as m

        offer = spec.offer
        location = offer.region
        subnet = self.settings.subnet_ids.get(location)
        if not subnet:
            raise PlacementError(f"provider {self.name!r} has no subnet for {location}: set subnet_ids.{location} "
                                 "in the providers config")
        image = self.settings.image
        image_reference = (m.ImageReference(id=image.id) if image.id else
                           m.ImageReference(publisher=image.publisher, offer=image.offer, sku=image.sku,
                                            version=image.version))
        user = self.settings.admin_username
        properties = m.VirtualMachineProperties(
            hardware_profile=m.HardwareProfile(vm_size=offer.instance_type),
            storage_profile=m.StorageProfile(
                image_reference=image_reference,
                os_disk=m.OSDisk(
                    create_option="FromImage",
                    delete_option="Delete",
                    disk_size_gb=self.settings.os_disk_gib,
                    managed_disk=m.ManagedDiskParameters(storage_account_type="StandardSSD_LRS"),
                ),
            ),
            os_profile=m.OSProfile(
                computer_name=computer_name(vm_name),
                admin_username=user,
                linux_configuration=m.LinuxConfiguration(
                    disable_password_authentication=True,
                    ssh=m.SshConfiguration(public_keys=[
                        m.SshPublicKey(path=f"/home/{user}/.ssh/authorized_keys", key_data=self.ssh_public_key()),
                    ]),
                ),
            ),
            network_profile=m.NetworkProfile(
                network_api_version=NETWORK_API_VERSION,
                network_interface_configurations=[m.VirtualMachineNetworkInterfaceConfiguration(
                    name=f"{vm_name}-nic",
                    properties=m.VirtualMachineNetworkInterfaceConfigurationProperties(
                        primary=True,
                        delete_option="Delete",
                        ip_configurations=[m.VirtualMachineNetworkInterfaceIPConfiguration(
                            name="ipconfig1",
                            properties=m.VirtualMachineNetworkInterfaceIPConfigurationProperties(
                                primary=True, subnet=m.SubResource(id=subnet),
                            ),
                        )],
                    ),
                )],
            ),
        )
        if offer.capacity_type == "spot":
            properties.priority = "Spot"
            properties.eviction_policy = "Delete"
            properties.billing_profile = m.BillingProfile(max_price=-1)
        zone = _zone_number(offer)
        return m.VirtualMachine(
            location=location,
            tags=to_azure_tags(spec.tags(self.settings.tags)),
            zones=[zone] if zone else None,
            properties=properties,
        )

    def get_vm(self, vm_name: str) -> VirtualMachine | None:
        """The VM with that name in the resource group, or None."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.client.virtual_machines.get(self.settings.resource_group, vm_name)
        except ResourceNotFoundError:
            return None
        except self._azure_errors() as exc:
            raise self._error(exc, f"look up VM {vm_name}", None) from exc

    def _managed(self, spec: ResourceSpec, vms: list[VirtualMachine]) -> ManagedResource:
        zones = {_offer_zone(spec.offer.region, _first_zone(vm)) for vm in vms} - {None}
        return ManagedResource(
            provider=self.name,
            resource_ids=tuple(sorted(str(vm.id) for vm in vms)),
            region=spec.offer.region,
            zone=zones.pop() if len(zones) == 1 else spec.offer.zone,
            key=spec.key,
            workload=spec.workload,
            replica=spec.replica,
            offer_id=spec.offer.id,
            plan_digest=spec.plan_digest,
            state=",".join(sorted({_state(vm) for vm in vms})),
        )

    def create(self, spec: ResourceSpec) -> ManagedResource:
        offer = spec.offer
        self._check_offer(offer)
        if offer.capacity_type == "spot" and not spec.interruptible:
            raise PlacementError(f"{spec.workload} replica {spec.replica}: offer {offer.id!r} is spot capacity "
                                 "but the workload is not interruptible")
        if offer.capacity_type not in ("on-demand", "spot"):
            raise PlacementError(f"offer {offer.id!r}: capacity type {offer.capacity_type!r} cannot be "
                                 "created by the Azure adapter")
        vms: list[VirtualMachine] = []
        for vm_name in vm_names(spec.key, spec.nodes):
            existing = self.get_vm(vm_name)
            if existing is not None:
                owner = from_azure_tags(existing.tags).get(TAG_KEY)
                if owner != spec.key:
                    raise ProviderError(
                        f"a VM named {vm_name} already exists in resource group {self.settings.resource_group} "
                        "and was not created for this placement; remove or rename it",
                        provider=self.name, code="VmNameInUse", region=offer.region, scope="region",
                    )
                if _state(existing) != "Failed":
                    log.info("%s: adopting VM %s with key %s", self.name, vm_name, spec.key)
                    vms.append(existing)
                    continue
            vms.append(self._put_vm(spec, vm_name))
        return self._managed(spec, vms)

    def _put_vm(self, spec: ResourceSpec, vm_name: str) -> VirtualMachine:
        offer = spec.offer
        parameters = self.vm_parameters(spec, vm_name)
        try:
            poller = self.client.virtual_machines.begin_create_or_update(
                self.settings.resource_group, vm_name, parameters)
            return poller.result()
        except self._azure_errors() as exc:
            err = self._error(exc, f"create {offer.instance_type}", offer.region, offer.zone,
                              what=offer.instance_type)
            # A failed allocation leaves the VM resource behind in state Failed: remove it, so that
            # neither it nor its disk and NIC linger. Best effort; list_managed still finds it if this fails.
            self._remove_failed(vm_name, spec.key)
            raise err from exc

    def _remove_failed(self, vm_name: str, key: str) -> None:
        try:
            vm = self.get_vm(vm_name)
            if vm is not None and _state(vm) == "Failed" and from_azure_tags(vm.tags).get(TAG_KEY) == key:
                self._delete_vm(vm_name)
        except ProviderError as exc:
            log.warning("%s: could not remove failed VM %s: %s", self.name, vm_name, exc)

    def _delete_vm(self, vm_name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.client.virtual_machines.begin_delete(self.settings.resource_group, vm_name).result()
        except ResourceNotFoundError:
            return
        except self._azure_errors() as exc:
            raise self._error(exc, f"delete VM {vm_name}", None) from exc

    def _managed_vms(self) -> Iterator[VirtualMachine]:
        try:
            for vm in self.client.virtual_machines.list(self.settings.resource_group):
                if from_azure_tags(vm.tags).get(TAG_MANAGED) == MANAGED_VALUE:
                    yield vm
        except self._azure_errors() as exc:
            raise self._error(exc, "list managed VMs", None) from exc

    def delete(self, resource: ManagedResource) -> None:
        names = {rid.rstrip("/").rsplit("/", 1)[-1] for rid in resource.resource_ids}
        if resource.key:
            names |= {str(vm.name) for vm in self._managed_vms()
                      if from_azure_tags(vm.tags).get(TAG_KEY) == resource.key}
        for vm_name in sorted(names):
            self._delete_vm(vm_name)

    def list_managed(self) -> list[ManagedResource]:
        groups: dict[str, list[VirtualMachine]] = defaultdict(list)
        for vm in self._managed_vms():
            if _state(vm) == "Deleting":
                continue
            key = from_azure_tags(vm.tags).get(TAG_KEY) or f"vm:{vm.id}"
            groups[key].append(vm)
        found: list[ManagedResource] = []
        for _, members in sorted(groups.items()):
            location = str(members[0].location or "")
            zones = {_offer_zone(location, _first_zone(vm)) for vm in members} - {None}
            found.append(ManagedResource.from_tags(
                provider=self.name,
                resource_ids=tuple(sorted(str(vm.id) for vm in members)),
                region=location,
                zone=zones.pop() if len(zones) == 1 else None,
                state=",".join(sorted({_state(vm) for vm in members})),
                tags=from_azure_tags(members[0].tags),
            ))
        return found


def _first_zone(vm: VirtualMachine) -> str | None:
    return str(vm.zones[0]) if vm.zones else None


def _state(vm: VirtualMachine) -> str:
    props = vm.properties
    return str(props.provisioning_state) if props is not None and props.provisioning_state else "unknown"


def _is_loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def _loopback_auth_policy(credential: TokenCredential) -> Any:
    """ARM's bearer-token policy, allowed to send the token over plain http to a loopback test endpoint."""
    from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

    class _LoopbackAuthPolicy(ARMChallengeAuthenticationPolicy):
        def on_request(self, request: Any) -> None:
            if _is_loopback_http(str(request.http_request.url)):
                request.context["enforce_https"] = False
            super().on_request(request)

    return _LoopbackAuthPolicy(credential, f"{ARM_ENDPOINT}/.default")
