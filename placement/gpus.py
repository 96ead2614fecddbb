"""The GPU catalogue: canonical model names, aliases, memory and family.

Names follow SkyPilot's accelerator names where they exist, so catalogs read from SkyPilot CSV files
map without translation. Memory variants of one chip (A100 40 GB and 80 GB) share a model name; the
offer's ``gpu_memory_gib`` tells them apart and workloads ask for a minimum with ``min_memory_gib``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuModel:
    name: str
    vendor: str
    family: str
    memory_gib: tuple[int, ...]
    # Dense BF16 tensor TFLOPS (vendor datasheet, without sparsity), used as a default throughput hint.
    bf16_tflops: float


GPU_MODELS: dict[str, GpuModel] = {
    m.name: m
    for m in (
        GpuModel("B300", "NVIDIA", "blackwell", (288,), 2250.0),
        GpuModel("B200", "NVIDIA", "blackwell", (180, 192), 2250.0),
        GpuModel("GB200", "NVIDIA", "blackwell", (186,), 2500.0),
        GpuModel("H200", "NVIDIA", "hopper", (141,), 989.0),
        GpuModel("H100", "NVIDIA", "hopper", (80, 94), 989.0),
        GpuModel("GH200", "NVIDIA", "hopper", (96,), 989.0),
        GpuModel("A100", "NVIDIA", "ampere", (40, 80), 312.0),
        GpuModel("L40S", "NVIDIA", "ada", (48,), 362.0),
        GpuModel("L40", "NVIDIA", "ada", (48,), 181.0),
        GpuModel("L4", "NVIDIA", "ada", (24,), 121.0),
        GpuModel("RTX6000-Ada", "NVIDIA", "ada", (48,), 182.0),
        GpuModel("RTXPRO6000", "NVIDIA", "blackwell", (96,), 500.0),
        GpuModel("A10G", "NVIDIA", "ampere", (24,), 70.0),
        GpuModel("A10", "NVIDIA", "ampere", (24,), 125.0),
        GpuModel("A6000", "NVIDIA", "ampere", (48,), 155.0),
        GpuModel("A40", "NVIDIA", "ampere", (48,), 150.0),
        GpuModel("A4000", "NVIDIA", "ampere", (16,), 77.0),
        GpuModel("V100", "NVIDIA", "volta", (16, 32), 125.0),
        GpuModel("T4", "NVIDIA", "turing", (16,), 65.0),
        GpuModel("P100", "NVIDIA", "pascal", (16,), 19.0),
        GpuModel("MI300X", "AMD", "cdna3", (192,), 1307.0),
        GpuModel("MI250X", "AMD", "cdna2", (128,), 383.0),
        GpuModel("Gaudi2", "Intel", "gaudi", (96,), 432.0),
    )
}

# Other spellings seen in provider APIs and catalogs -> (canonical name, memory GiB if implied).
_ALIASES: dict[str, tuple[str, int | None]] = {
    "A100-80GB": ("A100", 80),
    "A100-80GB-SXM": ("A100", 80),
    "A100-40GB": ("A100", 40),
    "A100-SXM4-80GB": ("A100", 80),
    "H100-SXM": ("H100", 80),
    "H100-SXM5": ("H100", 80),
    "H100-PCIE": ("H100", 80),
    "H100-NVLINK": ("H100", 80),
    "H100-MEGA": ("H100", 80),
    "H100-NVL": ("H100", 94),
    "H200-SXM": ("H200", 141),
    "RTX-6000-ADA": ("RTX6000-Ada", 48),
    "RTX6000ADA": ("RTX6000-Ada", 48),
    "RTX-PRO-6000": ("RTXPRO6000", 96),
    "RTXA6000": ("A6000", 48),
    "RTX-A6000": ("A6000", 48),
    "RTX-A4000": ("A4000", 16),
    "RTXA4000": ("A4000", 16),
    "V100-32GB": ("V100", 32),
    "NVIDIA-L4": ("L4", 24),
    "A100-80G-PCIe": ("A100", 80),
    "A100-80G-PCIe-NVLink": ("A100", 80),
    "H100-80G-PCIe": ("H100", 80),
    "H100-80G-PCIe-NVLink": ("H100", 80),
    "H100-80G-SXM5": ("H100", 80),
    "RTXPRO6000WS": ("RTXPRO6000", 96),
}

_BY_UPPER: dict[str, tuple[str, int | None]] = {name.upper(): (name, None) for name in GPU_MODELS}
_BY_UPPER.update({alias.upper(): target for alias, target in _ALIASES.items()})


def resolve_gpu(name: str) -> tuple[str, int | None] | None:
    """Canonical model name (and implied memory) for a spelling, or None when unknown."""
    key = name.strip().upper().replace("_", "-").replace(" ", "-")
    for prefix in ("NVIDIA-", "AMD-", "INTEL-"):
        if key.startswith(prefix) and key not in _BY_UPPER:
            key = key[len(prefix) :]
    return _BY_UPPER.get(key)


def canonical_gpu(name: str) -> str | None:
    found = resolve_gpu(name)
    return found[0] if found else None


def known_gpu_names() -> list[str]:
    return sorted(GPU_MODELS)


# Board power (kW) per GPU, from vendor datasheets (SXM parts where both exist). Used to estimate
# energy and carbon when an offer does not state its own power draw.
GPU_POWER_KW: dict[str, float] = {
    "B300": 1.1, "B200": 1.0, "GB200": 1.2, "H200": 0.7, "H100": 0.7, "GH200": 0.9, "A100": 0.4,
    "L40S": 0.35, "L40": 0.3, "L4": 0.072, "RTX6000-Ada": 0.3, "RTXPRO6000": 0.6, "A10G": 0.15,
    "A10": 0.15, "A6000": 0.3, "A40": 0.3, "A4000": 0.14, "V100": 0.3, "T4": 0.07, "P100": 0.25,
    "MI300X": 0.75, "MI250X": 0.5, "Gaudi2": 0.6,
}
