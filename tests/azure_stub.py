"""A local stand-in for Azure Resource Manager (Microsoft.Compute) and the Azure Retail Prices API.

There is no maintained emulator for Azure Compute, so this is a small HTTP server on 127.0.0.1 that
answers the REST paths the adapter's real ``azure-mgmt-compute`` client calls, with bodies shaped by
the published REST API description (azure-rest-api-specs, Microsoft.Compute ComputeRP 2024-07-01 and
later; resource SKUs 2021-07-01; the examples ``VirtualMachine_Create_WithSshAuthentication`` and
``VirtualMachine_Create_WithNetworkInterfaceConfigurationDnsSettings``), and the Retail Prices API's
documented item fields. It is a model, not a copy of Azure: it has

- resource SKUs per location with capabilities, zones and subscription restrictions;
- vCPU usages per family and the regional and spot totals, which created VMs consume, and the
  ``OperationNotAllowed`` quota error Azure returns when a create would exceed one;
- ``SkuNotAvailable`` for a size restricted for the subscription in the location or zone;
- VMs: PUT (201 + ``Azure-AsyncOperation`` polling, the VM left ``Failed`` when allocation fails),
  GET, DELETE (202 + polling; 204 when absent) and list by resource group with ``nextLink`` paging;
- injected failures (:class:`Failure`) for a VM size, synchronous or through the async operation.

It also checks what it receives and records each departure from the API description in
``violations``: a missing bearer token or api-version, unknown or read-only members of the VM body
(which ARM rejects with ``InvalidRequestContent``), missing required properties, inconsistent spot
settings, invalid tag names, VM and computer names, and an Authorization header sent to the public
Retail Prices API. Tests fail when ``violations`` is not empty.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "stub-arm-token"

# Writable members of VirtualMachine and VirtualMachineProperties (REST names), from the REST API
# description; read-only ones are listed separately because sending them is also a mistake.
VM_WRITABLE = frozenset({"location", "tags", "properties", "plan", "identity", "zones", "extendedLocation",
                         "placement"})
VM_READ_ONLY = frozenset({"id", "name", "type", "etag", "managedBy", "resources", "systemData"})
PROPERTIES_WRITABLE = frozenset({
    "hardwareProfile", "scheduledEventsPolicy", "storageProfile", "additionalCapabilities", "osProfile",
    "networkProfile", "securityProfile", "diagnosticsProfile", "availabilitySet", "virtualMachineScaleSet",
    "proximityPlacementGroup", "priority", "evictionPolicy", "billingProfile", "host", "hostGroup",
    "licenseType", "extensionsTimeBudget", "platformFaultDomain", "scheduledEventsProfile", "userData",
    "capacityReservation", "applicationProfile", "flexProfile", "resiliencyProfile", "interconnectBlockProfile",
})
PROPERTIES_READ_ONLY = frozenset({"provisioningState", "instanceView", "vmId", "timeCreated"})
NETWORK_API_VERSIONS = frozenset({"2020-11-01", "2022-11-01"})
_VM_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9_])?$")
_COMPUTER_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?$")
_TAG_FORBIDDEN = re.compile(r"[<>%&\\?/]")
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")


@dataclass
class Failure:
    """An error to answer for a VM size: at once (``asynchronous`` False) or as a failed operation."""

    code: str
    message: str
    status: int = 409
    asynchronous: bool = False


@dataclass
class Sku:
    name: str
    family: str
    vcpus: int
    memory_gb: float
    gpus: int
    zones: dict[str, list[str]]  # location -> zones
    low_priority: bool = True
    location_restricted: set[str] = field(default_factory=set)
    zone_restricted: dict[str, list[str]] = field(default_factory=dict)  # location -> zones
    resource_type: str = "virtualMachines"

    def body(self) -> dict[str, Any]:
        restrictions: list[dict[str, Any]] = []
        for location in sorted(self.location_restricted):
            restrictions.append({"type": "Location", "values": [location],
                                 "restrictionInfo": {"locations": [location]},
                                 "reasonCode": "NotAvailableForSubscription"})
        for location, zones in sorted(self.zone_restricted.items()):
            restrictions.append({"type": "Zone", "values": [location],
                                 "restrictionInfo": {"locations": [location], "zones": zones},
                                 "reasonCode": "NotAvailableForSubscription"})
        capabilities = [{"name": "vCPUs", "value": str(self.vcpus)},
                        {"name": "MemoryGB", "value": f"{self.memory_gb:g}"},
                        {"name": "LowPriorityCapable", "value": str(self.low_priority)},
                        {"name": "PremiumIO", "value": "True"}]
        if self.gpus:
            capabilities.append({"name": "GPUs", "value": str(self.gpus)})
        size = self.name.removeprefix("Standard_")
        return {
            "resourceType": self.resource_type,
            "name": self.name,
            "tier": "Standard",
            "size": size,
            "family": self.family,
            "locations": sorted(self.zones),
            "locationInfo": [{"location": loc, "zones": zones, "zoneDetails": []}
                             for loc, zones in sorted(self.zones.items())],
            "capabilities": capabilities,
            "restrictions": restrictions,
        }


@dataclass
class Operation:
    location: str
    vm_key: tuple[str, str]
    kind: str  # "create" or "delete"
    polls_left: int
    failure: Failure | None = None
    status: str = "InProgress"


class AzureStub:
    """The stub server. ``url`` is its base URL; mutate the public attributes to shape a test."""

    def __init__(self, subscription_id: str, *, page_size: int = 2, in_progress_polls: int = 1) -> None:
        self.subscription_id = subscription_id
        self.page_size = page_size
        self.in_progress_polls = in_progress_polls
        self.skus: list[Sku] = []
        # location -> usage name -> [localized name, current, limit]
        self.usages: dict[str, dict[str, list[Any]]] = {}
        self.prices: list[dict[str, Any]] = []
        self.vms: dict[tuple[str, str], dict[str, Any]] = {}
        self.operations: dict[str, Operation] = {}
        self.failures: dict[str, Failure] = {}
        self.deny_writes = False
        self.violations: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.received_bodies: list[dict[str, Any]] = []
        self.api_versions: dict[str, set[str]] = {}
        self.price_requests: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "stub not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> AzureStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _dispatch(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body, headers = stub.handle(self.command, self.path, dict(self.headers.items()), raw)
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if body is not None:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-ms-request-id", str(uuid.uuid4()))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_DELETE = do_POST = do_PATCH = _dispatch

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

    # -- seeding helpers ---------------------------------------------------------------------------

    def add_usage(self, location: str, name: str, localized: str, limit: int, current: int = 0) -> None:
        self.usages.setdefault(location, {})[name] = [localized, current, limit]

    def add_price(self, location: str, size: str, usd: float, *, spot: bool = False, windows: bool = False,
                  low_priority: bool = False) -> None:
        short = size.removeprefix("Standard_").replace("_", " ")
        suffix = " Spot" if spot else " Low Priority" if low_priority else ""
        series = re.sub(r"^[A-Z]+\d+", "", size.removeprefix("Standard_")).replace("_", " ").strip()
        self.prices.append({
            "currencyCode": "USD", "tierMinimumUnits": 0.0, "retailPrice": usd, "unitPrice": usd,
            "armRegionName": location, "location": location, "effectiveStartDate": "2024-05-01T00:00:00Z",
            "meterId": str(uuid.uuid4()), "meterName": short + suffix, "productId": "DZH318Z0BQ4L",
            "skuId": "DZH318Z0BQ4L/00JH", "productName": f"Virtual Machines {series} Series"
            + (" Windows" if windows else ""), "skuName": short + suffix, "serviceName": "Virtual Machines",
            "serviceId": "DZH313Z7MMC8", "serviceFamily": "Compute", "unitOfMeasure": "1 Hour",
            "type": "Consumption", "isPrimaryMeterRegion": True, "armSkuName": size,
        })

    def vm(self, resource_group: str, name: str) -> dict[str, Any] | None:
        return self.vms.get((resource_group.lower(), name.lower()))

    @contextmanager
    def expect_violations(self) -> Iterator[list[str]]:
        """Run a block that is meant to break the rules; yields the violations it caused and clears them."""
        before = len(self.violations)
        caught: list[str] = []
        yield caught
        caught.extend(self.violations[before:])
        del self.violations[before:]

    # -- request handling ------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes
               ) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self._lock:
            self.requests.append((method, parts.path))
            if parts.path == "/api/retail/prices":
                return self._retail_prices(headers, query)
            auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
            if auth != f"Bearer {TOKEN}":
                self.violations.append(f"{method} {parts.path}: missing or wrong bearer token")
                return 401, _error("AuthenticationFailed", "Authentication failed. The 'Authorization' header is "
                                   "missing or invalid."), {}
            version = query.get("api-version", "")
            if not _API_VERSION.match(version):
                self.violations.append(f"{method} {parts.path}: missing or malformed api-version {version!r}")
                return 400, _error("MissingApiVersionParameter", "The api-version query parameter (?api-version=) "
                                   "is required for all requests."), {}
            return self._arm(method, parts.path, query, raw, version)

    def _arm(self, method: str, path: str, query: dict[str, str], raw: bytes, version: str
             ) -> tuple[int, Any, dict[str, str]]:
        segments = [s for s in path.split("/") if s]
        if len(segments) < 2 or segments[0].lower() != "subscriptions":
            return 404, _error("InvalidResourceType", f"no route for {path}"), {}
        if segments[1] != self.subscription_id:
            self.violations.append(f"{method} {path}: subscription {segments[1]} is not the configured one")
            return 404, _error("SubscriptionNotFound", f"The subscription '{segments[1]}' could not be found."), {}
        rest = [s.lower() for s in segments[2:]]
        if rest == ["providers", "microsoft.compute", "skus"] and method == "GET":
            self._record_version("skus", version)
            return self._skus(query)
        if len(rest) == 5 and rest[:3] == ["providers", "microsoft.compute", "locations"] and rest[4] == "usages":
            self._record_version("usages", version)
            return self._usage_list(segments[5])
        if len(rest) == 6 and rest[:3] == ["providers", "microsoft.compute", "locations"]:
            if rest[4] == "operations":
                return self._operation(segments[7], version)
            if rest[4] == "operationresults":
                return 204, None, {}
        if (len(rest) == 6 and rest[0] == "resourcegroups" and rest[2:5] == ["providers", "microsoft.compute",
                                                                           "virtualmachines"]):
            self._record_version("virtualMachines", version)
            group, name = segments[3], segments[7]
            if method == "PUT":
                return self._put_vm(group, name, raw, version)
            if method == "GET":
                vm = self.vm(group, name)
                if vm is None:
                    return 404, _error("ResourceNotFound", f"The Resource 'Microsoft.Compute/virtualMachines/{name}' "
                                       f"under resource group '{group}' was not found."), {}
                return 200, vm, {}
            if method == "DELETE":
                return self._delete_vm(group, name, version)
        if (len(rest) == 5 and rest[0] == "resourcegroups" and rest[2:5] == ["providers", "microsoft.compute",
                                                                           "virtualmachines"] and method == "GET"):
            self._record_version("virtualMachines", version)
            return self._list_vms(segments[3], int(query.get("$skiptoken") or 0), version)
        return 404, _error("InvalidResourceType", f"no route for {method} {path}"), {}

    def _record_version(self, route: str, version: str) -> None:
        self.api_versions.setdefault(route, set()).add(version)

    # -- inventory routes --------------------------------------------------------------------------

    def _skus(self, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        wanted: str | None = None
        if "$filter" in query:
            match = re.fullmatch(r"location eq '([a-z0-9]+)'", query["$filter"].strip())
            if match is None:
                self.violations.append(f"resource SKUs: unsupported $filter {query['$filter']!r}")
                return 400, _error("InvalidFilter", "Only 'location eq' filters are supported."), {}
            wanted = match.group(1)
        values = [sku.body() for sku in self.skus if wanted is None or wanted in sku.zones]
        if wanted is not None:
            for value in values:
                value["locations"] = [wanted]
                value["locationInfo"] = [i for i in value["locationInfo"] if i["location"] == wanted]
                value["restrictions"] = [r for r in value["restrictions"] if wanted in r["values"]]
        return 200, {"value": values}, {}

    def _usage_list(self, location: str) -> tuple[int, Any, dict[str, str]]:
        values = [{"unit": "Count", "currentValue": current, "limit": limit,
                   "name": {"value": name, "localizedValue": localized}}
                  for name, (localized, current, limit) in sorted(self.usages.get(location, {}).items())]
        return 200, {"value": values}, {}

    def _retail_prices(self, headers: dict[str, str], query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if any(k.lower() == "authorization" for k in headers):
            self.violations.append("retail prices: an Authorization header was sent to the public Retail Prices API")
        text = query.get("$filter", "")
        self.price_requests.append(text)
        region = re.search(r"armRegionName eq '([^']+)'", text)
        if "serviceName eq 'Virtual Machines'" not in text or region is None:
            self.violations.append(f"retail prices: filter without serviceName and armRegionName: {text!r}")
        sizes = set(re.findall(r"armSkuName eq '([^']+)'", text))
        consumption = "priceType eq 'Consumption'" in text
        items = [p for p in self.prices
                 if (region is None or p["armRegionName"] == region.group(1))
                 and (not sizes or p["armSkuName"] in sizes) and (not consumption or p["type"] == "Consumption")]
        skip = int(query.get("$skip") or 0)
        page = items[skip : skip + self.page_size]
        next_link = None
        if skip + self.page_size < len(items):
            from urllib.parse import urlencode

            next_link = f"{self.url}/api/retail/prices?" + urlencode({"$filter": text, "$skip": skip + self.page_size})
        return 200, {"BillingCurrency": "USD", "CustomerEntityId": "Default", "CustomerEntityType": "Retail",
                     "Items": page, "NextPageLink": next_link, "Count": len(page)}, {}

    # -- virtual machines --------------------------------------------------------------------------

    def _put_vm(self, group: str, name: str, raw: bytes, version: str) -> tuple[int, Any, dict[str, str]]:
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self.violations.append(f"PUT {name}: body is not JSON")
            return 400, _error("InvalidRequestContent", "The request content was invalid and could not be "
                               "deserialized."), {}
        if not isinstance(body, dict):
            self.violations.append(f"PUT {name}: body is not a JSON object")
            return 400, _error("InvalidRequestContent", "The request content was invalid."), {}
        self.received_bodies.append(body)
        problems = self._check_vm_body(name, body)
        if problems:
            self.violations.extend(f"PUT {name}: {p}" for p in problems)
            return 400, _error("InvalidRequestContent", "; ".join(problems)), {}
        if self.deny_writes:
            return 403, _error("AuthorizationFailed", "The client 'stub-client' with object id "
                               "'00000000-0000-0000-0000-000000000001' does not have authorization to perform "
                               "action 'Microsoft.Compute/virtualMachines/write' over scope '/subscriptions/"
                               f"{self.subscription_id}/resourceGroups/{group}' or the scope is invalid."), {}
        props = body["properties"]
        size = props["hardwareProfile"]["vmSize"]
        location = body["location"]
        zone = (body.get("zones") or [None])[0]
        spot = props.get("priority") in ("Spot", "Low")
        sku = next((s for s in self.skus if s.name.lower() == size.lower() and location in s.zones), None)
        if sku is None or location in sku.location_restricted or (
                zone is not None and zone in sku.zone_restricted.get(location, [])):
            where = f"{location}" + (f" zone '{zone}'" if zone else "")
            return 409, _error("SkuNotAvailable", f"The requested VM size {size} is currently not available in "
                               f"location '{where}'. Please try another size or deploy to a different location or "
                               "different zone. See https://aka.ms/azureskunotavailable for details."), {}
        if zone is not None and zone not in sku.zones.get(location, []):
            self.violations.append(f"PUT {name}: zone {zone!r} is not a zone of {size} in {location}")
            return 400, _error("InvalidParameter", f"The zone(s) '{zone}' for resource '{name}' is not supported."), {}
        key = (group.lower(), name.lower())
        existing = self.vms.get(key)
        if existing is None:
            failure = self.failures.get(size)
            if failure is not None and not failure.asynchronous:
                return failure.status, _error(failure.code, failure.message), {}
            quota = self._take_quota(location, sku, spot)
            if quota is not None:
                return 409, _error("OperationNotAllowed", quota), {}
        vm = {
            "id": f"/subscriptions/{self.subscription_id}/resourceGroups/{group}/providers/Microsoft.Compute/"
                  f"virtualMachines/{name}",
            "name": name,
            "type": "Microsoft.Compute/virtualMachines",
            "location": location,
            "tags": body.get("tags") or {},
            "properties": {
                **json.loads(json.dumps(props)),
                "vmId": existing["properties"]["vmId"] if existing else str(uuid.uuid4()),
                "provisioningState": "Creating" if existing is None else "Updating",
                "timeCreated": "2026-01-01T00:00:00+00:00",
            },
        }
        if body.get("zones"):
            vm["zones"] = body["zones"]
        os_disk = vm["properties"]["storageProfile"].setdefault("osDisk", {"createOption": "FromImage"})
        os_disk.setdefault("name", f"{name}_OsDisk_1_{uuid.uuid4().hex}")
        os_disk["osType"] = "Linux"
        self.vms[key] = vm
        vm["_spot"] = spot  # private bookkeeping, dropped from responses
        vm["_sku"] = sku.name
        op_id = str(uuid.uuid4())
        self.operations[op_id] = Operation(location, key, "create", self.in_progress_polls,
                                           self.failures.get(size) if existing is None else None)
        headers = {"Azure-AsyncOperation": self._operation_url(location, op_id, version)}
        return (201 if existing is None else 200), _public(vm), headers

    def _check_vm_body(self, name: str, body: dict[str, Any]) -> list[str]:
        problems: list[str] = []
        if not _VM_NAME.match(name):
            problems.append(f"VM name {name!r} is not 1-64 letters, digits, '_', '.', '-' starting with a letter "
                            "or digit and ending with a letter, digit or '_'")
        for member in sorted(set(body) - VM_WRITABLE):
            problems.append(f"{'read-only' if member in VM_READ_ONLY else 'unknown'} member {member!r} of "
                            "VirtualMachine")
        if not isinstance(body.get("location"), str) or not body["location"]:
            problems.append("location is required")
        props = body.get("properties")
        if not isinstance(props, dict):
            return [*problems, "properties is required"]
        for member in sorted(set(props) - PROPERTIES_WRITABLE):
            problems.append(f"{'read-only' if member in PROPERTIES_READ_ONLY else 'unknown'} member {member!r} "
                            "of VirtualMachineProperties")
        if not (props.get("hardwareProfile") or {}).get("vmSize"):
            problems.append("properties.hardwareProfile.vmSize is required")
        storage = props.get("storageProfile") or {}
        image = storage.get("imageReference")
        if not isinstance(image, dict):
            problems.append("properties.storageProfile.imageReference is required")
        elif not (image.get("id") or image.get("sharedGalleryImageId") or image.get("communityGalleryImageId")
                  or all(image.get(k) for k in ("publisher", "offer", "sku", "version"))):
            problems.append("imageReference needs an id or publisher, offer, sku and version")
        os_disk = storage.get("osDisk")
        if os_disk is not None and os_disk.get("createOption") != "FromImage":
            problems.append("osDisk.createOption must be FromImage for an image")
        problems.extend(self._check_os_profile(props.get("osProfile")))
        problems.extend(self._check_network(props.get("networkProfile")))
        priority = props.get("priority")
        if priority not in (None, "Regular", "Low", "Spot"):
            problems.append(f"priority {priority!r} is not Regular, Low or Spot")
        if priority in ("Spot", "Low"):
            if props.get("evictionPolicy") not in ("Deallocate", "Delete"):
                problems.append("a Spot VM needs evictionPolicy Deallocate or Delete")
        elif props.get("evictionPolicy") is not None or props.get("billingProfile") is not None:
            problems.append("evictionPolicy and billingProfile apply to Spot VMs only")
        max_price = (props.get("billingProfile") or {}).get("maxPrice")
        if max_price is not None and not (max_price == -1 or max_price > 0):
            problems.append(f"billingProfile.maxPrice {max_price} must be -1 or greater than 0")
        zones = body.get("zones")
        if zones is not None and (not isinstance(zones, list) or len(zones) != 1
                                  or not all(isinstance(z, str) for z in zones)):
            problems.append(f"zones must be a list of one zone name, got {zones!r}")
        tags = body.get("tags") or {}
        if len(tags) > 50:
            problems.append("more than 50 tags")
        for tag, value in tags.items():
            if _TAG_FORBIDDEN.search(tag) or len(tag) > 512 or tag.lower().startswith(("microsoft", "azure",
                                                                                        "windows")):
                problems.append(f"invalid tag name {tag!r}")
            if not isinstance(value, str) or len(value) > 256:
                problems.append(f"tag {tag!r} value must be a string of at most 256 characters")
        return problems

    @staticmethod
    def _check_os_profile(profile: Any) -> list[str]:
        if not isinstance(profile, dict):
            return ["properties.osProfile is required"]
        problems: list[str] = []
        computer = profile.get("computerName")
        if not isinstance(computer, str) or not _COMPUTER_NAME.match(computer):
            problems.append(f"osProfile.computerName {computer!r} is not a valid Linux host name (1-64 letters, "
                            "digits and '-')")
        user = profile.get("adminUsername")
        if not user:
            problems.append("osProfile.adminUsername is required")
        linux = profile.get("linuxConfiguration") or {}
        keys = (linux.get("ssh") or {}).get("publicKeys") or []
        if linux.get("disablePasswordAuthentication") and not keys:
            problems.append("password authentication is disabled but no SSH public key is given")
        if not keys and not profile.get("adminPassword"):
            problems.append("a Linux VM needs an SSH public key or an admin password")
        for entry in keys:
            if not str(entry.get("keyData", "")).startswith(("ssh-", "ecdsa-", "sk-")):
                problems.append("publicKeys[].keyData is not an OpenSSH public key")
            if entry.get("path") != f"/home/{user}/.ssh/authorized_keys":
                problems.append(f"publicKeys[].path must be /home/{user}/.ssh/authorized_keys")
        return problems

    @staticmethod
    def _check_network(profile: Any) -> list[str]:
        if not isinstance(profile, dict):
            return ["properties.networkProfile is required"]
        nics = profile.get("networkInterfaces") or []
        configs = profile.get("networkInterfaceConfigurations") or []
        if bool(nics) == bool(configs):
            return ["networkProfile needs networkInterfaces or networkInterfaceConfigurations (one of them)"]
        problems: list[str] = []
        if nics and not all(isinstance(n, dict) and n.get("id") for n in nics):
            problems.append("networkInterfaces[].id is required")
        if configs:
            if profile.get("networkApiVersion") not in NETWORK_API_VERSIONS:
                problems.append(f"networkApiVersion must be one of {sorted(NETWORK_API_VERSIONS)} with "
                                "networkInterfaceConfigurations")
            primaries = 0
            for config in configs:
                props = config.get("properties") or {}
                if not config.get("name"):
                    problems.append("networkInterfaceConfigurations[].name is required")
                primaries += bool(props.get("primary"))
                ip_configs = props.get("ipConfigurations") or []
                if not ip_configs:
                    problems.append("networkInterfaceConfigurations[].properties.ipConfigurations is required")
                for ip in ip_configs:
                    subnet = ((ip.get("properties") or {}).get("subnet") or {}).get("id", "")
                    if not ip.get("name") or "/subnets/" not in subnet:
                        problems.append("ipConfigurations[] needs a name and properties.subnet.id")
            if len(configs) > 1 and primaries != 1:
                problems.append("exactly one network interface configuration must be primary")
        return problems

    def _take_quota(self, location: str, sku: Sku, spot: bool) -> str | None:
        usages = self.usages.get(location, {})
        names = ["lowPriorityCores"] if spot else [sku.family, "cores"]
        for usage_name in names:
            if usage_name not in usages:
                continue
            _, current, limit = usages[usage_name]
            if current + sku.vcpus > limit:
                label = "LowPriorityCores" if spot else f"{usage_name} Cores"
                return (f"Operation could not be completed as it results in exceeding approved {label} quota. "
                        f"Additional details - Deployment Model: Resource Manager, Location: {location}, Current "
                        f"Limit: {limit}, Current Usage: {current}, Additional Required: {sku.vcpus}, (Minimum) "
                        f"New Limit Required: {current + sku.vcpus}. Submit a request for Quota increase at "
                        "https://aka.ms/ProdportalCRP")
        for usage_name in names:
            if usage_name in usages:
                usages[usage_name][1] += sku.vcpus
        return None

    def _release_quota(self, vm: dict[str, Any]) -> None:
        sku = next((s for s in self.skus if s.name == vm["_sku"]), None)
        if sku is None:
            return
        usages = self.usages.get(vm["location"], {})
        for usage_name in (["lowPriorityCores"] if vm["_spot"] else [sku.family, "cores"]):
            if usage_name in usages:
                usages[usage_name][1] = max(0, usages[usage_name][1] - sku.vcpus)

    def _delete_vm(self, group: str, name: str, version: str) -> tuple[int, Any, dict[str, str]]:
        key = (group.lower(), name.lower())
        vm = self.vms.get(key)
        if vm is None:
            return 204, None, {}
        vm["properties"]["provisioningState"] = "Deleting"
        op_id = str(uuid.uuid4())
        self.operations[op_id] = Operation(vm["location"], key, "delete", self.in_progress_polls)
        url = self._operation_url(vm["location"], op_id, version)
        return 202, None, {"Azure-AsyncOperation": url, "Location": url.replace("/operations/", "/operationResults/")}

    def _list_vms(self, group: str, skip: int, version: str) -> tuple[int, Any, dict[str, str]]:
        members = [vm for (g, _), vm in sorted(self.vms.items()) if g == group.lower()]
        page = members[skip : skip + self.page_size]
        body: dict[str, Any] = {"value": [_public(vm) for vm in page]}
        if skip + self.page_size < len(members):
            body["nextLink"] = (f"{self.url}/subscriptions/{self.subscription_id}/resourceGroups/{group}/providers/"
                                f"Microsoft.Compute/virtualMachines?api-version={version}&$skiptoken={skip + self.page_size}")
        return 200, body, {}

    def _operation_url(self, location: str, op_id: str, version: str) -> str:
        return (f"{self.url}/subscriptions/{self.subscription_id}/providers/Microsoft.Compute/locations/{location}/"
                f"operations/{op_id}?api-version={version}")

    def _operation(self, op_id: str, version: str) -> tuple[int, Any, dict[str, str]]:
        op = self.operations.get(op_id)
        if op is None:
            return 404, _error("NotFound", f"operation {op_id} not found"), {}
        body: dict[str, Any] = {"name": op_id, "startTime": "2026-01-01T00:00:00+00:00"}
        if op.status == "InProgress" and op.polls_left > 0:
            op.polls_left -= 1
            return 200, {**body, "status": "InProgress"}, {}
        if op.status == "InProgress":
            vm = self.vms.get(op.vm_key)
            if op.kind == "delete":
                if vm is not None:
                    self._release_quota(vm)
                    del self.vms[op.vm_key]
                op.status = "Succeeded"
            elif op.failure is not None:
                if vm is not None:
                    vm["properties"]["provisioningState"] = "Failed"
                op.status = "Failed"
            else:
                if vm is not None:
                    vm["properties"]["provisioningState"] = "Succeeded"
                op.status = "Succeeded"
        body.update({"status": op.status, "endTime": "2026-01-01T00:01:00+00:00"})
        if op.status == "Failed" and op.failure is not None:
            body["error"] = {"code": op.failure.code, "message": op.failure.message}
        return 200, body, {}


def _public(vm: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in vm.items() if not k.startswith("_")}


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
