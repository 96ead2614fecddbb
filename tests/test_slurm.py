"""The Slurm pool adapter: parsers on captured output, and the adapter against a real one-node cluster.

What is real in the cluster tests: Debian's slurmctld, slurmd and munge (Slurm 22.05), started by
``tests/slurm_cluster.py`` in a private network namespace with GPUs of two models (4 H100, 2 L40S)
whose device files are placeholders; the adapter's scontrol, sbatch, squeue and scancel commands
and the controller's scheduling, GRES accounting and error messages. What is not: the GPUs (jobs
hold them but never touch them), accounting limits (no slurmdbd, so QOS and association limits are
tested on captured messages only). The cluster tests need root and skip with the reason otherwise.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from placement.errors import PlacementError
from placement.models import Offer
from providers.base import (
    TAG_KEY,
    TAG_OFFER,
    TAG_PLAN,
    TAG_REPLICA,
    TAG_TEAM,
    Denied,
    InsufficientCapacity,
    ManagedResource,
    OfferUnavailable,
    ProviderError,
    QuotaExceeded,
    ResourceSpec,
    Transient,
)
from providers.slurm import (
    COMMENT_MARKER,
    DEFAULT_JOB_SCRIPT,
    SQUEUE_FORMAT,
    CommandResult,
    SlurmCompute,
    SlurmSettings,
    error_from_pending_reason,
    error_from_slurm,
    job_name,
    ownership_comment,
    parse_fields,
    parse_gres,
    parse_jobs,
    parse_nodes,
    parse_ownership_comment,
    render_script,
    slurm_message,
)
from tests.slurm_cluster import SlurmCluster, skip_reason, start_cluster

PLAN = "sha256:" + "ef" * 32
SEP = "\x1f"
SITE: dict[str, Any] = {"region": "fra-dc1", "country": "DE", "jurisdiction": "EU",
                        "location": {"lat": 50.11, "lon": 8.68}, "pue": 1.3}
COSTS: dict[str, Any] = {"H100": {"capital_usd": 280000, "lifetime_years": 4, "power_kw": 10.2},
                         "L40S": {"capital_usd": 60000, "lifetime_years": 5}}

# Captured from Slurm 22.05.8 (`scontrol --details --oneliner show node`): idle, two jobs running, drained.
NODE_IDLE = (
    "NodeName=gpunode Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=16 CPUTot=16 CPULoad=0.85 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=gpu:h100:4,gpu:l40s:2 GresDrain=N/A "
    "GresUsed=gpu:h100:0(IDX:N/A),gpu:l40s:0(IDX:N/A) NodeAddr=10.213.7.2 NodeHostName=vm Version=22.05.8 "
    "OS=Linux 6.18.44-fc-v657 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=64000 AllocMem=0 FreeMem=22764 Sockets=16 "
    "Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=gpu  "
    "BootTime=2026-11-23T13:11:01 SlurmdStartTime=2026-11-23T13:25:28 LastBusyTime=2026-11-23T13:25:28 "
    "CfgTRES=cpu=16,mem=62.50G,billing=16 AllocTRES= CapWatts=n/a CurrentWatts=0 AveWatts=0 "
    "ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s"
)
NODE_MIXED = NODE_IDLE.replace("CPUAlloc=0", "CPUAlloc=4").replace(
    "GresUsed=gpu:h100:0(IDX:N/A)", "GresUsed=gpu:h100:2(IDX:0-1)").replace(
    "AllocMem=0", "AllocMem=8000").replace("State=IDLE", "State=MIXED").replace(
    "AllocTRES=", "AllocTRES=cpu=4,mem=8000M")
NODE_DRAINED = NODE_MIXED.replace("State=MIXED", "State=MIXED+DRAIN") + \
    " Reason=bad fan [ops] [root@2026-11-23T13:21:48]"
# Other shapes seen on other versions and sites (built after the documented formats).
NODE_A100_NO_DETAILS = (
    "NodeName=a100-[01] Arch=x86_64 CoresPerSocket=32 CPUAlloc=16 CPUTot=128 Gres=gpu:a100_80g:8(S:0-1) "
    "NodeAddr=a100-01 RealMemory=1024000 AllocMem=65536 State=MIXED Partitions=gpu,long "
    "CfgTRES=cpu=128,mem=1000G,billing=128,gres/gpu=8 AllocTRES=cpu=16,mem=64G,gres/gpu=3,gres/gpu:a100_80g=3"
)
NODE_UNTYPED_DOWN = (
    "NodeName=old-01 CPUAlloc=0 CPUTot=32 Gres=gpu:4 GresUsed=gpu:(null):0(IDX:N/A) RealMemory=256000 "
    "AllocMem=0 State=DOWN+NOT_RESPONDING Partitions=gpu Reason=Not responding [slurm@2026-11-01T00:00:00]"
)
NODE_CPU_ONLY = "NodeName=cpu-01 CPUAlloc=0 CPUTot=64 Gres=(null) RealMemory=256000 AllocMem=0 State=IDLE Partitions=gpu"
NODE_OTHER_PARTITION = NODE_IDLE.replace("NodeName=gpunode", "NodeName=debug-01").replace(
    "Partitions=gpu ", "Partitions=debug ")
NODE_MIG_AND_ODD = (
    "NodeName=lab-01 CPUAlloc=0 CPUTot=32 Gres=gpu:a100_3g.40gb:2,gpu:tesla_x:1 "
    "GresUsed=gpu:a100_3g.40gb:0(IDX:N/A),gpu:tesla_x:0(IDX:N/A) RealMemory=128000 AllocMem=0 State=IDLE "
    "Partitions=gpu"
)

# Captured from Slurm 22.05.8 `squeue --noheader --format=<SQUEUE_FORMAT>`, one managed job and one not.
MANAGED_COMMENT = ("placement.dev:v1,managed=true,key=llm-r0-0123456789abcdef01234567,workload=llm,replica=0,"
                   "plan=sha256%3A" + "ef" * 32 + ",offer=hpc%2Ffra-dc1%2Fslurm-h100-4g-slice-2g%2Fowned,team=ml")
SQUEUE_OUT = (
    f"7{SEP}plc-llm-r0-0123456789abcdef01234567{SEP}RUNNING{SEP}None{SEP}gpu{SEP}1{SEP}{MANAGED_COMMENT}\n"
    f"8{SEP}interactive{SEP}PENDING{SEP}Resources{SEP}gpu{SEP}1{SEP}(null)\n"
    f"9{SEP}plc-fake{SEP}RUNNING{SEP}None{SEP}gpu{SEP}1{SEP}placement.dev/key=abc\n"
)


def settings(**extra: Any) -> SlurmSettings:
    base: dict[str, Any] = {"partitions": ["gpu"], "site": SITE, "costs": COSTS}
    base.update(extra)
    return SlurmSettings.model_validate(base)


# --------------------------------------------------------------------------------------------------
# Parsers (run everywhere)
# --------------------------------------------------------------------------------------------------


def test_fields_keep_values_with_spaces_and_the_reason_to_the_end() -> None:
    f = parse_fields(NODE_DRAINED)
    assert f["OS"] == "Linux 6.18.44-fc-v657 #1 SMP PREEMPT_DYNAMIC @0"
    assert f["AllocTRES"] == "cpu=4,mem=8000M" and f["CfgTRES"] == "cpu=16,mem=62.50G,billing=16"
    assert f["Reason"] == "bad fan [ops] [root@2026-11-23T13:21:48]"
    assert f["State"] == "MIXED+DRAIN" and f["Partitions"] == "gpu"


@pytest.mark.parametrize(("text", "expected"), [
    ("gpu:h100:8(S:0-1)", [("gpu", "h100", 8)]),
    ("gpu:h100:3(IDX:0-1,5),gpu:l40s:0(IDX:N/A)", [("gpu", "h100", 3), ("gpu", "l40s", 0)]),
    ("gpu:4", [("gpu", None, 4)]),
    ("gpu:(null):0(IDX:N/A)", [("gpu", None, 0)]),
    ("gpu:a100:no_consume:2,mps:200,shard:1K", [("gpu", "a100", 2), ("mps", None, 200), ("shard", None, 1024)]),
    ("(null)", []),
    ("N/A", []),
])
def test_gres_entries(text: str, expected: list[tuple[str, str | None, int]]) -> None:
    assert [(g.name, g.type, g.count) for g in parse_gres(text)] == expected


def test_nodes_free_gpus_from_gres_used_and_alloc_tres() -> None:
    idle, mixed, drained, a100, old, cpu = parse_nodes("\n".join(
        [NODE_IDLE, NODE_MIXED, NODE_DRAINED, NODE_A100_NO_DETAILS, NODE_UNTYPED_DOWN, NODE_CPU_ONLY]))
    assert idle.gpus("gpu") == {"h100": 4, "l40s": 2} and idle.gpus_used("gpu") == {"h100": 0, "l40s": 0}
    assert idle.cpus == 16 and idle.memory_mib == 64000 and idle.schedulable
    assert mixed.gpus_used("gpu") == {"h100": 2, "l40s": 0} and mixed.cpus_allocated == 4 and mixed.schedulable
    assert not drained.schedulable and drained.reason.startswith("bad fan")
    assert a100.gres_used is None and a100.gpus_used("gpu") == {"a100_80g": 3}
    assert a100.partitions == ("gpu", "long") and a100.cpus == 128
    assert old.gpus("gpu") == {None: 4} and not old.schedulable
    assert cpu.gpus("gpu") == {}


@pytest.mark.parametrize(("state", "schedulable"), [
    ("IDLE", True), ("MIXED", True), ("ALLOCATED", True), ("IDLE+CLOUD+POWERED_DOWN", True), ("idle~", True),
    ("MIXED+DRAIN", False), ("IDLE+DRAIN", False), ("DOWN", False), ("DOWN*+DRAIN", False), ("idle*", False),
    ("IDLE+MAINTENANCE+RESERVED", False), ("FUTURE", False), ("UNKNOWN", False), ("IDLE+REBOOT_REQUESTED", False),
])
def test_node_states(state: str, schedulable: bool) -> None:
    (node,) = parse_nodes(f"NodeName=n1 CPUTot=8 Gres=gpu:h100:1 State={state} Partitions=gpu")
    assert node.schedulable is schedulable


def test_jobs_and_the_ownership_comment() -> None:
    managed, foreign, fake = parse_jobs(SQUEUE_OUT)
    assert (managed.job_id, managed.state, managed.partition, managed.nodes) == ("7", "RUNNING", "gpu", 1)
    tags = managed.tags
    assert tags is not None and tags[TAG_KEY] == "llm-r0-0123456789abcdef01234567"
    assert tags[TAG_OFFER] == "hpc/fra-dc1/slurm-h100-4g-slice-2g/owned" and tags[TAG_PLAN] == PLAN
    assert (foreign.comment, foreign.key, foreign.reason) == ("", None, "Resources")
    assert fake.key is None  # a name like ours without the marker is not ours
    assert SQUEUE_FORMAT.split(SEP)[-1] == "%k"  # the comment comes last


def offer(model: str = "H100", per_node: int = 4, k: int = 2, **extra: Any) -> Offer:
    fields: dict[str, Any] = {
        "provider": "hpc", "provider_kind": "on-prem", "region": "fra-dc1", "country": "DE", "jurisdiction": "EU",
        "instance_type": f"slurm-{model.lower()}-{per_node}g-slice-{k}g", "gpu_model": model, "gpu_count": k,
        "gpu_memory_gib": {"H100": 80, "L40S": 48}[model], "vcpus": 4, "memory_gib": 32.0,
        "capacity_type": "owned", "hourly_usd": 3.0, "location": {"lat": 50.11, "lon": 8.68},
    }
    fields.update(extra)
    return Offer.model_validate(fields)


def spec_for(o: Offer, *, workload: str = "llm", replica: int = 0, nodes: int = 1) -> ResourceSpec:
    return ResourceSpec.for_replica(plan_digest=PLAN, workload=workload, replica=replica, team="ml team/α",
                                    offer=o, nodes=nodes)


def test_ownership_comment_round_trips_and_is_shell_safe() -> None:
    spec = spec_for(offer(), workload="llm")
    comment = ownership_comment(spec)
    assert comment.startswith(COMMENT_MARKER + ",")
    assert not set(comment) & set(" \t'\"$;&|<>()`\\!*?[]{}#~")
    tags = parse_ownership_comment(comment)
    assert tags == spec.ownership_tags()
    assert tags is not None and tags[TAG_TEAM] == "ml team/α" and tags[TAG_REPLICA] == "0"
    assert parse_ownership_comment("placement.dev/key=abc") is None
    assert parse_ownership_comment(COMMENT_MARKER + ",workload=x") is None  # no key, not ours
    assert job_name(spec.key) == "plc-" + spec.key


def test_script_placeholders() -> None:
    text = render_script("#!/bin/sh\necho {{workload}}-{{ replica }} ${HOME} $$ {{unknown}}\n",
                         {"workload": "llm", "replica": "3"})
    assert text == "#!/bin/sh\necho llm-3 ${HOME} $$ {{unknown}}\n"
    assert "sleep infinity" in DEFAULT_JOB_SCRIPT


@pytest.mark.parametrize(("stderr", "kind", "code"), [
    ("sbatch: error: Batch job submission failed: Requested node configuration is not available",
     OfferUnavailable, "ReqNodeConfig"),
    ("sbatch: error: Memory specification can not be satisfied\n"
     "sbatch: error: Batch job submission failed: Requested node configuration is not available",
     OfferUnavailable, "ReqNodeConfig"),
    ("sbatch: error: invalid partition specified: nope\n"
     "sbatch: error: Batch job submission failed: Invalid partition name specified", ProviderError, "InvalidPartition"),
    ("sbatch: error: QOSMaxGRESPerUser\nsbatch: error: Batch job submission failed: Job violates accounting/QOS "
     "policy (job submit limit, user's size and/or time limits)", QuotaExceeded, "AccountingPolicy"),
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
     Denied, "InvalidAccount"),
    ("sbatch: error: Batch job submission failed: Invalid qos specification", Denied, "InvalidQOS"),
    ("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)",
     Transient, "ControllerUnreachable"),
    ("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation", Transient,
     "SocketTimeout"),
    ("sbatch: error: Munge encode failed: Failed to access \"/run/munge/munge.socket.2\": No such file or directory",
     Transient, "AuthServiceError"),
    ("sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds some limit)",
     ProviderError, "InvalidTimeLimit"),
    ("sbatch: error: Batch job submission failed: Invalid feature specification", ProviderError, "SlurmError"),
])
def test_sbatch_errors_map_to_typed_errors(stderr: str, kind: type[ProviderError], code: str) -> None:
    error = error_from_slurm(stderr, provider="hpc", region="fra-dc1", where="cluster fra-hpc, partition gpu",
                             action="submit a job for 2x H100")
    assert type(error) is kind and error.code == code
    assert str(error).startswith("hpc fra-dc1: cluster fra-hpc, partition gpu: submit a job for 2x H100")
    assert error.retryable is (kind is Transient)
    assert slurm_message(stderr) in str(error)


def test_ssh_failures_are_transient() -> None:
    error = error_from_slurm("ssh: connect to host login1 port 22: Network is unreachable", provider="hpc",
                             region="fra-dc1", where="cluster c, partition gpu", action="list jobs", returncode=255,
                             via_ssh=True)
    assert isinstance(error, Transient) and error.code == "SshFailed"


@pytest.mark.parametrize(("reason", "kind"), [
    ("QOSMaxGRESPerUser", QuotaExceeded), ("QOSGrpGRES", QuotaExceeded), ("AssocGrpGRES", QuotaExceeded),
    ("AssocMaxJobsLimit", QuotaExceeded), ("MaxGRESPerAccount", QuotaExceeded),
    ("PartitionNodeLimit", OfferUnavailable), ("PartitionConfig", OfferUnavailable),
    ("ReqNodeNotAvail, UnavailableNodes:gpunode", InsufficientCapacity), ("InvalidQOS", Denied),
    ("Resources", None), ("Priority", None), ("None", None), ("BeginTime", None),
])
def test_pending_reasons(reason: str, kind: type[ProviderError] | None) -> None:
    error = error_from_pending_reason(reason, provider="hpc", region="fra-dc1", where="cluster c, partition gpu",
                                      what="job 7")
    assert (type(error) if error is not None else None) is kind


# --------------------------------------------------------------------------------------------------
# Settings and commands (run everywhere)
# --------------------------------------------------------------------------------------------------


def test_settings_example_in_the_docstring_is_valid() -> None:
    doc = SlurmSettings.__doc__ or ""
    example = yaml.safe_load(doc.split("Example::", 1)[1])
    parsed = SlurmSettings.model_validate(example["hpc-fra"])
    assert parsed.partitions == ("gpu",) and parsed.quotes_arguments
    assert set(parsed.costs) == {"H100", "L40S"} and parsed.gpu_models == {"h100_nvl": "H100"}


@pytest.mark.parametrize(("extra", "message"), [
    ({"partitions": []}, "at least 1"),
    ({"partitions": ["gpu", "gpu"]}, "twice"),
    ({"job_script": "#!/bin/sh\nrun {{image}}\n"}, "unknown placeholder"),
    ({"job_scripts": {"llm": "run.sh"}}, "interpreter line"),
    ({"sbatch_options": ["--job-name=x"]}, "may not set"),
    ({"environment": {"BAD-NAME": "1"}}, "environment variable names"),
    ({"environment": {"SLURM_JWT": "eyJ..."}}, "credentials do not belong"),
    ({"costs": {"H900": {"capital_usd": 1}}}, "unknown GPU model"),
    ({"surprise": 1}, "Extra inputs"),
])
def test_settings_are_checked(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**extra)


def test_commands_go_through_prefix_env_and_quoting() -> None:
    local = SlurmCompute("hpc", settings(environment={"SLURM_CONF": "/etc/slurm/lab.conf"}))
    assert local.argv(["squeue", "--me"]) == ["env", "SLURM_CONF=/etc/slurm/lab.conf", "squeue", "--me"]
    ns = SlurmCompute("hpc", settings(command_prefix=["ip", "netns", "exec", "lab"]))
    assert ns.argv(["sinfo"]) == ["ip", "netns", "exec", "lab", "sinfo"]
    ssh = SlurmCompute("hpc", settings(command_prefix=["ssh", "login1"]))
    assert ssh.argv(["squeue", "--format=%i %j"]) == ["ssh", "login1", "squeue", "'--format=%i %j'"]


def test_command_timeouts_are_transient_and_missing_programs_are_named() -> None:
    slow = SlurmCompute("hpc", settings(command_prefix=["sh", "-c", "exec sleep 5", "sh"], command_timeout_s=0.3))
    started = time.monotonic()
    with pytest.raises(Transient, match=r"did not finish within 0\.3 s") as info:
        slow.run(["squeue"], action="list jobs")
    assert info.value.code == "Timeout" and time.monotonic() - started < 4
    missing = SlurmCompute("hpc", settings(command_prefix=["/nonexistent/ssh-wrapper"]))
    with pytest.raises(ProviderError, match="cannot run '/nonexistent/ssh-wrapper'"):
        missing.nodes()


class FakeSlurm:
    """Answers the adapter's commands from canned output and records them (argv after prefix and env)."""

    def __init__(self, nodes: str, squeue: str = "") -> None:
        self.nodes = nodes
        self.squeue = squeue
        self.calls: list[list[str]] = []
        self.stdin: list[str | None] = []
        self.sbatch: Callable[[list[str]], CommandResult] = lambda args: CommandResult(0, "42\n", "")
        self.job: Callable[[str], str] = lambda job_id: f"{job_id}{SEP}plc-x{SEP}RUNNING{SEP}None{SEP}gpu{SEP}1{SEP}c\n"

    def __call__(self, argv: Sequence[str], stdin: str | None, timeout_s: float) -> CommandResult:
        args = list(argv)
        if args and args[0] == "env":
            args = args[1:]
            while args and "=" in args[0]:
                args = args[1:]
        self.calls.append(args)
        self.stdin.append(stdin)
        command = args[0]
        if command == "scontrol":
            return CommandResult(0, self.nodes, "")
        if command == "squeue":
            jobs = [a.split("=", 1)[1] for a in args if a.startswith("--jobs=")]
            return CommandResult(0, self.job(jobs[0]) if jobs else self.squeue, "")
        if command == "sbatch":
            return self.sbatch(args)
        if command == "scancel":
            return CommandResult(0, "", "")
        raise AssertionError(f"unexpected command {args}")

    def commands(self) -> list[str]:
        return [c[0] for c in self.calls]


def test_inventory_from_captured_nodes() -> None:
    fake = FakeSlurm("\n".join([NODE_MIXED, NODE_DRAINED.replace("gpunode", "gpunode2"), NODE_A100_NO_DETAILS,
                                NODE_UNTYPED_DOWN, NODE_CPU_ONLY, NODE_OTHER_PARTITION, NODE_MIG_AND_ODD]))
    compute = SlurmCompute("hpc", settings(costs={**COSTS, "A100": {"capital_usd": 150000}},
                                           gpu_models={"gpu": "V100"}), runner=fake)
    inv = compute.inventory()
    assert fake.calls == [["scontrol", "--details", "--oneliner", "show", "node"]]
    by_type = {o.instance_type: o for o in inv.offers}
    h100_2 = by_type["slurm-h100-4g-slice-2g"]
    # gpunode: 2 of 4 H100 free; gpunode2 (drained) owned, not free; debug-01 is in another partition.
    assert (h100_2.available, by_type["slurm-h100-4g-slice-1g"].available, by_type["slurm-h100-4g-slice-4g"].available) \
        == (1, 2, 0)
    assert h100_2.gpu_memory_gib == 80 and h100_2.capacity_type == "owned" and h100_2.region == "fra-dc1"
    # CPUs and memory of the mixed node are shared out by GPUs: 16 x 4/6 = 10 CPUs for the H100s.
    assert h100_2.vcpus == 5 and h100_2.memory_gib == pytest.approx(20.8, abs=0.05)
    assert by_type["slurm-l40s-2g-slice-2g"].available == 1 and by_type["slurm-l40s-2g-slice-1g"].gpu_memory_gib == 48
    a100 = by_type["slurm-a100-8g-slice-8g"]
    assert a100.gpu_memory_gib == 80 and by_type["slurm-a100-8g-slice-1g"].available == 5 and a100.available == 0
    v100 = by_type["slurm-v100-4g-slice-4g"]  # untyped gpu:4 mapped by gpu_models, node down
    assert v100.available == 0 and v100.unavailable_reason and "no internal cost" in v100.unavailable_reason
    owned = {(c.gpu_model, c.gpus_total, c.gpus_free) for c in compute.owned_capacity()}
    assert owned == {("H100", 8, 2), ("L40S", 4, 2), ("A100", 8, 5), ("V100", 4, 0)}
    assert {p.id: p.limit for p in inv.pools} == {
        "hpc/fra-dc1/a100-8g": 5, "hpc/fra-dc1/h100-4g": 2, "hpc/fra-dc1/l40s-2g": 2, "hpc/fra-dc1/v100-4g": 0}
    assert all(o.pools == (f"hpc/fra-dc1/{o.gpu_model.lower()}-{o.instance_type.split('-')[2]}",) for o in inv.offers)
    assert any("a100_3g.40gb is a MIG slice" in n for n in inv.notes)
    assert any("'tesla_x' is unknown; map it in gpu_models" in n for n in inv.notes)
    assert compute.offers() == list(inv.offers)


def test_create_adopts_a_live_job_with_the_key() -> None:
    spec = spec_for(offer())
    fake = FakeSlurm(NODE_IDLE, squeue=f"5{SEP}{job_name(spec.key)}{SEP}PENDING{SEP}Priority{SEP}gpu{SEP}1{SEP}"
                                       f"{ownership_comment(spec)}\n")
    got = SlurmCompute("hpc", settings(), runner=fake).create(spec)
    assert fake.commands() == ["squeue"] and got.resource_ids == ("5",) and got.state == "PENDING"
    assert f"--name={job_name(spec.key)}" in fake.calls[0]


def test_create_submits_with_gres_resources_marker_and_script() -> None:
    spec = spec_for(offer(k=2))
    fake = FakeSlurm(NODE_MIXED)
    compute = SlurmCompute("hpc", settings(account="ml", qos="high", time_limit="1-00:00:00",
                                           sbatch_options=["--constraint=ib"],
                                           job_scripts={"llm": "#!/bin/sh\nexec serve {{workload}} {{gpus}}\n"}),
                           runner=fake, sleep=lambda s: None)
    got = compute.create(spec)
    assert fake.commands() == ["squeue", "scontrol", "sbatch", "squeue"]
    sbatch = fake.calls[2]
    assert sbatch[:2] == ["sbatch", "--parsable"]
    assert {"--gres=gpu:h100:2", "--nodes=1", "--partition=gpu", "--cpus-per-task=5", "--mem=21333M",
            "--account=ml", "--qos=high", "--time=1-00:00:00", "--constraint=ib", "--export=NONE",
            f"--job-name=plc-{spec.key}", f"--comment={ownership_comment(spec)}"} <= set(sbatch)
    assert fake.stdin[2] == "#!/bin/sh\nexec serve llm 2\n"
    assert got == ManagedResource(provider="hpc", resource_ids=("42",), region="fra-dc1", zone=None, key=spec.key,
                                  workload="llm", replica=0, offer_id=spec.offer.id, plan_digest=PLAN,
                                  state="RUNNING")


def test_create_cancels_a_job_held_by_a_limit() -> None:
    fake = FakeSlurm(NODE_IDLE)
    fake.job = lambda job_id: f"{job_id}{SEP}plc-x{SEP}PENDING{SEP}QOSMaxGRESPerUser{SEP}gpu{SEP}1{SEP}c\n"
    with pytest.raises(QuotaExceeded, match="cluster hpc, partition gpu: job 42 for 2x H100") as info:
        SlurmCompute("hpc", settings(), runner=fake, sleep=lambda s: None).create(spec_for(offer()))
    assert info.value.code == "QOSMaxGRESPerUser" and fake.calls[-1] == ["scancel", "42"]


def test_create_reports_a_job_that_failed_at_once() -> None:
    fake = FakeSlurm(NODE_IDLE)
    fake.job = lambda job_id: f"{job_id}{SEP}plc-x{SEP}FAILED{SEP}NonZeroExitCode{SEP}gpu{SEP}1{SEP}c\n"
    with pytest.raises(ProviderError, match=r"job 42 for 2x H100 .* ended before it was seen running \(FAILED\)"):
        SlurmCompute("hpc", settings(), runner=fake).create(spec_for(offer()))
    fake.job = lambda job_id: f"{job_id}{SEP}plc-x{SEP}COMPLETED{SEP}None{SEP}gpu{SEP}1{SEP}c\n"
    assert SlurmCompute("hpc", settings(), runner=fake).create(spec_for(offer())).state == "COMPLETED"


def test_create_maps_sbatch_failures_and_rejects_foreign_offers() -> None:
    fake = FakeSlurm(NODE_IDLE)
    fake.sbatch = lambda args: CommandResult(
        1, "", "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)")
    compute = SlurmCompute("hpc", settings(cluster="fra-hpc"), runner=fake)
    with pytest.raises(Transient, match="cluster fra-hpc, partition gpu: submit a job for 2x H100"):
        compute.create(spec_for(offer()))
    with pytest.raises(PlacementError, match="belongs to provider 'other'"):
        compute.create(spec_for(offer(provider="other")))
    with pytest.raises(OfferUnavailable, match="no node with 8x H100 80 GiB"):
        compute.create(spec_for(offer(per_node=8, k=8)))


def test_list_managed_and_delete_with_captured_queue() -> None:
    fake = FakeSlurm(NODE_IDLE, squeue=SQUEUE_OUT)
    compute = SlurmCompute("hpc", settings(), runner=fake, sleep=lambda s: None, delete_timeout_s=0)
    (found,) = compute.list_managed()
    assert (found.resource_ids, found.key, found.workload, found.replica, found.state, found.region) == \
        (("7",), "llm-r0-0123456789abcdef01234567", "llm", 0, "RUNNING", "fra-dc1")
    assert found.offer_id == "hpc/fra-dc1/slurm-h100-4g-slice-2g/owned" and found.plan_digest == PLAN
    # Job 8 has no marker: not cancelled even when named by id.
    stranger = ManagedResource(provider="hpc", resource_ids=("8",), region="fra-dc1", zone=None, key="",
                               workload="", replica=-1, offer_id="", plan_digest="", state="")
    compute.delete(stranger)
    assert "scancel" not in fake.commands()
    with pytest.raises(Transient, match="still not cancelled"):
        compute.delete(found)  # the canned queue never changes
    assert ["scancel", "7"] in fake.calls


def test_registry_builds_the_slurm_adapter() -> None:
    from providers import registry

    config = registry.ProvidersConfig.model_validate(
        {"providers": {"hpc": {"type": "slurm", "partitions": ["gpu"], "site": SITE, "costs": COSTS}}})
    assert isinstance(registry.build_compute("hpc", config), SlurmCompute)


# --------------------------------------------------------------------------------------------------
# Against a real one-node cluster (root only)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    running = start_cluster(Path(tmp_path_factory.mktemp("slurm")))
    try:
        yield running
    finally:
        running.stop()


def _cancel_all(cluster: SlurmCluster) -> None:
    ids = cluster.run(["squeue", "--noheader", "--all", "--format=%i"]).stdout.split()
    if ids:
        cluster.run(["scancel", *ids])
    cluster.wait_for("empty queue and free GPUs", lambda: not cluster.run(
        ["squeue", "--noheader", "--all", "--format=%i"]).stdout.split() and "gpu:h100:0(" in cluster.node_line()
        and "gpu:l40s:0(" in cluster.node_line(), 20)


@pytest.fixture
def slurm(cluster: SlurmCluster) -> Iterator[SlurmCompute]:
    compute = SlurmCompute("hpc", settings(cluster="plctest", command_prefix=cluster.command_prefix,
                                           environment=cluster.environment, start_timeout_s=20),
                           poll_interval_s=0.2, delete_timeout_s=20)
    _cancel_all(cluster)
    try:
        yield compute
    finally:
        _cancel_all(cluster)


def _offers(compute: SlurmCompute) -> dict[str, Offer]:
    return {o.instance_type: o for o in compute.offers()}


def _free(compute: SlurmCompute) -> dict[str, int]:
    return {c.gpu_model: c.gpus_free for c in compute.owned_capacity()}


def _foreign_job(cluster: SlurmCluster, gres: str) -> str:
    script = "#!/bin/sh\nexec sleep infinity\n"
    return cluster.run(["sbatch", "--parsable", "--job-name=plc-not-ours", f"--gres={gres}", "--mem=100",
                        "--output=/dev/null", "--chdir=/tmp"], stdin=script).stdout.strip()


def test_cluster_inventory_reads_both_models(slurm: SlurmCompute) -> None:
    inv = slurm.inventory()
    owned = {(c.gpu_model, c.gpus_total, c.gpus_free) for c in inv.owned}
    assert owned == {("H100", 4, 4), ("L40S", 2, 2)}
    offers = {o.instance_type: o for o in inv.offers}
    assert sorted(offers) == ["slurm-h100-4g-slice-1g", "slurm-h100-4g-slice-2g", "slurm-h100-4g-slice-4g",
                              "slurm-l40s-2g-slice-1g", "slurm-l40s-2g-slice-2g"]
    assert [offers[t].available for t in sorted(offers)] == [4, 2, 1, 2, 1]
    assert all(o.unavailable_reason is None and o.hourly_usd > 0 for o in offers.values())
    assert {p.id: p.limit for p in inv.pools} == {"hpc/fra-dc1/h100-4g": 4, "hpc/fra-dc1/l40s-2g": 2}


def test_cluster_lifecycle(cluster: SlurmCluster, slurm: SlurmCompute) -> None:
    spec = spec_for(_offers(slurm)["slurm-h100-4g-slice-2g"])
    created = slurm.create(spec)
    assert created.state == "RUNNING" and len(created.resource_ids) == 1
    (job_id,) = created.resource_ids
    shown = cluster.run(["scontrol", "--oneliner", "show", "job", job_id]).stdout
    assert "JobState=RUNNING" in shown and f"JobName=plc-{spec.key}" in shown and "gres:gpu:h100:2" in shown
    assert _free(slurm) == {"H100": 2, "L40S": 2}
    assert _offers(slurm)["slurm-h100-4g-slice-2g"].available == 1

    again = slurm.create(spec)  # same key: the running job is adopted
    assert again.resource_ids == created.resource_ids
    assert len(cluster.run(["squeue", "--noheader", "--format=%i"]).stdout.split()) == 1

    foreign = _foreign_job(cluster, "gpu:l40s:1")
    (managed,) = slurm.list_managed()
    assert managed == created
    assert managed.workload == "llm" and managed.replica == 0 and managed.plan_digest == PLAN

    slurm.delete(managed)
    assert slurm.list_managed() == []
    assert foreign in cluster.run(["squeue", "--noheader", "--format=%i"]).stdout.split()  # left alone
    cluster.wait_for("H100s free again", lambda: _free(slurm)["H100"] == 4, 20)
    slurm.delete(managed)  # already gone: done


def test_cluster_request_the_node_cannot_satisfy(cluster: SlurmCluster, slurm: SlurmCompute) -> None:
    whole = _offers(slurm)["slurm-h100-4g-slice-4g"]
    with pytest.raises(OfferUnavailable, match=r"cluster plctest, partition gpu: job \d+ for 2x 4x H100") as info:
        slurm.create(spec_for(whole, nodes=2))  # two nodes of four H100s on a one-node cluster
    assert info.value.code in ("PartitionConfig", "PartitionNodeLimit")
    assert cluster.run(["squeue", "--noheader", "--format=%i"]).stdout.split() == []  # cancelled
    # sbatch's own refusal, with the real message from the controller.
    result = slurm.run(["sbatch", "--parsable", "--gres=gpu:h100:8", "--mem=100", "--output=/dev/null"],
                       stdin="#!/bin/sh\ntrue\n", action="submit")
    assert result.returncode != 0
    error = error_from_slurm(result.stderr, provider="hpc", region="fra-dc1", where="cluster plctest, partition gpu",
                             action="submit a job for 8x H100")
    assert isinstance(error, OfferUnavailable) and "Requested node configuration is not available" in str(error)


def test_cluster_busy_gpus_and_unknown_partition(cluster: SlurmCluster, slurm: SlurmCompute) -> None:
    pair = _offers(slurm)["slurm-l40s-2g-slice-2g"]
    _foreign_job(cluster, "gpu:l40s:1")
    impatient = SlurmCompute("hpc", slurm.settings.model_copy(update={"start_timeout_s": 1.5}), poll_interval_s=0.2)
    with pytest.raises(InsufficientCapacity, match=r"still pending \((Resources|Priority)\) after 1.5 s; cancelled"):
        impatient.create(spec_for(pair, workload="batch"))
    assert impatient.list_managed() == []
    wrong = SlurmCompute("hpc", slurm.settings.model_copy(update={"partitions": ("gpu", "nope")}))
    with pytest.raises(ProviderError, match=r"partitions gpu,nope: .*no such partition") as info:
        wrong.create(spec_for(pair, workload="other"))
    assert info.value.code == "InvalidPartition" and info.value.scope == "provider"


def test_cluster_commands_reach_it_only_through_the_prefix(cluster: SlurmCluster) -> None:
    outside = subprocess.run(["ip", "netns", "identify"], capture_output=True, text=True, check=False)
    inside = cluster.run(["ip", "netns", "identify"], check=False)
    assert inside.stdout.strip() == cluster.netns and outside.stdout.strip() != cluster.netns
