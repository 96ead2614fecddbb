"""The bundled scenarios plan cleanly on the bundled inventory, and the CLI reports mistakes cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from placement.planner import make_plan
from placement.scenario import load_scenario
from placement.verify import verify_plan

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted(p.name for p in (ROOT / "scenarios").iterdir() if (p / "workloads.yaml").exists())


def test_there_are_three_scenarios() -> None:
    assert {"eu-bank", "inference-fleet", "training-burst"} <= set(SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_plans_feasibly_and_optimally(name: str) -> None:
    scenario = load_scenario(ROOT / "scenarios" / name)
    plan = make_plan(scenario)
    assert verify_plan(plan, scenario) == []
    assert plan.solver.status in ("OPTIMAL", "FEASIBLE")
    assert plan.solver.gap <= 0.01
    assert plan.placements, "a showcase scenario should place work"
    for u in plan.unplaced:  # anything left out must say why
        assert u.summary and u.reasons


def test_eu_bank_restricted_data_stays_in_eu() -> None:
    scenario = load_scenario(ROOT / "scenarios" / "eu-bank")
    plan = make_plan(scenario)
    restricted = {w.name for w in scenario.workloads.workloads if w.data_class == "restricted"}
    assert restricted
    placed = [p for p in plan.placements if p.workload in restricted]
    assert placed and all(p.jurisdiction == "EU" for p in placed)
    assert any(p.provider_kind == "on-prem" for p in plan.placements)


def test_cli_reports_bad_input_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "s"
    bad.mkdir()
    (bad / "workloads.yaml").write_text(
        "format_version: 1\nworkloads:\n  - name: x\n    team: t\n    replicas: -1\n    gpu: {models: [H1000], count: 1}\n"
    )
    result = subprocess.run([sys.executable, "-m", "placement.cli", "plan", str(bad)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{bad / 'workloads.yaml'}:5: workloads[0].replicas" in result.stderr
    assert f"{bad / 'workloads.yaml'}:6: workloads[0].gpu.models: unknown GPU model 'H1000'" in result.stderr


def test_cli_json_output_and_schema() -> None:
    result = subprocess.run([sys.executable, "-m", "placement.cli", "plan", str(ROOT / "scenarios" / "eu-bank"),
                             "--format", "json", "--state", "/nonexistent/state.db"],
                            capture_output=True, text=True, check=True)
    plan = json.loads(result.stdout)
    assert plan["kind"] == "placement-plan" and plan["digest"].startswith("sha256:")
    assert plan["inputs"]["inventory"]["detail"]["taken_on"]
    schema = subprocess.run([sys.executable, "-m", "placement.cli", "schema", "workloads"], capture_output=True,
                            text=True, check=True)
    assert "gpu" in json.loads(schema.stdout)["$defs"]["Workload"]["properties"]
