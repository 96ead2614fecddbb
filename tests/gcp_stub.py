"""A local stand-in for the Compute Engine v1 REST API (and the Cloud Billing Catalog's SKU list).

There is no maintained emulator for Compute Engine, so this stub answers the REST paths the GCP adapter
uses, with responses shaped by the official discovery documents that ship with google-api-python-client
(``googleapiclient/discovery_cache/documents/compute.v1.json`` and ``cloudbilling.v1.json``).

Every request is checked against those documents, and every problem is recorded in
:attr:`GcpStub.violations` (tests fail when it is not empty):

* the HTTP method and path must be a method of the API (``compute.instances.insert``, ...), path
  parameters must match their declared patterns, query parameters must be declared for the method (or be
  system parameters such as ``$alt``) and have the declared type and enum values;
* a request body must be allowed by the method, and every key in it must exist in the request schema,
  recursively (``Instance`` -> ``scheduling`` -> ``Scheduling`` ...), with the declared JSON types, enum
  values and patterns; fields the document marks as required for the method (``name``, metadata ``key``)
  must be present;
* for ``instances.insert``, the fields Compute Engine needs besides (``machineType``, a boot disk with a
  source image, a network interface) and a ``requestId`` that is a non-zero UUID.

The stub's own responses are checked against the response schemas too (keys and JSON types; enum
values are not, since the real API reports values newer than the document's enums, such as the quota
metric ``NVIDIA_H100_GPUS``), so that the stub cannot drift from the document unnoticed.

Some Compute Engine rules are enforced with the error the real API gives: an unknown zone, machine type
or accelerator type (400/404), a duplicate instance name (409), GPUs without ``onHostMaintenance:
TERMINATE`` (400) and invalid labels (400). A repeated ``requestId`` returns the original operation and
creates nothing, as Compute Engine does. Failures can be injected: an insert operation that finishes
with an error (``ZONE_RESOURCE_POOL_EXHAUSTED``, ``QUOTA_EXCEEDED``), or an HTTP error for a method.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
import itertools
import json
import re
import socket
import threading
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

GOOGLE = "https://www.googleapis.com/compute/v1"
SYSTEM_PARAMETERS = frozenset({"$alt", "$fields", "$prettyPrint", "$callback"})
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")


def discovery_document(name: str) -> dict[str, Any]:
    """A discovery document bundled with google-api-python-client, e.g. ``compute.v1`` (a fresh copy)."""
    spec = importlib.util.find_spec("googleapiclient")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("google-api-python-client is not installed; it ships the discovery documents")
    folder = Path(next(iter(spec.submodule_search_locations))) / "discovery_cache" / "documents"
    return dict(json.loads((folder / f"{name}.json").read_text(encoding="utf-8")))


# --------------------------------------------------------------------------------------------------
# Checking requests and responses against a discovery document
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method_id: str
    http_method: str
    pattern: re.Pattern[str]
    method: Mapping[str, Any]
    api: DiscoveryApi


class DiscoveryApi:
    """The methods and schemas of one discovery document, and checks of values against them."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self.name = f"{doc['name']}.{doc['version']}"
        self.schemas: Mapping[str, Any] = doc["schemas"]
        self.system_parameters = frozenset(doc.get("parameters", {})) | SYSTEM_PARAMETERS
        self.routes: list[Route] = []
        self._collect(doc.get("resources", {}))

    def _collect(self, resources: Mapping[str, Any]) -> None:
        for resource in resources.values():
            for method in resource.get("methods", {}).values():
                template = "/" + self.doc.get("servicePath", "") + method.get("flatPath", method["path"])
                regex = re.sub(r"\\\{\\\+(\w+)\\\}", r"(?P<\1>.+)", re.escape(template))
                regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", regex)
                self.routes.append(Route(method["id"], method["httpMethod"], re.compile(f"^{regex}$"), method, self))
            self._collect(resource.get("resources", {}))

    def match(self, http_method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            found = route.pattern.match(path)
            if found and route.http_method == http_method:
                return route, {k: urllib.parse.unquote(v) for k, v in found.groupdict().items()}
        return None

    def check_parameters(self, route: Route, path_params: Mapping[str, str],
                         query: Mapping[str, list[str]]) -> list[str]:
        problems: list[str] = []
        declared: Mapping[str, Any] = route.method.get("parameters", {})
        for name, value in path_params.items():
            pattern = declared.get(name, {}).get("pattern")
            if pattern and not re.fullmatch(pattern, value):
                problems.append(f"{route.method_id}: path parameter {name}={value!r} does not match {pattern!r}")
        for name, values in query.items():
            if name in self.system_parameters:
                continue
            spec = declared.get(name)
            if spec is None or spec.get("location") != "query":
                problems.append(f"{route.method_id}: query parameter {name!r} is not declared for the method")
                continue
            for value in values:
                problems.extend(f"{route.method_id}: query parameter {name}: {p}"
                                for p in self._check_scalar(value, spec, from_query=True))
        for name, spec in declared.items():
            if spec.get("required") and spec.get("location") == "query" and name not in query:
                problems.append(f"{route.method_id}: required query parameter {name!r} is missing")
        return problems

    def check_body(self, route: Route, body: Any) -> list[str]:
        request = route.method.get("request")
        if request is None:
            return [] if body is None else [f"{route.method_id}: the method takes no request body"]
        if body is None:
            return [f"{route.method_id}: the request body ({request['$ref']}) is missing"]
        return self.check(body, request, request["$ref"], method_id=route.method_id, request=True)

    def check_response(self, route: Route, body: Any) -> list[str]:
        response = route.method.get("response")
        if response is None:
            return []
        return [f"stub response: {p}" for p in self.check(body, response, response["$ref"],
                                                           method_id=route.method_id, request=False)]

    def check(self, value: Any, schema: Mapping[str, Any], path: str, *, method_id: str,
              request: bool) -> list[str]:
        """Problems of ``value`` against a schema: unknown keys, wrong JSON types, and for requests also
        enum values, patterns and fields required for ``method_id``."""
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        kind = schema.get("type")
        if kind == "object" or "properties" in schema or "additionalProperties" in schema:
            if not isinstance(value, dict):
                return [f"{path}: expected an object, got {type(value).__name__}"]
            problems: list[str] = []
            properties: Mapping[str, Any] = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                if key in properties:
                    problems.extend(self.check(item, properties[key], f"{path}.{key}", method_id=method_id,
                                               request=request))
                elif extra is not None:
                    problems.extend(self.check(item, extra, f"{path}[{key!r}]", method_id=method_id,
                                               request=request))
                else:
                    problems.append(f"{path}: unknown field {key!r} (not in the {schema.get('id', 'schema')} "
                                    "schema)")
            if request:
                for key, spec in properties.items():
                    if method_id in spec.get("annotations", {}).get("required", []) and key not in value:
                        problems.append(f"{path}: field {key!r} is required for {method_id}")
            return problems
        if kind == "array":
            if not isinstance(value, list):
                return [f"{path}: expected an array, got {type(value).__name__}"]
            problems = []
            for i, item in enumerate(value):
                problems.extend(self.check(item, schema.get("items", {}), f"{path}[{i}]", method_id=method_id,
                                           request=request))
            return problems
        return [f"{path}: {p}" for p in self._check_scalar(value, schema, request=request)]

    @staticmethod
    def _check_scalar(value: Any, schema: Mapping[str, Any], *, from_query: bool = False,
                      request: bool = True) -> list[str]:
        kind, fmt = schema.get("type"), schema.get("format", "")
        if from_query:
            if kind == "integer" and not re.fullmatch(r"-?\d+", value):
                return [f"expected an integer, got {value!r}"]
            if kind == "boolean" and value not in ("true", "false"):
                return [f"expected true or false, got {value!r}"]
            if kind != "string":
                return []
        if kind == "string":
            if not isinstance(value, str):
                return [f"expected a string ({fmt or 'text'}), got {type(value).__name__}"]
            if fmt in ("int64", "uint64") and not re.fullmatch(r"-?\d+", value):
                return [f"expected an {fmt} string, got {value!r}"]
            if request and "enum" in schema and value not in schema["enum"]:
                return [f"{value!r} is not one of {schema['enum']}"]
            if request and schema.get("pattern") and not re.fullmatch(schema["pattern"], value):
                return [f"{value!r} does not match {schema['pattern']!r}"]
            return []
        if kind == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool)
            return [] if ok else [f"expected an integer, got {type(value).__name__}"]
        if kind == "number":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            return [] if ok else [f"expected a number, got {type(value).__name__}"]
        if kind == "boolean":
            return [] if isinstance(value, bool) else [f"expected a boolean, got {type(value).__name__}"]
        return []


@functools.cache
def discovery_api(name: str) -> DiscoveryApi:
    """The checker of a bundled discovery document, parsed once per test session (compute.v1 is 5 MB)."""
    return DiscoveryApi(discovery_document(name))


# --------------------------------------------------------------------------------------------------
# The stub's world
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One request the stub received."""

    method_id: str
    http_method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass(frozen=True)
class OperationFailure:
    """How an injected failed operation ends: its error code, message, details and HTTP status."""

    code: str
    message: str
    http_status: int = 503
    http_message: str = "SERVICE UNAVAILABLE"
    details: tuple[dict[str, Any], ...] = ()


@dataclass
class _Operation:
    zone: str
    body: dict[str, Any]
    polls_left: int
    finish: Any = None


@dataclass
class GcpStub:
    """State and behaviour of the stand-in API. Start it with :meth:`start` (or use it as a context)."""

    project: str = "test-project"
    page_size: int = 3
    operation_polls: int = 1
    zones: dict[str, dict[str, Any]] = field(default_factory=dict)
    machine_types: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    accelerator_types: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    quotas: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    project_quotas: list[dict[str, Any]] = field(default_factory=list)
    skus: list[dict[str, Any]] = field(default_factory=list)
    instances: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    operations: dict[tuple[str, str], _Operation] = field(default_factory=dict)
    request_ids: dict[str, tuple[str, str]] = field(default_factory=dict)
    insert_failures: list[OperationFailure | None] = field(default_factory=list)
    http_failures: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.apis = [discovery_api("compute.v1"), discovery_api("cloudbilling.v1")]
        self._lock = threading.RLock()
        self._ids = itertools.count(5_000_000_000_000_000_001)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stub is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> GcpStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in separate writes: without this, Nagle's algorithm and delayed
                # ACKs add tens of milliseconds to every keep-alive request.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, payload = stub.handle(self.command, self.path, raw)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _handle

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="gcp-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None

    def __enter__(self) -> GcpStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- building the world ------------------------------------------------------------------------

    def _id(self) -> str:
        return str(next(self._ids))

    def add_zone(self, name: str, status: str = "UP") -> None:
        region = name.rsplit("-", 1)[0]
        self.zones[name] = {
            "kind": "compute#zone", "id": self._id(), "creationTimestamp": "2014-05-30T18:35:16.575-07:00",
            "name": name, "description": name, "status": status,
            "region": f"{GOOGLE}/projects/{self.project}/regions/{region}",
            "selfLink": f"{GOOGLE}/projects/{self.project}/zones/{name}",
            "availableCpuPlatforms": ["Intel Cascade Lake", "AMD Milan", "Intel Sapphire Rapids"],
            "supportsPzs": False,
        }
        self.machine_types.setdefault(name, [])
        self.accelerator_types.setdefault(name, [])

    def add_machine_type(self, zone: str, name: str, cpus: int, memory_mb: int,
                         accelerators: tuple[tuple[str, int], ...] = ()) -> None:
        item: dict[str, Any] = {
            "kind": "compute#machineType", "id": self._id(), "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
            "name": name, "description": f"{cpus} vCPUs, {memory_mb / 1024:g} GB RAM", "guestCpus": cpus,
            "memoryMb": memory_mb, "imageSpaceGb": 0, "maximumPersistentDisks": 128,
            "maximumPersistentDisksSizeGb": "263168", "zone": zone, "isSharedCpu": False,
            "selfLink": f"{GOOGLE}/projects/{self.project}/zones/{zone}/machineTypes/{name}",
            "architecture": "X86_64",
        }
        if accelerators:
            item["accelerators"] = [{"guestAcceleratorType": t, "guestAcceleratorCount": n} for t, n in accelerators]
        self.machine_types[zone].append(item)

    def add_accelerator_type(self, zone: str, name: str, max_cards: int, description: str = "") -> None:
        self.accelerator_types[zone].append({
            "kind": "compute#acceleratorType", "id": self._id(), "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
            "name": name, "description": description or name, "maximumCardsPerInstance": max_cards,
            "zone": f"{GOOGLE}/projects/{self.project}/zones/{zone}",
            "selfLink": f"{GOOGLE}/projects/{self.project}/zones/{zone}/acceleratorTypes/{name}",
        })

    def set_quota(self, region: str, metric: str, limit: float, usage: float = 0.0) -> None:
        """A regional quota, or with region ``global`` a project-wide one (such as GPUS_ALL_REGIONS)."""
        current = self.project_quotas if region == "global" else self.quotas.setdefault(region, [])
        quotas = [q for q in current if q["metric"] != metric]
        quotas.append({"metric": metric, "limit": float(limit), "usage": float(usage)})
        if region == "global":
            self.project_quotas = quotas
        else:
            self.quotas[region] = quotas

    def fail_http(self, method_id: str, status: int, reason: str, message: str, times: int = 1) -> None:
        """The next ``times`` calls of a method answer with an HTTP error in Google's error format."""
        self.http_failures.setdefault(method_id, []).extend([(status, reason, message)] * times)

    def calls(self, method_id: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method_id == method_id]

    # -- request handling --------------------------------------------------------------------------

    def handle(self, http_method: str, target: str, raw: bytes) -> tuple[int, Any]:
        with self._lock:
            parts = urllib.parse.urlsplit(target)
            query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                self.violations.append(f"{http_method} {parts.path}: the body is not JSON")
                return _error(400, "parseError", "Parse Error")
            found = next((m for api in self.apis if (m := api.match(http_method, parts.path))), None)
            if found is None:
                self.violations.append(f"{http_method} {parts.path}: no method of the discovery documents")
                return _error(404, "notFound", f"no such method: {http_method} {parts.path}")
            route, params = found
            self.requests.append(Recorded(route.method_id, http_method, parts.path, query, body))
            problems = route.api.check_parameters(route, params, query) + route.api.check_body(route, body)
            if problems:
                self.violations.extend(problems)
                return _error(400, "invalid", "; ".join(problems))
            failures = self.http_failures.get(route.method_id)
            if failures:
                return _error(*failures.pop(0))
            handler = getattr(self, "_" + route.method_id.split(".", 1)[1].replace(".", "_"), None)
            if handler is None:
                self.violations.append(f"{route.method_id}: the stub does not implement this method")
                return _error(501, "notImplemented", f"{route.method_id} is not implemented by the stub")
            flat_query = {k: v[-1] for k, v in query.items()}
            status, payload = handler(params, flat_query, body)
            if status == 200:
                self.violations.extend(route.api.check_response(route, payload))
            return status, payload

    def _page(self, items: list[dict[str, Any]], query: Mapping[str, str], key: str = "items",
              token: str = "nextPageToken", size_param: str = "maxResults") -> dict[str, Any]:
        start = int(query.get("pageToken") or 0)
        size = int(query.get(size_param) or self.page_size)
        page: dict[str, Any] = {key: items[start : start + size]}
        if start + size < len(items):
            page[token] = str(start + size)
        return page

    def _zone_or_404(self, params: Mapping[str, str]) -> tuple[int, Any] | None:
        if params.get("project") != self.project:
            return _error(404, "notFound", f"The resource 'projects/{params.get('project')}' was not found")
        if "zone" in params and params["zone"] not in self.zones:
            return _error(404, "notFound", f"The resource 'projects/{self.project}/zones/{params['zone']}' "
                                           "was not found")
        return None

    # the project, zones, machine types, accelerator types, regions

    def _projects_get(self, params: Mapping[str, str], query: Mapping[str, str], body: Any) -> tuple[int, Any]:
        if (missing := self._zone_or_404(params)) is not None:
            return missing
        return 200, {
            "kind": "compute#project", "id": "1234567890123", "name": self.project,
            "creationTimestamp": "2024-01-01T00:00:00.000-08:00", "quotas": list(self.project_quotas),
            "selfLink": f"{GOOGLE}/projects/{self.project}", "xpnProjectStatus": "UNSPECIFIED_XPN_PROJECT_STATUS",
            "defaultServiceAccount": "123-compute@developer.gserviceaccount.com", "defaultNetworkTier": "PREMIUM",
        }

    def _zones_list(self, params: Mapping[str, str], query: Mapping[str, str], body: Any) -> tuple[int, Any]:
        if (missing := self._zone_or_404(params)) is not None:
            return missing
        page = self._page([self.zones[z] for z in sorted(self.zones)], query)
        return 200, {"kind": "compute#zoneList", "id": f"projects/{self.project}/zones",
                     "selfLink": f"{GOOGLE}/projects/{self.project}/zones", **page}

    def _machineTypes_list(self, params: Mapping[str, str], query: Mapping[str, str], body: Any) -> tuple[int, Any]:
        if (missing := self._zone_or_404(params)) is not None:
            return missing
        zone = params["zone"]
        page = self._page(self.machine_types[zone], query)
        return 200, {"kind": "compute#machineTypeList", "id": f"projects/{self.project}/zones/{zone}/machineTypes",
                     "selfLink": f"{GOOGLE}/projects/{self.project}/zones/{zone}/machineTypes", **page}

    def _acceleratorTypes_list(self, params: Mapping[str, str], query: Mapping[str, str],
                               body: Any) -> tuple[int, Any]:
        if (missing := self._zone_or_404(params)) is not None:
            return missing
        zone = params["zone"]
        page = self._page(self.accelerator_types[zone], query)
        return 200, {"kind": "compute#acceleratorTypeList",
                     "id": f"projects/{self.project}/zones/{zone}/acceleratorTypes",
                     "selfLink": f"{GOOGLE}/projects/{self.project}/zones/{zone}/acceleratorTypes", **page}

    def _regions_get(self, params: Mapping[str, str], query: Mapping[str, str], body: Any) -> tuple[int, Any]:
        if (missing := self._zone_or_404(params)) is not None:
            return missing
        region = params["region"]
        zones = [z for z in sorted(self.zones) if z.rsplit("-", 1)[0] == region]
        if not zones:
            return _error(404, "notFound", f"The resource 'projects/{self.project}/regions/{region}' was not found")
        return 200, {
            "kind": "compute#region", "id": self._id(), "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
            "name": region, "description": region, "status": "UP",
            "zones": [f"{GOOGLE}/projects/{self.project}/zones/{z}" for z in zones],
            "quotas": [{"metric": q["metric"], "limit": q["limit"], "usage": q["usage"]}
                       for q in self.quotas.get(region, [])],
            "selfLink": f"{GOOGLE}/projects/{self.project}/regions/{region}", "supportsPzs": False,
        }

    # instances

    def _instances_insert(self, params: Mapping[str, str], query: Mapping[str, str], body: Any) -> tuple[int, Any]:
        if (missing := self._zone_or_404(params)) is not None:
            return missing
        zone = params["zone"]
        request = query.get("requestId", "")
        problems = self._insert_problems(zone, body, request)
        if problems:
            self.violations.extend(f"compute.instances.insert: {p}" for p in problems)
            return _error(400, "invalid", "; ".join(problems))
        if request in self.request_ids:
            return 200, self.operations[self.request_ids[request]].body
        rejected = self._insert_rules(zone, body)
        if rejected is not None:
            return rejected
        name = str(body["name"])
        if (zone, name) in self.instances:
            return _error(409, "alreadyExists",
                          f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' already exists")
        failure = self.insert_failures.pop(0) if self.insert_failures else None
        target = f"{GOOGLE}/projects/{self.project}/zones/{zone}/instances/{name}"
        instance_id = self._id()
        if failure is None:
            self.instances[(zone, name)] = self._instance(zone, body, instance_id)
        operation = self._operation(zone, "insert", target, instance_id, ("insert", name, failure))
        self.request_ids[request] = (zone, operation["name"])
        return 200, operation

    def _insert_problems(self, zone: str, body: Mapping[str, Any], request: str) -> list[str]:
        problems: list[str] = []
        try:
            if uuid.UUID(request).int == 0:
                problems.append("requestId must not be the zero UUID")
        except ValueError:
            problems.append(f"requestId must be a UUID, got {request!r}")
        if not body.get("machineType"):
            problems.append("machineType is missing")
        boot = [d for d in body.get("disks", []) if d.get("boot")]
        if len(boot) != 1 or not boot[0].get("initializeParams", {}).get("sourceImage"):
            problems.append("expected exactly one boot disk with initializeParams.sourceImage")
        if not body.get("networkInterfaces"):
            problems.append("networkInterfaces is missing")
        return problems

    def _insert_rules(self, zone: str, body: Mapping[str, Any]) -> tuple[int, Any] | None:
        """Compute Engine's own rules, answered with the errors the real API gives."""
        machine_name = str(body["machineType"]).rsplit("/", 1)[-1]
        if f"zones/{zone}/machineTypes/" not in str(body["machineType"]):
            return _error(400, "invalid", f"Invalid value for field 'resource.machineType': "
                                          f"'{body['machineType']}'. Machine type must be in zone {zone}.")
        machine = next((m for m in self.machine_types[zone] if m["name"] == machine_name), None)
        if machine is None:
            return _error(400, "invalid", f"Invalid value for field 'resource.machineType': "
                                          f"'{body['machineType']}'. Machine type with name '{machine_name}' "
                                          f"does not exist in zone '{zone}'.")
        known = {a["name"] for a in self.accelerator_types[zone]}
        for accel in body.get("guestAccelerators", []):
            name = str(accel.get("acceleratorType", "")).rsplit("/", 1)[-1]
            if f"zones/{zone}/acceleratorTypes/" not in str(accel.get("acceleratorType")) or name not in known:
                return _error(400, "invalid", f"Invalid value for field 'resource.guestAccelerators[0]."
                                              f"acceleratorType': '{accel.get('acceleratorType')}'. Accelerator "
                                              f"type '{name}' does not exist in zone '{zone}'.")
        has_gpus = bool(body.get("guestAccelerators")) or bool(machine.get("accelerators"))
        if has_gpus and body.get("scheduling", {}).get("onHostMaintenance") != "TERMINATE":
            return _error(400, "badRequest", "Instances with guest accelerators do not support live migration.")
        for labels in [body.get("labels", {})] + [d.get("initializeParams", {}).get("labels", {})
                                                  for d in body.get("disks", [])]:
            bad = [k for k, v in labels.items() if not _LABEL_KEY.match(k) or not _LABEL_VALUE.match(v)]
            if bad or len(labels) > 64:
                return _error(400, "invalid", f"Invalid value for field 'resource.labels': {bad}")
        return None

    def _instance(self, zone: str, body: Mapping[str, Any], instance_id: str) -> dict[str, Any]:
        instance = json.loads(json.dumps(body))
        base = f"{GOOGLE}/projects/{self.project}/zones/{zone}"
        instance.update({
            "kind": "compute#instance", "id": instance_id,
            "creationTimestamp": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "zone": base, "status": "PROVISIONING", "selfLink": f"{base}/instances/{body['name']}",
            "machineType": f"{base}/machineTypes/{str(body['machineType']).rsplit('/', 1)[-1]}",
            "cpuPlatform": "Unknown CPU Platform", "labelFingerprint": "42WmSpB8rSM=", "fingerprint": "Yy7yS0qGu-E=",
            "startRestricted": False, "deletionProtection": False,
        })
        for accel in instance.get("guestAccelerators", []):
            accel["acceleratorType"] = f"{base}/acceleratorTypes/{str(accel['acceleratorType']).rsplit('/', 1)[-1]}"
        for index, disk in enumerate(instance.get("disks", [])):
            disk.pop("initializeParams", None)
            disk.update({"kind": "compute#attachedDisk", "index": index, "mode": "READ_WRITE",
                         "deviceName": f"persistent-disk-{index}", "interface": "SCSI",
                         "source": f"{base}/disks/{body['name']}" if index == 0 else f"{base}/disks/d{index}"})
        for nic_index, nic in enumerate(instance.get("networkInterfaces", [])):
            nic.update({"kind": "compute#networkInterface", "name": f"nic{nic_index}", "networkIP": "10.128.0.2"})
        metadata = instance.setdefault("metadata", {})
        metadata.update({"kind": "compute#metadata", "fingerprint": "dsOaUPq4YZ0="})
        return dict(instance)

    def _operation(self, zone: str, kind: str, target: str, target_id: str, finish: Any) -> dict[str, Any]:
        name = f"operation-{uuid.uuid4().hex[:13]}-{uuid.uuid4().hex[:8]}"
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        body: dict[str, Any] = {
            "kind": "compute#operation", "id": self._id(), "name": name,
            "zone": f"{GOOGLE}/projects/{self.project}/zones/{zone}", "operationType": kind, "targetLink": target,
            "targetId": target_id, "status": "RUNNING", "user": "stub@example.com", "progress": 0,
            "insertTime": now, "startTime": now,
            "selfLink": f"{GOOGLE}/projects/{self.project}/zones/{zone}/operations/{name}",
        }
        self.operations[(zone, name)] = _Operation(zone, body, self.operation_polls, finish)
        return body

    def _finish(self, operation: _Operation) -> None:
        action, name, failure = operation.finish
        body = operation.body
        body.update({"status": "DONE", "progress": 100,
                     "endTime": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")})
        key = (operation.zone, name)
        if failure is not None:
            body["error"] = {"errors": [{"code": failure.code, "message": failure.message,
                                         **({"errorDetails": list(failure.details)} if failure.details else {})}]}
            body["httpErrorStatusCode"] = failure.http_status
            body["httpErrorMessage"] = failure.http_message
        elif action == "insert" and key in self.instances:
            self.instances[key]["status"] = "RUNNING"
        elif action == "delete":
            self.instances.pop(key, None)

    def _instances_get(self, params: Mapping[str, str], query: Mapping[str, str], body: Any) -> tuple[int, Any]:
        if (missing := self._zone_or_404(params)) is not None:
            return missing
        instance = self.instances.get((params["zone"], params["instance"]))
        if instance is None:
            return _error(404, "notFound", f"The resource 'projects/{self.project}/zones/{params['zone']}/"
                                           f"instances/{params['instance']}' was not found")
        return 200, instance

    def _instances_delete(self, params: Mapping[str, str], query: Mapping[str, str], body: Any) -> tuple[int, Any]:
        if (missing := self._zone_or_404(params)) is not None:
            return missing
        zone, name = params["zone"], params["instance"]
        instance = self.instances.get((zone, name))
        if instance is None:
            return _error(404, "notFound", f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' "
                                           "was not found")
        instance["status"] = "STOPPING"
        return 200, self._operation(zone, "delete", instance["selfLink"], instance["id"], ("delete", name, None))

    def _matching(self, selector: str) -> list[tuple[str, dict[str, Any]]] | tuple[int, Any]:
        terms = _parse_filter(selector)
        if terms is None:
            self.violations.append(f"filter {selector!r} is not understood by the stub")
            return _error(400, "invalid", f"Invalid value for field 'filter': '{selector}'. Invalid list filter "
                                          "expression.")
        return [((zone, instance)) for (zone, _), instance in sorted(self.instances.items())
                if all(_field(instance, path) == value for path, value in terms)]

    def _instances_list(self, params: Mapping[str, str], query: Mapping[str, str], body: Any) -> tuple[int, Any]:
        if (missing := self._zone_or_404(params)) is not None:
            return missing
        found = self._matching(query.get("filter", ""))
        if isinstance(found, tuple):
            return found
        zone = params["zone"]
        page = self._page([i for z, i in found if z == zone], query)
        return 200, {"kind": "compute#instanceList", "id": f"projects/{self.project}/zones/{zone}/instances",
                     "selfLink": f"{GOOGLE}/projects/{self.project}/zones/{zone}/instances", **page}

    def _instances_aggregatedList(self, params: Mapping[str, str], query: Mapping[str, str],
                                  body: Any) -> tuple[int, Any]:
        if (missing := self._zone_or_404(params)) is not None:
            return missing
        found = self._matching(query.get("filter", ""))
        if isinstance(found, tuple):
            return found
        items: dict[str, Any] = {}
        for zone in sorted(self.zones):
            members = [i for z, i in found if z == zone]
            if members:
                items[f"zones/{zone}"] = {"instances": members}
            else:
                items[f"zones/{zone}"] = {"warning": {
                    "code": "NO_RESULTS_ON_PAGE",
                    "message": "There are no results for scope 'zones/" + zone + "' on this page.",
                    "data": [{"key": "scope", "value": f"zones/{zone}"}],
                }}
        return 200, {"kind": "compute#instanceAggregatedList", "id": f"projects/{self.project}/aggregated/instances",
                     "items": items, "selfLink": f"{GOOGLE}/projects/{self.project}/aggregated/instances"}

    # zone operations

    def _operation_or_404(self, params: Mapping[str, str]) -> _Operation | tuple[int, Any]:
        if (missing := self._zone_or_404(params)) is not None:
            return missing
        operation = self.operations.get((params["zone"], params["operation"]))
        if operation is None:
            return _error(404, "notFound", f"The resource 'projects/{self.project}/zones/{params['zone']}/"
                                           f"operations/{params['operation']}' was not found")
        if operation.body["status"] != "DONE":
            operation.polls_left -= 1
            if operation.polls_left <= 0:
                self._finish(operation)
        return operation

    def _zoneOperations_get(self, params: Mapping[str, str], query: Mapping[str, str], body: Any) -> tuple[int, Any]:
        found = self._operation_or_404(params)
        return found if isinstance(found, tuple) else (200, found.body)

    def _zoneOperations_wait(self, params: Mapping[str, str], query: Mapping[str, str],
                             body: Any) -> tuple[int, Any]:
        return self._zoneOperations_get(params, query, body)

    # the Cloud Billing Catalog

    def _services_skus_list(self, params: Mapping[str, str], query: Mapping[str, str],
                            body: Any) -> tuple[int, Any]:
        if params.get("servicesId") != "6F81-5844-456A":
            return _error(404, "notFound", f"Service {params.get('servicesId')} not found")
        page = self._page(self.skus, query, key="skus", size_param="pageSize")
        page.setdefault("nextPageToken", "")
        return 200, page


def _error(status: int, reason: str, message: str) -> tuple[int, Any]:
    """An error in Google's JSON error format."""
    domain = "usageLimits" if reason in ("rateLimitExceeded", "quotaExceeded") else "global"
    return status, {"error": {"code": status, "message": message,
                              "errors": [{"message": message, "domain": domain, "reason": reason}]}}


_TERM = re.compile(r'\(?\s*(?P<field>[A-Za-z][A-Za-z0-9_.-]*)\s*(?:=|eq)\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s()"]+))'
                   r"\s*\)?")


def _parse_filter(selector: str) -> list[tuple[str, str]] | None:
    """``labels.a = "x" AND (name = y)`` -> [("labels.a", "x"), ("name", "y")]; None when not understood."""
    terms: list[tuple[str, str]] = []
    rest = selector.strip()
    while rest:
        match = _TERM.match(rest)
        if match is None:
            return None
        terms.append((match["field"], match["quoted"] if match["quoted"] is not None else match["bare"]))
        rest = rest[match.end():].strip()
        if rest.upper().startswith("AND "):
            rest = rest[4:].strip()
    return terms


def _field(instance: Mapping[str, Any], path: str) -> Any:
    value: Any = instance
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


# --------------------------------------------------------------------------------------------------
# A small GPU world, shaped like Compute Engine's (machine sizes and GPU counts are the real ones)
# --------------------------------------------------------------------------------------------------


def seed_gpu_world(stub: GcpStub) -> GcpStub:
    """Zones in us-central1 and europe-west4 (and one elsewhere), GPU machine types, accelerator types,
    regional GPU quotas and the project's GPUS_ALL_REGIONS quota."""
    for zone, status in (("us-central1-a", "UP"), ("us-central1-b", "UP"), ("us-central1-f", "DOWN"),
                         ("europe-west4-a", "UP"), ("asia-east1-a", "UP")):
        stub.add_zone(zone, status)
    n1 = [("n1-standard-8", 8, 30720), ("n1-standard-16", 16, 61440), ("n1-standard-32", 32, 122880),
          ("n1-standard-64", 64, 245760)]
    g2 = [("g2-standard-4", 4, 16384, 1), ("g2-standard-24", 24, 98304, 2)]
    for zone in ("us-central1-a", "us-central1-b", "us-central1-f", "europe-west4-a", "asia-east1-a"):
        stub.add_machine_type(zone, "e2-standard-4", 4, 16384)
        for name, cpus, memory in n1:
            stub.add_machine_type(zone, name, cpus, memory)
        stub.add_accelerator_type(zone, "nvidia-tesla-t4", 4, "NVIDIA T4")
        stub.add_accelerator_type(zone, "nvidia-tesla-t4-vws", 4, "NVIDIA Tesla T4 Virtual Workstation")
    for zone in ("us-central1-a", "us-central1-b", "europe-west4-a"):
        for name, cpus, memory, gpus in g2:
            stub.add_machine_type(zone, name, cpus, memory, (("nvidia-l4", gpus),))
        stub.add_accelerator_type(zone, "nvidia-l4", 8, "NVIDIA L4")
    stub.add_machine_type("us-central1-a", "a2-highgpu-1g", 12, 87040, (("nvidia-tesla-a100", 1),))
    stub.add_machine_type("us-central1-a", "a2-ultragpu-1g", 12, 174080, (("nvidia-a100-80gb", 1),))
    stub.add_accelerator_type("us-central1-a", "nvidia-tesla-a100", 16, "NVIDIA A100 40GB")
    stub.add_accelerator_type("us-central1-a", "nvidia-a100-80gb", 8, "NVIDIA A100 80GB")
    for zone in ("us-central1-a", "europe-west4-a"):
        stub.add_machine_type(zone, "a3-highgpu-8g", 208, 1916928, (("nvidia-h100-80gb", 8),))
        stub.add_accelerator_type(zone, "nvidia-h100-80gb", 8, "NVIDIA H100 80GB")
    for metric, limit, usage in (("CPUS", 2400, 12), ("NVIDIA_T4_GPUS", 8, 0), ("PREEMPTIBLE_NVIDIA_T4_GPUS", 16, 0),
                                 ("NVIDIA_L4_GPUS", 4, 1), ("PREEMPTIBLE_NVIDIA_L4_GPUS", 0, 0),
                                 ("NVIDIA_A100_GPUS", 16, 0), ("NVIDIA_A100_80GB_GPUS", 0, 0),
                                 ("NVIDIA_H100_GPUS", 8, 0), ("PREEMPTIBLE_NVIDIA_H100_GPUS", 16, 8)):
        stub.set_quota("us-central1", metric, limit, usage)
    for metric, limit, usage in (("CPUS", 600, 0), ("NVIDIA_T4_GPUS", 4, 0), ("NVIDIA_L4_GPUS", 8, 0),
                                 ("NVIDIA_H100_GPUS", 4, 0)):
        stub.set_quota("europe-west4", metric, limit, usage)
    for metric, limit, usage in (("CPUS_ALL_REGIONS", 3000, 12), ("GPUS_ALL_REGIONS", 32, 1)):
        stub.set_quota("global", metric, limit, usage)
    return stub

