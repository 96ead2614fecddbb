"""Provider adapters behind one small interface (:class:`providers.base.Compute`).

This package's top level imports no cloud SDK: each adapter module imports its own SDK, and
:func:`providers.registry.build_compute` loads an adapter only when it is asked for.
"""

from providers.base import (
    MANAGED_VALUE,
    OWNERSHIP_TAG_KEYS,
    TAG_KEY,
    TAG_MANAGED,
    TAG_OFFER,
    TAG_PLAN,
    TAG_REPLICA,
    TAG_TEAM,
    TAG_WORKLOAD,
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
    resource_key,
)

__all__ = [
    "MANAGED_VALUE",
    "OWNERSHIP_TAG_KEYS",
    "TAG_KEY",
    "TAG_MANAGED",
    "TAG_OFFER",
    "TAG_PLAN",
    "TAG_REPLICA",
    "TAG_TEAM",
    "TAG_WORKLOAD",
    "Compute",
    "Denied",
    "InsufficientCapacity",
    "ManagedResource",
    "NotFound",
    "OfferUnavailable",
    "ProviderError",
    "QuotaExceeded",
    "ResourceSpec",
    "Scope",
    "Transient",
    "label_safe",
    "label_safe_key",
    "resource_key",
]
