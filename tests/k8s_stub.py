"""A local stand-in for a Kubernetes API server, on 127.0.0.1, for the paths the adapter uses.

It answers with the API's own shapes: lists with ``kind``/``apiVersion``/``metadata.resourceVersion``,
objects with ``uid``, ``resourceVersion``, ``generation`` and ``creationTimestamp``, and failures as
``Status`` objects (``reason`` NotFound, AlreadyExists, Invalid, Forbidden, Unauthorized,
InternalError, with ``details``). Paths:

- ``GET /api/v1/nodes`` (``labelSelector``), ``GET /api/v1/pods`` (``fieldSelector`` on
  ``status.phase`` and ``spec.nodeName``, ``labelSelector``);
- ``GET``/``POST /apis/apps/v1/namespaces/{ns}/deployments`` and ``GET``/``DELETE .../{name}``;
- the same for ``/apis/batch/v1/namespaces/{ns}/jobs``.

There is no scheduler, kubelet or controller: nodes and pods are seeded by the tests (:meth:`add_node`,
:meth:`add_pod`), objects keep the status a test gives them (:meth:`set_status`), and deleting an
object does not delete pods. Created objects get some of the defaults the real API server fills in
(a Job's selector and controller labels, a Deployment's strategy), enough for the answers to be real
shapes, not all of them.

Every body POSTed is validated as the API server would before storing it, and rejected with 422
Invalid (recorded in ``violations``) otherwise:

- it must deserialize into the client's own model (``V1Deployment``/``V1Job``, pydantic models that
  forbid unknown fields) and serialize back to the same JSON, so that a snake_case or unknown field,
  or a wrong type, fails;
- required content: a DNS-1123 name (at most 63 for Jobs), valid label and annotation keys and
  values, at least one container with a name and an image, parseable resource quantities, extended
  resources (``nvidia.com/gpu``) in limits and, when requested, with request = limit, valid
  tolerations, a Deployment selector that matches its template's labels and restartPolicy Always, a
  Job restartPolicy of Never or OnFailure and ``completions`` set for an Indexed Job.

Failures can be injected per method and path (:meth:`fail`), and object-count quotas
(``count/deployments.apps``, ``count/jobs.batch``) answer a create beyond them with 403 "exceeded quota",
as the quota admission plugin does.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pydantic
from kubernetes import client as k8s
from kubernetes.utils.quantity import parse_quantity

TOKEN = "stub-bearer-token-0123456789"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_OBJECTS = re.compile(r"^/apis/(?P<group>apps|batch)/v1/namespaces/(?P<ns>[^/]+)/(?P<res>deployments|jobs)"
                      r"(?:/(?P<name>[^/]+))?$")
_KINDS = {"deployments": ("apps", "apps/v1", "Deployment", k8s.V1Deployment),
          "jobs": ("batch", "batch/v1", "Job", k8s.V1Job)}
_QUOTA_KEYS = {"deployments": "count/deployments.apps", "jobs": "count/jobs.batch"}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``Status`` object as the API server sends for failures."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def label_key_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_LABEL_NAME.match(name))


def label_value_ok(value: str) -> bool:
    return value == "" or (len(value) <= 63 and bool(_LABEL_NAME.match(value)))


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k`` (exists), ``!k``."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def field_selector_matches(selector: str, obj: dict[str, Any]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            path, value = term.split("!=", 1)
            if _field(obj, path) == value:
                return False
        else:
            path, value = term.replace("==", "=").split("=", 1)
            if _field(obj, path) != value:
                return False
    return True


@dataclass
class Failure:
    method: str
    path: str  # a substring of the request path
    code: int
    reason: str
    message: str
    times: int = 1


class K8sStub:
    """The server and its state. ``start()`` it, point a kubeconfig at ``url``, ``stop()`` it."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {"deployments": {}, "jobs": {}}
        self.requests: list[tuple[str, str]] = []
        self.posted: list[dict[str, Any]] = []
        self.deletes: list[tuple[str, str, str | None]] = []  # (resource, name, propagationPolicy)
        self.violations: list[str] = []
        self.failures: list[Failure] = []
        self.object_quota: dict[str, int] = {}  # e.g. {"count/jobs.batch": 1}
        self._version = itertools.count(1000)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> K8sStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                code, body = stub.handle(method, self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- seeding -----------------------------------------------------------------------------------

    def _meta(self, name: str, namespace: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": str(next(self._version)),
                                "creationTimestamp": _now()}
        if namespace is not None:
            meta["namespace"] = namespace
        if labels:
            meta["labels"] = dict(labels)
        return meta

    def add_node(self, name: str, product: str | None, gpus: int, *, cpu: str = "96", memory: str = "1056Gi",
                 gpu_memory_mib: int | None = None, unschedulable: bool = False, ready: bool = True,
                 taints: list[dict[str, str]] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
        node_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **(labels or {})}
        if product is not None:
            node_labels["nvidia.com/gpu.product"] = product
            node_labels["nvidia.com/gpu.count"] = str(gpus)
        if gpu_memory_mib is not None:
            node_labels["nvidia.com/gpu.memory"] = str(gpu_memory_mib)
        resources = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "1800Gi"}
        if gpus:
            resources["nvidia.com/gpu"] = str(gpus)
        spec: dict[str, Any] = {"podCIDR": "10.244.0.0/24"}
        if unschedulable:
            spec["unschedulable"] = True
        if taints:
            spec["taints"] = taints
        now = _now()
        node = {
            "kind": "Node", "apiVersion": "v1", "metadata": self._meta(name, labels=node_labels), "spec": spec,
            "status": {
                "capacity": dict(resources), "allocatable": dict(resources),
                "conditions": [{"type": "Ready", "status": "True" if ready else "Unknown",
                                "reason": "KubeletReady" if ready else "NodeStatusUnknown",
                                "message": "kubelet is posting ready status" if ready else "Kubelet stopped posting node status.",
                                "lastHeartbeatTime": now, "lastTransitionTime": now}],
                "nodeInfo": {"kubeletVersion": "v1.33.1", "containerRuntimeVersion": "containerd://1.7.27",
                             "architecture": "amd64", "operatingSystem": "linux", "osImage": "Ubuntu 22.04.5 LTS",
                             "kernelVersion": "5.15.0-140-generic", "kubeProxyVersion": "", "machineID": name,
                             "systemUUID": name, "bootID": name},
            },
        }
        self.nodes[name] = node
        return node

    def add_pod(self, name: str, node: str | None, gpus: int, *, namespace: str = "team-a", phase: str = "Running",
                limits_only: bool = False, init_gpus: int = 0) -> dict[str, Any]:
        def container(cname: str, count: int) -> dict[str, Any]:
            res: dict[str, Any] = {}
            if count:
                res["limits"] = {"nvidia.com/gpu": str(count)}
                if not limits_only:
                    res["requests"] = {"nvidia.com/gpu": str(count), "cpu": "4"}
            return {"name": cname, "image": "busybox", "resources": res}

        spec: dict[str, Any] = {"containers": [container("main", gpus)], "restartPolicy": "Always"}
        if node:
            spec["nodeName"] = node
        if init_gpus:
            spec["initContainers"] = [container("init", init_gpus)]
        pod = {"kind": "Pod", "apiVersion": "v1", "metadata": self._meta(name, namespace), "spec": spec,
               "status": {"phase": phase}}
        self.pods[(namespace, name)] = pod
        return pod

    def set_status(self, resource: str, namespace: str, name: str, value: dict[str, Any]) -> None:
        self.objects[resource][(namespace, name)]["status"] = value

    def fail(self, method: str, path: str, code: int, reason: str, message: str, times: int = 1) -> None:
        """Answer the next ``times`` requests of ``method`` whose path contains ``path`` with a failure."""
        self.failures.append(Failure(method, path, code, reason, message, times))

    # -- requests ----------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        """Answer one request; ``headers`` have lowercase names."""
        parts = urlsplit(target)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append((method, target))
            if headers.get("authorization") != f"Bearer {TOKEN}":
                return 401, status(401, "Unauthorized", "Unauthorized")
            for failure in self.failures:
                if failure.method == method and failure.path in path and failure.times > 0:
                    failure.times -= 1
                    return failure.code, status(failure.code, failure.reason, failure.message)
            if method == "GET" and path == "/api/v1/nodes":
                items = [n for n in self.nodes.values()
                         if selector_matches(query.get("labelSelector", ""), n["metadata"].get("labels", {}))]
                return 200, self._list("NodeList", "v1", items)
            if method == "GET" and path == "/api/v1/pods":
                items = [p for p in self.pods.values()
                         if selector_matches(query.get("labelSelector", ""), p["metadata"].get("labels", {}))
                         and field_selector_matches(query.get("fieldSelector", ""), p)]
                return 200, self._list("PodList", "v1", items)
            match = _OBJECTS.match(path)
            if match is None or _KINDS[match["res"]][0] != match["group"]:
                return 404, status(404, "NotFound", "the server could not find the requested resource",
                                   {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})
            res, ns, name = match["res"], match["ns"], match["name"]
            if name is None and method == "GET":
                items = [o for (ons, _), o in sorted(self.objects[res].items())
                         if ons == ns and selector_matches(query.get("labelSelector", ""), o["metadata"].get("labels", {}))]
                return 200, self._list(f"{_KINDS[res][2]}List", _KINDS[res][1], items)
            if name is None and method == "POST":
                return self._create(res, ns, headers, raw)
            if name is not None and method == "GET":
                obj = self.objects[res].get((ns, name))
                return (200, obj) if obj is not None else self._not_found(res, name)
            if name is not None and method == "DELETE":
                return self._delete(res, ns, name, query)
            return 405, status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _list(self, kind: str, api_version: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"kind": kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": str(next(self._version))}, "items": items}

    def _not_found(self, res: str, name: str) -> tuple[int, Any]:
        group = _KINDS[res][0]
        return 404, status(404, "NotFound", f'{res}.{group} "{name}" not found',
                           {"name": name, "group": group, "kind": res})

    def _delete(self, res: str, ns: str, name: str, query: dict[str, str]) -> tuple[int, Any]:
        obj = self.objects[res].get((ns, name))
        policy = query.get("propagationPolicy")
        self.deletes.append((res, name, policy))
        if obj is None:
            return self._not_found(res, name)
        if policy not in (None, "Orphan", "Background", "Foreground"):
            return 400, status(400, "BadRequest", f"invalid propagationPolicy {policy!r}")
        if policy == "Foreground":
            obj["metadata"]["deletionTimestamp"] = _now()
            obj["metadata"]["finalizers"] = ["foregroundDeletion"]
            return 200, obj
        del self.objects[res][(ns, name)]
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                     "details": {"name": name, "group": _KINDS[res][0], "kind": res, "uid": obj["metadata"]["uid"]}}

    # -- create and validation ---------------------------------------------------------------------

    def _invalid(self, res: str, name: str, problems: list[tuple[str, str]]) -> tuple[int, Any]:
        group, _, kind, _ = _KINDS[res]
        for field, message in problems:
            self.violations.append(f"{kind} {name}: {field}: {message}")
        text = "; ".join(f"{f}: {m}" for f, m in problems)
        return 422, status(422, "Invalid", f'{kind}.{group} "{name}" is invalid: {text}', {
            "name": name, "group": group, "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in problems]})

    def _create(self, res: str, ns: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        group = _KINDS[res][0]
        # An empty Content-Type means JSON, the API server's first supported media type.
        if not (headers.get("content-type") or "application/json").startswith("application/json"):
            self.violations.append(f"POST {res}: Content-Type {headers.get('content-type')!r}")
            return 415, status(415, "UnsupportedMediaType", "the body of the request was in an unknown format")
        try:
            body = json.loads(raw)
        except ValueError:
            self.violations.append(f"POST {res}: body is not JSON")
            return 400, status(400, "BadRequest", "the body of the request is not JSON")
        self.posted.append(body)
        name = str((body.get("metadata") or {}).get("name") or "")
        problems = validate_object(body, res, ns)
        if problems:
            return self._invalid(res, name, problems)
        if (ns, name) in self.objects[res]:
            return 409, status(409, "AlreadyExists", f'{res}.{group} "{name}" already exists',
                               {"name": name, "group": group, "kind": res})
        quota_key = _QUOTA_KEYS[res]
        if quota_key in self.object_quota:
            used = sum(1 for (ons, _) in self.objects[res] if ons == ns)
            limit = self.object_quota[quota_key]
            if used + 1 > limit:
                return 403, status(403, "Forbidden", f'{res}.{group} "{name}" is forbidden: exceeded quota: '
                                   f"object-counts, requested: {quota_key}=1, used: {quota_key}={used}, "
                                   f"limited: {quota_key}={limit}",
                                   {"name": name, "group": group, "kind": res})
        stored = json.loads(json.dumps(body))
        meta = stored["metadata"]
        meta.update({k: v for k, v in self._meta(name, ns).items() if k not in ("labels",)})
        meta["generation"] = 1
        spec = stored["spec"]
        if res == "jobs":
            uid = meta["uid"]
            controller = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                          "controller-uid": uid, "job-name": name}
            spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
            spec["template"].setdefault("metadata", {}).setdefault("labels", {}).update(controller)
            spec.setdefault("parallelism", 1)
            spec.setdefault("completions", 1)
            spec.setdefault("completionMode", "NonIndexed")
            spec.setdefault("suspend", False)
            spec.setdefault("backoffLimit", 6)
            stored["status"] = {}
        else:
            spec.setdefault("strategy", {"type": "RollingUpdate",
                                         "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            stored["status"] = {}
        self.objects[res][(ns, name)] = stored
        return 201, stored


def _model_problems(body: dict[str, Any], model: type[pydantic.BaseModel]) -> list[tuple[str, str]]:
    try:
        parsed = model.model_validate(body)
    except pydantic.ValidationError as exc:
        return [(".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors(include_url=False)]
    again = k8s.ApiClient().sanitize_for_serialization(parsed)
    if again != body:
        return [("<body>", "does not serialize back to the same JSON through the client's model "
                           "(a field in snake_case, or a value of the wrong form)")]
    return []


def _resources_problems(where: str, resources: dict[str, Any]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    for kind, values in (("limits", limits), ("requests", requests)):
        for name, value in values.items():
            try:
                parse_quantity(value)
            except ValueError:
                problems.append((f"{where}.resources.{kind}[{name}]", f"quantity {value!r} is not valid"))
    for name in set(limits) | set(requests):
        extended = "/" in name and not name.startswith(("kubernetes.io/", "requests."))
        if extended and name not in limits:
            problems.append((f"{where}.resources.limits", f"must specify {name} (an extended resource needs a limit)"))
        elif extended and name in requests and parse_quantity(requests[name]) != parse_quantity(limits[name]):
            problems.append((f"{where}.resources.requests[{name}]", "must be equal to the limit"))
        elif name in requests and name in limits and parse_quantity(requests[name]) > parse_quantity(limits[name]):
            problems.append((f"{where}.resources.requests[{name}]", "must be less than or equal to the limit"))
    return problems


def _meta_problems(where: str, meta: dict[str, Any]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for key, value in (meta.get("labels") or {}).items():
        if not label_key_ok(key):
            problems.append((f"{where}.labels", f"invalid label key {key!r}"))
        if not label_value_ok(value):
            problems.append((f"{where}.labels", f"invalid label value {value!r} for {key}"))
    for key in meta.get("annotations") or {}:
        if not label_key_ok(key):
            problems.append((f"{where}.annotations", f"invalid annotation key {key!r}"))
    return problems


def validate_object(body: dict[str, Any], res: str, ns: str) -> list[tuple[str, str]]:
    """What the API server would reject in a Deployment or Job body; empty when it is valid."""
    _, api_version, kind, model = _KINDS[res]
    problems = _model_problems(body, model)
    if problems:
        return problems
    if body.get("apiVersion") != api_version or body.get("kind") != kind:
        problems.append(("apiVersion/kind", f"expected {api_version} {kind}, got {body.get('apiVersion')} "
                                            f"{body.get('kind')}"))
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    max_name = 63 if res == "jobs" else 253
    if not name or len(name) > max_name or not (_DNS_LABEL if res == "jobs" else _DNS_SUBDOMAIN).match(name):
        problems.append(("metadata.name", f"{name!r} is not a valid name (DNS-1123, at most {max_name})"))
    if meta.get("namespace") not in (None, ns):
        problems.append(("metadata.namespace", "does not match the namespace of the request"))
    problems += _meta_problems("metadata", meta)
    spec = body.get("spec") or {}
    template = spec.get("template") or {}
    tmeta, pod = template.get("metadata") or {}, template.get("spec") or {}
    problems += _meta_problems("spec.template.metadata", tmeta)
    containers = pod.get("containers") or []
    if not containers:
        problems.append(("spec.template.spec.containers", "Required value"))
    for i, c in enumerate(containers):
        where = f"spec.template.spec.containers[{i}]"
        if not _DNS_LABEL.match(str(c.get("name") or "")):
            problems.append((f"{where}.name", "Required value: a DNS-1123 label"))
        if not c.get("image"):
            problems.append((f"{where}.image", "Required value"))
        problems += _resources_problems(where, c.get("resources") or {})
    for key, value in (pod.get("nodeSelector") or {}).items():
        if not label_key_ok(key) or not label_value_ok(value):
            problems.append(("spec.template.spec.nodeSelector", f"invalid {key}={value!r}"))
    for i, t in enumerate(pod.get("tolerations") or []):
        where = f"spec.template.spec.tolerations[{i}]"
        if t.get("operator", "Equal") not in ("Equal", "Exists"):
            problems.append((f"{where}.operator", f"Unsupported value: {t.get('operator')!r}"))
        if t.get("operator") == "Exists" and t.get("value"):
            problems.append((f"{where}.operator", "value must be empty when `operator` is 'Exists'"))
        if not t.get("key") and t.get("operator", "Equal") != "Exists":
            problems.append((f"{where}.operator", "operator must be Exists when `key` is empty"))
        if t.get("effect") not in (None, "", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            problems.append((f"{where}.effect", f"Unsupported value: {t.get('effect')!r}"))
    restart = pod.get("restartPolicy")
    if res == "deployments":
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        labels = tmeta.get("labels") or {}
        if not selector:
            problems.append(("spec.selector", "Required value: empty selector is invalid for deployment"))
        elif any(labels.get(k) != v for k, v in selector.items()):
            problems.append(("spec.template.metadata.labels", "`selector` does not match template `labels`"))
        if restart not in (None, "Always"):
            problems.append(("spec.template.spec.restartPolicy", f"Unsupported value: {restart!r}: supported "
                                                                 "values: \"Always\""))
        if (spec.get("replicas") or 0) < 0:
            problems.append(("spec.replicas", "must be greater than or equal to 0"))
    else:
        if restart not in ("Never", "OnFailure"):
            problems.append(("spec.template.spec.restartPolicy", f"Unsupported value: {restart!r}: supported "
                                                                 "values: \"OnFailure\", \"Never\""))
        if spec.get("completionMode") == "Indexed" and spec.get("completions") is None:
            problems.append(("spec.completions", "Required value: when completion mode is Indexed"))
        if spec.get("selector") is not None and not spec.get("manualSelector"):
            problems.append(("spec.selector", "`selector` will be auto-generated"))
    return problems
