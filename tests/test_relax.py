"""Price of policies and relaxations of the rules that leave work unplaced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from placement.cli_policy import price_policies_command, relax_command
from placement.errors import PlacementError
from placement.models import Offer
from placement.planner import PlanOptions, make_plan
from placement.relax import (
    Edit,
    apply_edits,
    policy_rules,
    price_of_policies,
    rejecting_rules,
    relax,
)
from placement.scenario import Scenario, load_scenario
from tests.helpers import inventory_doc, offer, write_scenario

OPTIONS = PlanOptions(max_deterministic_time=5)

POLICIES = {
    "policies.yaml": {
        "format_version": 1,
        "data_classes": {
            "restricted": {"allowed_jurisdictions": ["EU"]},
            "internal": {"allowed_providers": ["gcp"]},
        },
        "teams": {"fraud": {"budget_hourly_usd": 8.0}, "ml": {}},
        "forbidden_regions": ["gcp/asia-northeast1"],
    }
}


def _workloads(extra: list[dict[str, object]] | None = None) -> list[dict[str, object]]:
    return [
        {"name": "fraud-scoring", "team": "fraud", "data_class": "restricted", "gpu": {"models": ["H100"], "count": 1}},
        {"name": "analytics", "team": "ml", "data_class": "internal", "gpu": {"models": ["H100"], "count": 1}},
        *(extra or []),
    ]


def _offers() -> list[dict[str, object]]:
    return [
        offer("aws", "us-east-1", "h100-1", "H100", 1, 4.0),
        offer("gcp", "europe-west4", "a3-highgpu-1g", "H100", 1, 11.06),
        offer("aws", "eu-central-1", "h100-1", "H100", 1, 12.0),
        offer("gcp", "asia-northeast1", "g2-standard-4", "L4", 1, 0.86),
    ]


def _scenario(tmp_path: Path, extra: list[dict[str, object]] | None = None) -> Scenario:
    folder = write_scenario(tmp_path / "s", _workloads(extra), inventory_doc(_offers(), pools=[]), POLICIES)
    return load_scenario(folder)


def _unplaced(scenario: Scenario) -> set[str]:
    return {u.workload for u in make_plan(scenario, OPTIONS).unplaced}


def test_base_plan_leaves_fraud_unplaced(tmp_path: Path) -> None:
    plan = make_plan(_scenario(tmp_path), OPTIONS)
    assert {u.workload for u in plan.unplaced} == {"fraud-scoring"}
    assert plan.totals.hourly_usd == pytest.approx(11.06)


def test_policy_rules_ids(tmp_path: Path) -> None:
    rules = policy_rules(_scenario(tmp_path).policies.policies)
    assert sorted(rules) == ["data_classes.internal.allowed_providers", "data_classes.restricted.allowed_jurisdictions",
                             "forbidden_regions[gcp/asia-northeast1]", "teams.fraud.budget_hourly_usd"]


def test_rejecting_rules_lists_every_rule(tmp_path: Path) -> None:
    s = _scenario(tmp_path)
    inv = s.inventory.inventory
    pol = s.policies.policies.model_copy(update={"forbidden_providers": ("aws",)})
    fraud = next(w for w in s.workloads.workloads if w.name == "fraud-scoring")
    us = next(o for o in inv.offers if o.region == "us-east-1")
    verdict = rejecting_rules(fraud, us, pol, inv)
    assert verdict.rules == ("forbidden_providers[aws]", "data_classes.restricted.allowed_jurisdictions")
    assert verdict.blocker is None and verdict.candidate is not None
    l4: Offer = next(o for o in inv.offers if o.gpu_model == "L4")
    verdict = rejecting_rules(fraud, l4, pol, inv)
    assert verdict.candidate is None and verdict.blocker == "GPU model not requested"


def test_minimal_conflict_set(tmp_path: Path) -> None:
    s = _scenario(tmp_path)
    result = relax(s, ["fraud-scoring"])
    assert set(result.conflict) == {"data_classes.restricted.allowed_jurisdictions", "teams.fraud.budget_hourly_usd"}
    for rule in result.conflict:
        assert "fraud-scoring" not in _unplaced(apply_edits(s, [Edit(rule, "drop")])), rule


def test_cheapest_relaxation_is_verified(tmp_path: Path) -> None:
    s = _scenario(tmp_path)
    result = relax(s, ["fraud-scoring"])
    assert result.found
    assert [e.rule for e in result.edits] == ["data_classes.restricted.allowed_jurisdictions"]
    assert result.edits[0].action == "allow jurisdiction US for data class restricted"
    assert result.cost_hourly_usd == pytest.approx(15.06)
    assert result.places == ({"workload": "fraud-scoring", "offer_id": "aws/us-east-1/h100-1/on-demand",
                              "replicas": 1, "hourly_usd": 4.0},)
    plan = make_plan(apply_edits(s, result.edits), OPTIONS)
    assert not plan.unplaced
    assert plan.totals.hourly_usd == pytest.approx(result.cost_hourly_usd)
    doc = result.to_json()
    assert doc["relax"] == [{"rule": "data_classes.restricted.allowed_jurisdictions",
                             "action": "allow jurisdiction US for data class restricted", "values": ["US"]}]
    # The other single relaxation was tried too: the budget raise places it, at a higher cost.
    costs = {tuple(t["rules"]): t["cost_hourly_usd"] for t in result.tried}
    assert costs[("teams.fraud.budget_hourly_usd",)] == pytest.approx(22.12)


def test_budget_raise_when_jurisdiction_is_fixed(tmp_path: Path) -> None:
    # Without the US offer, the only way is to raise the team budget to the EU price.
    s = _scenario(tmp_path)
    inv = s.inventory.inventory
    offers = tuple(o for o in inv.offers if o.region != "us-east-1")
    from dataclasses import replace

    s = replace(s, inventory=replace(s.inventory, inventory=inv.model_copy(update={"offers": offers})))
    result = relax(s, ["fraud-scoring"])
    assert result.conflict == ("teams.fraud.budget_hourly_usd",)
    assert result.edits[0].action == "raise team fraud's budget from $8.00/h to $11.06/h"
    plan = make_plan(apply_edits(s, result.edits), OPTIONS)
    assert not plan.unplaced
    assert plan.totals.hourly_usd == pytest.approx(result.cost_hourly_usd or 0.0)


def test_unplaceable_without_policies(tmp_path: Path) -> None:
    extra: list[dict[str, object]] = [{"name": "a100-job", "team": "ml", "gpu": {"models": ["A100"], "count": 1}}]
    result = relax(_scenario(tmp_path, extra), ["a100-job"])
    assert not result.found and not result.conflict
    assert "4 GPU model not requested" in result.unplaceable["a100-job"]


def test_relax_refuses_placed_and_unknown(tmp_path: Path) -> None:
    s = _scenario(tmp_path)
    with pytest.raises(PlacementError, match="already placed"):
        relax(s, ["analytics"])
    with pytest.raises(PlacementError, match="unknown workload"):
        relax(s, ["nope"])


def test_price_of_policies(tmp_path: Path) -> None:
    prices = {p.rule: p for p in price_of_policies(_scenario(tmp_path))}
    binding = prices["data_classes.internal.allowed_providers"]
    assert binding.delta_hourly_usd == pytest.approx(7.06) and binding.binding
    idle = prices["forbidden_regions[gcp/asia-northeast1]"]
    assert idle.delta_hourly_usd == 0 and idle.replicas_blocked == 0 and not idle.binding
    blocking = prices["teams.fraud.budget_hourly_usd"]
    assert blocking.replicas_blocked == 1 and blocking.hourly_usd_without == pytest.approx(22.12)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("relax")(relax_command)
    app.command("price-policies")(price_policies_command)
    return app


def test_cli(tmp_path: Path) -> None:
    _scenario(tmp_path)
    folder = str(tmp_path / "s")
    result = CliRunner().invoke(_app(), ["relax", folder, "fraud-scoring"])
    assert result.exit_code == 0, result.output
    assert "data_classes.restricted.allowed_jurisdictions" in result.stdout
    assert "allow jurisdiction US for data class restricted" in result.stdout
    result = CliRunner().invoke(_app(), ["relax", folder, "fraud-scoring", "--format", "json"])
    assert json.loads(result.stdout)["cost_hourly_usd"] == pytest.approx(15.06)
    result = CliRunner().invoke(_app(), ["relax", folder, "analytics"])
    assert result.exit_code == 1 and "already placed" in result.stderr
    result = CliRunner().invoke(_app(), ["price-policies", folder])
    assert result.exit_code == 0 and "+7.06" in result.stdout
    result = CliRunner().invoke(_app(), ["price-policies", folder, "--format", "json"])
    assert {p["rule"] for p in json.loads(result.stdout)} >= {"teams.fraud.budget_hourly_usd"}
