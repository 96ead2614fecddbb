"""Re-optimisation: moves only when they pay, within budgets and windows, and the unattended run.

The engine-level tests apply through in-memory providers (tests/fakes.py); the concurrency test runs
two real `placement reoptimize --apply` processes against moto's EC2 server and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from placement.apply import ApplyOptions, apply_plan
from placement.cron import next_fire, parse_duration, window_open
from placement.diff import EMPTY_STATE, CurrentReplica, StateView, attach_state, view_from_snapshot
from placement.errors import InputError, PlacementError
from placement.inputs import load_policies
from placement.planner import make_plan, plan_to_json
from placement.reoptimize import ReoptimizeOptions, auto_apply_refusals, reoptimize
from placement.scenario import load_scenario
from placement.state import StateStore
from providers.base import InsufficientCapacity
from tests.fakes import FakeCompute
from tests.helpers import inventory_doc, offer, write_scenario
from tests.test_aws import REGION, ami, ec2, moto, moto_url  # noqa: F401  (fixtures)
from tests.test_lifecycle_aws import _managed, _pg_url, _wait_for_progress

NOON = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
EU = {"jurisdictions": ["EU"]}


def _offers(l4_aws: float = 0.98, h100_aws: float = 12.5, us_h100: float | None = None,
            **extra: dict[str, Any]) -> list[dict[str, Any]]:
    us = [offer("aws", "us-east-1", "p5.4xlarge", "H100", 1, us_h100)] if us_h100 is not None else []
    return [
        *us,
        offer("gcp", "europe-west4", "g2-standard-4", "L4", 1, 0.71, **extra.get("gcp-l4", {})),
        offer("aws", "eu-central-1", "g6.xlarge", "L4", 1, l4_aws, **extra.get("aws-l4", {})),
        offer("gcp", "europe-west4", "a3-highgpu-1g", "H100", 1, 11.06, **extra.get("gcp-h100", {})),
        offer("aws", "eu-central-1", "p5.4xlarge", "H100", 1, h100_aws, **extra.get("aws-h100", {})),
    ]


def _workloads() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(3):
        out.append({"name": f"l4-{i}", "team": "web", "gpu": {"models": ["L4"], "count": 1}, "residency": EU})
    for i in range(3):
        out.append({"name": f"h100-{i}", "team": "ml", "gpu": {"models": ["H100"], "count": 1}, "residency": EU})
    return out


def _state_of(plan: Any) -> StateView:
    return StateView(1, "lineage", tuple(
        CurrentReplica(p.workload, p.replica, p.provider, p.offer_id, (f"i-{p.workload}-{p.replica}",),
                       p.total_hourly_usd)
        for p in plan.placements))


def _scenario(folder: Path, offers: list[dict[str, Any]], reopt: dict[str, Any] | None = None,
              workloads: list[dict[str, Any]] | None = None, stale: list[str] | None = None) -> Any:
    inv = inventory_doc(offers, pools=[])
    if stale:
        inv["snapshot"]["stale_providers"] = stale
    policies = {"reoptimization.yaml": {"reoptimization": reopt or {}}}
    write_scenario(folder, workloads or _workloads(), inv, policies)
    return load_scenario(folder)


def _running(tmp_path: Path, workloads: list[dict[str, Any]] | None = None) -> StateView:
    """Everything placed at yesterday's prices: on GCP, the cheapest then."""
    first = _scenario(tmp_path / "before", _offers(), workloads=workloads)
    plan = attach_state(make_plan(first), EMPTY_STATE)
    assert {p.provider for p in plan.placements} == {"gcp"}
    return _state_of(plan)


def _moved(plan: Any) -> set[str]:
    return {a.workload for a in plan.actions if a.action == "move"}


def test_moves_exactly_the_workloads_whose_saving_clears_the_threshold(tmp_path: Path) -> None:
    state = _running(tmp_path)
    # AWS drops: L4 by 3 cents (below the $0.10/h threshold), H100 by $2.06/h (18%).
    scenario = _scenario(tmp_path / "after", _offers(l4_aws=0.68, h100_aws=9.0), {"max_moves_percent": 100})
    plan = reoptimize(scenario, state, ReoptimizeOptions(now=NOON))
    assert _moved(plan) == {"h100-0", "h100-1", "h100-2"}
    assert not [a for a in plan.actions if a.action in ("create", "delete")]
    summary = plan.reoptimization
    assert summary is not None
    assert summary.saving_usd_per_hour == pytest.approx(3 * 2.06)
    assert summary.available_saving_usd_per_hour == pytest.approx(3 * 2.06 + 3 * 0.03)
    for name in ("l4-0", "l4-1", "l4-2"):
        assert "below the threshold" in summary.held_back[name]
    move = next(a for a in plan.actions if a.action == "move")
    # restart 10 min at the new place's $9.00/h; no state carried
    assert move.migration_usd == pytest.approx(1.5)
    assert move.payback_hours == pytest.approx(1.5 / 2.06, abs=0.01)
    assert "paid back in" in move.reason

    # a percentage threshold above 18% holds every move back
    strict = _scenario(tmp_path / "strict", _offers(l4_aws=0.68, h100_aws=9.0),
                       {"max_moves_percent": 100, "min_saving_percent": 20})
    assert _moved(reoptimize(strict, state, ReoptimizeOptions(now=NOON))) == set()


def test_move_budget_keeps_the_moves_that_save_most(tmp_path: Path) -> None:
    workloads = _workloads()
    workloads[3] = {**workloads[3], "replicas": 2}  # two replicas: saves twice as much
    state = _running(tmp_path, workloads)
    scenario = _scenario(tmp_path / "after", _offers(h100_aws=9.0), {"max_moves": 1, "max_moves_percent": None},
                         workloads)
    plan = reoptimize(scenario, state, ReoptimizeOptions(now=NOON))
    assert _moved(plan) == {"h100-0"}
    assert plan.reoptimization is not None and plan.reoptimization.moves_allowed == 1
    assert "move budget" in plan.reoptimization.held_back["h100-1"]


def test_disruption_window_and_team_budget(tmp_path: Path) -> None:
    state = _running(tmp_path)
    reopt = {"max_moves_percent": 100, "disruption_budgets": [
        # no moves of team ml on weekday evenings (22:00-24:00 UTC)
        {"teams": ["ml"], "max_moves": 0, "schedule": "0 22 * * 1-5", "duration": "2h"},
    ]}
    scenario = _scenario(tmp_path / "after", _offers(l4_aws=0.30, h100_aws=9.0), reopt)
    evening = dt.datetime(2026, 11, 23, 22, 30, tzinfo=dt.UTC)  # a Monday
    closed = reoptimize(scenario, state, ReoptimizeOptions(now=evening))
    assert _moved(closed) == {"l4-0", "l4-1", "l4-2"}
    assert any("team ml" in b for b in closed.reoptimization.budgets)  # type: ignore[union-attr]
    opened = reoptimize(scenario, state, ReoptimizeOptions(now=NOON))
    assert _moved(opened) == {"l4-0", "l4-1", "l4-2", "h100-0", "h100-1", "h100-2"}


def test_do_not_move_marks_are_honoured(tmp_path: Path) -> None:
    workloads = _workloads()
    workloads[3] = {**workloads[3], "migration": {"do_not_move": True}}
    state = _running(tmp_path, workloads)
    scenario = _scenario(tmp_path / "after", _offers(h100_aws=9.0),
                         {"max_moves_percent": 100, "do_not_move": ["h100-2"]}, workloads)
    plan = reoptimize(scenario, state, ReoptimizeOptions(now=NOON))
    assert _moved(plan) == {"h100-1"}
    assert plan.reoptimization is not None
    assert plan.reoptimization.held_back["h100-0"] == "marked do-not-move"
    assert plan.reoptimization.held_back["h100-2"] == "marked do-not-move"


def test_batch_horizon_and_data_transfer_decide(tmp_path: Path) -> None:
    train = {"name": "train", "team": "ml", "kind": "batch", "gpu": {"models": ["H100"], "count": 1},
             "residency": EU, "migration": {"remaining_hours": 2, "state_gb": 500}}
    long_train = {**train, "name": "long-train", "migration": {"remaining_hours": 400, "state_gb": 500}}
    state = _running(tmp_path, [train, long_train])
    scenario = _scenario(tmp_path / "after", _offers(h100_aws=9.0), {"max_moves_percent": 100},
                         [train, long_train])
    plan = reoptimize(scenario, state, ReoptimizeOptions(now=NOON))
    # 500 GB out of GCP at $0.12/GB + 20 min restart = $63: pays in ~31 h, not within 2 h
    assert _moved(plan) == {"long-train"}
    move = next(a for a in plan.actions if a.action == "move")
    assert move.migration_usd == pytest.approx(500 * 0.12 + 9.0 / 3)
    assert "horizon" in plan.reoptimization.held_back["train"]  # type: ignore[union-attr]


def test_stale_inventory_moves_nothing_to_or_from_it(tmp_path: Path) -> None:
    state = _running(tmp_path)
    from_stale = _scenario(tmp_path / "gcp-stale", _offers(l4_aws=0.30, h100_aws=9.0),
                           {"max_moves_percent": 100}, stale=["gcp"])
    plan = reoptimize(from_stale, state, ReoptimizeOptions(now=NOON))
    assert _moved(plan) == set()
    assert plan.reoptimization is not None and plan.reoptimization.stale_providers == ("gcp",)
    assert all("stale" in why for why in plan.reoptimization.held_back.values())
    to_stale = _scenario(tmp_path / "aws-stale", _offers(l4_aws=0.30, h100_aws=9.0),
                         {"max_moves_percent": 100}, stale=["aws"])
    assert _moved(reoptimize(to_stale, state, ReoptimizeOptions(now=NOON))) == set()


def test_running_replicas_keep_their_place_without_headroom(tmp_path: Path) -> None:
    state = _running(tmp_path)
    # The inventory now shows no headroom where everything runs; nothing must move or be dropped.
    full = {"gcp-l4": {"available": 0}, "gcp-h100": {"available": 0}}
    scenario = _scenario(tmp_path / "after", _offers(**full), {"max_moves_percent": 100})
    plan = reoptimize(scenario, state, ReoptimizeOptions(now=NOON))
    assert plan.changes() == ()
    assert not plan.unplaced


def test_auto_apply_refuses_moves_out_of_the_jurisdiction(tmp_path: Path) -> None:
    workloads = [{"name": "svc", "team": "ml", "gpu": {"models": ["H100"], "count": 1}}]
    state = _running(tmp_path, workloads)
    reopt = {"max_moves_percent": 100, "auto_apply": {"enabled": True}}
    scenario = _scenario(tmp_path / "after", _offers(us_h100=5.0), reopt, workloads)
    plan = reoptimize(scenario, state, ReoptimizeOptions(now=NOON))
    assert {a.offer_id for a in plan.actions if a.action == "move"} == {"aws/us-east-1/p5.4xlarge/on-demand"}
    assert any("leave its jurisdiction (EU -> US)" in r for r in auto_apply_refusals(plan, scenario))
    off = _scenario(tmp_path / "off", _offers(us_h100=5.0), {"max_moves_percent": 100}, workloads)
    assert auto_apply_refusals(reoptimize(off, state, ReoptimizeOptions(now=NOON)), off) == [
        "reoptimization.auto_apply.enabled is false"]


def test_partly_failed_apply_is_retried_by_the_next_run(tmp_path: Path) -> None:
    before = _scenario(tmp_path / "before", _offers())
    store = StateStore.open(tmp_path / "state.db")
    computes = {name: FakeCompute(name) for name in ("aws", "gcp")}
    options = ApplyOptions(owner="test", auto_approve=True, failover=False)

    def run(scenario: Any) -> Any:
        plan = reoptimize(scenario, view_from_snapshot(store.snapshot()), ReoptimizeOptions(now=NOON))
        path = tmp_path / "plan.json"
        path.write_text(plan_to_json(plan))
        return plan, apply_plan(path, store, computes.__getitem__, options)

    run(before)
    assert len(store.placements()) == 6
    after = _scenario(tmp_path / "after", _offers(h100_aws=9.0), {"max_moves_percent": 100})
    computes["aws"].fail_offers["aws/eu-central-1/p5.4xlarge/on-demand"] = InsufficientCapacity(
        "no capacity", provider="aws", code="InsufficientInstanceCapacity", region="eu-central-1")
    plan, report = run(after)
    assert len(_moved(plan)) == 3 and len(report.failed) == 3
    assert {r.provider for r in store.placements()} == {"gcp"}  # make-before-break: nothing lost
    computes["aws"].fail_offers.clear()
    plan, report = run(after)
    assert len(_moved(plan)) == 3 and report.ok and len(report.done) == 3
    assert sorted(r.provider for r in store.placements()) == ["aws"] * 3 + ["gcp"] * 3
    plan, report = run(after)
    assert plan.changes() == ()
    store.close()


def test_policy_errors_name_file_and_field(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "reoptimization.yaml").write_text(yaml.safe_dump({"reoptimization": {"disruption_budgets": [
        {"max_moves": 1, "schedule": "0 25 * * *", "duration": "2h"}]}}))
    with pytest.raises(InputError) as err:
        load_policies(folder)
    text = str(err.value)
    assert "reoptimization.yaml" in text and "disruption_budgets" in text and "not valid" in text
    (folder / "reoptimization.yaml").write_text(yaml.safe_dump({"reoptimization": {"disruption_budgets": [
        {"max_moves": 1, "schedule": "0 22 * * *", "duration": "two hours"}]}}))
    with pytest.raises(InputError, match="duration"):
        load_policies(folder)


def test_cron_windows() -> None:
    monday_late = dt.datetime(2026, 11, 23, 23, 59, tzinfo=dt.UTC)
    assert window_open("0 22 * * 1-5", "2h", monday_late)
    assert not window_open("0 22 * * 1-5", "2h", monday_late + dt.timedelta(minutes=1))
    assert not window_open("0 22 * * 0", "2h", monday_late)  # Sunday only
    assert window_open("0 9 * * *", "1h", dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC), "Europe/Berlin") is False
    assert window_open("0 9 * * *", "1h", dt.datetime(2026, 11, 23, 8, 30, tzinfo=dt.UTC), "Europe/Berlin")
    assert next_fire("*/15 * * * *", NOON) == NOON + dt.timedelta(minutes=15)
    assert parse_duration("1h30m") == dt.timedelta(minutes=90)


# --------------------------------------------------------------------------------------------------
# The CLI, in real processes
# --------------------------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "placement.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_cli_writes_plan_json_logs_and_metrics(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    _scenario(folder, _offers(h100_aws=9.0), {"max_moves_percent": 100})
    result = _cli("reoptimize", "s", "--state", "state.db", "--out", "p.json", "--log-format", "json",
                  "--metrics-file", "m.prom", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    planned = next(e for e in events if e["event"] == "planned")
    assert planned["moves"] == 0 and planned["level"] == "INFO" and planned["plan"] == "p.json"
    plan = json.loads((tmp_path / "p.json").read_text())
    assert plan["reoptimization"]["running_workloads"] == 0
    assert len([a for a in plan["actions"] if a["action"] == "create"]) == 6
    metrics = {m.name: m for m in text_string_to_metric_families((tmp_path / "m.prom").read_text())}
    assert metrics["placement_plan_hourly_usd"].samples[0].value == pytest.approx(3 * 0.71 + 3 * 9.0)
    assert {s.labels["provider"] for s in metrics["placement_inventory_age_seconds"].samples} == {"aws", "gcp"}
    runs = {s.labels["outcome"]: s.value for s in metrics["placement_reoptimize_runs"].samples
            if s.name.endswith("_total")}
    assert runs == {"planned": 1.0}

    bad = _cli("reoptimize", "s", "--state", "state.db", "--now", "yesterday", cwd=tmp_path)
    assert bad.returncode == 1 and "--now must be an ISO 8601 time" in bad.stderr and "Traceback" not in bad.stderr


def test_two_concurrent_runs_one_applies_one_exits_zero(tmp_path: Path, ec2: Any, ami: str) -> None:  # noqa: F811
    urls = _pg_url()
    url = next(urls)
    try:
        (tmp_path / "providers.yaml").write_text(yaml.safe_dump(
            {"providers": {"aws": {"type": "aws", "regions": [REGION], "image_ids": {REGION: ami}}}}))
        inv = inventory_doc([offer("aws", "us-east-1", "g6.xlarge", "L4", 1, 0.8048, zone="us-east-1a", vcpus=4,
                                   memory_gib=16)], pools=[])
        write_scenario(tmp_path / "s", [{"name": "fleet", "team": "t", "replicas": 100,
                                         "gpu": {"models": ["L4"], "count": 1}}], inv,
                       {"r.yaml": {"reoptimization": {"auto_apply": {"enabled": True}}}})
        first = subprocess.Popen([sys.executable, "-m", "placement.cli", "reoptimize", "s", "--apply", "--state", url,
                                  "--out", "p1.json", "--log-format", "json", "--parallelism", "1"], cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_progress(url, first, done=1)
        second = _cli("reoptimize", "s", "--apply", "--state", url, "--out", "p2.json", "--log-format", "json",
                      cwd=tmp_path)
        assert second.returncode == 0, second.stderr
        events = [json.loads(line) for line in second.stderr.splitlines() if line.startswith("{")]
        assert [e["event"] for e in events] == ["lock_held"]
        assert f"pid {first.pid}" in events[0]["message"]
        assert not (tmp_path / "p2.json").exists()
        _out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
        assert '"event": "applied"' in err
        assert len(_managed(ec2)) == 100
    finally:
        for _ in urls:
            pass



def test_schedule_runs_on_its_cron_and_survives_a_failed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from placement import cron
    from placement.cli_reoptimize import schedule_command

    folder = tmp_path / "s"
    _scenario(folder, _offers(), {"max_moves_percent": 100})
    fires: list[dt.datetime] = []

    def soon(expression: str, after: dt.datetime, timezone: str = "UTC") -> dt.datetime:
        assert expression == "*/15 * * * *"
        fires.append(after)
        return after.replace(microsecond=0) + dt.timedelta(seconds=1)

    monkeypatch.setattr(cron, "next_fire", soon)
    monkeypatch.chdir(tmp_path)
    schedule_command(cron="*/15 * * * *", scenario=folder, state=str(tmp_path / "state.db"),
                     out_dir=tmp_path / "plans", max_runs=2, metrics_file=str(tmp_path / "m.prom"))
    assert len(list((tmp_path / "plans").glob("reoptimize-*.json"))) == 2
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events if e["event"] in ("planned", "run_finished")] == [
        "planned", "run_finished", "planned", "run_finished"]

    (folder / "workloads.yaml").write_text("workloads: [")  # a broken file ends that run, not the schedule
    schedule_command(cron="*/15 * * * *", scenario=folder, state=str(tmp_path / "state.db"),
                     out_dir=tmp_path / "plans", max_runs=1)
    failed = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert any(e["event"] == "run_failed" and "workloads.yaml" in e["message"] for e in failed)
    with pytest.raises(PlacementError, match="--cron: cron expression 'every minute' must have 5 fields"):
        schedule_command(cron="every minute", scenario=folder)
