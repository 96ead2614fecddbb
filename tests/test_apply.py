"""The apply loop against in-memory providers: journal, idempotence, staleness, moves, failover, lock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from placement.apply import ApplyOptions, StalePlanError, apply_plan, destroy_all
from placement.diff import attach_state, view_from_snapshot
from placement.errors import PlacementError, PlanError
from placement.planner import make_plan, plan_to_json
from placement.scenario import load_scenario
from placement.state import LockHeldError, StateStore
from providers.base import InsufficientCapacity
from tests.fakes import FakeCompute
from tests.helpers import write_scenario

WORKLOADS: list[dict[str, Any]] = [
    {"name": "chat", "team": "genai", "replicas": 2, "gpu": {"models": ["L4"], "count": 1}},
    {"name": "train", "team": "research", "kind": "batch", "gpu": {"models": ["H100"], "count": 8}},
]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    folder = write_scenario(tmp_path / "scenario", WORKLOADS)
    store = StateStore.open(tmp_path / "state.db")
    computes = {name: FakeCompute(name) for name in ("aws", "gcp", "corp")}
    yield {"folder": folder, "store": store, "computes": computes, "tmp": tmp_path}
    store.close()


def _plan(env: dict[str, Any], name: str = "plan.json") -> Path:
    scenario = load_scenario(env["folder"])
    plan = attach_state(make_plan(scenario), view_from_snapshot(env["store"].snapshot()))
    path = env["tmp"] / name
    path.write_text(plan_to_json(plan))
    return path


def _apply(env: dict[str, Any], path: Path, **kw: Any) -> Any:
    options = ApplyOptions(owner="test", auto_approve=True, **kw)
    return apply_plan(path, env["store"], lambda n: env["computes"][n], options)


def _running(env: dict[str, Any]) -> int:
    return sum(len(c.resources) for c in env["computes"].values())


def test_apply_then_reapply_is_a_no_op(env: dict[str, Any]) -> None:
    path = _plan(env)
    report = _apply(env, path)
    assert report.ok and len(report.done) == 3
    records = env["store"].placements()
    assert [(r.workload, r.replica) for r in records] == [("chat", 0), ("chat", 1), ("train", 0)]
    assert all(r.resource_id for r in records)
    serial = env["store"].serial()
    calls = sum(len(c.calls) for c in env["computes"].values())
    again = _apply(env, path)
    assert again.done == [] and len(again.skipped) == 3
    assert env["store"].serial() == serial
    assert sum(len(c.calls) for c in env["computes"].values()) == calls
    # a fresh plan against the new state has nothing to do
    fresh = _plan(env, "fresh.json")
    from placement.planner import read_plan

    assert read_plan(fresh).changes() == ()
    audit = env["store"].audit_log()
    assert [a.outcome for a in audit[:2]] == ["no changes", "succeeded"]


def test_edited_plan_is_refused_and_state_untouched(env: dict[str, Any]) -> None:
    path = _plan(env)
    text = path.read_text().replace('"replicas_placed": 3', '"replicas_placed": 4')
    path.write_text(text)
    with pytest.raises(PlanError, match="modified after it was written"):
        _apply(env, path)
    assert env["store"].serial() == 0 and _running(env) == 0


def test_stale_plan_is_refused(env: dict[str, Any]) -> None:
    first = _plan(env, "a.json")
    assert _apply(env, first).ok
    second = _plan(env, "b.json")  # made against the state after the first apply: no changes
    destroy_all(env["store"], lambda n: env["computes"][n], "test", 0)  # someone else changes the state
    serial = env["store"].serial()
    with pytest.raises(StalePlanError, match=r"state changed since the plan was made \(serial 3 then, 6 now\)"):
        _apply(env, second)
    assert env["store"].serial() == serial and _running(env) == 0


def test_identical_plan_is_the_same_plan(env: dict[str, Any]) -> None:
    # same inputs and same state give the same plan (same digest), so applying the twin is a no-op
    first, twin = _plan(env, "a.json"), _plan(env, "b.json")
    assert first.read_bytes() == twin.read_bytes()
    assert _apply(env, first).ok
    assert _apply(env, twin).done == []


def test_changed_inputs_make_the_plan_stale(env: dict[str, Any]) -> None:
    path = _plan(env)
    doc = yaml.safe_load((env["folder"] / "workloads.yaml").read_text())
    doc["workloads"][0]["replicas"] = 3
    (env["folder"] / "workloads.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(StalePlanError, match="the workloads changed"):
        _apply(env, path)
    assert _running(env) == 0


def test_move_is_make_before_break(env: dict[str, Any]) -> None:
    assert _apply(env, _plan(env)).ok
    # the cheapest L4 offer disappears: chat's replicas must move
    inv = yaml.safe_load((env["folder"] / "inventory.yaml").read_text())
    inv["offers"] = [o for o in inv["offers"] if o["instance_type"] != "g2-standard-4"]
    (env["folder"] / "inventory.yaml").write_text(yaml.safe_dump(inv))
    path = _plan(env, "move.json")
    from placement.planner import read_plan

    plan = read_plan(path)
    moves = [a for a in plan.changes() if a.action == "move"]
    assert len(moves) == 2 and all(a.from_offer_id == "gcp/europe-west4/g2-standard-4/on-demand" for a in moves)
    assert _apply(env, path).ok
    gcp_calls = env["computes"]["gcp"].calls
    aws_calls = env["computes"]["aws"].calls
    assert gcp_calls.count(("delete", "gcp/europe-west4/g2-standard-4/on-demand")) == 2
    assert ("create", "aws/eu-central-1/g6.xlarge/on-demand") in aws_calls
    assert {r.offer_id for r in env["store"].placements() if r.workload == "chat"} == {"aws/eu-central-1/g6.xlarge/on-demand"}
    assert len(env["computes"]["gcp"].resources) == 0


def test_capacity_error_fails_over_to_next_best_offer(env: dict[str, Any]) -> None:
    env["computes"]["corp"].fail_offers["corp/fra/h100-8g/owned"] = InsufficientCapacity(
        "no free H100 nodes", provider="corp", code="NoCapacity", region="fra", scope="region")
    report = _apply(env, _plan(env))
    assert report.ok, report.failed
    assert len(report.failovers) == 1 and "corp/fra/h100-8g/owned ->" in report.failovers[0]
    train = env["store"].get_placement("train", 0)
    assert train is not None and train.provider != "corp"


def test_no_failover_stops_on_capacity_error(env: dict[str, Any]) -> None:
    env["computes"]["corp"].fail_offers["corp/fra/h100-8g/owned"] = InsufficientCapacity(
        "no free H100 nodes", provider="corp", code="NoCapacity", region="fra", scope="region")
    report = _apply(env, _plan(env), failover=False)
    assert not report.ok and "train" in report.failed[0]
    assert env["store"].get_placement("train", 0) is None
    # the failed action is journalled and is retried by the next apply of the same plan
    env["computes"]["corp"].fail_offers.clear()


def test_lock_held_by_another_writer(env: dict[str, Any]) -> None:
    path = _plan(env)
    held = env["store"].acquire_lock("someone@elsewhere pid 1", "apply", timeout_s=0)
    with pytest.raises(LockHeldError, match="someone@elsewhere pid 1"):
        _apply(env, path, lock_timeout_s=0.3)
    assert _running(env) == 0
    env["store"].release_lock(held.lock_id)
    assert _apply(env, path).ok


def test_provider_without_adapter_refused_before_anything_runs(env: dict[str, Any]) -> None:
    path = _plan(env)
    del env["computes"]["corp"]

    def factory(name: str) -> FakeCompute:
        if name not in env["computes"]:
            raise PlacementError(f"no adapter for {name}")
        return env["computes"][name]

    with pytest.raises(PlacementError, match="no adapter for corp"):
        apply_plan(path, env["store"], factory, ApplyOptions(owner="t", auto_approve=True))
    assert _running(env) == 0 and env["store"].serial() == 0


def test_policy_change_that_forbids_a_placement_is_named(env: dict[str, Any]) -> None:
    pdir = env["folder"] / "policies"
    pdir.mkdir(exist_ok=True)
    (pdir / "providers.yaml").write_text("forbidden_providers: []\n")
    path = _plan(env)
    (pdir / "providers.yaml").write_text("forbidden_providers: [gcp]\n")
    with pytest.raises(StalePlanError) as info:
        _apply(env, path)
    text = str(info.value)
    assert "the policies changed" in text and "provider gcp forbidden by policy" in text
    assert _running(env) == 0 and env["store"].serial() == 0
