"""The provider interface: the only boundary between the engine and a cloud.

Two sides, after dstack's ``Compute`` class and Karpenter's ``CloudProvider``:

- inventory: :meth:`Compute.offers` lists every offer, unavailable ones included and flagged;
- actuation: :meth:`Compute.create` (idempotent on the spec's key), :meth:`Compute.delete` (not-found
  counts as done) and :meth:`Compute.list_managed` (found by the engine's ownership tags only).

Errors are typed and carry their scope (zone, region, provider, account), so that the apply loop can
decide whether to retry, block an offer and re-plan, or stop.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from placement.errors import PlacementError
from placement.models import Offer

Scope = Literal["zone", "region", "provider", "account"]

# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class ProviderError(PlacementError):
    """A provider call failed. ``scope`` says how wide the failure applies.

    The message is written for a user and names the place, the problem and the provider's error code,
    e.g. ``aws us-east-1a: insufficient capacity for p5.48xlarge (InsufficientInstanceCapacity)``.
    """

    default_scope: ClassVar[Scope] = "provider"
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        detail: str,
        *,
        provider: str,
        code: str,
        region: str | None = None,
        zone: str | None = None,
        scope: Scope | None = None,
        retryable: bool | None = None,
    ) -> None:
        self.detail = detail
        self.provider = provider
        self.code = code
        self.region = region
        self.zone = zone
        self.scope: Scope = scope if scope is not None else self.default_scope
        self.retryable = retryable if retryable is not None else self.default_retryable
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.zone if self.scope == "zone" and self.zone else self.region
        place = f"{self.provider} {where}" if where else self.provider
        return f"{place}: {self.detail} ({self.code})" if self.code else f"{place}: {self.detail}"

    def applies_to(self, offer: Offer) -> bool:
        """Whether this failure also rules out ``offer`` (same provider, and same region/zone as scoped)."""
        if offer.provider != self.provider:
            return False
        if self.scope in ("provider", "account"):
            return True
        if self.region is not None and offer.region != self.region:
            return False
        if self.scope == "zone" and self.zone is not None:
            return offer.zone == self.zone
        return True


class InsufficientCapacity(ProviderError):
    """The provider has no capacity for the instance type right now."""

    default_scope = "zone"


class QuotaExceeded(ProviderError):
    """An account limit (vCPU quota, instance count) would be exceeded."""

    default_scope = "region"


class OfferUnavailable(ProviderError):
    """The offer cannot be bought there at all (e.g. the type is not offered in that zone)."""

    default_scope = "zone"


class NotFound(ProviderError):
    """A resource (instance, image, subnet) the call refers to does not exist."""

    default_scope = "region"


class Transient(ProviderError):
    """Throttling, a server error or a network failure: worth retrying later."""

    default_scope = "region"
    default_retryable = True


class Denied(ProviderError):
    """Missing or invalid credentials, or not permitted."""

    default_scope = "account"


# --------------------------------------------------------------------------------------------------
# Ownership tags
# --------------------------------------------------------------------------------------------------

TAG_PREFIX = "placement.dev/"
TAG_MANAGED = "placement.dev/managed"
TAG_WORKLOAD = "placement.dev/workload"
TAG_REPLICA = "placement.dev/replica"
TAG_PLAN = "placement.dev/plan"
TAG_KEY = "placement.dev/key"
TAG_OFFER = "placement.dev/offer"
TAG_TEAM = "placement.dev/team"
MANAGED_VALUE = "true"

OWNERSHIP_TAG_KEYS: tuple[str, ...] = (
    TAG_MANAGED, TAG_WORKLOAD, TAG_REPLICA, TAG_PLAN, TAG_KEY, TAG_OFFER, TAG_TEAM,
)

# EC2 ClientToken and GCP label values both stop at 64/63 characters.
MAX_KEY_LENGTH = 64
LABEL_MAX_LENGTH = 63

_LABEL_BAD = re.compile(r"[^a-z0-9_-]")


def label_safe(text: str, max_length: int = LABEL_MAX_LENGTH) -> str:
    """A form of ``text`` usable as a GCP label key or value: lowercase letters, digits, ``_`` and ``-``.

    Other characters become ``_``. Text longer than ``max_length`` is cut and ends in a short hash of the
    whole text, so that distinct long values stay distinct.
    """
    safe = _LABEL_BAD.sub("_", text.lower())
    if len(safe) > max_length:
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        safe = f"{safe[: max_length - 11]}-{digest}"
    return safe


def label_safe_key(tag_key: str) -> str:
    """A label-safe key for a tag key: ``placement.dev/managed`` -> ``placement_dev_managed``.

    Label keys must start with a lowercase letter; a key that does not gets a ``k_`` prefix.
    """
    safe = label_safe(tag_key)
    return safe if safe[:1].isalpha() else label_safe("k_" + safe)


def resource_key(plan_digest: str, workload: str, replica: int, offer_id: str, attempt: int = 0) -> str:
    """The deterministic idempotency key of one replica's resources (at most 64 characters).

    Made of a readable prefix (workload and replica) and a hash of every input, so that the same plan,
    workload, replica and offer always give the same key. ``attempt`` makes a fresh key for a deliberate
    re-creation (after the first resources were deleted or interrupted): providers such as EC2 remember
    a ClientToken and return the old, terminated resources for it.
    """
    material = "\n".join([plan_digest, workload, str(replica), offer_id, str(attempt)])
    digest = hashlib.sha256(material.encode()).hexdigest()[:24]
    prefix = label_safe(workload, 24).strip("_-") or "w"
    suffix = f"-a{attempt}" if attempt else ""
    return f"{prefix}-r{replica}{suffix}-{digest}"[:MAX_KEY_LENGTH]


# --------------------------------------------------------------------------------------------------
# Values crossing the boundary
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceSpec:
    """What to create for one replica of a placed workload."""

    key: str
    workload: str
    replica: int
    team: str
    plan_digest: str
    offer: Offer
    nodes: int = 1
    interruptible: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    kind: Literal["service", "batch"] = "service"  # long-running service or run-to-completion batch job

    def __post_init__(self) -> None:
        if not self.key or len(self.key) > MAX_KEY_LENGTH:
            raise ValueError(f"resource key must have 1 to {MAX_KEY_LENGTH} characters, got {len(self.key)}")
        if self.nodes < 1:
            raise ValueError(f"nodes must be at least 1, got {self.nodes}")
        if self.replica < 0:
            raise ValueError(f"replica must not be negative, got {self.replica}")

    @classmethod
    def for_replica(
        cls,
        *,
        plan_digest: str,
        workload: str,
        replica: int,
        team: str,
        offer: Offer,
        nodes: int = 1,
        interruptible: bool = False,
        labels: Mapping[str, str] | None = None,
        attempt: int = 0,
        kind: Literal["service", "batch"] = "service",
    ) -> ResourceSpec:
        """A spec whose key is derived with :func:`resource_key`."""
        return cls(
            key=resource_key(plan_digest, workload, replica, offer.id, attempt),
            workload=workload,
            replica=replica,
            team=team,
            plan_digest=plan_digest,
            offer=offer,
            nodes=nodes,
            interruptible=interruptible,
            labels=dict(labels or {}),
            kind=kind,
        )

    def ownership_tags(self) -> dict[str, str]:
        """The tags every resource created for this spec carries."""
        return {
            TAG_MANAGED: MANAGED_VALUE,
            TAG_WORKLOAD: self.workload,
            TAG_REPLICA: str(self.replica),
            TAG_PLAN: self.plan_digest,
            TAG_KEY: self.key,
            TAG_OFFER: self.offer.id,
            TAG_TEAM: self.team,
        }

    def ownership_labels(self) -> dict[str, str]:
        """The ownership tags in label-safe form (lowercase keys and values, at most 63 characters)."""
        return {label_safe_key(k): label_safe(v) for k, v in self.ownership_tags().items()}

    def tags(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """``extra`` (e.g. from provider config), then the spec's labels, then the ownership tags.

        Later sources win, so neither config nor labels can overwrite an ownership tag.
        """
        merged = dict(extra or {})
        merged.update(self.labels)
        merged.update(self.ownership_tags())
        return merged


@dataclass(frozen=True)
class ManagedResource:
    """Resources the engine created for one replica, found again by their ownership tags.

    ``replica`` is -1 when the replica tag is missing or unreadable; ``state`` is the provider's state
    name, or the sorted distinct states joined by commas when the resources disagree.
    """

    provider: str
    resource_ids: tuple[str, ...]
    region: str
    zone: str | None
    key: str
    workload: str
    replica: int
    offer_id: str
    plan_digest: str
    state: str

    @classmethod
    def from_tags(
        cls,
        *,
        provider: str,
        resource_ids: tuple[str, ...],
        region: str,
        zone: str | None,
        state: str,
        tags: Mapping[str, str],
    ) -> ManagedResource:
        """A ManagedResource whose ownership fields are read back from a resource's tags."""
        try:
            replica = int(tags.get(TAG_REPLICA, ""))
        except ValueError:
            replica = -1
        return cls(
            provider=provider,
            resource_ids=resource_ids,
            region=region,
            zone=zone,
            key=tags.get(TAG_KEY, ""),
            workload=tags.get(TAG_WORKLOAD, ""),
            replica=replica,
            offer_id=tags.get(TAG_OFFER, ""),
            plan_digest=tags.get(TAG_PLAN, ""),
            state=state,
        )


# --------------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------------


class Compute(ABC):
    """One provider account, as the engine sees it: offers to buy and resources it manages there."""

    name: str

    @abstractmethod
    def offers(self) -> list[Offer]:
        """Every offer, with unavailable ones listed and ``unavailable_reason`` set rather than dropped."""

    @abstractmethod
    def create(self, spec: ResourceSpec) -> ManagedResource:
        """Create the resources of ``spec``; idempotent on ``spec.key``.

        Calling it again with the same key, even from a new process after a crash, returns the same
        resources and never creates duplicates.
        """

    @abstractmethod
    def delete(self, resource: ManagedResource) -> None:
        """Delete the resources and wait until they are gone or terminating. Not found counts as done."""

    @abstractmethod
    def list_managed(self) -> list[ManagedResource]:
        """Every resource carrying the engine's ownership tags, grouped by key."""
