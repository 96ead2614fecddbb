"""What-if variants: the changes as pure functions, the comparison against the base plan, the commands."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from placement.cli import user_errors
from placement.cli_whatif import (
    cost_command,
    outage_change,
    price_change,
    report_command,
    shortage_change,
    traffic_change,
    whatif_command,
)
from placement.diff import EMPTY_STATE
from placement.errors import InputError
from placement.models import PolicySet
from placement.planner import make_plan, read_plan
from placement.report import forecast_costs
from placement.scenario import Scenario, load_scenario
from placement.state import PlacementRecord, StateStore
from placement.verify import verify_plan
from placement.whatif import (
    OUTAGE_REASON,
    NewPoolChange,
    OutageChange,
    PolicyChange,
    PriceChange,
    ShortageChange,
    TrafficChange,
    Variant,
    WhatIfError,
    apply_changes,
    load_whatif,
    mark_outage,
    offer_usage,
    run_whatif,
    whatif_document,
)
from tests.helpers import inventory_doc, offer, small_offers, write_scenario

ROOT = Path(__file__).resolve().parent.parent
FLEET = ROOT / "scenarios" / "inference-fleet"


@pytest.fixture(scope="module")
def fleet() -> Scenario:
    return load_scenario(FLEET)


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("whatif")(user_errors(whatif_command))
    app.command("cost")(user_errors(cost_command))
    app.command("report")(user_errors(report_command))
    return app


def _small(tmp_path: Path, workloads: list[dict[str, Any]] | None = None, **kw: Any) -> Scenario:
    wl = workloads or [
        {"name": "chat", "team": "a", "replicas": 3, "min_replicas": 2, "gpu": {"models": ["L4"], "count": 1},
         "labels": {"app": "chat"}},
        {"name": "train", "team": "b", "kind": "batch", "gpu": {"models": ["H100"], "count": 1},
         "labels": {"app": "train"}},
    ]
    return load_scenario(write_scenario(tmp_path / "s", wl, **kw))


# --------------------------------------------------------------------------------------------------
# On the inference fleet
# --------------------------------------------------------------------------------------------------


def test_traffic_10x_reports_extra_cost_and_what_no_longer_fits(fleet: Scenario, tmp_path: Path) -> None:
    variant = Variant(name="assistant-10x", changes=(TrafficChange(factor=10, team="assistant"),))
    result = run_whatif(fleet, [variant], EMPTY_STATE)
    base, out = result.base, result.variants[0]
    assert not base.plan.unplaced
    extra = out.plan.totals.hourly_usd - base.plan.totals.hourly_usd
    print(f"base ${base.plan.totals.hourly_usd:,.2f}/h, 10x assistant traffic ${out.plan.totals.hourly_usd:,.2f}/h "
          f"(+${extra:,.2f}/h, +${extra * 730:,.2f}/month); not placed: "
          + "; ".join(f"{u.workload} ({u.replicas}): {u.summary}" for u in out.plan.unplaced))
    assert extra > 0
    assert out.plan.unplaced, "ten times the chat traffic cannot fit the assistant team's $170/h budget"
    for u in out.plan.unplaced:
        assert u.team == "assistant"
        assert u.summary and u.reasons
    assert any("team assistant budget" in u.summary for u in out.plan.unplaced)
    assert out.moves is not None and out.moves.created > 0

    doc = whatif_document(result)
    v = doc["variants"][0]
    assert v["delta_hourly_usd"] == pytest.approx(extra, abs=1e-3)
    assert v["delta_monthly_usd"] == pytest.approx(extra * 730, abs=0.05)
    assert v["replicas_unplaced"] == sum(u.replicas for u in out.plan.unplaced) > 0
    assert [u["workload"] for u in v["unplaced"]] == [u.workload for u in out.plan.unplaced]
    assert all(u["summary"] for u in v["unplaced"])

    # The same scenario written out by hand and planned directly gives the same plan.
    folder = tmp_path / "fleet-10x"
    shutil.copytree(FLEET / "policies", folder / "policies")
    raw = yaml.safe_load((FLEET / "workloads.yaml").read_text())
    for w in raw["workloads"]:
        if w["team"] == "assistant":
            w["replicas"] = w.get("replicas", 1) * 10
            if "min_replicas" in w:
                w["min_replicas"] *= 10
    (folder / "workloads.yaml").write_text(yaml.safe_dump(raw))
    direct = make_plan(load_scenario(folder))
    assert direct.totals.hourly_usd == pytest.approx(out.plan.totals.hourly_usd, abs=1e-6)
    assert [(u.workload, u.replicas, u.summary) for u in direct.unplaced] == \
        [(u.workload, u.replicas, u.summary) for u in out.plan.unplaced]
    assert sorted((p.workload, p.offer_id) for p in direct.placements) == \
        sorted((p.workload, p.offer_id) for p in out.plan.placements)


def test_outage_moves_affected_workloads_and_keeps_residency(fleet: Scenario) -> None:
    variant = Variant(name="europe-west4-down", changes=(OutageChange(provider="gcp", region="europe-west4"),))
    result = run_whatif(fleet, [variant], EMPTY_STATE)
    base, out = result.base, result.variants[0]
    hit = {p.workload for p in base.plan.placements if (p.provider, p.region) == ("gcp", "europe-west4")}
    assert hit, "the base plan uses gcp/europe-west4"
    assert not [p for p in out.plan.placements if (p.provider, p.region) == ("gcp", "europe-west4")]
    assert out.moves is not None and out.moves.moved >= 1

    changed = apply_changes(fleet, variant.changes, offer_usage(base.plan))
    assert verify_plan(out.plan, changed) == []
    down = [o for o in changed.inventory.inventory.offers if o.unavailable_reason == OUTAGE_REASON]
    assert down and all((o.provider, o.region) == ("gcp", "europe-west4") for o in down)

    workloads = {w.name: w for w in fleet.workloads.workloads}
    unplaced = {u.workload: u for u in out.plan.unplaced}
    moved = set()
    for name in hit:
        w = workloads[name]
        placed = [p for p in out.plan.placements if p.workload == name]
        for p in placed:
            assert not w.residency.jurisdictions or p.jurisdiction in w.residency.jurisdictions
        if name in unplaced:
            assert unplaced[name].reasons.get("offer unavailable", 0) >= len(down)
            assert unplaced[name].summary
        else:
            assert len(placed) == w.replicas
            moved.add(name)
    assert moved, "at least one affected workload found room elsewhere"
    before = {(p.workload, p.offer_id) for p in base.plan.placements}
    assert any((p.workload, p.offer_id) not in before for p in out.plan.placements if p.workload in moved)


def test_bundled_whatif_file_loads_and_plans(fleet: Scenario, tmp_path: Path) -> None:
    variants = load_whatif(FLEET / "whatif.yaml")
    assert len(variants) >= 5
    assert {type(c).__name__ for v in variants for c in v.changes} >= {
        "TrafficChange", "OutageChange", "PriceChange", "ShortageChange", "NewPoolChange", "PolicyChange"}
    result = run_whatif(fleet, variants, EMPTY_STATE)
    by_name = {o.name: o for o in result.variants}
    pool = by_name["ashburn-l40s-cluster"]
    assert pool.owned.available_gpus == result.base.owned.available_gpus + 16
    assert any(p.region == "iad-dc3" for p in pool.plan.placements)
    assert by_name["h100-shortage"].owned.available_gpus < result.base.owned.available_gpus
    assert by_name["aws-on-demand-plus-25"].plan.totals.hourly_usd > result.base.plan.totals.hourly_usd
    assert any(u.workload == "chat-llm-na-west" for u in by_name["no-lambda"].plan.unplaced)
    for o in result.outcomes:
        assert o.plan.solver.status in ("OPTIMAL", "FEASIBLE")


@pytest.mark.parametrize("name", ["eu-bank", "training-burst"])
def test_other_scenarios_whatif_files_plan(name: str) -> None:
    folder = ROOT / "scenarios" / name
    scenario = load_scenario(folder)
    variants = load_whatif(folder / "whatif.yaml")
    result = run_whatif(scenario, variants, EMPTY_STATE)
    assert len(result.variants) == len(variants)
    for outcome, variant in zip(result.variants, variants, strict=True):
        changed = apply_changes(scenario, variant.changes, offer_usage(result.base.plan))
        assert verify_plan(outcome.plan, changed) == [], outcome.name
        assert outcome.plan.totals.hourly_usd != result.base.plan.totals.hourly_usd, outcome.name
        for u in outcome.plan.unplaced:
            assert u.summary and u.reasons


# --------------------------------------------------------------------------------------------------
# The changes, on a small scenario
# --------------------------------------------------------------------------------------------------


def test_traffic_scales_replicas_rounding_up_and_selects(tmp_path: Path) -> None:
    sc = _small(tmp_path)
    out = apply_changes(sc, [TrafficChange(factor=1.5, labels={"app": "chat"})])
    chat = next(w for w in out.workloads.workloads if w.name == "chat")
    train = next(w for w in out.workloads.workloads if w.name == "train")
    assert (chat.replicas, chat.min_replicas) == (5, 3)  # ceil(4.5), ceil(3)
    assert train.replicas == 1
    assert out.workloads.digest != sc.workloads.digest
    assert sc.workloads.workloads[0].replicas == 3, "the input scenario is left as it was"
    by_name = apply_changes(sc, [TrafficChange(factor=3, workloads=("train",))])
    assert [w.replicas for w in by_name.workloads.workloads] == [3, 3]
    with pytest.raises(WhatIfError, match="unknown workload"):
        apply_changes(sc, [TrafficChange(factor=2, workloads=("nope",))])
    with pytest.raises(WhatIfError, match="selects no workload"):
        apply_changes(sc, [TrafficChange(factor=2, team="a", labels={"app": "train"})])


def test_outage_price_and_policy_changes(tmp_path: Path) -> None:
    sc = _small(tmp_path)
    out = mark_outage(sc, OutageChange(provider="gcp"))
    assert {o.provider for o in out.inventory.inventory.offers if o.unavailable_reason == OUTAGE_REASON} == {"gcp"}
    with pytest.raises(WhatIfError, match="matches no offer"):
        mark_outage(sc, OutageChange(provider="azure"))

    priced = apply_changes(sc, [PriceChange(percent=30, provider="aws", gpu_model="h100")])
    before = {o.id: o.hourly_usd for o in sc.inventory.inventory.offers}
    for o in priced.inventory.inventory.offers:
        factor = 1.3 if o.provider == "aws" and o.gpu_model == "H100" else 1.0
        assert o.hourly_usd == pytest.approx(before[o.id] * factor)

    sc_pol = _small(tmp_path / "p", policies={"p.yaml": {
        "forbidden_providers": ["gcp"], "teams": {"a": {"budget_hourly_usd": 10, "max_interruptible_share": 0.5},
                                                  "b": {}, "c": {"budget_hourly_usd": 50}}}})
    patched = apply_changes(sc_pol, [PolicyChange(patch={"forbidden_providers": ["aws"],
                                                         "teams": {"a": {"budget_hourly_usd": 20}, "c": None}})])
    pol = patched.policies.policies
    assert pol.forbidden_providers == ("aws",)
    assert pol.teams["a"].budget_hourly_usd == 20 and pol.teams["a"].max_interruptible_share == 0.5
    assert set(pol.teams) == {"a", "b"}
    assert patched.policies.digest != sc_pol.policies.digest
    with pytest.raises(InputError, match="unknown team 'b'"):  # the workloads still name team b
        apply_changes(sc_pol, [PolicyChange(patch={"teams": {"b": None}})])
    with pytest.raises(WhatIfError, match="policy patch"):
        apply_changes(sc_pol, [PolicyChange(patch={"forbidden_providerz": ["aws"]})])


def test_shortage_cuts_known_limits_and_base_use(tmp_path: Path) -> None:
    offers = [*small_offers(), offer("corp", "fra", "l4-1g", "L4", 1, 0.3, capacity_type="owned",
                                     pools=["corp/fra/mixed"], available=4),
              offer("corp", "fra", "h100-2g", "H100", 2, 3.2, capacity_type="owned", pools=["corp/fra/mixed"])]
    pools = [{"id": "corp/fra/h100", "limit": 8, "unit": "gpus"}, {"id": "corp/fra/mixed", "limit": 6, "unit": "gpus"}]
    sc = _small(tmp_path, inventory=inventory_doc(offers, pools))
    ids = {o.instance_type + "/" + o.capacity_type + "/" + o.region: o.id for o in sc.inventory.inventory.offers}
    used_unlimited = ids["p5.48xlarge/on-demand/us-east-1"]
    out = apply_changes(sc, [ShortageChange(gpu_model="H100", percent=50)], {used_unlimited: 3})
    got = {o.id: o.available for o in out.inventory.inventory.offers}
    assert got[ids["a3-highgpu-1g/on-demand/europe-west4"]] == 1  # floor(3 × 0.5)
    assert got[ids["p5.48xlarge/spot/us-east-1"]] == 1  # floor(2 × 0.5)
    assert got[used_unlimited] == 1  # unlimited, base plan uses 3: floor(1.5)
    assert got[ids["h100-1g/owned/fra"]] == 0  # unlimited and unused by the base plan
    assert got[ids["g6.xlarge/on-demand/eu-central-1"]] is None  # not an H100
    limits = {p.id: p.limit for p in out.inventory.inventory.pools}
    assert limits == {"corp/fra/h100": 4, "corp/fra/mixed": 6}  # the mixed pool also serves L4s
    kept = apply_changes(sc, [ShortageChange(gpu_model="H100", percent=50, unlimited="keep")])
    assert {o.id: o.available for o in kept.inventory.inventory.offers}[used_unlimited] is None


def test_new_pool_inherits_region_facts_and_checks_clashes(tmp_path: Path) -> None:
    sc = _small(tmp_path)
    fra = next(o for o in sc.inventory.inventory.offers if o.region_key == "corp/fra")
    raw: dict[str, Any] = {
        "kind": "new_pool",
        "pools": [{"id": "corp/fra/l4", "limit": 4, "unit": "gpus"}],
        "offers": [{"provider": "corp", "region": "fra", "instance_type": "l4-1g", "gpu_model": "L4", "gpu_count": 1,
                    "gpu_memory_gib": 24, "vcpus": 8, "memory_gib": 64, "capacity_type": "owned", "hourly_usd": 0.2,
                    "pools": ["corp/fra/l4"]}],
    }
    change = NewPoolChange.model_validate(raw)
    out = apply_changes(sc, [change])
    new = next(o for o in out.inventory.inventory.offers if o.instance_type == "l4-1g")
    assert (new.country, new.jurisdiction, new.location, new.provider_kind, new.pue) == \
        (fra.country, fra.jurisdiction, fra.location, fra.provider_kind, fra.pue)
    plan = make_plan(out)
    assert {p.offer_id for p in plan.placements if p.workload == "chat"} == {new.id}

    elsewhere = {**raw, "pools": [], "offers": [{**raw["offers"][0], "region": "muc", "pools": []}]}
    with pytest.raises(WhatIfError, match="describe the region corp/muc"):
        apply_changes(sc, [NewPoolChange.model_validate(elsewhere)])
    muc = {"corp/muc": {"country": "DE", "jurisdiction": "EU", "location": {"lat": 48.1, "lon": 11.6}}}
    added = apply_changes(sc, [NewPoolChange.model_validate({**elsewhere, "regions": muc})])
    assert next(o for o in added.inventory.inventory.offers if o.region == "muc").location.lat == 48.1
    clash = {**raw, "pools": [{"id": "corp/fra/h100", "limit": 1, "unit": "gpus"}]}
    with pytest.raises(WhatIfError, match="already exists"):
        apply_changes(sc, [NewPoolChange.model_validate(clash)])


def test_whatif_file_problems_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "whatif.yaml"
    path.write_text("format_version: 1\nvariants:\n  - name: a\n    changes:\n      - {kind: traffic, factor: 2}\n"
                    "  - name: b\n    changes:\n      - {kind: meteor, size: 3}\n")
    with pytest.raises(InputError) as err:
        load_whatif(path)
    text = str(err.value)
    assert f"{path}:8: variants[1].changes[0]" in text and "meteor" in text
    path.write_text("- name: a\n  changes:\n    - {kind: outage}\n")
    with pytest.raises(InputError) as err:
        load_whatif(path)
    assert f"{path}:3: [0].changes[0].outage.provider: required field is missing" in str(err.value)
    path.write_text("- name: base\n  changes: [{kind: outage, provider: aws}]\n")
    with pytest.raises(InputError, match="name of the unchanged scenario"):
        load_whatif(path)


def test_change_flags_parse() -> None:
    t = traffic_change("10x,team=assistant,label=app=chat,workload=chat-llm-eu")
    assert (t.factor, t.team, t.labels, t.workloads) == (10, "assistant", {"app": "chat"}, ("chat-llm-eu",))
    o = outage_change("gcp/europe-west4")
    assert (o.provider, o.region, o.zone) == ("gcp", "europe-west4", None)
    p = price_change("+30%,provider=aws,capacity=spot,gpu=a100")
    assert (p.percent, p.provider, p.capacity_type, p.gpu_model) == (30, "aws", "spot", "A100")
    s = shortage_change("50,gpu=H100,unlimited=keep")
    assert (s.percent, s.gpu_model, s.unlimited) == (50, "H100", "keep")
    for bad in (lambda: traffic_change("ten"), lambda: price_change("5,provider"),
                lambda: shortage_change("50"), lambda: outage_change("a/b/c/d")):
        with pytest.raises(InputError):
            bad()


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


def test_whatif_command_json_out_dir_and_table(tmp_path: Path) -> None:
    runner = CliRunner()
    out_dir = tmp_path / "plans"
    res = runner.invoke(_app(), ["whatif", str(FLEET), "--traffic", "10,team=assistant", "--outage", "gcp/europe-west4",
                                 "--name", "busy-and-down", "--format", "json", "--out-dir", str(out_dir),
                                 "--state", str(tmp_path / "none.db")])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["kind"] == "placement-whatif"
    assert [v["name"] for v in doc["variants"]] == ["busy-and-down"]
    v = doc["variants"][0]
    assert v["changes_text"] == ["traffic ×10 for team assistant", "outage of gcp/europe-west4"]
    assert v["delta_hourly_usd"] > 0 and v["unplaced"] and v["moves"]["created"] > 0
    assert res.stdout == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    base = read_plan(out_dir / "base.json")
    variant = read_plan(out_dir / "busy-and-down.json")
    assert base.digest == doc["base"]["plan_digest"] and variant.digest == v["plan_digest"]
    assert "whatif" in variant.inputs and "whatif" not in base.inputs

    res = runner.invoke(_app(), ["whatif", str(FLEET), "--state", str(tmp_path / "none.db")])
    assert res.exit_code == 0, res.output
    assert "What-if comparison" in res.stdout and "chat-traffic-10x" in res.stdout
    assert "not placed: chat-llm-japan" in res.stdout

    res = runner.invoke(_app(), ["whatif", str(FLEET), "--outage", "mars"])
    assert res.exit_code == 1 and "matches no offer" in res.output and "Traceback" not in res.output


def test_help_and_file_flags(tmp_path: Path) -> None:
    runner = CliRunner()
    for command in ("whatif", "report", "cost"):
        res = runner.invoke(_app(), [command, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
    pool = tmp_path / "pool.yaml"
    pool.write_text(yaml.safe_dump({
        "regions": {"corp/iad-dc3": {"country": "US", "jurisdiction": "US", "location": {"lat": 39.04, "lon": -77.49}}},
        "pools": [{"id": "corp/iad-dc3/l40s", "unit": "gpus", "limit": 8}],
        "offers": [{"provider": "corp", "region": "iad-dc3", "instance_type": "l40s-4g", "gpu_model": "L40S",
                    "gpu_count": 4, "gpu_memory_gib": 48, "vcpus": 64, "memory_gib": 384, "capacity_type": "owned",
                    "hourly_usd": 2.4, "available": 2, "pools": ["corp/iad-dc3/l40s"]}],
    }))
    res = runner.invoke(_app(), ["whatif", str(FLEET), "--new-pool", str(pool), "--forbid-provider", "lambda",
                                 "--format", "json", "--state", str(tmp_path / "none.db")])
    assert res.exit_code == 0, res.output
    v = json.loads(res.stdout)["variants"][0]
    assert v["changes_text"] == ["new pool in corp/iad-dc3 (1 offer(s), 8 GPUs)",
                                 'policy patch {"forbidden_providers":["hyperstack","lambda"]}']
    assert v["owned"]["available_gpus"] == json.loads(res.stdout)["base"]["owned"]["available_gpus"] + 8
    assert "lambda" not in v["by_provider"]
    pool.write_text("offers: [{provider: corp}]\npools: 3\n")
    res = runner.invoke(_app(), ["whatif", str(FLEET), "--new-pool", str(pool)])
    assert res.exit_code == 1 and f"{pool}:2: pools" in res.output


def test_cost_forecast_against_budgets(tmp_path: Path) -> None:
    fleet = load_scenario(FLEET)
    plan = make_plan(fleet)
    forecast = forecast_costs(plan.placements, fleet.policies.policies)
    teams = {t.team: t for t in forecast.teams}
    assert forecast.monthly_usd == pytest.approx(plan.totals.monthly_usd, abs=0.05)
    assistant = teams["assistant"]
    assert assistant.limit_monthly_usd == pytest.approx(min(170 * 730, 125000))
    assert assistant.monthly_usd == pytest.approx(plan.totals.by_team["assistant"] * 730, abs=0.05)
    assert assistant.over_monthly_usd is not None and assistant.over_monthly_usd < 0
    tight = PolicySet.model_validate({"teams": {"assistant": {"budget_monthly_usd": 1000}, "idle": {}}})
    over = {t.team: t for t in forecast_costs(plan.placements, tight).teams}
    assert over["assistant"].over_monthly_usd == pytest.approx(assistant.monthly_usd - 1000, abs=0.01)
    assert over["idle"].monthly_usd == 0 and over["idle"].limit_monthly_usd is None
    assert over["search"].limit_monthly_usd is None

    state = tmp_path / "state.db"
    with StateStore.open(state) as store:
        for p in plan.placements:
            store.record_placement(PlacementRecord.from_placement(p, idempotency_key=f"{p.workload}-{p.replica}",
                                                                  plan_digest=plan.digest))
    runner = CliRunner()
    res = runner.invoke(_app(), ["cost", "--state", str(state), "--policies", str(FLEET / "policies"),
                                 "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["monthly_usd"] == pytest.approx(plan.totals.monthly_usd, abs=0.05)
    assert doc["state"]["replicas"] == len(plan.placements)
    got = {t["team"]: t for t in doc["teams"]}
    assert got["assistant"]["status"] == "under"
    assert math.isclose(sum(got["assistant"]["by_provider_monthly_usd"].values()), got["assistant"]["monthly_usd"],
                        abs_tol=0.1)
    res = runner.invoke(_app(), ["cost", "--state", str(state), "--policies", str(FLEET / "policies")])
    assert res.exit_code == 0 and "every team is within its budget" in res.stdout and "assistant" in res.stdout
