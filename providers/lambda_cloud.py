"""Lambda Cloud adapter: on-demand GPU instances through Lambda's public REST API (httpx).

The API (Lambda Cloud API 1.10.0) answers ``{"data": ...}`` or ``{"error": {"code", "message",
"suggestion"}}``; codes, not messages, decide the error type.

Inventory: ``GET /instance-types`` gives every type with its price in cents per hour, specs (vCPUs,
memory, GPUs), GPU description and the regions with capacity right now. Each GPU type is offered in
every configured region; regions without capacity at the moment are listed and flagged ("no capacity
at Lambda now"), not dropped. Lambda has no spot market and publishes no quotas.

Actuation: Lambda has no idempotency key. Instances are named ``plc-<key>`` (see
:func:`instance_name`) and carry the ownership tags (in Lambda's tag-key form, see
:func:`lambda_tag_key`); before launching, ``GET /instances`` is searched for instances with that name
and those are adopted, so that a new process after a crash does not launch twice. ``POST
/instance-operations/launch`` starts one instance per call (the current API has no ``quantity``), so a
multi-node spec launches the missing ones one by one, ``launch_interval_s`` apart (Lambda allows one
launch request per 12 seconds). ``delete`` posts ``/instance-operations/terminate`` and waits until
the instances are terminating or gone. ``list_managed`` lists instances whose names start with ``plc-``.

Credentials: an API key in the ``LAMBDA_API_KEY`` environment variable, sent as an HTTP Bearer token
(the scheme Lambda recommends). It is never read from or written to the providers config.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from placement.errors import PlacementError
from placement.gpus import GPU_MODELS, resolve_gpu
from placement.models import GeoPoint, Name, Offer
from providers.base import (
    OWNERSHIP_TAG_KEYS,
    TAG_KEY,
    TAG_MANAGED,
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

log = logging.getLogger(__name__)

API_KEY_ENV = "LAMBDA_API_KEY"
DEFAULT_BASE_URL = "https://cloud.lambdalabs.com/api/v1"
NAME_PREFIX = "plc-"
NAME_MAX = 64
NO_CAPACITY = "no capacity at Lambda now"

# Instance states that no longer hold capacity.
GONE_STATES: frozenset[str] = frozenset({"terminating", "terminated", "preempted"})


class LambdaSettings(BaseModel):
    """One Lambda Cloud account as the engine uses it. The API key comes from ``LAMBDA_API_KEY`` only.

    Example::

        lambda:
          type: lambda
          regions: [us-east-1, us-west-1]
          ssh_key_names: [ops]
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["lambda"] = "lambda"
    regions: Annotated[tuple[Name, ...], Field(min_length=1)]
    ssh_key_names: tuple[str, ...] = Field(
        default=(), description="SSH key names registered at Lambda; the API takes exactly one per launch"
    )
    base_url: Annotated[str, Field(pattern=r"^https?://")] = DEFAULT_BASE_URL
    instance_types: tuple[str, ...] = Field(
        default=(), description="instance type patterns to list (e.g. 'gpu_8x_*'); empty: every GPU type"
    )

    @model_validator(mode="after")
    def _check(self) -> LambdaSettings:
        if len(set(self.regions)) != len(self.regions):
            raise ValueError("regions lists a region twice")
        unknown = sorted(set(self.regions) - set(LAMBDA_REGIONS))
        if unknown:
            raise ValueError(f"no location data for Lambda region(s) {', '.join(unknown)}; "
                             f"known regions: {', '.join(sorted(LAMBDA_REGIONS))}")
        if len(self.ssh_key_names) > 1:
            raise ValueError("Lambda takes exactly one SSH key per launch: list one name in ssh_key_names")
        return self


@dataclass(frozen=True)
class LambdaRegion:
    """Where a region is. ``carbon_g_per_kwh`` is an approximate annual grid average for the place."""

    place: str
    country: str
    jurisdiction: str
    lat: float
    lon: float
    carbon_g_per_kwh: float


# Regions and the places they are in. Approximate: coordinates are those of the state or city, and the
# places of us-east-2/3 and us-south-2/3 were not confirmed against Lambda's region descriptions (the
# ``description`` of each region in GET /instance-types), which should be checked when one is added.
LAMBDA_REGIONS: dict[str, LambdaRegion] = {
    "us-east-1": LambdaRegion("Virginia, USA", "US", "US", 38.9, -77.4, 379),
    "us-east-2": LambdaRegion("Washington DC, USA", "US", "US", 38.9, -77.0, 379),
    "us-east-3": LambdaRegion("Washington DC, USA", "US", "US", 38.9, -77.0, 379),
    "us-midwest-1": LambdaRegion("Illinois, USA", "US", "US", 41.9, -87.6, 330),
    "us-south-1": LambdaRegion("Texas, USA", "US", "US", 30.3, -97.7, 400),
    "us-south-2": LambdaRegion("North Texas, USA", "US", "US", 32.8, -96.8, 400),
    "us-south-3": LambdaRegion("Central Texas, USA", "US", "US", 30.3, -97.7, 400),
    "us-west-1": LambdaRegion("California, USA", "US", "US", 37.4, -121.9, 230),
    "us-west-2": LambdaRegion("Arizona, USA", "US", "US", 33.4, -112.1, 350),
    "us-west-3": LambdaRegion("Utah, USA", "US", "US", 40.8, -111.9, 600),
    "europe-central-1": LambdaRegion("Germany", "DE", "EU", 50.1, 8.7, 338),
    "asia-south-1": LambdaRegion("India", "IN", "IN", 17.4, 78.5, 708),
    "asia-northeast-1": LambdaRegion("Tokyo, Japan", "JP", "JP", 35.7, 139.7, 465),
    "me-west-1": LambdaRegion("Israel", "IL", "IL", 32.1, 34.8, 550),
    "australia-east-1": LambdaRegion("Sydney, Australia", "AU", "AU", -33.9, 151.2, 790),
}


# --------------------------------------------------------------------------------------------------
# Names, tags and parsing
# --------------------------------------------------------------------------------------------------


def instance_name(key: str) -> str:
    """The instance name marking ownership: ``plc-<key>``, cut to 64 characters with a hash of the key."""
    name = NAME_PREFIX + key
    if len(name) > NAME_MAX:
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        name = f"{name[: NAME_MAX - 11]}-{digest}"
    return name


_TAG_KEY_BAD = re.compile(r"[^a-z0-9:-]")


def lambda_tag_key(tag_key: str) -> str:
    """A Lambda tag key (``^[a-z][a-z0-9-:]+$``, at most 55): ``placement.dev/key`` -> ``placement-dev:key``."""
    safe = _TAG_KEY_BAD.sub("-", tag_key.lower().replace("/", ":"))
    if not safe[:1].isalpha():
        safe = "k-" + safe
    return safe[:55]


_ENGINE_TAG_BY_LAMBDA_KEY: dict[str, str] = {lambda_tag_key(k): k for k in OWNERSHIP_TAG_KEYS}


def instance_tags(instance: Mapping[str, Any]) -> dict[str, str]:
    """An instance's tags under the engine's names; the key falls back to the one embedded in the name."""
    tags = {_ENGINE_TAG_BY_LAMBDA_KEY.get(str(t.get("key")), str(t.get("key"))): str(t.get("value", ""))
            for t in instance.get("tags") or []}
    name = str(instance.get("name") or "")
    if name.startswith(NAME_PREFIX):
        tags.setdefault(TAG_KEY, name[len(NAME_PREFIX):])
        tags.setdefault(TAG_MANAGED, "true")
    return tags


_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*GB", re.IGNORECASE)
_VENDOR_WORDS = re.compile(r"^(?:NVIDIA|Tesla|AMD)\s+", re.IGNORECASE)


@dataclass(frozen=True)
class LambdaGpu:
    model: str
    memory_gib: float


def parse_gpu(description: str, type_name: str = "") -> LambdaGpu | None:
    """The GPU of an instance type from its ``gpu_description`` (``H100 (80 GB SXM5)``), or None if unknown."""
    head = _VENDOR_WORDS.sub("", description.split("(", 1)[0].strip())
    found = resolve_gpu(head) if head else None
    if found is None:
        # e.g. gpu_1x_a100_sxm4 -> a100
        parts = type_name.split("_")
        found = resolve_gpu(parts[2]) if len(parts) > 2 else None
    if found is None:
        return None
    model, implied = found
    match = _MEMORY.search(description)
    if match:
        memory = float(match.group(1))
    elif implied:
        memory = float(implied)
    else:
        memory = float(GPU_MODELS[model].memory_gib[-1])
    return LambdaGpu(model, memory)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------

_DENIED_CODES = frozenset({"global/invalid-api-key", "global/account-inactive", "global/invalid-address",
                           "global/forbidden"})
_NOT_FOUND_CODES = frozenset({"global/object-does-not-exist", "global/not-found"})


def error_from_lambda(
    status: int,
    body: Any,
    *,
    provider: str,
    region: str | None,
    what: str | None = None,
    action: str = "call the Lambda API",
) -> ProviderError:
    """The typed provider error for a failed Lambda API response. Messages never carry the API key."""
    error = body.get("error") if isinstance(body, Mapping) else None
    error = error if isinstance(error, Mapping) else {}
    code = str(error.get("code") or f"HTTP {status}")
    message = " ".join(str(error.get("message") or "").split())[:300]
    suggestion = " ".join(str(error.get("suggestion") or "").split())[:200]
    detail = "; ".join(p for p in (message, suggestion) if p)
    common: dict[str, Any] = {"provider": provider, "code": code, "region": region}
    subject = what or "the request"
    if code == "instance-operations/launch/insufficient-capacity":
        return InsufficientCapacity(f"insufficient capacity for {subject}", scope="region", **common)
    if code == "global/quota-exceeded":
        text = f"quota exceeded launching {subject}"
        return QuotaExceeded(f"{text}: {detail}" if detail else text, scope="account", **common)
    if code in _DENIED_CODES or status in (401, 403):
        return Denied(f"not permitted to {action}; check the API key in {API_KEY_ENV}"
                      + (f" ({detail})" if detail else ""), scope="account", **common)
    if status == 429 or status >= 500 or code.startswith("provider/"):
        return Transient(f"temporary failure trying to {action}" + (f": {detail}" if detail else ""),
                         scope="region", **common)
    if code in _NOT_FOUND_CODES or status == 404:
        return NotFound(detail or f"not found trying to {action}", scope="region", **common)
    return ProviderError(f"failed to {action}: {detail}" if detail else f"failed to {action}", scope="region",
                         **common)


# --------------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------------


class LambdaCompute(Compute):
    """One Lambda Cloud account across the configured regions.

    ``http`` replaces the httpx client (tests); ``max_retries`` bounds retries of read requests on
    throttling and server errors; ``launch_interval_s`` is the pause between the launches of one
    multi-node spec; ``delete_timeout_s`` bounds the wait in :meth:`delete`.
    """

    def __init__(
        self,
        name: str,
        settings: LambdaSettings,
        *,
        http: httpx.Client | None = None,
        max_retries: int = 2,
        launch_interval_s: float = 12.0,
        delete_timeout_s: float = 300.0,
        poll_interval_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.settings = settings
        self._http = http
        self._max_retries = max_retries
        self._launch_interval_s = launch_interval_s
        self._delete_timeout_s = delete_timeout_s
        self._poll_interval_s = poll_interval_s
        self._sleep = sleep

    # -- HTTP --------------------------------------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=30.0, headers={"User-Agent": "placement-engine"})
        return self._http

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(API_KEY_ENV, "").strip()
        if not key:
            raise Denied(f"no Lambda API key: set the {API_KEY_ENV} environment variable", provider=self.name,
                         code="NoApiKey")
        return {"Authorization": f"Bearer {key}", "Accept": "application/json"}

    def _call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None, action: str,
              region: str | None = None, what: str | None = None) -> Any:
        url = self.settings.base_url.rstrip("/") + path
        attempts = 1 + (self._max_retries if method == "GET" else 0)
        for attempt in range(attempts):
            try:
                response = self.http.request(method, url, json=body, headers=self._headers())
            except httpx.HTTPError as exc:
                if attempt + 1 < attempts:
                    self._sleep(min(2.0 ** attempt, 10.0))
                    continue
                raise Transient(f"cannot reach the Lambda API trying to {action}", provider=self.name,
                                code=type(exc).__name__, region=region) from exc
            if response.is_success:
                try:
                    return response.json()["data"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise ProviderError(f"unexpected answer trying to {action}", provider=self.name,
                                        code="BadResponse", region=region, scope="region") from exc
            retryable = response.status_code == 429 or response.status_code >= 500
            if retryable and attempt + 1 < attempts:
                self._sleep(_retry_after(response, default=min(2.0 ** attempt, 10.0)))
                continue
            try:
                payload = response.json()
            except ValueError:
                payload = None
            raise error_from_lambda(response.status_code, payload, provider=self.name, region=region, what=what,
                                    action=action)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- inventory ---------------------------------------------------------------------------------

    def instance_types(self) -> dict[str, Any]:
        """``GET /instance-types``: instance type name -> {instance_type, regions_with_capacity_available}."""
        data = self._call("GET", "/instance-types", action="list instance types")
        return dict(data) if isinstance(data, Mapping) else {}

    def _wanted(self, type_name: str) -> bool:
        patterns = self.settings.instance_types
        return not patterns or any(fnmatch.fnmatchcase(type_name, p) for p in patterns)

    def offers(self) -> list[Offer]:
        offers: list[Offer] = []
        for type_name, item in sorted(self.instance_types().items()):
            info = item.get("instance_type") or {}
            specs = info.get("specs") or {}
            gpus = int(specs.get("gpus") or 0)
            if gpus < 1 or not self._wanted(type_name):
                continue
            gpu = parse_gpu(str(info.get("gpu_description") or info.get("description") or ""), type_name)
            vcpus, memory = int(specs.get("vcpus") or 0), float(specs.get("memory_gib") or 0)
            if gpu is None or vcpus < 1 or memory <= 0:
                log.warning("%s: instance type %s (%s) has an unknown GPU or no specs; not offered", self.name,
                            type_name, info.get("gpu_description"))
                continue
            with_capacity = {str(r.get("name")) for r in item.get("regions_with_capacity_available") or []}
            for region in self.settings.regions:
                place = LAMBDA_REGIONS[region]
                offers.append(Offer(
                    provider=self.name,
                    provider_kind="specialist",
                    region=region,
                    country=place.country,
                    jurisdiction=place.jurisdiction,
                    instance_type=type_name,
                    gpu_model=gpu.model,
                    gpu_count=gpus,
                    gpu_memory_gib=gpu.memory_gib,
                    vcpus=vcpus,
                    memory_gib=memory,
                    capacity_type="on-demand",
                    hourly_usd=int(info.get("price_cents_per_hour") or 0) / 100,
                    carbon_g_per_kwh=place.carbon_g_per_kwh,
                    location=GeoPoint(lat=place.lat, lon=place.lon),
                    egress_usd_per_gb=0.0,
                    unavailable_reason=None if region in with_capacity else NO_CAPACITY,
                ))
        return offers

    # -- actuation ---------------------------------------------------------------------------------

    def instances(self) -> list[dict[str, Any]]:
        """``GET /instances``: the account's running instances."""
        data = self._call("GET", "/instances", action="list instances")
        return [dict(i) for i in data] if isinstance(data, list) else []

    def _check_offer(self, offer: Offer) -> None:
        if offer.provider != self.name:
            raise PlacementError(f"offer {offer.id!r} belongs to provider {offer.provider!r}, not {self.name!r}")
        if offer.region not in self.settings.regions:
            raise PlacementError(f"offer {offer.id!r} is in region {offer.region!r}, which provider "
                                 f"{self.name!r} is not configured for ({', '.join(self.settings.regions)})")
        if offer.capacity_type != "on-demand":
            raise PlacementError(f"offer {offer.id!r}: Lambda sells on-demand capacity only, not "
                                 f"{offer.capacity_type!r}")

    def _launch_body(self, spec: ResourceSpec) -> dict[str, Any]:
        tags = [{"key": lambda_tag_key(k), "value": v[:128]} for k, v in sorted(spec.tags().items())]
        unique = {t["key"]: t for t in tags}
        return {
            "region_name": spec.offer.region,
            "instance_type_name": spec.offer.instance_type,
            "ssh_key_names": list(self.settings.ssh_key_names),
            "name": instance_name(spec.key),
            "tags": list(unique.values()),
        }

    def create(self, spec: ResourceSpec) -> ManagedResource:
        offer = spec.offer
        self._check_offer(offer)
        if not self.settings.ssh_key_names:
            raise PlacementError(f"provider {self.name!r} has no SSH key: set ssh_key_names (one name registered "
                                 "at Lambda) in the providers config")
        name = instance_name(spec.key)
        existing = [i for i in self.instances()
                    if i.get("name") == name and str(i.get("status")) not in GONE_STATES]
        if existing:
            log.info("%s: adopting %d instance(s) named %s", self.name, len(existing), name)
        ids = [str(i["id"]) for i in existing]
        states = {str(i.get("status", "unknown")) for i in existing}
        body = self._launch_body(spec)
        for n in range(max(0, spec.nodes - len(existing))):
            if n:
                self._sleep(self._launch_interval_s)
            data = self._call("POST", "/instance-operations/launch", body=body, region=offer.region,
                              what=offer.instance_type, action=f"launch {offer.instance_type}")
            launched = [str(i) for i in (data or {}).get("instance_ids") or []]
            if not launched:
                raise ProviderError(f"launch of {offer.instance_type} returned no instance ids", provider=self.name,
                                    code="BadResponse", region=offer.region, scope="region")
            ids.extend(launched)
            states.add("booting")
        return ManagedResource(
            provider=self.name,
            resource_ids=tuple(sorted(ids)),
            region=offer.region,
            zone=None,
            key=spec.key,
            workload=spec.workload,
            replica=spec.replica,
            offer_id=offer.id,
            plan_digest=spec.plan_digest,
            state=",".join(sorted(states)),
        )

    def _live_targets(self, resource: ManagedResource) -> list[str]:
        live = {str(i["id"]): i for i in self.instances() if str(i.get("status")) not in GONE_STATES}
        ids = {i for i in resource.resource_ids if i in live}
        if resource.key:
            names = {instance_name(resource.key), NAME_PREFIX + resource.key}
            ids |= {i for i, inst in live.items()
                    if inst.get("name") in names or instance_tags(inst).get(TAG_KEY) == resource.key}
        return sorted(ids)

    def delete(self, resource: ManagedResource) -> None:
        region = resource.region
        targets = self._live_targets(resource)
        if not targets:
            return
        try:
            self._call("POST", "/instance-operations/terminate", body={"instance_ids": targets}, region=region,
                       action="terminate instances")
        except NotFound:
            # Some vanished between the lookup and the call: terminate the ones still there.
            targets = self._live_targets(resource)
            if targets:
                self._call("POST", "/instance-operations/terminate", body={"instance_ids": targets},
                           region=region, action="terminate instances")
        deadline = time.monotonic() + self._delete_timeout_s
        while True:
            remaining = set(self._live_targets(resource)) & set(targets)
            if not remaining:
                return
            if time.monotonic() >= deadline:
                raise Transient(f"instances {', '.join(sorted(remaining))} still not terminating after "
                                f"{self._delete_timeout_s:.0f} s", provider=self.name, code="DeleteTimeout",
                                region=region)
            self._sleep(self._poll_interval_s)

    def list_managed(self) -> list[ManagedResource]:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for instance in self.instances():
            if not str(instance.get("name") or "").startswith(NAME_PREFIX):
                continue
            if str(instance.get("status")) in GONE_STATES:
                continue
            groups[instance_tags(instance)[TAG_KEY]].append(instance)
        found: list[ManagedResource] = []
        for _, members in sorted(groups.items()):
            regions = {str((i.get("region") or {}).get("name", "")) for i in members} - {""}
            found.append(ManagedResource.from_tags(
                provider=self.name,
                resource_ids=tuple(sorted(str(i["id"]) for i in members)),
                region=regions.pop() if len(regions) == 1 else ",".join(sorted(regions)),
                zone=None,
                state=",".join(sorted({str(i.get("status", "unknown")) for i in members})),
                tags=instance_tags(members[0]),
            ))
        return found


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", default)), 0.0), 30.0)
    except ValueError:
        return default
