"""A local stand-in for the Lambda Cloud API (``/api/v1``), on 127.0.0.1.

Lambda publishes an OpenAPI description of its Cloud API (version 1.10.0); this stub answers the
paths the adapter uses with bodies shaped by it: ``{"data": ...}`` on success and ``{"error": {"code",
"message", "suggestion"}}`` on failure, with the documented codes (``instance-operations/launch/
insufficient-capacity``, ``global/quota-exceeded``, ``global/invalid-api-key``,
``global/object-does-not-exist``, ``global/invalid-parameters``). It is a small model of an account:

- instance types with price, specs, GPU description and the regions with capacity right now; a launch
  into a region without capacity fails with ``insufficient-capacity``, as at Lambda;
- an instance quota (``max_instances``) that a launch beyond answers with ``global/quota-exceeded``;
- instances: launched ``booting``, ``active`` on the next listing; terminated ones are ``terminating``
  once and then no longer listed (``GET /instances`` lists running instances only);
- injected errors for the next launch (``launch_errors``), e.g. a 429 or a ``provider/...`` 503.

It checks what it receives and records each departure from the API description in ``violations``:
a missing or wrong API key (Bearer or Basic), a launch body with unknown members, missing required
members, more or less than one SSH key, a name over 64 characters, or tags not matching the documented
key pattern. Tests fail when ``violations`` is not empty.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "secret_stub-lambda-key_0123456789abcdef"

LAUNCH_MEMBERS = frozenset({"region_name", "instance_type_name", "ssh_key_names", "file_system_names",
                            "file_system_mounts", "hostname", "name", "image", "user_data", "tags",
                            "firewall_rulesets"})
LAUNCH_REQUIRED = ("region_name", "instance_type_name", "ssh_key_names")
_TAG_KEY = re.compile(r"^[a-z][a-z0-9-:]+$")
_HOSTNAME = re.compile(r"^[a-z0-9][0-9a-z-]{0,62}$")
REGION_NAMES = {"us-east-1": "Virginia, USA", "us-west-1": "California, USA", "us-south-1": "Texas, USA",
                "europe-central-1": "Germany", "asia-northeast-1": "Tokyo, Japan"}


@dataclass
class InstanceType:
    name: str
    description: str
    gpu_description: str
    price_cents_per_hour: int
    vcpus: int
    memory_gib: int
    storage_gib: int
    gpus: int
    regions_with_capacity: list[str] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "gpu_description": self.gpu_description,
                "price_cents_per_hour": self.price_cents_per_hour,
                "specs": {"vcpus": self.vcpus, "memory_gib": self.memory_gib, "storage_gib": self.storage_gib,
                          "gpus": self.gpus}}


class LambdaStub:
    """The stub server. ``url`` is the API base (``.../api/v1``); mutate public attributes to shape a test."""

    def __init__(self) -> None:
        self.types: dict[str, InstanceType] = {}
        self.ssh_keys: set[str] = {"ops"}
        self.instances: dict[str, dict[str, Any]] = {}
        self.max_instances = 100
        self.launch_errors: list[tuple[int, str, str]] = []
        self.violations: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.launch_bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "stub not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v1"

    def start(self) -> LambdaStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _dispatch(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = stub.handle(self.command, self.path, dict(self.headers.items()), raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _dispatch

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- handling ----------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        path = path.split("?", 1)[0]
        with self._lock:
            self.requests.append((method, path))
            if not self._authorized(headers):
                self.violations.append(f"{method} {path}: missing or wrong API key")
                return 401, _error("global/invalid-api-key", "API key was invalid, expired, or deleted.",
                                   "Check your API key or create a new one, then try again.")
            if not path.startswith("/api/v1/"):
                return 404, _error("global/not-found", "The requested resource was not found.")
            route = path[len("/api/v1"):]
            body: Any = None
            if method == "POST":
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    self.violations.append(f"POST {route}: body is not JSON")
                    return 400, _error("global/invalid-parameters", "Invalid request data.")
                if not isinstance(body, dict):
                    self.violations.append(f"POST {route}: body is not a JSON object")
                    return 400, _error("global/invalid-parameters", "Invalid request data.")
            if method == "GET" and route == "/instance-types":
                return 200, {"data": {name: {"instance_type": t.body(), "regions_with_capacity_available": [
                    {"name": r, "description": REGION_NAMES.get(r, r)} for r in t.regions_with_capacity]}
                    for name, t in sorted(self.types.items())}}
            if method == "GET" and route == "/instances":
                return 200, {"data": self._list_instances()}
            if method == "GET" and route.startswith("/instances/"):
                instance = self.instances.get(route.rsplit("/", 1)[-1])
                if instance is None or instance["status"] == "terminated":
                    return 404, _error("global/object-does-not-exist", "Specified instance does not exist.")
                return 200, {"data": instance}
            if method == "POST" and route == "/instance-operations/launch":
                return self._launch(body)
            if method == "POST" and route == "/instance-operations/terminate":
                return self._terminate(body)
            return 404, _error("global/not-found", "The requested resource was not found.")

    @staticmethod
    def _authorized(headers: dict[str, str]) -> bool:
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if value == f"Bearer {API_KEY}":
            return True
        if value.startswith("Basic "):
            try:
                user = base64.b64decode(value[6:]).decode().split(":", 1)[0]
            except ValueError:
                return False
            return user == API_KEY
        return False

    def _list_instances(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = []
        for instance in self.instances.values():
            if instance["status"] == "terminated":
                continue
            listed.append(json.loads(json.dumps(instance)))
            # The next listing sees time move on: booting instances come up, terminating ones go.
            if instance["status"] == "booting":
                instance["status"] = "active"
                instance["ip"] = f"198.51.100.{len(listed) + 1}"
            elif instance["status"] == "terminating":
                instance["status"] = "terminated"
        return listed

    def _check_launch(self, body: dict[str, Any]) -> list[str]:
        problems = [f"unknown member {m!r} of InstanceLaunchRequest" for m in sorted(set(body) - LAUNCH_MEMBERS)]
        problems += [f"{m} is required" for m in LAUNCH_REQUIRED if m not in body]
        keys = body.get("ssh_key_names")
        if not isinstance(keys, list) or len(keys) != 1:
            problems.append("ssh_key_names must list exactly one SSH key")
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > 64):
            problems.append("name must be a string of at most 64 characters")
        hostname = body.get("hostname")
        if hostname is not None and not _HOSTNAME.match(str(hostname)):
            problems.append(f"hostname {hostname!r} does not match ^[a-z0-9][0-9a-z-]{{0,62}}$")
        for tag in body.get("tags") or []:
            if set(tag) != {"key", "value"}:
                problems.append(f"tag {tag!r} must have exactly key and value")
            elif not _TAG_KEY.match(str(tag["key"])) or len(str(tag["key"])) > 55:
                problems.append(f"tag key {tag['key']!r} does not match ^[a-z][a-z0-9-:]+$ (at most 55)")
            elif len(str(tag["value"])) > 128:
                problems.append(f"tag {tag['key']!r} value is longer than 128 characters")
        return problems

    def _launch(self, body: dict[str, Any]) -> tuple[int, Any]:
        self.launch_bodies.append(body)
        problems = self._check_launch(body)
        if problems:
            self.violations.extend(f"launch: {p}" for p in problems)
            return 400, _error("global/invalid-parameters", "; ".join(problems))
        if self.launch_errors:
            status, code, message = self.launch_errors.pop(0)
            return status, _error(code, message)
        itype = self.types.get(body["instance_type_name"])
        region = body["region_name"]
        if itype is None or region not in REGION_NAMES:
            return 404, _error("global/object-does-not-exist", "The instance type or region does not exist.",
                               "Check the name and try again.")
        for key_name in body["ssh_key_names"]:
            if key_name not in self.ssh_keys:
                return 404, _error("global/object-does-not-exist", f"SSH key {key_name!r} does not exist.",
                                   "Add the SSH key first.")
        if region not in itype.regions_with_capacity:
            return 400, _error("instance-operations/launch/insufficient-capacity",
                               "Not enough capacity to fulfill launch request.",
                               "Choose an instance type with more availability, or try again later.")
        running = sum(1 for i in self.instances.values() if i["status"] not in ("terminated", "terminating"))
        if running >= self.max_instances:
            return 400, _error("global/quota-exceeded", "Quota exceeded.", "Contact Support to increase your quota.")
        instance_id = uuid.uuid4().hex
        self.instances[instance_id] = {
            "id": instance_id,
            "name": body.get("name", ""),
            "status": "booting",
            "ssh_key_names": list(body["ssh_key_names"]),
            "file_system_names": list(body.get("file_system_names") or []),
            "region": {"name": region, "description": REGION_NAMES[region]},
            "instance_type": itype.body(),
            "hostname": body.get("hostname") or instance_id[:12],
            "is_reserved": False,
            "actions": {a: {"available": a == "terminate"} for a in
                        ("migrate", "rebuild", "restart", "cold_reboot", "terminate")},
            "tags": [dict(t) for t in body.get("tags") or []],
        }
        return 200, {"data": {"instance_ids": [instance_id]}}

    def _terminate(self, body: dict[str, Any]) -> tuple[int, Any]:
        ids = body.get("instance_ids")
        unknown_members = sorted(set(body) - {"instance_ids"})
        if unknown_members or not isinstance(ids, list) or not ids:
            self.violations.append(f"terminate: needs a non-empty instance_ids list only, got {sorted(body)}")
            return 400, _error("global/invalid-parameters", "Invalid request data.")
        missing = [i for i in ids if self.instances.get(i, {}).get("status") in (None, "terminated")]
        if missing:
            return 404, _error("global/object-does-not-exist", "Specified instance does not exist.")
        for instance_id in ids:
            self.instances[instance_id]["status"] = "terminating"
        return 200, {"data": {"terminated_instances": [json.loads(json.dumps(self.instances[i])) for i in ids]}}


def _error(code: str, message: str, suggestion: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if suggestion:
        error["suggestion"] = suggestion
    return {"error": error}
