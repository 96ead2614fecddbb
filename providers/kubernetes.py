"""Kubernetes pool adapter: an owned GPU cluster sold as slices, actuated through the official client.

Inventory: ``GET /api/v1/nodes`` with a label selector on the GPU product label (``gpu_label``, by
default GPU feature discovery's ``nvidia.com/gpu.product``) plus the configured ``node_selector``,
then ``GET /api/v1/pods`` across all namespaces with ``status.phase!=Succeeded,status.phase!=Failed``.
A node's GPUs are its allocatable ``gpu_resource`` (``nvidia.com/gpu``); its free GPUs are those minus
what the pods bound to it ask for (a container's request, or its limit when it states no request; a
pod asks for the larger of its containers' sum and its largest init container, as kube-scheduler
counts). Nodes that are cordoned, not Ready, or carry a ``NoSchedule``/``NoExecute`` taint that the
configured tolerations do not tolerate count as owned but not free. Nodes are grouped by shape (model,
GPUs per node, GPU memory) and sold with :func:`providers.onprem.slice_offers` at the site's internal
cost; instance types read ``k8s-<model>-<n>g-slice-<k>g``.

Actuation: one engine replica is one object in the configured namespace, named from the spec's key
(:func:`object_name`):

- a service replica becomes an ``apps/v1`` Deployment with ``replicas: 1``;
- a batch replica becomes a ``batch/v1`` Job (``restartPolicy: Never``); a replica spanning ``nodes``
  > 1 becomes an Indexed Job with ``parallelism = completions = nodes`` (each pod gets
  ``JOB_COMPLETION_INDEX``); a multi-node *service* is refused, since a Deployment cannot express it.

The workload kind is the spec's ``kind`` (the workload's own). The container image and command come from the labels
``placement.dev/image`` and ``placement.dev/command`` (split like a shell line), else from the
settings. Each pod asks for ``gpu_count`` GPUs of the offer as request and limit, ``request_fraction``
of the slice's share of CPU and memory as requests, runs only on nodes of the offer's GPU product
(node selector on ``gpu_label``, plus a node affinity on host names when nodes of another shape carry
the same product), with the configured tolerations. Objects and pods carry the ownership labels
(``placement.dev/managed``, ``placement.dev/key``, … with values made label-safe) and the full
ownership tags as annotations.

``create`` is idempotent on the key: an object of that name is adopted when its key annotation
matches (an answer of 409 AlreadyExists to the create is handled the same way), and refused when it
belongs to another key. Before creating, the GPUs free now are checked and a shortage is reported as
:class:`~providers.base.InsufficientCapacity` (``check_capacity``), so that apply fails over instead of
leaving pods pending. ``delete`` uses ``propagationPolicy: Background`` (the API's default for Jobs
would orphan their pods); a 404 counts as done. ``list_managed`` lists Deployments and Jobs with
``placement.dev/managed=true`` in the namespace.

Permissions: list nodes and pods cluster-wide; get, list, create and delete Deployments (``apps``) and
Jobs (``batch``) in the namespace.

Credentials: the client's standard chain. With neither ``kubeconfig`` nor ``context`` set: the
in-cluster service account when running in a pod, else ``$KUBECONFIG`` or ``~/.kube/config``. Nothing
secret belongs in the settings; a kubeconfig path is not a secret.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.config import load_incluster_config, load_kube_config
from kubernetes.config.config_exception import ConfigException
from kubernetes.utils.quantity import parse_quantity
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from placement.errors import PlacementError
from placement.gpus import GPU_MODELS
from placement.models import CapacityPool, Offer
from providers.base import (
    OWNERSHIP_TAG_KEYS,
    TAG_KEY,
    TAG_MANAGED,
    TAG_PREFIX,
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
from providers.onprem import OnPremSettings, OwnedCapacity, OwnedNode, slice_offers

log = logging.getLogger(__name__)

TYPE_PREFIX = "k8s"
NAME_PREFIX = "plc-"
# Object names stay within 52 characters so that names the controllers derive from them (a
# Deployment's ReplicaSet adds 11, an Indexed Job's pod host names add the index) stay within 63.
NAME_MAX = 52
LABEL_VALUE_MAX = 63
CONTAINER_NAME = "workload"
DEFAULT_IMAGE = "nvidia/cuda:12.4.1-base-ubuntu22.04"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "placement"
FIELD_MANAGER = "placement"

IMAGE_LABEL = "placement.dev/image"
COMMAND_LABEL = "placement.dev/command"
SPEC_LABELS = frozenset({IMAGE_LABEL, COMMAND_LABEL})

WorkloadKind = Literal["service", "batch"]
ObjectKind = Literal["deployment", "job"]
OBJECT_KINDS: tuple[ObjectKind, ...] = ("deployment", "job")

_INSTANCE_TYPE = re.compile(rf"^{TYPE_PREFIX}-(?P<model>.+)-(?P<per_node>\d+)g-slice-(?P<k>\d+)g$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9_.-]")
_NAME_BAD = re.compile(r"[^a-z0-9-]+")

NOT_FREE_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
ENDED_PHASES = frozenset({"Succeeded", "Failed"})


# --------------------------------------------------------------------------------------------------
# Names and labels
# --------------------------------------------------------------------------------------------------


def is_label_key(key: str) -> bool:
    """Whether ``key`` is a valid Kubernetes label or annotation key (``[prefix/]name``)."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _LABEL_PREFIX.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_LABEL_NAME.match(name))


def is_label_value(value: str) -> bool:
    return value == "" or (len(value) <= LABEL_VALUE_MAX and bool(_LABEL_NAME.match(value)))


def label_value(text: str) -> str:
    """A Kubernetes label value for ``text``: at most 63 of ``[A-Za-z0-9_.-]``, alphanumeric at both ends.

    Other characters become ``_``; longer text is cut and ends in a short hash of the whole text.
    """
    safe = _LABEL_VALUE_BAD.sub("_", text)
    if len(safe) > LABEL_VALUE_MAX:
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        safe = f"{safe[: LABEL_VALUE_MAX - 11]}-{digest}"
    safe = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", safe)
    return safe or "x"


def object_name(key: str) -> str:
    """The Deployment or Job name of a key: ``plc-<key>`` as a DNS-1123 label of at most 52 characters."""
    body = _NAME_BAD.sub("-", key.lower()).strip("-")
    name = NAME_PREFIX + body
    if len(name) > NAME_MAX or body != key:
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        name = f"{name[: NAME_MAX - 11].rstrip('-')}-{digest}"
    return name


def ownership_labels(spec: ResourceSpec) -> dict[str, str]:
    """The ownership tags as Kubernetes labels: the same keys, label-safe values."""
    return {k: label_value(v) for k, v in spec.ownership_tags().items()}


def workload_kind(spec: ResourceSpec) -> WorkloadKind:
    """``service`` (a Deployment) or ``batch`` (a Job): the workload's kind."""
    return spec.kind


def resource_id(kind: ObjectKind, namespace: str, name: str) -> str:
    return f"{kind}/{namespace}/{name}"


def parse_resource_id(text: str) -> tuple[ObjectKind, str, str] | None:
    kind, _, rest = text.partition("/")
    namespace, _, name = rest.partition("/")
    if kind == "deployment" and namespace and name:
        return "deployment", namespace, name
    if kind == "job" and namespace and name:
        return "job", namespace, name
    return None


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


class Toleration(BaseModel):
    """A pod toleration, as in a pod spec (``tolerationSeconds`` is not used)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    @model_validator(mode="after")
    def _check(self) -> Toleration:
        if self.key is not None and not is_label_key(self.key):
            raise ValueError(f"toleration key {self.key!r} is not a valid label key")
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.operator == "Equal" and not self.key:
            raise ValueError("a toleration without a key must use operator Exists")
        if self.value is not None and not is_label_value(self.value):
            raise ValueError(f"toleration value {self.value!r} is not a valid label value")
        return self

    def tolerates(self, taint: k8s.V1Taint) -> bool:
        """Whether this toleration tolerates ``taint``, as Kubernetes decides it."""
        if self.effect is not None and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        return (self.value or "") == (taint.value or "")

    def to_model(self) -> k8s.V1Toleration:
        return k8s.V1Toleration(key=self.key, operator=self.operator, value=self.value, effect=self.effect)


class KubernetesSettings(OnPremSettings):
    """One Kubernetes cluster (one namespace of it) as an owned GPU pool.

    The site and internal-cost fields of :class:`~providers.onprem.OnPremSettings` (``site``,
    ``costs``, ``gpu_models``, ``slice_sizes``) sit at the top level beside the cluster's own. No
    credentials: the client's standard chain is used (in-cluster service account, else ``$KUBECONFIG``
    or ``~/.kube/config``), or the named kubeconfig file and context.

    Example::

        fra-k8s:
          type: kubernetes
          context: fra-prod            # optional; kubeconfig: /etc/placement/kubeconfig also optional
          namespace: gpu-workloads
          gpu_memory_label: nvidia.com/gpu.memory
          node_selector: {pool: shared-gpu}
          tolerations:
            - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
          image: nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04
          site:
            region: fra-dc1
            country: DE
            jurisdiction: EU
            location: {lat: 50.11, lon: 8.68}
            pue: 1.5
            electricity_usd_per_kwh: 0.20
          costs:
            H100: {capital_usd: 300000, lifetime_years: 4, power_kw: 10.2}
            L40S: {capital_usd: 60000, lifetime_years: 5}
    """

    type: Literal["kubernetes"] = "kubernetes"
    kubeconfig: str | None = Field(default=None, description="kubeconfig file; default: the client's standard chain")
    context: str | None = Field(default=None, description="kubeconfig context; default: the file's current context")
    namespace: Annotated[str, Field(min_length=1, max_length=63, pattern=_DNS_LABEL.pattern)] = "default"
    gpu_label: str = Field(default="nvidia.com/gpu.product", description="node label naming the GPU product")
    gpu_resource: str = Field(default="nvidia.com/gpu", description="extended resource name of a GPU")
    gpu_memory_label: str | None = Field(
        default=None, description="node label with the GPU memory in MiB (e.g. nvidia.com/gpu.memory)"
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="extra node labels every pod requires; also narrows the inventory"
    )
    tolerations: tuple[Toleration, ...] = ()
    image: Annotated[str, Field(min_length=1)] = DEFAULT_IMAGE
    command: tuple[str, ...] = Field(default=(), description="container command; empty: the image's entrypoint")
    labels: dict[str, str] = Field(default_factory=dict, description="extra labels on every object and pod")
    request_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.9, description="share of a slice's CPU and memory requested, leaving room for node daemons"
    )
    check_capacity: bool = Field(default=True, description="refuse a create when the GPUs are not free now")
    job_backoff_limit: Annotated[int, Field(ge=0)] = 0
    priority_class_name: str | None = None
    service_account_name: str | None = None
    request_timeout_s: Annotated[float, Field(gt=0)] = 30.0

    @field_validator("gpu_label", "gpu_resource", "gpu_memory_label")
    @classmethod
    def _label_key(cls, value: str | None) -> str | None:
        if value is not None and not is_label_key(value):
            raise ValueError(f"{value!r} is not a valid Kubernetes label or resource name")
        return value

    @model_validator(mode="after")
    def _check_labels(self) -> KubernetesSettings:
        for what, mapping in (("node_selector", self.node_selector), ("labels", self.labels)):
            for key, value in mapping.items():
                if not is_label_key(key) or not is_label_value(value):
                    raise ValueError(f"{what}: {key}={value!r} is not a valid Kubernetes label")
        reserved = sorted(k for k in self.labels if k.startswith(TAG_PREFIX))
        if reserved:
            raise ValueError(f"labels may not use the reserved prefix {TAG_PREFIX!r}: {', '.join(reserved)}")
        if self.gpu_label in self.node_selector:
            raise ValueError(f"node_selector may not set {self.gpu_label!r}: the adapter selects the GPU product")
        return self


# --------------------------------------------------------------------------------------------------
# Inventory
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeNode:
    """A GPU node as the adapter reads it: the owned-node view plus what placing on it needs."""

    owned: OwnedNode
    product: str
    hostname: str
    not_free: tuple[str, ...] = ()  # why its GPUs are not free (cordoned, NotReady, untolerated taint)


@dataclass(frozen=True)
class KubernetesInventory:
    offers: list[Offer]
    pools: list[CapacityPool]
    owned: list[OwnedCapacity]
    nodes: tuple[KubeNode, ...]


def _quantity(value: str | None) -> Decimal:
    if value is None:
        return Decimal(0)
    try:
        return Decimal(parse_quantity(value))
    except ValueError:
        return Decimal(0)


def _container_gpus(container: k8s.V1Container, resource: str) -> int:
    res = container.resources
    if res is None:
        return 0
    value = (res.requests or {}).get(resource)
    if value is None:
        value = (res.limits or {}).get(resource)
    return int(_quantity(value))


def pod_gpus(pod: k8s.V1Pod, resource: str) -> int:
    """GPUs a pod holds: its containers' sum, or its largest init container when that is more."""
    spec = pod.spec
    if spec is None:
        return 0
    running = sum(_container_gpus(c, resource) for c in spec.containers or [])
    init = max((_container_gpus(c, resource) for c in spec.init_containers or []), default=0)
    return max(running, init)


def _ready(node: k8s.V1Node) -> bool:
    for cond in (node.status.conditions if node.status else None) or []:
        if cond.type == "Ready":
            return cond.status == "True"
    return False


def snap_memory(model: str, gib: float | None) -> float:
    """The catalogue's memory size of ``model`` nearest to ``gib`` (the smallest one when unknown).

    GPU feature discovery reports usable MiB (81559 for an 80 GB H100); offers use the nominal size.
    """
    sizes = GPU_MODELS[model].memory_gib
    if gib is None:
        return float(min(sizes))
    nearest = min(sizes, key=lambda s: abs(s - gib))
    return float(nearest) if abs(nearest - gib) <= 0.12 * nearest else round(gib, 1)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def _status_body(exc: ApiException) -> dict[str, Any]:
    try:
        data = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def error_from_api(exc: ApiException, *, provider: str, region: str, action: str) -> ProviderError:
    """The typed error for an API server's answer; the message says what failed and what to check."""
    body = _status_body(exc)
    status = int(exc.status or 0)
    message = str(body.get("message") or exc.reason or "no message")
    reason = str(body.get("reason") or exc.reason or status)
    code = f"{status} {reason}" if status else reason
    kw: dict[str, Any] = {"provider": provider, "code": code, "region": region}
    if status == 401:
        return Denied(f"{action}: the API server did not accept the credentials ({message}); check the kubeconfig "
                      "user or the service account token", **kw)
    if status == 403:
        if "exceeded quota" in message.lower():
            return QuotaExceeded(f"{action}: namespace resource quota exceeded: {message}", **kw)
        return Denied(f"{action}: not permitted: {message}; the account needs RBAC rights on nodes, pods, "
                      "deployments and jobs", **kw)
    if status == 404:
        return NotFound(f"{action}: not found: {message}", **kw)
    if status == 409:
        return ProviderError(f"{action}: conflict: {message}", scope="region", **kw)
    if status == 422:
        causes = (body.get("details") or {}).get("causes") or []
        fields = sorted({str(c.get("field")) for c in causes if isinstance(c, dict) and c.get("field")})
        where = f" (field {', '.join(fields)})" if fields else ""
        return ProviderError(f"{action}: the API server rejected the manifest{where}: {message}", scope="provider",
                             retryable=False, **kw)
    if status == 429 or status >= 500:
        return Transient(f"{action}: the API server is busy or failing: {message}", **kw)
    return ProviderError(f"{action}: {message}", scope="region", **kw)


T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------------


class KubernetesCompute(Compute):
    """A Kubernetes cluster's GPU nodes as owned slice offers, actuated through Deployments and Jobs."""

    def __init__(
        self,
        name: str,
        settings: KubernetesSettings,
        *,
        api_client: k8s.ApiClient | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._api_client = api_client

    # -- plumbing ----------------------------------------------------------------------------------

    @property
    def region(self) -> str:
        return self.settings.site.region

    def _client(self) -> k8s.ApiClient:
        if self._api_client is None:
            self._api_client = k8s.ApiClient(configuration=self._load_configuration())
        return self._api_client

    def _load_configuration(self) -> k8s.Configuration:
        s = self.settings
        config = k8s.Configuration()
        if s.kubeconfig is None and s.context is None:
            try:
                load_incluster_config(client_configuration=config)
                return config
            except ConfigException:
                pass
        path = s.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        try:
            load_kube_config(config_file=os.path.expanduser(path), context=s.context, client_configuration=config,
                             persist_config=False)
        except (ConfigException, OSError) as exc:
            raise Denied(f"cannot load the Kubernetes client configuration from {path} (not running in a pod): "
                         f"{exc}; set kubeconfig/context in the providers config or KUBECONFIG", provider=self.name,
                         code="ConfigException", region=self.region) from None
        return config

    def _call(self, action: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        kwargs.setdefault("_request_timeout", self.settings.request_timeout_s)
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise error_from_api(exc, provider=self.name, region=self.region, action=action) from None
        except urllib3.exceptions.HTTPError as exc:
            host = self._client().configuration.host
            raise Transient(f"{action}: cannot reach the Kubernetes API server at {host}: {exc}",
                            provider=self.name, code=type(exc).__name__, region=self.region) from None
        except ValidationError as exc:
            raise ProviderError(f"{action}: an object did not fit the client's model: {exc}", provider=self.name,
                                code="BadResponse", region=self.region, scope="provider") from None

    def _core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self._client())

    def _apps(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self._client())

    def _batch(self) -> k8s.BatchV1Api:
        return k8s.BatchV1Api(self._client())

    # -- inventory ---------------------------------------------------------------------------------

    def _node_selector_query(self) -> str:
        parts = [self.settings.gpu_label, *(f"{k}={v}" for k, v in sorted(self.settings.node_selector.items()))]
        return ",".join(parts)

    def _gpus_in_use(self) -> dict[str, int]:
        pods = self._call("list pods", self._core().list_pod_for_all_namespaces,
                          field_selector="status.phase!=Succeeded,status.phase!=Failed")
        used: dict[str, int] = defaultdict(int)
        for pod in pods.items:
            phase = pod.status.phase if pod.status else None
            node = pod.spec.node_name if pod.spec else None
            if not node or phase in ENDED_PHASES:
                continue
            used[node] += pod_gpus(pod, self.settings.gpu_resource)
        return used

    def _not_free(self, node: k8s.V1Node) -> tuple[str, ...]:
        reasons: list[str] = []
        if node.spec is not None and node.spec.unschedulable:
            reasons.append("cordoned")
        if not _ready(node):
            reasons.append("not Ready")
        for taint in (node.spec.taints if node.spec else None) or []:
            if taint.effect in NOT_FREE_EFFECTS and not any(t.tolerates(taint) for t in self.settings.tolerations):
                reasons.append(f"taint {taint.key}{'=' + taint.value if taint.value else ''}:{taint.effect} "
                               "not tolerated")
        return tuple(reasons)

    def _memory_gib(self, model: str, from_name: int | None, labels: Mapping[str, str]) -> float:
        if from_name is not None:
            return float(from_name)
        label = self.settings.gpu_memory_label
        if label and label in labels:
            mib = _quantity(labels[label])
            if mib > 0:
                return snap_memory(model, float(mib) / 1024.0)
        return snap_memory(model, None)

    def nodes(self) -> list[KubeNode]:
        """GPU nodes (by the product label and ``node_selector``) with their free GPUs now."""
        listed = self._call("list nodes", self._core().list_node, label_selector=self._node_selector_query())
        used = self._gpus_in_use()
        found: list[KubeNode] = []
        for node in listed.items:
            meta = node.metadata or k8s.V1ObjectMeta()
            name = meta.name or ""
            labels = meta.labels or {}
            product = labels.get(self.settings.gpu_label, "")
            model = self.settings.model_of(product) if product else None
            if model is None:
                log.warning("%s: node %s: GPU product %r is not a known model; add it to gpu_models", self.name, name,
                            product)
                continue
            allocatable = (node.status.allocatable if node.status else None) or {}
            total = int(_quantity(allocatable.get(self.settings.gpu_resource)))
            if total <= 0:
                continue
            not_free = self._not_free(node)
            found.append(KubeNode(
                owned=OwnedNode(
                    name=name,
                    gpu_model=model[0],
                    gpu_memory_gib=self._memory_gib(model[0], model[1], labels),
                    gpus_total=total,
                    gpus_free=max(0, total - used.get(name, 0)),
                    vcpus=int(_quantity(allocatable.get("cpu"))),
                    memory_gib=round(float(_quantity(allocatable.get("memory"))) / 2**30, 1),
                    schedulable=not not_free,
                ),
                product=product,
                hostname=labels.get("kubernetes.io/hostname", name),
                not_free=not_free,
            ))
        return found

    def inventory(self) -> KubernetesInventory:
        nodes = self.nodes()
        offers, pools, owned = slice_offers(self.name, self.settings, [n.owned for n in nodes],
                                            type_prefix=TYPE_PREFIX)
        return KubernetesInventory(offers=offers, pools=pools, owned=owned, nodes=tuple(nodes))

    def offers(self) -> list[Offer]:
        return self.inventory().offers

    def owned_capacity(self) -> list[OwnedCapacity]:
        """Owned GPUs per model and node shape, with how many are free now and their internal cost."""
        return self.inventory().owned

    # -- manifests ---------------------------------------------------------------------------------

    def _check_offer(self, spec: ResourceSpec) -> int:
        """The GPUs per node of the offer's shape; refuses offers this pool does not sell."""
        offer = spec.offer
        if offer.provider != self.name:
            raise PlacementError(f"offer {offer.id!r} belongs to provider {offer.provider!r}, not {self.name!r}")
        if offer.region != self.region:
            raise PlacementError(f"offer {offer.id!r} is in region {offer.region!r}, but provider {self.name!r} "
                                 f"is the site {self.region!r}")
        match = _INSTANCE_TYPE.match(offer.instance_type)
        if offer.capacity_type != "owned" or match is None or int(match["k"]) != offer.gpu_count:
            raise PlacementError(f"offer {offer.id!r} is not a slice of provider {self.name!r} (expected owned "
                                 f"capacity of type {TYPE_PREFIX}-<model>-<n>g-slice-<k>g)")
        kind = workload_kind(spec)
        if kind == "service" and spec.nodes > 1:
            raise ProviderError(f"{spec.workload}[{spec.replica}]: a service replica spanning {spec.nodes} nodes "
                                "cannot be a Deployment; give the workload kind batch or at most one node",
                                provider=self.name, code="MultiNodeService", region=self.region, scope="provider")
        return int(match["per_node"])

    def _shape_nodes(self, spec: ResourceSpec, per_node: int, nodes: Iterable[KubeNode]) -> list[KubeNode]:
        offer = spec.offer
        return [n for n in nodes if n.owned.gpu_model == offer.gpu_model and n.owned.gpus_total == per_node
                and n.owned.gpu_memory_gib == offer.gpu_memory_gib]

    def _check_capacity(self, spec: ResourceSpec, per_node: int, shape: list[KubeNode]) -> None:
        offer = spec.offer
        what = f"{per_node}x {offer.gpu_model} {offer.gpu_memory_gib:g} GiB"
        if not shape:
            raise OfferUnavailable(f"no nodes with {what} in the cluster now", provider=self.name,
                                   code="NoSuchNodes", region=self.region, scope="region")
        if not self.settings.check_capacity:
            return
        k = offer.gpu_count
        slots = sum(n.owned.gpus_free // k for n in shape if n.owned.schedulable)
        if slots < spec.nodes:
            free = sum(n.owned.gpus_free for n in shape if n.owned.schedulable)
            ready = sum(1 for n in shape if n.owned.schedulable)
            raise InsufficientCapacity(
                f"{free} GPUs free on {ready} schedulable node(s) with {what}; {spec.workload}[{spec.replica}] "
                f"needs {spec.nodes} pod(s) of {k} GPU(s) each", provider=self.name, code="InsufficientGPUs",
                region=self.region, scope="region")

    def _placement_terms(self, shape: list[KubeNode], all_nodes: Iterable[KubeNode]
                         ) -> tuple[dict[str, str], k8s.V1Affinity | None]:
        """Node selector and, when needed, a node affinity that keep the pods on the offer's node shape."""
        products = sorted({n.product for n in shape})
        selector = dict(self.settings.node_selector)
        requirements: list[k8s.V1NodeSelectorRequirement] = []
        if len(products) == 1:
            selector[self.settings.gpu_label] = products[0]
        else:
            requirements.append(k8s.V1NodeSelectorRequirement(key=self.settings.gpu_label, operator="In",
                                                              values=products))
        shape_names = {n.owned.name for n in shape}
        others = [n for n in all_nodes if n.product in products and n.owned.name not in shape_names]
        if others:
            requirements.append(k8s.V1NodeSelectorRequirement(
                key="kubernetes.io/hostname", operator="In", values=sorted({n.hostname for n in shape})))
        if not requirements:
            return selector, None
        affinity = k8s.V1Affinity(node_affinity=k8s.V1NodeAffinity(
            required_during_scheduling_ignored_during_execution=k8s.V1NodeSelector(
                node_selector_terms=[k8s.V1NodeSelectorTerm(match_expressions=requirements)])))
        return selector, affinity

    def _labels(self, spec: ResourceSpec) -> dict[str, str]:
        labels = {k: v for k, v in spec.labels.items()
                  if k not in SPEC_LABELS and is_label_key(k) and is_label_value(v)}
        labels.update(self.settings.labels)
        labels[MANAGED_BY] = MANAGED_BY_VALUE
        labels.update(ownership_labels(spec))
        return labels

    def _annotations(self, spec: ResourceSpec) -> dict[str, str]:
        return {k: v for k, v in spec.tags().items() if is_label_key(k)}

    def _pod_template(self, spec: ResourceSpec, kind: WorkloadKind, shape: list[KubeNode],
                      all_nodes: Iterable[KubeNode]) -> k8s.V1PodTemplateSpec:
        s, offer = self.settings, spec.offer
        gpus = str(offer.gpu_count)
        cpu_m = max(100, int(offer.vcpus * 1000 * s.request_fraction))
        memory_mi = max(128, int(offer.memory_gib * 1024 * s.request_fraction))
        command = shlex.split(spec.labels[COMMAND_LABEL]) if spec.labels.get(COMMAND_LABEL) else list(s.command)
        env = [
            k8s.V1EnvVar(name="PLACEMENT_WORKLOAD", value=spec.workload),
            k8s.V1EnvVar(name="PLACEMENT_REPLICA", value=str(spec.replica)),
            k8s.V1EnvVar(name="PLACEMENT_KEY", value=spec.key),
            k8s.V1EnvVar(name="PLACEMENT_NODES", value=str(spec.nodes)),
        ]
        container = k8s.V1Container(
            name=CONTAINER_NAME,
            image=spec.labels.get(IMAGE_LABEL) or s.image,
            command=command or None,
            env=env,
            resources=k8s.V1ResourceRequirements(
                limits={s.gpu_resource: gpus},
                requests={s.gpu_resource: gpus, "cpu": f"{cpu_m}m", "memory": f"{memory_mi}Mi"},
            ),
        )
        selector, affinity = self._placement_terms(shape, all_nodes)
        pod_spec = k8s.V1PodSpec(
            containers=[container],
            restart_policy="Always" if kind == "service" else "Never",
            node_selector=selector,
            affinity=affinity,
            tolerations=[t.to_model() for t in s.tolerations] or None,
            priority_class_name=s.priority_class_name,
            service_account_name=s.service_account_name,
        )
        return k8s.V1PodTemplateSpec(
            metadata=k8s.V1ObjectMeta(labels=self._labels(spec), annotations=self._annotations(spec)),
            spec=pod_spec,
        )

    def manifest(self, spec: ResourceSpec, shape: list[KubeNode], all_nodes: Iterable[KubeNode]
                 ) -> k8s.V1Deployment | k8s.V1Job:
        """The Deployment (service) or Job (batch) for one replica on nodes of ``shape``."""
        kind = workload_kind(spec)
        meta = k8s.V1ObjectMeta(name=object_name(spec.key), namespace=self.settings.namespace,
                                labels=self._labels(spec), annotations=self._annotations(spec))
        template = self._pod_template(spec, kind, shape, all_nodes)
        if kind == "service":
            key_label = ownership_labels(spec)
            return k8s.V1Deployment(
                api_version="apps/v1", kind="Deployment", metadata=meta,
                spec=k8s.V1DeploymentSpec(
                    replicas=1,
                    selector=k8s.V1LabelSelector(match_labels={TAG_MANAGED: key_label[TAG_MANAGED],
                                                               TAG_KEY: key_label[TAG_KEY]}),
                    template=template,
                ),
            )
        multi = spec.nodes > 1
        return k8s.V1Job(
            api_version="batch/v1", kind="Job", metadata=meta,
            spec=k8s.V1JobSpec(
                template=template,
                backoff_limit=self.settings.job_backoff_limit,
                parallelism=spec.nodes if multi else None,
                completions=spec.nodes if multi else None,
                completion_mode="Indexed" if multi else None,
            ),
        )

    # -- actuation ---------------------------------------------------------------------------------

    def _read(self, kind: ObjectKind, namespace: str, name: str) -> k8s.V1Deployment | k8s.V1Job | None:
        try:
            if kind == "deployment":
                return self._call(f"read Deployment {namespace}/{name}", self._apps().read_namespaced_deployment,
                                  name, namespace)
            return self._call(f"read Job {namespace}/{name}", self._batch().read_namespaced_job, name, namespace)
        except NotFound:
            return None

    def _adopt(self, spec: ResourceSpec, kind: ObjectKind, obj: k8s.V1Deployment | k8s.V1Job) -> ManagedResource:
        meta = obj.metadata or k8s.V1ObjectMeta()
        where = f"{'Deployment' if kind == 'deployment' else 'Job'} {meta.namespace}/{meta.name}"
        found = object_tags(obj).get(TAG_KEY)
        if found != spec.key:
            raise ProviderError(f"{where} exists but belongs to key {found!r}, not {spec.key!r}; rename or delete it",
                                provider=self.name, code="NameConflict", region=self.region, scope="region")
        if meta.deletion_timestamp is not None:
            raise Transient(f"{where} of {spec.workload}[{spec.replica}] is still being deleted; retry when it is "
                            "gone", provider=self.name, code="Terminating", region=self.region)
        log.info("%s: adopting %s for key %s", self.name, where, spec.key)
        return self._managed(kind, obj)

    def create(self, spec: ResourceSpec) -> ManagedResource:
        per_node = self._check_offer(spec)
        kind: ObjectKind = "deployment" if workload_kind(spec) == "service" else "job"
        namespace, name = self.settings.namespace, object_name(spec.key)
        existing = self._read(kind, namespace, name)
        if existing is not None:
            return self._adopt(spec, kind, existing)
        nodes = self.nodes()
        shape = self._shape_nodes(spec, per_node, nodes)
        self._check_capacity(spec, per_node, shape)
        body = self.manifest(spec, shape, nodes)
        what = f"create {'Deployment' if kind == 'deployment' else 'Job'} {namespace}/{name}"
        try:
            if isinstance(body, k8s.V1Deployment):
                created: k8s.V1Deployment | k8s.V1Job = self._call(
                    what, self._apps().create_namespaced_deployment, namespace, body, field_manager=FIELD_MANAGER)
            else:
                created = self._call(what, self._batch().create_namespaced_job, namespace, body,
                                     field_manager=FIELD_MANAGER)
        except ProviderError as exc:
            if not exc.code.startswith("409"):
                raise
            again = self._read(kind, namespace, name)
            if again is None:
                raise Transient(f"{what}: the name is taken but the object cannot be read; retry",
                                provider=self.name, code=exc.code, region=self.region) from None
            return self._adopt(spec, kind, again)
        return self._managed(kind, created)

    def _targets(self, resource: ManagedResource) -> list[tuple[ObjectKind, str, str]]:
        targets = [t for t in (parse_resource_id(i) for i in resource.resource_ids) if t is not None]
        if resource.key:
            name = object_name(resource.key)
            for kind in OBJECT_KINDS:
                target = (kind, self.settings.namespace, name)
                if target in targets:
                    continue
                obj = self._read(*target)
                if obj is not None and object_tags(obj).get(TAG_KEY) == resource.key:
                    targets.append(target)
        return sorted(set(targets))

    def delete(self, resource: ManagedResource) -> None:
        for kind, namespace, name in self._targets(resource):
            try:
                if kind == "deployment":
                    self._call(f"delete Deployment {namespace}/{name}", self._apps().delete_namespaced_deployment,
                               name, namespace, propagation_policy="Background")
                else:
                    self._call(f"delete Job {namespace}/{name}", self._batch().delete_namespaced_job,
                               name, namespace, propagation_policy="Background")
            except NotFound:
                continue

    def list_managed(self) -> list[ManagedResource]:
        namespace, selector = self.settings.namespace, f"{TAG_MANAGED}=true"
        deployments = self._call(f"list Deployments in {namespace}", self._apps().list_namespaced_deployment,
                                 namespace, label_selector=selector)
        jobs = self._call(f"list Jobs in {namespace}", self._batch().list_namespaced_job, namespace,
                          label_selector=selector)
        groups: dict[str, list[ManagedResource]] = defaultdict(list)
        objects: list[tuple[ObjectKind, k8s.V1Deployment | k8s.V1Job]] = [
            *(("deployment", d) for d in deployments.items), *(("job", j) for j in jobs.items)]
        for kind, obj in objects:
            if obj.metadata is not None and obj.metadata.deletion_timestamp is not None:
                continue
            found = self._managed(kind, obj)
            if found.key:
                groups[found.key].append(found)
        result: list[ManagedResource] = []
        for _, members in sorted(groups.items()):
            first = members[0]
            states = sorted({s for m in members for s in m.state.split(",")})
            result.append(ManagedResource(
                provider=self.name, resource_ids=tuple(sorted(i for m in members for i in m.resource_ids)),
                region=first.region, zone=None, key=first.key, workload=first.workload, replica=first.replica,
                offer_id=first.offer_id, plan_digest=first.plan_digest, state=",".join(states),
            ))
        return result

    def _managed(self, kind: ObjectKind, obj: k8s.V1Deployment | k8s.V1Job) -> ManagedResource:
        meta = obj.metadata or k8s.V1ObjectMeta()
        state = deployment_state(obj) if isinstance(obj, k8s.V1Deployment) else job_state(obj)
        return ManagedResource.from_tags(
            provider=self.name,
            resource_ids=(resource_id(kind, meta.namespace or self.settings.namespace, meta.name or ""),),
            region=self.region, zone=None, state=state, tags=object_tags(obj),
        )


def object_tags(obj: k8s.V1Deployment | k8s.V1Job) -> dict[str, str]:
    """The ownership tags of an object: its annotations (full values), else its labels."""
    meta = obj.metadata or k8s.V1ObjectMeta()
    annotations, labels = meta.annotations or {}, meta.labels or {}
    tags: dict[str, str] = {}
    for key in OWNERSHIP_TAG_KEYS:
        value = annotations.get(key, labels.get(key))
        if value is not None:
            tags[key] = value
    return tags


def _condition(conditions: Iterable[Any] | None, kind: str) -> Any | None:
    for cond in conditions or []:
        if cond.type == kind and cond.status == "True":
            return cond
    return None


def deployment_state(obj: k8s.V1Deployment) -> str:
    """Running (a replica available), Failed (pods cannot be created, or no progress) or Pending."""
    status = obj.status
    if status is None:
        return "Pending"
    if (status.available_replicas or 0) >= 1:
        return "Running"
    for cond in status.conditions or []:
        if cond.type == "Progressing" and cond.status == "False" and cond.reason == "ProgressDeadlineExceeded":
            return "Failed"
        if cond.type == "ReplicaFailure" and cond.status == "True":  # e.g. pods refused by a GPU quota
            return "Failed"
    return "Pending"


def job_state(obj: k8s.V1Job) -> str:
    """Succeeded, Failed, Suspended, Running (a pod ready) or Pending."""
    status, spec = obj.status, obj.spec
    conditions = status.conditions if status else None
    if _condition(conditions, "Complete") is not None:
        return "Succeeded"
    if _condition(conditions, "Failed") is not None:
        return "Failed"
    if spec is not None and spec.suspend:
        return "Suspended"
    if status is not None and ((status.ready or 0) >= 1 or ((status.active or 0) >= 1 and status.ready is None)):
        return "Running"
    return "Pending"
