"""A real one-node Slurm cluster from Debian's packages (slurmctld, slurmd, munge), for the tests.

The daemons bind every interface, so they run in a private network namespace of their own (``ip
netns add``) with a veth pair inside it (both ends stay in the namespace; the host's interfaces are
not touched) and a fixed address on one end; the node and the controller are addressed by that
address. Everything else lives in one temporary folder: a munge key and munged with its own socket,
``slurm.conf``, ``gres.conf`` (GPUs of two models whose ``File=`` entries are placeholder regular
files), ``cgroup.conf`` (Slurm 22.05's slurmd loads a cgroup plugin even when no cgroup feature is
configured, and ``ip netns exec`` hides the host's cgroup mounts, so the v1 plugin is named instead
of autodetected), state, spool and logs. Commands reach the cluster as
``ip netns exec <name> env SLURM_CONF=<folder>/slurm.conf <command>``, which is what the adapter's
``command_prefix`` and ``environment`` settings are for.

Needs root (network namespaces, daemons running as root); :func:`skip_reason` says why not when the
cluster cannot be started here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROGRAMS = ("ip", "munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ADDRESS = "10.213.7.2"
NODE = "gpunode"
PARTITION = "gpu"


def _which(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path=SBIN_PATH)


def skip_reason() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return ("the Slurm cluster tests need root (a private network namespace and slurmd running as root); "
                "run the tests as root to include them")
    missing = [p for p in PROGRAMS if _which(p) is None]
    if missing:
        return (f"Slurm or munge is not installed ({', '.join(missing)} missing); install Debian's packages "
                "slurmctld slurmd slurm-client munge (.ci/run does)")
    return None


@dataclass
class SlurmCluster:
    """A running one-node cluster: where its files are and how to reach it."""

    root: Path
    netns: str
    node: str = NODE
    partition: str = PARTITION
    address: str = ADDRESS
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def command_prefix(self) -> list[str]:
        return [_which("ip") or "ip", "netns", "exec", self.netns]

    @property
    def environment(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, args: Sequence[str], *, stdin: str | None = None, check: bool = True,
            timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside the cluster's namespace with its SLURM_CONF."""
        env = {**os.environ, **self.environment, "PATH": os.environ.get("PATH", "") + ":" + SBIN_PATH}
        done = subprocess.run([*self.command_prefix, *args], input=stdin, capture_output=True, text=True,
                              env=env, timeout=timeout_s, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def node_line(self) -> str:
        return self.run(["scontrol", "--details", "--oneliner", "show", "node", self.node]).stdout.strip()

    def wait_for(self, what: str, check: Callable[[], object], timeout_s: float = 30.0) -> None:
        """Poll ``check()`` (a callable returning a truthy value when done) for up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if check():
                    return
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() >= deadline:
                raise RuntimeError(f"Slurm test cluster: {what} not reached in {timeout_s:g} s\n{self.logs()}")
            time.sleep(0.2)

    def logs(self, lines: int = 15) -> str:
        parts: list[str] = []
        for path in sorted([*self.root.glob("*.log"), *self.root.glob("*.out")]):
            text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def _start(self, name: str, args: Sequence[str]) -> None:
        out = open(self.root / f"{name}.out", "wb")  # noqa: SIM115 - handed to the daemon
        env = {**os.environ, **self.environment, "PATH": os.environ.get("PATH", "") + ":" + SBIN_PATH}
        try:
            self.processes[name] = subprocess.Popen([*self.command_prefix, *args], stdout=out,
                                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        finally:
            out.close()

    def _running(self, name: str) -> bool:
        proc = self.processes.get(name)
        return proc is not None and proc.poll() is None

    def stop(self) -> None:
        """Cancel every job, stop the daemons and remove the namespace (with anything left in it)."""
        if self._running("slurmctld"):
            try:
                ids = self.run(["squeue", "--noheader", "--all", "--format=%i"], check=False).stdout.split()
                if ids:
                    self.run(["scancel", *ids], check=False)
                    deadline = time.monotonic() + 15
                    while time.monotonic() < deadline and self.run(
                            ["squeue", "--noheader", "--all", "--format=%i"], check=False).stdout.split():
                        time.sleep(0.2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.processes.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        # Whatever still runs in the private namespace (job steps of a slurmd that died) was started here.
        ip = _which("ip") or "ip"
        left = subprocess.run([ip, "netns", "pids", self.netns], capture_output=True, text=True, check=False)
        for pid in left.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run([ip, "netns", "delete", self.netns], capture_output=True, check=False)


def write_config(root: Path, *, gpus: Mapping[str, int], cpus: int, memory_mib: int, address: str = ADDRESS,
                 node: str = NODE, partition: str = PARTITION) -> None:
    """slurm.conf, gres.conf and cgroup.conf for a one-node cluster in ``root``, and placeholder GPU files."""
    host = socket.gethostname()
    for sub in ("state", "spool", "dev"):
        (root / sub).mkdir(exist_ok=True)
    gres_lines, index = [], 0
    for kind, count in gpus.items():
        for i in range(index, index + count):
            (root / "dev" / f"nvidia{i}").touch()
        gres_lines.append(f"NodeName={node} Name=gpu Type={kind} File={root}/dev/nvidia[{index}-{index + count - 1}]"
                          if count > 1 else f"NodeName={node} Name=gpu Type={kind} File={root}/dev/nvidia{index}")
        index += count
    gres = ",".join(f"gpu:{kind}:{count}" for kind, count in gpus.items())
    (root / "slurm.conf").write_text(f"""\
ClusterName=plctest
SlurmctldHost={host}({address})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.sock
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
KillWait=2
DefMemPerCPU=256
NodeName={node} NodeAddr={address} NodeHostname={host} CPUs={cpus} RealMemory={memory_mib} Gres={gres} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
""", encoding="utf-8")
    (root / "gres.conf").write_text("AutoDetect=off\n" + "\n".join(gres_lines) + "\n", encoding="utf-8")
    (root / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n", encoding="utf-8")


def start_cluster(root: Path, *, gpus: Mapping[str, int] | None = None, cpus: int = 16,
                  memory_mib: int = 64000, timeout_s: float = 30.0) -> SlurmCluster:
    """Start munged, slurmctld and slurmd in a new network namespace; return once the node is idle."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # munged wants its socket's folder searchable by all
    cluster = SlurmCluster(root=root, netns=f"plc-slurm-{os.getpid()}")
    ip = _which("ip") or "ip"
    try:
        subprocess.run([ip, "netns", "add", cluster.netns], check=True, capture_output=True)
        inside = [ip, "netns", "exec", cluster.netns, ip]
        for args in (["link", "add", "plc0", "type", "veth", "peer", "name", "plc1"],
                     ["addr", "add", f"{cluster.address}/24", "dev", "plc0"],
                     ["link", "set", "plc0", "up"], ["link", "set", "plc1", "up"], ["link", "set", "lo", "up"]):
            subprocess.run([*inside, *args], check=True, capture_output=True)
        write_config(root, gpus=gpus or {"h100": 4, "l40s": 2}, cpus=cpus, memory_mib=memory_mib)
        key = root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        cluster._start("munged", [_which("munged") or "munged", "--foreground", "--force", f"--key-file={key}",
                                  f"--socket={root}/munge.sock", f"--pid-file={root}/munged.pid",
                                  f"--log-file={root}/munged.log", f"--seed-file={root}/munged.seed"])
        cluster.wait_for("munged socket", lambda: (root / "munge.sock").exists(), timeout_s)
        cluster._start("slurmctld", [_which("slurmctld") or "slurmctld", "-D", "-f", str(cluster.conf)])
        cluster.wait_for("slurmctld answering", lambda: "is UP" in cluster.run(["scontrol", "ping"]).stdout,
                         timeout_s)
        cluster._start("slurmd", [_which("slurmd") or "slurmd", "-D", "-N", cluster.node, "-f", str(cluster.conf)])
        cluster.wait_for("node idle", lambda: cluster.run(
            ["sinfo", "--noheader", f"--nodes={cluster.node}", "--format=%T"]).stdout.strip() == "idle", timeout_s)
        for name in ("munged", "slurmctld", "slurmd"):
            if not cluster._running(name):
                raise RuntimeError(f"Slurm test cluster: {name} exited\n{cluster.logs()}")
    except BaseException:
        cluster.stop()
        raise
    return cluster
