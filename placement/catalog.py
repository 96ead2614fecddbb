"""Reading SkyPilot catalog files (``vms.csv``) into raw offers.

A SkyPilot catalog lists one row per instance type and region (and zone, where the cloud has zones),
with the GPU model and count, vCPUs, memory, the on-demand ``Price`` and the ``SpotPrice``, in USD per
hour. Each row with GPUs and a price becomes one raw offer per capacity type; the inventory loader
adds the provider and region facts (country, jurisdiction, location, carbon) and validates the result.

Two shapes of row are not plain offers:

* rows without accelerators (CPU-only machines) are skipped;
* GCP catalogs (schema v9) price machine types that come with GPUs built in (``a2-highgpu-1g``,
  ``a3-highgpu-8g``, ``g2-standard-8``, ...) in two parts: the machine row carries the VM price without
  the GPUs, and an accelerator row (empty ``InstanceType``) carries the GPU price for that GPU count in
  that zone. Such a machine becomes one offer costing the sum of both parts. Accelerator rows that no
  machine row uses (GPUs to attach to a general-purpose VM) are not offers by themselves.

GPU names resolve through :func:`placement.gpus.resolve_gpu`; rows naming a GPU the engine does not
know are skipped and counted, not treated as errors. A malformed file (missing, no header, missing
columns, a number that is not a number) is a :class:`SkyPilotCatalogError` naming the file.
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from placement.errors import PlacementError
from placement.gpus import GPU_MODELS, resolve_gpu

log = logging.getLogger(__name__)

# Columns every catalog has; SpotPrice, AvailabilityZone and GpuInfo are optional.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "Price", "Region",
)
# Capacity type -> the column holding its hourly price.
PRICE_COLUMNS: tuple[tuple[str, str], ...] = (("on-demand", "Price"), ("spot", "SpotPrice"))
CAPACITY_TYPES: tuple[str, ...] = tuple(capacity for capacity, _ in PRICE_COLUMNS)

# A GPU's reported memory (what the driver or the cloud API shows) sits a few percent below its
# nominal size (an "80 GB" H100 reports 81,559 MiB, a "24 GB" L4 on AWS 22,888 MiB). Within this
# fraction of a nominal size of the model, the nominal size is used, so that workloads asking for
# ``min_memory_gib: 80`` match every 80 GB part.
_NOMINAL_MEMORY_TOLERANCE = 0.10

# GCP machine types with GPUs built in: name pattern -> (catalog accelerator name, GPU count). A count
# of None means the count is the number in the name (a2-highgpu-4g has 4 GPUs). g2-standard machines
# carry 1 L4 up to g2-standard-32, then 2, 4 and 8 (GCP's accelerator-optimized machine table).
_GCP_BUNDLED: tuple[tuple[re.Pattern[str], str, int | None], ...] = (
    (re.compile(r"^a2-highgpu-(\d+)g$"), "A100", None),
    (re.compile(r"^a2-megagpu-16g$"), "A100", 16),
    (re.compile(r"^a2-ultragpu-(\d+)g$"), "A100-80GB", None),
    (re.compile(r"^a3-highgpu-(\d+)g$"), "H100", None),
    (re.compile(r"^a3-edgegpu-8g(-nolssd)?$"), "H100", 8),
    (re.compile(r"^a3-megagpu-8g$"), "H100-MEGA", 8),
    (re.compile(r"^a3-ultragpu-8g(-nolssd)?$"), "H200", 8),
    (re.compile(r"^a4-highgpu-8g(-nolssd)?$"), "B200", 8),
    (re.compile(r"^g2-standard-(4|8|12|16|32)$"), "L4", 1),
    (re.compile(r"^g2-standard-24$"), "L4", 2),
    (re.compile(r"^g2-standard-48$"), "L4", 4),
    (re.compile(r"^g2-standard-96$"), "L4", 8),
)


class SkyPilotCatalogError(PlacementError):
    """A SkyPilot catalog file that cannot be read: missing, malformed, or asked for wrongly."""


@dataclass(frozen=True)
class CatalogRead:
    """What one catalog file yielded: the raw offers, and how many rows were left out and why."""

    path: Path
    offers: tuple[Mapping[str, Any], ...]
    rows: int
    skipped: tuple[tuple[str, int], ...]
    unknown_gpus: tuple[tuple[str, int], ...]

    def summary(self) -> str:
        parts = [f"{self.path}: {len(self.offers)} offers from {self.rows} rows"]
        parts.extend(f"{count} {reason}" for reason, count in self.skipped)
        if self.unknown_gpus:
            names = ", ".join(f"{name} ({count})" for name, count in self.unknown_gpus)
            parts.append(f"unknown GPU models skipped: {names}")
        return "; ".join(parts)


@dataclass(frozen=True)
class _Row:
    line: int
    instance_type: str
    accelerator: str
    count_text: str
    vcpus_text: str
    memory_text: str
    region: str
    zone: str
    gpu_info: str
    prices: tuple[tuple[str, str], ...]


def read_skypilot_csv(
    path: Path,
    provider: str,
    regions: list[str] | None = None,
    capacity_types: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Raw offer dicts (provider, region, zone, instance_type, gpu_model, gpu_count, gpu_memory_gib,
    vcpus, memory_gib, capacity_type, hourly_usd) for every GPU row of a SkyPilot ``vms.csv``.

    ``regions`` keeps only those regions; ``capacity_types`` keeps only "on-demand" and/or "spot".
    """
    result = read_skypilot_catalog(path, provider, regions=regions, capacity_types=capacity_types)
    if result.unknown_gpus:
        log.warning("%s", result.summary())
    else:
        log.info("%s", result.summary())
    return [dict(offer) for offer in result.offers]


def read_skypilot_catalog(
    path: Path,
    provider: str,
    regions: Iterable[str] | None = None,
    capacity_types: Iterable[str] | None = None,
) -> CatalogRead:
    """Like :func:`read_skypilot_csv`, plus the counts of rows left out and the reasons."""
    path = Path(path)
    region_filter = _string_set(path, "regions", regions)
    wanted = _capacity_types(path, capacity_types)
    rows = [row for row in _read_rows(path) if region_filter is None or row.region in region_filter]
    # GPU price rows of GCP's machines with built-in GPUs: (accelerator, count, region, zone) -> row.
    gpu_price_rows: dict[tuple[str, int, str, str], _Row] = {}
    for row in rows:
        if not row.instance_type and row.accelerator:
            count = _number(path, row, "AcceleratorCount", row.count_text)
            gpu_price_rows.setdefault((row.accelerator.upper(), int(count), row.region, row.zone), row)

    skipped: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    offers: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str, str]] = set()
    used_gpu_price_rows: set[int] = set()
    for row in rows:
        if not row.instance_type:
            continue
        gpu_row = row if row.accelerator else _gpu_price_row(row, gpu_price_rows)
        if gpu_row is None:
            skipped["rows without GPUs"] += 1
            continue
        used_gpu_price_rows.add(gpu_row.line)
        shape = _shape(path, row, gpu_row)
        if isinstance(shape, str):
            skipped[shape] += 1
            continue
        if shape is None:
            unknown[gpu_row.accelerator] += 1
            continue
        added = duplicate = False
        no_price = "rows without a price for the chosen capacity types"
        for capacity in CAPACITY_TYPES:
            if capacity not in wanted:
                continue
            price = _price(path, row, capacity)
            if gpu_row is not row and price is not None:
                gpu_price = _price(path, gpu_row, capacity)
                price = None if gpu_price is None else round(price + gpu_price, 6)
            if price is None:
                continue
            key = (row.region, row.zone, row.instance_type, capacity)
            if key in seen:
                duplicate = True
                continue
            seen.add(key)
            added = True
            offer: dict[str, Any] = {"provider": provider, "region": row.region}
            if row.zone:
                offer["zone"] = row.zone
            offer.update(instance_type=row.instance_type, **shape, capacity_type=capacity, hourly_usd=price)
            offers.append(offer)
        if not added:
            skipped["duplicate rows" if duplicate else no_price] += 1

    unused = sum(1 for row in rows if not row.instance_type and row.accelerator
                 and row.line not in used_gpu_price_rows)
    if unused:
        skipped["GPU price rows not tied to a machine type"] += unused
    return CatalogRead(
        path=path,
        offers=tuple(offers),
        rows=len(rows),
        skipped=tuple(sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))),
        unknown_gpus=tuple(sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


def _shape(path: Path, row: _Row, gpu_row: _Row) -> dict[str, Any] | str | None:
    """GPU model, count and memory, vCPUs and memory of a row: a dict, a reason to skip the row, or None
    when the GPU model is unknown."""
    count = _number(path, gpu_row, "AcceleratorCount", gpu_row.count_text)
    if count <= 0:
        return "rows without GPUs"
    if count < 1 or not count.is_integer():
        return "rows with a fraction of a GPU"
    found = resolve_gpu(gpu_row.accelerator)
    if found is None:
        return None
    vcpus = _number(path, row, "vCPUs", row.vcpus_text)
    memory_gib = _number(path, row, "MemoryGiB", row.memory_text)
    if vcpus < 1 or memory_gib <= 0:
        return "rows with no vCPUs or memory"
    model, implied_memory = found
    return {
        "gpu_model": model,
        "gpu_count": int(count),
        "gpu_memory_gib": _gpu_memory_gib(model, implied_memory, gpu_row.gpu_info),
        "vcpus": round(vcpus),
        "memory_gib": memory_gib,
    }


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _string_set(path: Path, what: str, values: Iterable[str] | None) -> frozenset[str] | None:
    if values is None:
        return None
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise SkyPilotCatalogError(f"{path}: '{what}' must be a list of names, got {values!r}")
    return frozenset(values)


def _capacity_types(path: Path, values: Iterable[str] | None) -> frozenset[str]:
    chosen = _string_set(path, "capacity_types", values)
    if chosen is None:
        return frozenset(CAPACITY_TYPES)
    wrong = sorted(chosen - set(CAPACITY_TYPES))
    if wrong:
        raise SkyPilotCatalogError(f"{path}: unknown capacity type(s) {', '.join(wrong)}; "
                                   f"a SkyPilot catalog has {' and '.join(CAPACITY_TYPES)} prices")
    return chosen


def _read_rows(path: Path) -> list[_Row]:
    if not path.is_file():
        raise SkyPilotCatalogError(f"{path}: SkyPilot catalog file not found")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in (reader.fieldnames or [])]
            if not header:
                raise SkyPilotCatalogError(f"{path}: empty file; expected a SkyPilot vms.csv with columns "
                                           f"{', '.join(REQUIRED_COLUMNS)}")
            missing = [name for name in REQUIRED_COLUMNS if name not in header]
            if missing:
                raise SkyPilotCatalogError(f"{path}: not a SkyPilot vms.csv: missing column(s) "
                                           f"{', '.join(missing)} (found: {', '.join(header)})")
            reader.fieldnames = header
            rows: list[_Row] = []
            for raw in reader:
                rows.append(_Row(
                    line=reader.line_num,
                    instance_type=_cell(raw, "InstanceType"),
                    accelerator=_cell(raw, "AcceleratorName"),
                    count_text=_cell(raw, "AcceleratorCount"),
                    vcpus_text=_cell(raw, "vCPUs"),
                    memory_text=_cell(raw, "MemoryGiB"),
                    region=_cell(raw, "Region"),
                    zone=_cell(raw, "AvailabilityZone"),
                    gpu_info=_cell(raw, "GpuInfo"),
                    prices=tuple((capacity, _cell(raw, column)) for capacity, column in PRICE_COLUMNS),
                ))
    except UnicodeDecodeError as exc:
        raise SkyPilotCatalogError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    except csv.Error as exc:
        raise SkyPilotCatalogError(f"{path}: not a readable CSV file ({exc})") from None
    except OSError as exc:
        raise SkyPilotCatalogError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return rows


def _cell(raw: Mapping[str, Any], column: str) -> str:
    value = raw.get(column)
    return value.strip() if isinstance(value, str) else ""


def _number(path: Path, row: _Row, column: str, text: str) -> float:
    try:
        value = float(text) if text else 0.0
    except ValueError:
        raise SkyPilotCatalogError(f"{path}, line {row.line}: {column} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise SkyPilotCatalogError(f"{path}, line {row.line}: {column} {text!r} is not a usable number")
    return value


def _price(path: Path, row: _Row, capacity: str) -> float | None:
    """The hourly price, or None when the catalog has none (empty, or zero as some catalogs write)."""
    text = dict(row.prices).get(capacity, "")
    if not text:
        return None
    value = _number(path, row, dict(PRICE_COLUMNS)[capacity], text)
    return value if value > 0 else None


def _gpu_price_row(row: _Row, gpu_price_rows: Mapping[tuple[str, int, str, str], _Row]) -> _Row | None:
    """The GPU price row of a GCP machine type with built-in GPUs, in the machine's zone."""
    for pattern, accelerator, count in _GCP_BUNDLED:
        match = pattern.match(row.instance_type)
        if match:
            gpus = count if count is not None else int(match.group(1))
            return gpu_price_rows.get((accelerator.upper(), gpus, row.region, row.zone))
    return None


def _gpu_memory_gib(model: str, implied: int | None, gpu_info: str) -> float:
    nominal = GPU_MODELS[model].memory_gib
    reported = _reported_memory_mib(gpu_info)
    if reported is not None:
        gib = reported / 1024
        sizes = sorted({*nominal, *([implied] if implied else [])}, key=lambda size: abs(size - gib))
        if sizes and abs(sizes[0] - gib) <= _NOMINAL_MEMORY_TOLERANCE * sizes[0]:
            return float(sizes[0])
        return round(gib, 1)
    if implied:
        return float(implied)
    return float(nominal[0])


def _reported_memory_mib(gpu_info: str) -> float | None:
    """Memory per GPU from a GpuInfo cell, when it is there and above zero.

    GpuInfo follows EC2's DescribeInstanceTypes: ``Gpus[].MemoryInfo.SizeInMiB`` per GPU and
    ``TotalGpuMemoryInMiB`` for all of them. Some catalogs put the total in ``SizeInMiB`` as well, so the
    total divided by the GPU count is preferred when both are given.
    """
    info = _parse_gpu_info(gpu_info)
    if not isinstance(info, dict):
        return None
    gpus = info.get("Gpus")
    if not isinstance(gpus, list) or not gpus or not all(isinstance(g, dict) for g in gpus):
        return None
    total = _positive(info.get("TotalGpuMemoryInMiB"))
    counts = [_positive(g.get("Count")) for g in gpus]
    if total is not None and None not in counts:
        return total / sum(c for c in counts if c is not None)
    memory = gpus[0].get("MemoryInfo")
    return _positive(memory.get("SizeInMiB")) if isinstance(memory, dict) else None


def _positive(value: Any) -> float | None:
    """The value as a float when it is a finite number above zero, else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return None


def _parse_gpu_info(text: str) -> Any:
    """GpuInfo is JSON in some catalogs and a Python dict literal (sometimes with JSON's null) in others."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        return json.loads(text.replace("'", '"'))
    except ValueError:
        return None
