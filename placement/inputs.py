"""Loading and validating the three inputs: workloads, inventory and policies.

Each loader collects every problem it can find before it fails, so that one run of the engine lists
all the mistakes in a file, each with its file, line and field path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from placement.errors import InputError, Problem
from placement.models import (
    CapacityPool,
    Inventory,
    Offer,
    PolicySet,
    SnapshotInfo,
    Workload,
)
from placement.yamlio import PathKey, SourceFile, error_problems, parse_yaml, validation_problems

DEFAULT_INVENTORY = "default"
FORMAT_VERSION = 1


def canonical_json(value: Any) -> str:
    """The one JSON spelling used for digests and plan files: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest_of(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(value).encode()).hexdigest()


def dump_model(model: BaseModel) -> Any:
    return model.model_dump(mode="json")


def bundled_inventory_path() -> Path:
    return Path(str(resources.files("placement") / "data" / "inventory" / "default.yaml"))


# --------------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedWorkloads:
    workloads: tuple[Workload, ...]
    files: tuple[str, ...]
    digest: str
    sources: tuple[SourceFile, ...]
    # workload name -> (source index, path of the workload inside that source)
    where: dict[str, tuple[int, PathKey]]


def _check_version(src: SourceFile, problems: list[Problem]) -> None:
    version = src.data.get("format_version", FORMAT_VERSION) if isinstance(src.data, dict) else None
    if version != FORMAT_VERSION:
        problems.append(src.problem(("format_version",), f"expected format_version {FORMAT_VERSION}, got {version!r}"))


def load_workloads(paths: list[Path]) -> LoadedWorkloads:
    problems: list[Problem] = []
    sources: list[SourceFile] = []
    workloads: list[Workload] = []
    where: dict[str, tuple[int, PathKey]] = {}
    for path in paths:
        src = parse_yaml(path)
        sources.append(src)
        if not isinstance(src.data, dict) or not isinstance(src.data.get("workloads"), list):
            problems.append(src.problem(("workloads",), "expected a mapping with a list under 'workloads'"))
            continue
        _check_version(src, problems)
        unknown = set(src.data) - {"format_version", "workloads"}
        for key in sorted(unknown):
            problems.append(src.problem((key,), "unknown top-level key (expected format_version, workloads)"))
        for i, raw in enumerate(src.data["workloads"]):
            try:
                w = Workload.model_validate(raw)
            except ValidationError as exc:
                problems.extend(validation_problems(exc, src, ("workloads", i)))
                continue
            if w.name in where:
                problems.append(src.problem(("workloads", i, "name"), f"workload name {w.name!r} is used twice"))
                continue
            where[w.name] = (len(sources) - 1, ("workloads", i))
            workloads.append(w)
    if problems:
        raise InputError(problems)
    if not workloads:
        raise InputError([Problem(", ".join(map(str, paths)), None, "workloads", "no workloads defined")])
    ordered = tuple(sorted(workloads, key=lambda w: w.name))
    digest = digest_of([dump_model(w) for w in ordered])
    return LoadedWorkloads(ordered, tuple(str(p) for p in paths), digest, tuple(sources), where)


# --------------------------------------------------------------------------------------------------
# Inventory
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedInventory:
    inventory: Inventory
    files: tuple[str, ...]
    digest: str


_INVENTORY_KEYS = {"format_version", "snapshot", "include", "providers", "regions", "pools", "offers",
                   "latency_ms", "skypilot"}
_PROVIDER_FIELDS = {"kind": "provider_kind", "egress_usd_per_gb": "egress_usd_per_gb",
                    "certifications": "certifications"}
_REGION_FIELDS = ("country", "jurisdiction", "location", "carbon_g_per_kwh", "pue", "egress_usd_per_gb",
                  "certifications")


@dataclass
class _InventoryParts:
    snapshot: Any = None
    providers: dict[str, dict[str, Any]] | None = None
    regions: dict[str, dict[str, Any]] | None = None
    pools: list[CapacityPool] | None = None
    offers: list[Offer] | None = None
    latency: dict[str, dict[str, float]] | None = None
    files: list[str] | None = None

    def __post_init__(self) -> None:
        self.providers = self.providers or {}
        self.regions = self.regions or {}
        self.pools = self.pools or []
        self.offers = self.offers or []
        self.latency = self.latency or {}
        self.files = self.files or []


def _merge_offer(raw: dict[str, Any], parts: _InventoryParts) -> dict[str, Any]:
    assert parts.providers is not None and parts.regions is not None
    merged: dict[str, Any] = {}
    certs: list[str] = []
    provider = parts.providers.get(str(raw.get("provider")), {})
    for src_key, dst_key in _PROVIDER_FIELDS.items():
        if src_key in provider:
            if dst_key == "certifications":
                certs.extend(provider[src_key])
            else:
                merged[dst_key] = provider[src_key]
    region = parts.regions.get(f"{raw.get('provider')}/{raw.get('region')}", {})
    for key in _REGION_FIELDS:
        if key in region:
            if key == "certifications":
                certs.extend(region[key])
            else:
                merged[key] = region[key]
    merged.update(raw)
    if isinstance(raw.get("certifications"), list):
        certs.extend(raw["certifications"])
    if certs:
        merged["certifications"] = tuple(sorted(set(map(str, certs))))
    return merged


def _load_inventory_file(path: Path, parts: _InventoryParts, stack: tuple[Path, ...]) -> None:
    assert parts.files is not None and parts.offers is not None and parts.pools is not None
    assert parts.providers is not None and parts.regions is not None and parts.latency is not None
    src = parse_yaml(path)
    problems: list[Problem] = []
    if not isinstance(src.data, dict):
        raise InputError([src.problem((), "expected a mapping (snapshot, providers, regions, offers, ...)")])
    data = src.data
    _check_version(src, problems)
    for key in sorted(set(data) - _INVENTORY_KEYS):
        problems.append(src.problem((key,), f"unknown top-level key (expected one of {', '.join(sorted(_INVENTORY_KEYS))})"))

    includes = data.get("include") or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list):
        problems.append(src.problem(("include",), "expected a list of inventory files (or 'default')"))
        includes = []
    for section in ("providers", "regions", "latency_ms"):
        if section in data and not isinstance(data[section], dict | None):
            problems.append(src.problem((section,), "expected a mapping"))
            data = {k: v for k, v in data.items() if k != section}
    if "pools" in data and not isinstance(data["pools"], list | None):
        problems.append(src.problem(("pools",), "expected a list of pools"))
        data = {k: v for k, v in data.items() if k != "pools"}
    for i, inc in enumerate(includes):
        if not isinstance(inc, str):
            problems.append(src.problem(("include", i), "expected 'default' or a path to an inventory file"))
            continue
        inc_path = bundled_inventory_path() if inc == DEFAULT_INVENTORY else (path.parent / inc)
        if inc_path.resolve() in stack:
            problems.append(src.problem(("include", i), f"include cycle through {inc_path}"))
            continue
        try:
            _load_inventory_file(inc_path, parts, (*stack, inc_path.resolve()))
        except InputError as exc:
            problems.extend(exc.problems)
    parts.files.append(str(path))

    if "snapshot" in data:
        parts.snapshot = (src, data["snapshot"])
    for name, spec in (data.get("providers") or {}).items():
        if not isinstance(spec, dict):
            problems.append(src.problem(("providers", name), "expected a mapping (kind, egress_usd_per_gb, ...)"))
            continue
        unknown = set(spec) - set(_PROVIDER_FIELDS)
        for key in sorted(unknown):
            problems.append(src.problem(("providers", name, key), "unknown field (expected kind, egress_usd_per_gb, certifications)"))
        parts.providers[name] = {**parts.providers.get(name, {}), **spec}
    for key, spec in (data.get("regions") or {}).items():
        if not isinstance(spec, dict) or "/" not in key:
            problems.append(src.problem(("regions", key), "expected 'provider/region: {country, jurisdiction, location, ...}'"))
            continue
        for field in sorted(set(spec) - set(_REGION_FIELDS)):
            problems.append(src.problem(("regions", key, field), f"unknown field (expected {', '.join(_REGION_FIELDS)})"))
        parts.regions[key] = {**parts.regions.get(key, {}), **spec}
    for i, raw in enumerate(data.get("pools") or []):
        try:
            parts.pools.append(CapacityPool.model_validate(raw))
        except ValidationError as exc:
            problems.extend(validation_problems(exc, src, ("pools", i)))
    raw_offers = data.get("offers") or []
    if not isinstance(raw_offers, list):
        problems.append(src.problem(("offers",), "expected a list of offers"))
        raw_offers = []
    for i, raw in enumerate(raw_offers):
        if not isinstance(raw, dict):
            problems.append(src.problem(("offers", i), "expected a mapping"))
            continue
        try:
            parts.offers.append(Offer.model_validate(_merge_offer(raw, parts)))
        except ValidationError as exc:
            found = validation_problems(exc, src, ("offers", i))
            if any(p.message == "required field is missing" and p.field.endswith((".country", ".location", ".jurisdiction"))
                   for p in found):
                found.append(src.problem(("offers", i, "region"),
                                         f"region {raw.get('provider')}/{raw.get('region')} is not described "
                                         "under 'regions' (country, jurisdiction, location)"))
            problems.extend(found)
    for i, entry in enumerate(data.get("skypilot") or []):
        problems.extend(_load_skypilot_entry(src, i, entry, parts))
    for user, row in (data.get("latency_ms") or {}).items():
        if not isinstance(row, dict) or not all(isinstance(v, int | float) and v >= 0 for v in row.values()):
            problems.append(src.problem(("latency_ms", user), "expected a mapping 'provider/region: milliseconds'"))
            continue
        parts.latency.setdefault(str(user), {}).update({str(k): float(v) for k, v in row.items()})
    if problems:
        raise InputError(problems)


def _load_skypilot_entry(src: SourceFile, i: int, entry: Any, parts: _InventoryParts) -> list[Problem]:
    from placement.catalog import SkyPilotCatalogError, read_skypilot_csv

    assert parts.offers is not None
    loc = ("skypilot", i)
    if not isinstance(entry, dict) or not {"path", "provider"} <= set(entry):
        return [src.problem(loc, "expected {path: vms.csv, provider: NAME} (optional: regions, capacity_types)")]
    csv_path = src.path.parent / str(entry["path"])
    try:
        rows = read_skypilot_csv(
            csv_path,
            provider=str(entry["provider"]),
            regions=entry.get("regions"),
            capacity_types=entry.get("capacity_types"),
        )
    except SkyPilotCatalogError as exc:
        return [src.problem((*loc, "path"), str(exc))]
    problems: list[Problem] = []
    for row in rows:
        try:
            parts.offers.append(Offer.model_validate(_merge_offer(row, parts)))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            problems.append(src.problem(loc, f"{csv_path}: row for {row.get('instance_type')} in "
                                             f"{row.get('region')}: {first['loc']}: {first['msg']} "
                                             "(describe the region under 'regions')"))
            break
    return problems


def load_inventory(path: Path | str) -> LoadedInventory:
    if str(path) == DEFAULT_INVENTORY:
        path = bundled_inventory_path()
    path = Path(path)
    parts = _InventoryParts()
    _load_inventory_file(path, parts, (path.resolve(),))
    if parts.snapshot is None:
        raise InputError([Problem(str(path), None, "snapshot", "required: {name, taken_on, prices}")])
    snap_src, snap_raw = parts.snapshot
    try:
        snapshot = SnapshotInfo.model_validate(snap_raw)
    except ValidationError as exc:
        raise InputError(validation_problems(exc, snap_src, ("snapshot",))) from None
    pool_ids = [p.id for p in parts.pools or ()]
    duplicates = sorted({p for p in pool_ids if pool_ids.count(p) > 1})
    if duplicates:
        raise InputError([Problem(str(path), None, "pools", f"capacity pool defined twice: {', '.join(duplicates)}")])
    try:
        inventory = Inventory(snapshot=snapshot, offers=tuple(parts.offers or ()), pools=tuple(parts.pools or ()),
                              latency_ms=parts.latency or {})
    except ValidationError as exc:
        raise InputError([Problem(str(path), None, "offers", e["msg"].removeprefix("Value error, "))
                          for e in exc.errors(include_url=False)]) from None
    if not inventory.offers:
        raise InputError([Problem(str(path), None, "offers", "the inventory has no offers")])
    digest = digest_of(dump_model(inventory))
    return LoadedInventory(inventory, tuple(parts.files or ()), digest)


# --------------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedPolicies:
    policies: PolicySet
    files: tuple[str, ...]
    digest: str
    sources: tuple[SourceFile, ...]


_MERGEABLE_MAPS = ("data_classes", "teams")


def load_policies(path: Path | None) -> LoadedPolicies:
    """Read a policy folder (every *.yaml / *.yml in it, sorted) or one file, and merge them."""
    if path is None:
        return LoadedPolicies(PolicySet(), (), digest_of(dump_model(PolicySet())), ())
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    elif path.exists():
        files = [path]
    else:
        raise InputError([Problem(str(path), None, "", "policy file or folder not found")])
    problems: list[Problem] = []
    merged: dict[str, Any] = {}
    owner: dict[tuple[str, str], SourceFile] = {}
    sources: list[SourceFile] = []
    for file in files:
        src = parse_yaml(file)
        sources.append(src)
        if src.data is None:
            continue
        if not isinstance(src.data, dict):
            problems.append(src.problem((), "expected a mapping of policy sections"))
            continue
        for key, value in src.data.items():
            if key in ("format_version", "tests"):
                continue
            if key in _MERGEABLE_MAPS and isinstance(value, dict):
                section = merged.setdefault(key, {})
                for name, rule in value.items():
                    if (key, name) in owner:
                        problems.append(src.problem((key, name), f"{key} entry {name!r} is already defined in "
                                                    f"{owner[(key, name)].name}:{owner[(key, name)].line_of((key, name))}"))
                        continue
                    owner[(key, name)] = src
                    section[name] = rule
            elif key in merged:
                first = owner[(key, "")]
                problems.append(src.problem((key,), f"section {key!r} is already defined in {first.name}:{first.line_of((key,))}"))
            else:
                owner[(key, "")] = src
                merged[key] = value
    if problems:
        raise InputError(problems)
    try:
        policies = PolicySet.model_validate(merged)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = err["loc"]
            key = (str(loc[0]), str(loc[1]) if len(loc) > 1 and loc[0] in _MERGEABLE_MAPS else "")
            src = owner.get(key) or owner.get((str(loc[0]), "")) or sources[0]
            problems.extend(error_problems([err], src))
        raise InputError(problems) from None
    return LoadedPolicies(policies, tuple(str(f) for f in files), digest_of(dump_model(policies)), tuple(sources))
