"""End to end through the CLI, in real processes, against moto's EC2 server over HTTP.

What is real: the `placement` CLI processes, boto3 and its HTTP calls, moto's EC2 API server, the
SQLite file and the PostgreSQL server used as state stores. What is substituted: AWS itself, by moto
(which has no capacity errors; those are covered with botocore's Stubber in test_aws.py and with
in-memory providers in test_apply.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from placement.state import StateStore
from tests.helpers import inventory_doc, offer
from tests.test_aws import REGION, ami, ec2, moto, moto_url  # noqa: F401  (fixtures)

TAG_MANAGED = "placement.dev/managed"


def _inventory() -> dict[str, Any]:
    offers = [
        offer("aws", "us-east-1", "g6.xlarge", "L4", 1, 0.8048, zone="us-east-1a", vcpus=4, memory_gib=16),
        offer("aws", "us-east-1", "g5.xlarge", "A10G", 1, 1.006, zone="us-east-1b", vcpus=4, memory_gib=16),
        offer("aws", "us-east-1", "g6.xlarge", "L4", 1, 0.3, zone="us-east-1a", capacity_type="spot", vcpus=4,
              memory_gib=16),
    ]
    doc = inventory_doc(offers=offers, pools=[])
    return doc


def _write(folder: Path, workloads: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "workloads.yaml").write_text(yaml.safe_dump({"format_version": 1, "workloads": workloads}))
    (folder / "inventory.yaml").write_text(yaml.safe_dump(_inventory()))


def _cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "placement.cli", *args], cwd=cwd, capture_output=True,
                            text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"placement {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def _managed(ec2_client: Any) -> list[dict[str, Any]]:
    out = []
    for page in ec2_client.get_paginator("describe_instances").paginate(
        Filters=[{"Name": f"tag:{TAG_MANAGED}", "Values": ["true"]},
                 {"Name": "instance-state-name", "Values": ["pending", "running"]}]):
        for reservation in page["Reservations"]:
            out.extend(reservation["Instances"])
    return out


def _tags(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


@pytest.fixture
def project(tmp_path: Path, moto: str, ami: str) -> Path:  # noqa: F811
    (tmp_path / "providers.yaml").write_text(yaml.safe_dump(
        {"providers": {"aws": {"type": "aws", "regions": [REGION], "image_ids": {REGION: ami}}}}))
    return tmp_path


def test_plan_apply_reapply_change_destroy(project: Path, ec2: Any) -> None:  # noqa: F811
    web = {"name": "web", "team": "t", "replicas": 3, "gpu": {"models": ["L4", "A10G"], "count": 1}}
    _write(project / "s", [web])
    _cli("plan", "s", "--out", "p1.json", cwd=project)
    out = _cli("apply", "p1.json", "--auto-approve", cwd=project).stdout
    assert "3 action(s) done" in out
    instances = _managed(ec2)
    assert len(instances) == 3
    tags = [_tags(i) for i in instances]
    assert sorted(t["placement.dev/replica"] for t in tags) == ["0", "1", "2"]
    plan = json.loads((project / "p1.json").read_text())
    assert {t["placement.dev/plan"] for t in tags} == {plan["digest"]}
    assert all(t["placement.dev/workload"] == "web" and t["placement.dev/key"] for t in tags)
    assert {i["InstanceType"] for i in instances} == {"g6.xlarge"}

    again = _cli("apply", "p1.json", "--auto-approve", cwd=project).stdout
    assert "no changes" in again and len(_managed(ec2)) == 3
    assert _cli("plan", "s", "--detailed-exitcode", cwd=project).returncode == 0

    # fewer web replicas, a new interruptible batch workload
    batch = {"name": "batch", "team": "t", "kind": "batch", "interruptible": True, "gpu": {"models": ["L4"], "count": 1}}
    _write(project / "s", [{**web, "replicas": 2}, batch])
    changed = _cli("plan", "s", "--out", "p2.json", "--detailed-exitcode", cwd=project, check=False)
    assert changed.returncode == 2, changed.stderr
    actions = {(a["action"], a["workload"]) for a in json.loads((project / "p2.json").read_text())["actions"]}
    assert ("delete", "web") in actions and ("create", "batch") in actions and ("keep", "web") in actions
    _cli("apply", "p2.json", "--auto-approve", cwd=project)
    instances = _managed(ec2)
    assert sorted(_tags(i)["placement.dev/workload"] for i in instances) == ["batch", "web", "web"]
    spot = [i for i in instances if _tags(i)["placement.dev/workload"] == "batch"]
    assert spot[0].get("InstanceLifecycle") == "spot"

    status = _cli("status", "--refresh", cwd=project).stdout
    assert "no drift" in status and "3 replica(s)" in status
    _cli("destroy", "--auto-approve", cwd=project)
    assert _managed(ec2) == []
    with StateStore.open(project / ".placement" / "state.db") as store:
        assert store.placements() == []
        assert [a.operation for a in store.audit_log()][:3] == ["destroy", "apply", "apply"]


def _wait_for_progress(location: str, proc: subprocess.Popen[str], done: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"apply finished before it could be interrupted: {proc.communicate()}")
        if "://" in location or Path(location).exists():
            try:
                with StateStore.open(location) as store:
                    digest = store.last_journal_plan()
                    if digest and len(store.completed_actions(digest)) >= done:
                        return
            except Exception:  # the store may be mid-creation by the apply process
                pass
        time.sleep(0.02)
    raise AssertionError("apply made no progress in time")


def test_killed_apply_resumes_without_duplicates_or_orphans(project: Path, ec2: Any) -> None:  # noqa: F811
    _write(project / "s", [{"name": "fleet", "team": "t", "replicas": 16, "gpu": {"models": ["L4"], "count": 1}}])
    _cli("plan", "s", "--out", "plan.json", cwd=project)
    state = str(project / ".placement" / "state.db")
    proc = subprocess.Popen([sys.executable, "-m", "placement.cli", "apply", "plan.json", "--auto-approve",
                             "--parallelism", "1"], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for_progress(state, proc, done=3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    partial = len(_managed(ec2))
    assert 3 <= partial < 16

    with StateStore.open(state) as store:  # the dead process's lock is broken the documented way
        lock = store.current_lock()
    if lock is not None:
        _cli("force-unlock", lock.lock_id, cwd=project)
    _cli("apply", "plan.json", "--auto-approve", cwd=project)
    instances = _managed(ec2)
    keys = [_tags(i)["placement.dev/key"] for i in instances]
    assert len(instances) == 16 and len(set(keys)) == 16  # no duplicates
    with StateStore.open(state) as store:
        records = store.placements()
    assert len(records) == 16
    recorded = {rid for r in records for rid in (r.resource_id or "").split(",")}
    assert recorded == {i["InstanceId"] for i in instances}  # no orphans, nothing missing


def _pg_url() -> Iterator[str]:
    import psycopg

    base = os.environ.get("PLACEMENT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"placement_it_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL at {base} is not usable: {exc}")
    try:
        yield base.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "state.db")
    else:
        yield from _pg_url()


def test_concurrent_applies_one_waits_and_fails_naming_the_holder(
    project: Path, ec2: Any, state_url: str  # noqa: F811
) -> None:
    _write(project / "s", [{"name": "fleet", "team": "t", "replicas": 80, "gpu": {"models": ["L4"], "count": 1}}])
    _cli("plan", "s", "--out", "plan.json", "--state", state_url, cwd=project)
    first = subprocess.Popen([sys.executable, "-m", "placement.cli", "apply", "plan.json", "--auto-approve",
                              "--parallelism", "1", "--state", state_url], cwd=project, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    _wait_for_progress(state_url, first, done=1)
    second = _cli("apply", "plan.json", "--auto-approve", "--state", state_url, "--lock-timeout", "0.5",
                  cwd=project, check=False)
    assert second.returncode == 1
    assert f"pid {first.pid}" in second.stderr and "force-unlock" in second.stderr
    assert "Traceback" not in second.stderr
    _out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert len(_managed(ec2)) == 80
