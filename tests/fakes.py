"""An in-memory provider for unit tests of the apply loop (the AWS adapter is tested against moto)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from placement.models import Offer
from providers.base import Compute, ManagedResource, ProviderError, ResourceSpec


@dataclass
class FakeCompute(Compute):
    name: str
    resources: dict[str, ManagedResource] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (create|delete, offer id)
    fail_offers: dict[str, ProviderError] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0

    def offers(self) -> list[Offer]:
        return []

    def create(self, spec: ResourceSpec) -> ManagedResource:
        with self.lock:
            self.calls.append(("create", spec.offer.id))
            if spec.offer.id in self.fail_offers:
                raise self.fail_offers[spec.offer.id]
            if spec.key in self.resources:
                return self.resources[spec.key]
            self.counter += 1
            res = ManagedResource(
                provider=self.name, resource_ids=tuple(f"{self.name}-{self.counter}-{n}" for n in range(spec.nodes)),
                region=spec.offer.region, zone=spec.offer.zone, key=spec.key, workload=spec.workload,
                replica=spec.replica, offer_id=spec.offer.id, plan_digest=spec.plan_digest, state="running",
            )
            self.resources[spec.key] = res
            return res

    def delete(self, resource: ManagedResource) -> None:
        with self.lock:
            self.calls.append(("delete", resource.offer_id))
            self.resources.pop(resource.key, None)

    def list_managed(self) -> list[ManagedResource]:
        return sorted(self.resources.values(), key=lambda r: r.key)
