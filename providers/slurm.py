"""Slurm pool adapter: owned GPU nodes of a Slurm cluster, sold as slices and used through batch jobs.

Everything goes through Slurm's own commands (``scontrol``, ``sbatch``, ``squeue``, ``scancel``), run
by one function (:meth:`SlurmCompute.run`) as an argument list, never a shell string, with a timeout.
``command_prefix`` says how the commands reach the cluster: empty runs them here; ``["ssh",
"login-node"]`` runs them on a login node (arguments are then shell-quoted, since ssh hands the
command to the remote shell); ``["ip", "netns", "exec", "lab"]`` or ``["nsenter", ...]`` run them in
another namespace. ``environment`` (e.g. ``SLURM_CONF``) is passed through ``env`` after the prefix,
so that it reaches the commands whichever way they travel.

Inventory: ``scontrol --details --oneliner show node`` (the ``--details`` flag adds ``GresUsed``).
Every node in the configured partitions with GPUs of the GRES ``gres_name`` becomes one
:class:`~providers.onprem.OwnedNode` per GPU type (a node with ``Gres=gpu:h100:4,gpu:l40s:2`` gives an
H100 node of 4 GPUs and an L40S node of 2, each with the node's CPUs and memory shared out in
proportion to its GPUs). Free GPUs are total minus ``GresUsed`` (or ``AllocTRES`` when the details
are missing); nodes that are down, drained, failing, in maintenance, reserved or not responding are
owned but not free, and so are nodes whose CPUs or memory are all allocated. The GPU model comes from
the GRES type (``h100``, ``a100_80g``, ``nvidia_h100_80gb_hbm3``); ``gpu_models`` maps odd type names
(and, for untyped GRES such as ``gpu:4``, the GRES name itself) to a model. The slices, pools and
owned capacity come from :func:`providers.onprem.slice_offers` with the ``slurm`` type prefix.

Actuation: one batch job per replica, ``sbatch --parsable --job-name=plc-<key>
--comment=<ownership marker> --gres=<gres_name>:<type>:<gpus> --nodes=<nodes> --partition=...
--cpus-per-task=... --mem=...`` with the job script on stdin. The comment carries the ownership tags
(key, workload, replica, plan, offer, team; see :func:`ownership_comment`). Before submitting, the
queue is searched for a live job carrying the key, which is adopted instead (so a new process after a
crash does not submit twice). After submitting, ``create`` waits up to ``start_timeout_s`` for the job
to run: a job held back by a limit (QOS or association limits, partition limits) is cancelled at once
and reported as the matching typed error; a job still waiting for resources at the deadline is
cancelled and reported as insufficient capacity, so that the engine can place the replica
elsewhere. ``delete`` runs ``scancel`` and waits until the jobs have left the queue or are
completing; ``list_managed`` lists the jobs whose comment carries the marker (``squeue --me``).

The default job script holds the allocation until the job is cancelled (``exec sleep infinity``);
``job_script`` replaces it for every workload and ``job_scripts`` per workload. Scripts may use the
placeholders ``{{key}}``, ``{{workload}}``, ``{{replica}}``, ``{{team}}``, ``{{plan}}``, ``{{offer}}``,
``{{gpu_model}}``, ``{{gpus}}``, ``{{nodes}}``, ``{{gres}}`` and ``{{job_name}}``. Jobs are submitted
with ``--export=NONE`` by default, so the engine's own environment never reaches them.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote

from pydantic import Field, field_validator, model_validator

from placement.errors import PlacementError
from placement.gpus import GPU_MODELS
from placement.models import CapacityPool, Offer
from providers.base import (
    MANAGED_VALUE,
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
    OfferUnavailable,
    ProviderError,
    QuotaExceeded,
    ResourceSpec,
    Scope,
    Transient,
)
from providers.onprem import OnPremSettings, OwnedCapacity, OwnedNode, slice_offers

log = logging.getLogger(__name__)

TYPE_PREFIX = "slurm"
JOB_NAME_PREFIX = "plc-"
COMMENT_MARKER = "placement.dev:v1"

DEFAULT_JOB_SCRIPT = """#!/bin/sh
# Holds the allocation of one placed replica until the job is cancelled.
exec sleep infinity
"""

PLACEHOLDERS: frozenset[str] = frozenset({
    "key", "workload", "replica", "team", "plan", "offer", "gpu_model", "gpus", "nodes", "gres", "job_name",
})
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")

# Job states (squeue %T) in which a job no longer holds, or is releasing, its allocation.
GONE_STATES: frozenset[str] = frozenset({
    "COMPLETING", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
    "DEADLINE", "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT", "STOPPED",
})
RUNNING_STATES: frozenset[str] = frozenset({"RUNNING", "CONFIGURING"})

# Node states. A node is schedulable when its base state is one of these and it has none of the flags
# below; scontrol prints ``MIXED+DRAIN``, sinfo-style abbreviations end in a marker such as ``*``.
_SCHEDULABLE_BASE: frozenset[str] = frozenset({"IDLE", "MIXED", "ALLOCATED", "ALLOC", "MIX", "COMPLETING", "COMP"})
_BLOCKING_FLAGS: frozenset[str] = frozenset({
    "DRAIN", "DRAINING", "DRAINED", "DRNG", "FAIL", "FAILING", "MAINT", "MAINTENANCE", "NOT_RESPONDING",
    "NO_RESPOND", "RESERVED", "RESV", "REBOOT_REQUESTED", "REBOOT_ISSUED", "REBOOTING", "POWER_DOWN",
    "POWERING_DOWN", "INVALID_REG", "INVALID", "FUTURE", "DOWN", "BLOCKED",
})
_STATE_MARKERS: dict[str, str] = {"*": "NOT_RESPONDING", "$": "MAINT", "@": "REBOOT_REQUESTED",
                                  "^": "REBOOT_ISSUED", "%": "POWERING_DOWN", "!": "POWER_DOWN"}
_SUFFIXES = frozenset(_STATE_MARKERS) | {"~", "#", "-"}

# A GRES type naming a MIG partition (``a100_1g.5gb``): not a whole GPU, not sold as one.
_MIG_TYPE = re.compile(r"\d+g\.\d+gb", re.IGNORECASE)


class SlurmSettings(OnPremSettings):
    """One Slurm cluster (or some of its partitions) as the engine uses it.

    The site, internal costs, ``gpu_models`` and ``slice_sizes`` are those of
    :class:`~providers.onprem.OnPremSettings`, at the top level of the entry. No credentials: the
    commands run as the user the engine runs as (or the one ``command_prefix`` logs in as), with
    Slurm's own authentication (munge or JWT).

    Example::

        hpc-fra:
          type: slurm
          cluster: fra-hpc
          partitions: [gpu]
          account: ml-platform
          qos: normal
          time_limit: "7-00:00:00"
          command_prefix: [ssh, -o, BatchMode=yes, svc-placement@login1.fra.example.com]
          environment: {SLURM_CONF: /etc/slurm/slurm.conf}
          gres_name: gpu
          gpu_models: {h100_nvl: H100}
          job_scripts:
            llm-serve: |
              #!/bin/bash
              exec /opt/serve/start.sh --name {{workload}}-{{replica}} --gpus {{gpus}}
          site:
            region: fra-dc1
            country: DE
            jurisdiction: EU
            location: {lat: 50.11, lon: 8.68}
            pue: 1.3
          costs:
            H100: {capital_usd: 300000, lifetime_years: 4, power_kw: 10.2}
            L40S: {capital_usd: 60000, lifetime_years: 5}
    """

    type: Literal["slurm"] = "slurm"
    cluster: Annotated[str | None, Field(min_length=1, description="the cluster's name in messages; "
                                                                    "default: the provider name")] = None
    partitions: Annotated[tuple[Annotated[str, Field(min_length=1)], ...], Field(min_length=1)]
    account: Annotated[str | None, Field(min_length=1)] = None
    qos: Annotated[str | None, Field(min_length=1)] = None
    time_limit: Annotated[str | None, Field(min_length=1, description="sbatch --time, e.g. '7-00:00:00'")] = None
    command_prefix: tuple[str, ...] = Field(
        default=(), description="argv the Slurm commands are run through (ssh, nsenter, ...); empty: run here"
    )
    shell_quote: bool | None = Field(
        default=None, description="shell-quote the command after the prefix; default: when the prefix is ssh"
    )
    environment: dict[str, str] = Field(default_factory=dict, description="environment for the commands")
    gres_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$")] = "gpu"
    job_script: Annotated[str, Field(min_length=1)] = DEFAULT_JOB_SCRIPT
    job_scripts: dict[str, str] = Field(default_factory=dict, description="job script per workload name")
    sbatch_options: tuple[str, ...] = Field(default=(), description="extra sbatch options, e.g. --constraint=ib")
    export: Annotated[str, Field(min_length=1, description="sbatch --export")] = "NONE"
    workdir: Annotated[str, Field(min_length=1, description="sbatch --chdir")] = "/tmp"
    output: Annotated[str, Field(min_length=1, description="sbatch --output")] = "/dev/null"
    command_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    start_timeout_s: Annotated[float, Field(ge=0, le=86400, description="how long create waits for a job to "
                                                                        "start; 0: return it pending")] = 60.0

    @field_validator("environment", mode="after")
    @classmethod
    def _check_environment(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in value if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k))
        if bad:
            raise ValueError(f"environment variable names must be letters, digits and '_': {', '.join(bad)}")
        secret = sorted(k for k in value if any(w in k.upper() for w in ("JWT", "TOKEN", "PASSWORD", "SECRET")))
        if secret:
            raise ValueError(f"credentials do not belong in the providers config ({', '.join(secret)}); set them "
                             "in the engine's environment, which the commands inherit when run locally")
        return value

    @model_validator(mode="after")
    def _check(self) -> SlurmSettings:
        if len(set(self.partitions)) != len(self.partitions):
            raise ValueError("partitions lists a partition twice")
        for where, script in [("job_script", self.job_script),
                              *((f"job_scripts.{k}", v) for k, v in self.job_scripts.items())]:
            unknown = sorted(set(_PLACEHOLDER.findall(script)) - PLACEHOLDERS)
            if unknown:
                raise ValueError(f"{where} uses unknown placeholder(s) {', '.join(unknown)}; known: "
                                 f"{', '.join(sorted(PLACEHOLDERS))}")
            if not script.startswith("#!"):
                raise ValueError(f"{where} must start with an interpreter line such as '#!/bin/sh'")
        reserved = [o for o in self.sbatch_options
                    if o.split("=", 1)[0] in ("--job-name", "-J", "--comment", "--gres", "--parsable")]
        if reserved:
            raise ValueError(f"sbatch_options may not set {', '.join(reserved)}: the adapter sets them")
        return self

    @property
    def quotes_arguments(self) -> bool:
        if self.shell_quote is not None:
            return self.shell_quote
        return bool(self.command_prefix) and os.path.basename(self.command_prefix[0]) == "ssh"


# --------------------------------------------------------------------------------------------------
# Parsing scontrol and squeue
# --------------------------------------------------------------------------------------------------

_FIELD = re.compile(r"(?:(?<=\s)|^)([A-Za-z][A-Za-z0-9_/:.]*)=")


def parse_fields(line: str) -> dict[str, str]:
    """The ``Key=value`` fields of one line of ``scontrol --oneliner`` output.

    Values may contain spaces (``OS=Linux 6.1.0 #1 SMP``); ``Reason`` runs to the end of the line.
    """
    fields: dict[str, str] = {}
    matches = list(_FIELD.finditer(line))
    for i, match in enumerate(matches):
        key = match.group(1)
        if key in fields:
            continue
        end = len(line) if key == "Reason" or i + 1 == len(matches) else matches[i + 1].start()
        fields[key] = line[match.end():end].strip()
        if key == "Reason":
            break
    return fields


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses: ``gpu:a:3(IDX:0-1,3),gpu:b:0`` has two items."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


_ANNOTATION = re.compile(r"\((?!null\))[^()]*\)\s*$")
_COUNT = re.compile(r"^(\d+)([KMGT]?)$", re.IGNORECASE)
_MULTIPLIER = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


@dataclass(frozen=True)
class Gres:
    """One generic resource entry: ``gpu:h100:4`` is name ``gpu``, type ``h100``, count 4."""

    name: str
    type: str | None
    count: int


def parse_gres(text: str) -> list[Gres]:
    """Entries of a ``Gres=`` or ``GresUsed=`` value: ``gpu:h100:8(S:0-1),gpu:l40s:2``, ``gpu:4``.

    Socket and index annotations in parentheses are dropped; ``(null)``, ``N/A`` and empty give no
    entries; a ``(null)`` type means untyped; flags such as ``no_consume`` are skipped.
    """
    entries: list[Gres] = []
    if text.strip() in ("", "(null)", "N/A"):
        return entries
    for item in _split_top_level(text):
        head = _ANNOTATION.sub("", item)
        parts = [p for p in head.split(":") if p]
        if len(parts) < 2:
            continue
        match = _COUNT.match(parts[-1])
        if match is None:
            continue
        count = int(match.group(1)) * _MULTIPLIER[match.group(2).upper()]
        middle = [p for p in parts[1:-1] if p.lower() != "no_consume"]
        kind = middle[0] if middle and middle[0] != "(null)" else None
        entries.append(Gres(parts[0], kind, count))
    return entries


def parse_tres(text: str) -> dict[str, str]:
    """``cpu=4,mem=8000M,gres/gpu=2,gres/gpu:h100=2`` -> a mapping of TRES names to values."""
    out: dict[str, str] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            out[name.strip()] = value.strip()
    return out


def _int(text: str | None, default: int = 0) -> int:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class SlurmNode:
    """One node as ``scontrol --details --oneliner show node`` reports it."""

    name: str
    state: str
    partitions: tuple[str, ...]
    cpus: int
    cpus_allocated: int
    memory_mib: int
    memory_allocated_mib: int
    gres: tuple[Gres, ...]
    gres_used: tuple[Gres, ...] | None
    alloc_tres: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""

    @property
    def state_words(self) -> frozenset[str]:
        """The base state and flags: ``MIXED+DRAIN`` -> {MIXED, DRAIN}; ``idle*`` -> {IDLE, NOT_RESPONDING}."""
        words: set[str] = set()
        for part in self.state.upper().split("+"):
            while part and part[-1] in _SUFFIXES:
                if part[-1] in _STATE_MARKERS:
                    words.add(_STATE_MARKERS[part[-1]])
                part = part[:-1]
            if part:
                words.add(part)
        return frozenset(words)

    @property
    def schedulable(self) -> bool:
        words = self.state_words
        return bool(words & _SCHEDULABLE_BASE) and not (words & _BLOCKING_FLAGS)

    def gpus(self, gres_name: str) -> dict[str | None, int]:
        """GPUs per GRES type (None: untyped)."""
        out: dict[str | None, int] = defaultdict(int)
        for g in self.gres:
            if g.name == gres_name:
                out[g.type] += g.count
        return dict(out)

    def gpus_used(self, gres_name: str) -> dict[str | None, int]:
        """GPUs in use per GRES type, from ``GresUsed`` or else ``AllocTRES``."""
        totals = self.gpus(gres_name)
        if self.gres_used is not None:
            out: dict[str | None, int] = defaultdict(int)
            for g in self.gres_used:
                if g.name == gres_name:
                    out[g.type] += g.count
            return {t: out.get(t, 0) for t in totals}
        prefix = f"gres/{gres_name}"
        typed = {name[len(prefix) + 1:]: _int(v) for name, v in self.alloc_tres.items()
                 if name.startswith(prefix + ":")}
        used = {t: typed.get(t or "", 0) for t in totals}
        rest = _int(self.alloc_tres.get(prefix)) - sum(used.values())
        for t in sorted(totals, key=lambda x: x or ""):
            take = min(max(rest, 0), totals[t] - used[t])
            used[t] += take
            rest -= take
        if "ALLOCATED" in self.state_words or "ALLOC" in self.state_words:
            return dict(totals)
        return used


def parse_nodes(text: str) -> list[SlurmNode]:
    """Nodes from ``scontrol --details --oneliner show node`` output (one node per line)."""
    nodes: list[SlurmNode] = []
    for line in text.splitlines():
        if not line.strip().startswith("NodeName="):
            continue
        f = parse_fields(line.strip())
        used = f.get("GresUsed")
        partitions = f.get("Partitions", "")
        nodes.append(SlurmNode(
            name=f["NodeName"],
            state=f.get("State", "UNKNOWN"),
            partitions=tuple(p for p in partitions.split(",") if p and p != "(null)"),
            cpus=_int(f.get("CPUEfctv"), _int(f.get("CPUTot"))),
            cpus_allocated=_int(f.get("CPUAlloc")),
            memory_mib=_int(f.get("RealMemory")),
            memory_allocated_mib=_int(f.get("AllocMem")),
            gres=tuple(parse_gres(f.get("Gres", ""))),
            gres_used=tuple(parse_gres(used)) if used is not None else None,
            alloc_tres=parse_tres(f.get("AllocTRES", "")),
            reason=f.get("Reason", ""),
        ))
    return nodes


# squeue --format fields, separated by the ASCII unit separator; the comment comes last.
_SEP = "\x1f"
SQUEUE_FORMAT = _SEP.join(["%i", "%j", "%T", "%r", "%P", "%D", "%k"])


@dataclass(frozen=True)
class SlurmJob:
    """One job as ``squeue`` lists it."""

    job_id: str
    name: str
    state: str
    reason: str
    partition: str
    nodes: int
    comment: str

    @property
    def tags(self) -> dict[str, str] | None:
        """The ownership tags carried in the comment, or None when the comment has no marker."""
        return parse_ownership_comment(self.comment)

    @property
    def key(self) -> str | None:
        tags = self.tags
        return tags.get(TAG_KEY) if tags else None

    @property
    def live(self) -> bool:
        return self.state not in GONE_STATES


def parse_jobs(text: str) -> list[SlurmJob]:
    """Jobs from ``squeue --noheader --format=`` :data:`SQUEUE_FORMAT` output."""
    jobs: list[SlurmJob] = []
    for line in text.splitlines():
        parts = line.split(_SEP, 6)
        if len(parts) < 7 or not parts[0].strip():
            continue
        job_id, name, state, reason, partition, nodes, comment = (p.strip() for p in parts)
        jobs.append(SlurmJob(job_id, name, state.upper(), reason, partition, _int(nodes, 1),
                             "" if comment == "(null)" else comment))
    return jobs


# --------------------------------------------------------------------------------------------------
# Names and the ownership marker
# --------------------------------------------------------------------------------------------------

_COMMENT_FIELDS: tuple[tuple[str, str], ...] = (
    ("managed", TAG_MANAGED), ("key", TAG_KEY), ("workload", TAG_WORKLOAD), ("replica", TAG_REPLICA),
    ("plan", TAG_PLAN), ("offer", TAG_OFFER), ("team", TAG_TEAM),
)
_TAG_BY_FIELD = dict(_COMMENT_FIELDS)


def job_name(key: str) -> str:
    """The job name of a replica: ``plc-<key>``."""
    return JOB_NAME_PREFIX + key


def ownership_comment(spec: ResourceSpec) -> str:
    """The job comment marking ownership: ``placement.dev:v1,managed=true,key=...,workload=...,...``.

    Values are percent-encoded, so the comment has no spaces, commas, quotes or shell metacharacters.
    """
    tags = spec.ownership_tags()
    return ",".join([COMMENT_MARKER, *(f"{short}={quote(tags[tag], safe='')}" for short, tag in _COMMENT_FIELDS)])


def parse_ownership_comment(comment: str) -> dict[str, str] | None:
    """The ownership tags of a comment made by :func:`ownership_comment`; None without the marker."""
    parts = comment.strip().split(",")
    if not parts or parts[0] != COMMENT_MARKER:
        return None
    tags: dict[str, str] = {}
    for part in parts[1:]:
        short, sep, value = part.partition("=")
        if sep and short in _TAG_BY_FIELD:
            tags[_TAG_BY_FIELD[short]] = unquote(value)
    tags.setdefault(TAG_MANAGED, MANAGED_VALUE)
    return tags if tags.get(TAG_KEY) else None


def render_script(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each ``{{name}}`` replaced; everything else, shell syntax included, unchanged."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------

# (text in the message, lower case) -> (error type, code, what to tell the user)
_ERROR_PATTERNS: tuple[tuple[str, type[ProviderError], str, str], ...] = (
    ("invalid partition", ProviderError, "InvalidPartition",
     "no such partition; check partitions in the provider's settings"),
    ("requested node configuration is not available", OfferUnavailable, "ReqNodeConfig",
     "no node can ever satisfy the request"),
    ("memory specification can not be satisfied", OfferUnavailable, "MemorySpec",
     "no node has the memory asked for"),
    ("requested partition configuration not available", OfferUnavailable, "PartitionConfig",
     "the partition's limits do not allow the request"),
    ("node count specification invalid", OfferUnavailable, "NodeCount", "the partition has too few nodes"),
    ("more processors requested than permitted", OfferUnavailable, "CpuCount", "too many CPUs asked for"),
    ("invalid generic resource", OfferUnavailable, "InvalidGres", "the GRES asked for does not exist there"),
    ("job violates accounting/qos policy", QuotaExceeded, "AccountingPolicy",
     "an accounting or QOS limit would be exceeded"),
    ("qosmax", QuotaExceeded, "QOSLimit", "a QOS limit would be exceeded"),
    ("qosgrp", QuotaExceeded, "QOSLimit", "a QOS group limit would be exceeded"),
    ("assocmax", QuotaExceeded, "AssocLimit", "an association limit would be exceeded"),
    ("assocgrp", QuotaExceeded, "AssocLimit", "an association group limit would be exceeded"),
    ("invalid account", Denied, "InvalidAccount", "the account is unknown or may not use the partition"),
    ("invalid qos", Denied, "InvalidQOS", "the QOS is unknown or not allowed"),
    ("not permitted to use this partition", Denied, "PartitionDenied", "not permitted to use the partition"),
    ("access/permission denied", Denied, "AccessDenied", "not permitted"),
    ("invalid user id", Denied, "InvalidUser", "the user is unknown to the cluster"),
    ("protocol authentication error", Denied, "AuthError", "authentication with the controller failed"),
    ("requested time limit is invalid", ProviderError, "InvalidTimeLimit",
     "the time limit is missing or above the partition's; check time_limit in the provider's settings"),
    ("unable to contact slurm controller", Transient, "ControllerUnreachable", "cannot reach the controller"),
    ("slurm controller not responding", Transient, "ControllerUnreachable", "the controller does not answer"),
    ("socket timed out", Transient, "SocketTimeout", "the controller did not answer in time"),
    ("temporarily unable to accept job", Transient, "ControllerBusy", "the controller is busy"),
    ("zero bytes were transmitted", Transient, "ConnectionError", "the connection to the controller broke"),
    ("munge", Transient, "AuthServiceError", "the munge authentication service failed"),
    ("connection refused", Transient, "ConnectFailed", "connection refused"),
    ("connection timed out", Transient, "ConnectFailed", "connection timed out"),
    ("could not resolve hostname", Transient, "ConnectFailed", "host name not resolved"),
    ("no route to host", Transient, "ConnectFailed", "no route to host"),
)


def slurm_message(stderr: str) -> str:
    """The useful part of a Slurm command's error output, on one line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln.lower()] or lines
    if not errors:
        return ""
    text = errors[-1]
    for marker in ("Batch job submission failed:", "error:"):
        if marker in text:
            text = text.split(marker, 1)[1].strip()
    return " ".join(text.split())[:300]


def error_from_slurm(
    stderr: str,
    *,
    provider: str,
    region: str,
    where: str,
    action: str,
    returncode: int = 1,
    via_ssh: bool = False,
) -> ProviderError:
    """The typed provider error for a failed Slurm command; ``where`` names the cluster and partition."""
    message = slurm_message(stderr)
    text = stderr.lower()
    for needle, kind, code, meaning in _ERROR_PATTERNS:
        if needle in text:
            scope: Scope = "account" if kind is Denied else "provider" if code == "InvalidPartition" else "region"
            return kind(f"{where}: {action}: {meaning} ({message})" if message else f"{where}: {action}: {meaning}",
                        provider=provider, code=code, region=region, scope=scope)
    if via_ssh and returncode == 255:
        return Transient(f"{where}: {action}: ssh failed" + (f" ({message})" if message else ""), provider=provider,
                         code="SshFailed", region=region)
    return ProviderError(f"{where}: {action}: " + (message or f"failed with exit status {returncode}"),
                         provider=provider, code="SlurmError", region=region, scope="region")


def error_from_pending_reason(
    reason: str, *, provider: str, region: str, where: str, what: str
) -> ProviderError | None:
    """The typed error for a pending job that cannot start for ``reason`` (squeue ``%r``), or None to wait."""
    r = reason.strip()
    common: dict[str, Any] = {"provider": provider, "code": r, "region": region}
    if r in ("InvalidAccount", "InvalidQOS", "QOSNotAllowed", "AccountNotAllowed", "PartitionNotAllowed"):
        return Denied(f"{where}: {what} is not permitted", scope="account", **common)
    if (r.startswith(("QOS", "Assoc")) and any(w in r for w in ("Max", "Grp", "Limit"))) or \
            (r.startswith("Max") and "Per" in r):
        return QuotaExceeded(f"{where}: {what} is held back by a limit", scope="region", **common)
    if r in ("PartitionNodeLimit", "PartitionConfig", "PartitionTimeLimit", "BadConstraints",
             "PartitionDown", "PartitionInactive", "InactiveLimit"):
        return OfferUnavailable(f"{where}: {what} cannot start under the partition's limits or state",
                                scope="region", **common)
    if r.startswith("ReqNodeNotAvail") or r.startswith("Nodes_required"):
        return InsufficientCapacity(f"{where}: {what}: the nodes it needs are down, drained or reserved",
                                    scope="region", **{**common, "code": "ReqNodeNotAvail"})
    return None


# --------------------------------------------------------------------------------------------------
# Running commands
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str], str | None, float], CommandResult]


def run_command(argv: Sequence[str], stdin: str | None, timeout_s: float) -> CommandResult:
    """Run ``argv`` (no shell), feeding ``stdin``; raises ``subprocess.TimeoutExpired`` and ``OSError``."""
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout_s, check=False)
    return CommandResult(done.returncode, done.stdout, done.stderr)


# --------------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmInventory:
    """Slice offers, GPU pools and owned capacity of the cluster's nodes, and notes on what was left out."""

    offers: tuple[Offer, ...]
    pools: tuple[CapacityPool, ...]
    owned: tuple[OwnedCapacity, ...]
    nodes: tuple[SlurmNode, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Share:
    """The GPUs of one type on one node, with the node's CPUs and memory shared out to them."""

    owned: OwnedNode
    gres_type: str | None
    cpus: int
    memory_mib: int


class SlurmCompute(Compute):
    """One Slurm cluster, through its commands.

    ``runner`` replaces the function that runs a command (argv, stdin, timeout) -> CommandResult;
    ``delete_timeout_s`` bounds the wait in :meth:`delete`; ``poll_interval_s`` is the pause between
    looks at the queue while waiting.
    """

    def __init__(
        self,
        name: str,
        settings: SlurmSettings,
        *,
        runner: Runner | None = None,
        delete_timeout_s: float = 120.0,
        poll_interval_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.settings = settings
        self._runner: Runner = runner or run_command
        self._delete_timeout_s = delete_timeout_s
        self._poll_interval_s = poll_interval_s
        self._sleep = sleep

    # -- commands ----------------------------------------------------------------------------------

    @property
    def region(self) -> str:
        return self.settings.site.region

    @property
    def cluster(self) -> str:
        return self.settings.cluster or self.name

    def _where(self) -> str:
        parts = self.settings.partitions
        label = "partition" if len(parts) == 1 else "partitions"
        return f"cluster {self.cluster}, {label} {','.join(parts)}"

    def argv(self, args: Sequence[str]) -> list[str]:
        """The full argument list for a Slurm command: prefix, ``env`` with the environment, command."""
        command = list(args)
        if self.settings.environment:
            command = ["env", *(f"{k}={v}" for k, v in sorted(self.settings.environment.items())), *command]
        if self.settings.quotes_arguments:
            command = [shlex.quote(a) for a in command]
        return [*self.settings.command_prefix, *command]

    def run(self, args: Sequence[str], *, stdin: str | None = None, action: str) -> CommandResult:
        """Run one Slurm command. Timeouts become Transient; a missing program a ProviderError."""
        argv = self.argv(args)
        timeout = self.settings.command_timeout_s
        try:
            return self._runner(argv, stdin, timeout)
        except subprocess.TimeoutExpired as exc:
            raise Transient(f"{self._where()}: {action}: {args[0]} did not finish within {timeout:g} s",
                            provider=self.name, code="Timeout", region=self.region) from exc
        except OSError as exc:
            raise ProviderError(f"{self._where()}: cannot run {argv[0]!r} to {action}: {exc.strerror or exc}; "
                                "install Slurm's client commands or set command_prefix", provider=self.name,
                                code="CommandFailed", region=self.region, scope="provider") from exc

    def _check(self, result: CommandResult, *, action: str) -> str:
        if result.returncode != 0:
            raise error_from_slurm(result.stderr or result.stdout, provider=self.name, region=self.region,
                                   where=self._where(), action=action, returncode=result.returncode,
                                   via_ssh=self.settings.quotes_arguments and bool(self.settings.command_prefix))
        return result.stdout

    # -- inventory ---------------------------------------------------------------------------------

    def nodes(self) -> list[SlurmNode]:
        """Every node of the cluster (all partitions)."""
        result = self.run(["scontrol", "--details", "--oneliner", "show", "node"], action="read the nodes")
        return parse_nodes(self._check(result, action="read the nodes"))

    def _shares(self, nodes: Iterable[SlurmNode], notes: list[str] | None = None) -> list[_Share]:
        wanted = set(self.settings.partitions)
        gres_name = self.settings.gres_name
        shares: list[_Share] = []
        for node in nodes:
            if not wanted & set(node.partitions):
                continue
            totals = node.gpus(gres_name)
            all_gpus = sum(totals.values())
            if not all_gpus:
                continue
            used = node.gpus_used(gres_name)
            cpu_free = node.cpus_allocated < node.cpus
            mem_free = node.memory_mib <= 0 or node.memory_allocated_mib < node.memory_mib
            for gres_type, count in sorted(totals.items(), key=lambda kv: kv[0] or ""):
                product = gres_type or gres_name
                if gres_type and _MIG_TYPE.search(gres_type):
                    _note(notes, f"node {node.name}: {gres_name}:{gres_type} is a MIG slice, not sold as a GPU")
                    continue
                found = self.settings.model_of(product)
                if found is None:
                    _note(notes, f"node {node.name}: GPU type {product!r} is unknown; map it in gpu_models")
                    continue
                model, memory = found
                gpu_memory = float(memory or GPU_MODELS[model].memory_gib[0])
                cpus = max(1, node.cpus * count // all_gpus)
                memory_mib = node.memory_mib * count // all_gpus
                free = count - used.get(gres_type, 0) if node.schedulable and cpu_free and mem_free else 0
                shares.append(_Share(
                    owned=OwnedNode(
                        name=node.name if len(totals) == 1 else f"{node.name}:{product}",
                        gpu_model=model,
                        gpu_memory_gib=gpu_memory,
                        gpus_total=count,
                        gpus_free=max(0, min(free, count)),
                        vcpus=cpus,
                        memory_gib=round(memory_mib / 1024, 2),
                        schedulable=node.schedulable,
                    ),
                    gres_type=gres_type,
                    cpus=cpus,
                    memory_mib=memory_mib,
                ))
        return shares

    def inventory(self) -> SlurmInventory:
        """Slice offers, one GPU pool per node shape, and owned capacity, from the nodes' GRES."""
        notes: list[str] = []
        nodes = self.nodes()
        shares = self._shares(nodes, notes)
        if not any(set(self.settings.partitions) & set(n.partitions) for n in nodes):
            notes.append(f"{self._where()}: no node found in the configured partitions")
        offers, pools, owned = slice_offers(self.name, self.settings, [s.owned for s in shares],
                                            type_prefix=TYPE_PREFIX)
        return SlurmInventory(tuple(offers), tuple(pools), tuple(owned), tuple(nodes), tuple(notes))

    def offers(self) -> list[Offer]:
        return list(self.inventory().offers)

    def owned_capacity(self) -> list[OwnedCapacity]:
        """Owned GPUs per model and node shape: total, free and the internal cost of a GPU-hour."""
        return list(self.inventory().owned)

    # -- jobs --------------------------------------------------------------------------------------

    def jobs(self, *, name: str | None = None) -> list[SlurmJob]:
        """The engine user's jobs in the queue (``squeue --me --all``), optionally only those named ``name``."""
        args = ["squeue", "--noheader", "--me", "--all", f"--format={SQUEUE_FORMAT}"]
        if name:
            args.append(f"--name={name}")
        result = self.run(args, action="list jobs")
        return parse_jobs(self._check(result, action="list jobs"))

    def _job(self, job_id: str) -> SlurmJob | None:
        """One job in any state while the controller still remembers it, or None."""
        args = ["squeue", "--noheader", "--states=all", f"--jobs={job_id}", f"--format={SQUEUE_FORMAT}"]
        result = self.run(args, action=f"look up job {job_id}")
        if result.returncode != 0 and "invalid job id" in (result.stderr or "").lower():
            return None
        found = [j for j in parse_jobs(self._check(result, action=f"look up job {job_id}")) if j.job_id == job_id]
        return found[0] if found else None

    # -- actuation ---------------------------------------------------------------------------------

    def _check_offer(self, offer: Offer) -> None:
        if offer.provider != self.name:
            raise PlacementError(f"offer {offer.id!r} belongs to provider {offer.provider!r}, not {self.name!r}")
        if offer.region != self.region:
            raise PlacementError(f"offer {offer.id!r} is in region {offer.region!r}, not in {self.region!r} where "
                                 f"provider {self.name!r} is")
        if offer.capacity_type != "owned" or not offer.instance_type.startswith(TYPE_PREFIX + "-"):
            raise PlacementError(f"offer {offer.id!r} is not a slice of provider {self.name!r}")

    def _shape(self, offer: Offer) -> tuple[int, float]:
        """GPUs per node and GPU memory of the node shape an offer slices (``slurm-h100-8g-slice-2g``)."""
        match = re.search(r"-(\d+)g-slice-\d+g$", offer.instance_type)
        per_node = int(match.group(1)) if match else offer.gpu_count
        return per_node, offer.gpu_memory_gib

    def _resources(self, offer: Offer) -> tuple[str | None, int, int]:
        """GRES type, CPUs per node and memory (MiB) per node to ask for an offer, read from the nodes now."""
        per_node, memory = self._shape(offer)
        shares = [s for s in self._shares(self.nodes())
                  if s.owned.gpu_model == offer.gpu_model and s.owned.gpus_total == per_node
                  and s.owned.gpu_memory_gib == memory]
        if not shares:
            raise OfferUnavailable(
                f"{self._where()}: no node with {per_node}x {offer.gpu_model} {memory:g} GiB is left for "
                f"{offer.instance_type}", provider=self.name, code="NoSuchNodes", region=self.region, scope="region")
        k = offer.gpu_count
        by_type: dict[str | None, list[_Share]] = defaultdict(list)
        for share in shares:
            by_type[share.gres_type].append(share)
        # The GRES type with the most nodes that can take the slice now, then the most nodes.
        gres_type = max(sorted(by_type, key=lambda t: t or ""),
                        key=lambda t: (sum(s.owned.gpus_free >= k for s in by_type[t]), len(by_type[t])))
        members = by_type[gres_type]
        cpus = max(1, min(s.cpus * k // per_node for s in members))
        memory_mib = max(1, min(s.memory_mib * k // per_node for s in members))
        return gres_type, cpus, memory_mib

    def _gres(self, gres_type: str | None, count: int) -> str:
        return f"{self.settings.gres_name}:{gres_type}:{count}" if gres_type else f"{self.settings.gres_name}:{count}"

    def _managed(self, spec: ResourceSpec, jobs: Sequence[SlurmJob]) -> ManagedResource:
        return ManagedResource(
            provider=self.name,
            resource_ids=tuple(sorted((j.job_id for j in jobs), key=_job_sort_key)),
            region=self.region,
            zone=None,
            key=spec.key,
            workload=spec.workload,
            replica=spec.replica,
            offer_id=spec.offer.id,
            plan_digest=spec.plan_digest,
            state=",".join(sorted({j.state for j in jobs})),
        )

    def sbatch_args(self, spec: ResourceSpec, gres: str, cpus: int, memory_mib: int) -> list[str]:
        """The sbatch command line for ``spec`` (the job script goes to stdin)."""
        s = self.settings
        args = [
            "sbatch", "--parsable",
            f"--job-name={job_name(spec.key)}",
            f"--comment={ownership_comment(spec)}",
            f"--partition={','.join(s.partitions)}",
            f"--nodes={spec.nodes}",
            "--ntasks-per-node=1",
            f"--cpus-per-task={cpus}",
            f"--mem={memory_mib}M",
            f"--gres={gres}",
            f"--export={s.export}",
            f"--chdir={s.workdir}",
            f"--output={s.output}",
        ]
        if s.account:
            args.append(f"--account={s.account}")
        if s.qos:
            args.append(f"--qos={s.qos}")
        if s.time_limit:
            args.append(f"--time={s.time_limit}")
        args.extend(s.sbatch_options)
        return args

    def job_script(self, spec: ResourceSpec, gres: str) -> str:
        template = self.settings.job_scripts.get(spec.workload, self.settings.job_script)
        return render_script(template, {
            "key": spec.key, "workload": spec.workload, "replica": str(spec.replica), "team": spec.team,
            "plan": spec.plan_digest, "offer": spec.offer.id, "gpu_model": spec.offer.gpu_model,
            "gpus": str(spec.offer.gpu_count), "nodes": str(spec.nodes), "gres": gres, "job_name": job_name(spec.key),
        })

    def create(self, spec: ResourceSpec) -> ManagedResource:
        offer = spec.offer
        self._check_offer(offer)
        existing = [j for j in self.jobs(name=job_name(spec.key)) if j.live and j.key == spec.key]
        if existing:
            log.info("%s: adopting job(s) %s for %s", self.name, ", ".join(j.job_id for j in existing), spec.key)
            return self._managed(spec, existing)
        gres_type, cpus, memory_mib = self._resources(offer)
        gres = self._gres(gres_type, offer.gpu_count)
        what = f"{spec.nodes}x {offer.gpu_count}x {offer.gpu_model} (--gres={gres})" if spec.nodes > 1 else \
            f"{offer.gpu_count}x {offer.gpu_model} (--gres={gres})"
        action = f"submit a job for {what}"
        result = self.run(self.sbatch_args(spec, gres, cpus, memory_mib), stdin=self.job_script(spec, gres),
                          action=action)
        out = self._check(result, action=action).strip()
        job_id = out.splitlines()[-1].split(";", 1)[0].strip() if out else ""
        if not job_id.isdigit():
            raise ProviderError(f"{self._where()}: sbatch answered {out[:100]!r} instead of a job id",
                                provider=self.name, code="BadResponse", region=self.region, scope="region")
        log.info("%s: submitted job %s for %s", self.name, job_id, spec.key)
        job = self._await_start(job_id, what)
        return self._managed(spec, [job])

    def _await_start(self, job_id: str, what: str) -> SlurmJob:
        """Wait up to ``start_timeout_s`` for a job to run; cancel it and raise if it cannot start."""
        deadline = time.monotonic() + self.settings.start_timeout_s
        subject = f"job {job_id} for {what}"
        while True:
            job = self._job(job_id)
            if job is not None and job.state in RUNNING_STATES | {"COMPLETING", "COMPLETED"}:
                return job  # running, or already done (a short batch job)
            if job is None or job.state in GONE_STATES:
                state = job.state if job else "gone from the queue"
                raise ProviderError(f"{self._where()}: {subject} ended before it was seen running ({state}); "
                                    "check the job script", provider=self.name, code="JobEnded",
                                    region=self.region, scope="region")
            error = error_from_pending_reason(job.reason, provider=self.name, region=self.region,
                                              where=self._where(), what=subject)
            if error is not None:
                self._cancel([job_id])
                raise error
            if time.monotonic() >= deadline:
                if self.settings.start_timeout_s <= 0:
                    return job
                self._cancel([job_id])
                raise InsufficientCapacity(
                    f"{self._where()}: {subject} still pending ({job.reason}) after "
                    f"{self.settings.start_timeout_s:g} s; cancelled", provider=self.name,
                    code=job.reason or "Pending", region=self.region, scope="region")
            self._sleep(self._poll_interval_s)

    def _cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        result = self.run(["scancel", *job_ids], action=f"cancel job(s) {', '.join(job_ids)}")
        if result.returncode != 0 and "invalid job id" not in (result.stderr or "").lower():
            self._check(result, action=f"cancel job(s) {', '.join(job_ids)}")

    def _targets(self, resource: ManagedResource) -> list[str]:
        ids = set(resource.resource_ids)
        return sorted((j.job_id for j in self.jobs() if j.live and j.key is not None
                       and ((j.job_id in ids and (not resource.key or j.key == resource.key))
                            or (resource.key and j.key == resource.key))), key=_job_sort_key)

    def delete(self, resource: ManagedResource) -> None:
        targets = self._targets(resource)
        if not targets:
            return
        self._cancel(targets)
        deadline = time.monotonic() + self._delete_timeout_s
        while True:
            remaining = set(self._targets(resource)) & set(targets)
            if not remaining:
                return
            if time.monotonic() >= deadline:
                raise Transient(f"{self._where()}: job(s) {', '.join(sorted(remaining, key=_job_sort_key))} "
                                f"still not cancelled after {self._delete_timeout_s:g} s", provider=self.name,
                                code="DeleteTimeout", region=self.region)
            self._sleep(self._poll_interval_s)

    def list_managed(self) -> list[ManagedResource]:
        groups: dict[str, list[SlurmJob]] = defaultdict(list)
        for job in self.jobs():
            if job.live and job.key:
                groups[job.key].append(job)
        found: list[ManagedResource] = []
        for _, members in sorted(groups.items()):
            found.append(ManagedResource.from_tags(
                provider=self.name,
                resource_ids=tuple(sorted((j.job_id for j in members), key=_job_sort_key)),
                region=self.region,
                zone=None,
                state=",".join(sorted({j.state for j in members})),
                tags=members[0].tags or {},
            ))
        return found


def _job_sort_key(job_id: str) -> tuple[int, str]:
    head = job_id.split("_", 1)[0].split("+", 1)[0]
    return (int(head) if head.isdigit() else 0, job_id)


def _note(notes: list[str] | None, text: str) -> None:
    if notes is not None and text not in notes:
        notes.append(text)
