"""The planner: hard constraints hold, shared capacity is respected, results are optimal and repeatable."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from placement.errors import PlanError
from placement.models import Plan
from placement.planner import PlanOptions, make_plan, plan_to_json, read_plan
from placement.scenario import load_scenario
from placement.verify import verify_plan
from tests.helpers import inventory_doc, offer, write_scenario

FRANKFURT = {"lat": 50.11, "lon": 8.68}


def _plan(folder: Path) -> Plan:
    scenario = load_scenario(folder)
    plan = make_plan(scenario)
    assert verify_plan(plan, scenario) == []
    return plan


def _where(plan: Plan, workload: str) -> list[str]:
    return sorted(p.offer_id for p in plan.placements if p.workload == workload)


def test_cheapest_compatible_offer_is_chosen(tmp_path: Path) -> None:
    plan = _plan(write_scenario(tmp_path, [{"name": "inf", "team": "t", "gpu": {"models": ["L4"], "count": 1}}]))
    assert _where(plan, "inf") == ["gcp/europe-west4/g2-standard-4/on-demand"]
    assert plan.totals.hourly_usd == pytest.approx(0.71)
    assert plan.solver.status == "OPTIMAL" and plan.solver.gap == 0.0


def test_shared_capacity_is_never_exceeded(tmp_path: Path) -> None:
    # 3 workloads × 2 replicas of one L4: the cheap gcp offer has 2 instances, the rest go elsewhere.
    workloads = [{"name": f"inf{i}", "team": "t", "replicas": 2, "gpu": {"models": ["L4"], "count": 1}}
                 for i in range(3)]
    plan = _plan(write_scenario(tmp_path, workloads))
    used = [p.offer_id for p in plan.placements]
    assert used.count("gcp/europe-west4/g2-standard-4/on-demand") == 2
    assert len(used) == 6 and not plan.unplaced


def test_on_prem_pool_shared_between_shapes(tmp_path: Path) -> None:
    # the on-prem pool has 8 H100 GPUs in total, offered as 1-GPU and 8-GPU shapes
    workloads = [
        {"name": "big", "team": "t", "gpu": {"models": ["H100"], "count": 8}, "priority": 10},
        {"name": "one", "team": "t", "replicas": 2, "gpu": {"models": ["H100"], "count": 1}},
    ]
    plan = _plan(write_scenario(tmp_path, workloads))
    onprem_gpus = sum(p.nodes * p.gpus_per_node for p in plan.placements if p.provider == "corp")
    assert onprem_gpus <= 8
    assert plan.totals.replicas_placed == 3


def test_residency_latency_and_spot(tmp_path: Path) -> None:
    workloads = [
        {"name": "eu", "team": "t", "gpu": {"models": ["H100"], "count": 8}, "residency": {"jurisdictions": ["EU"]},
         "replicas": 2},
        {"name": "near", "team": "t", "gpu": {"models": ["L4"], "count": 1},
         "users": [{"name": "frankfurt", "location": FRANKFURT, "max_latency_ms": 8}]},
        {"name": "cheap", "team": "t", "gpu": {"models": ["H100"], "count": 8}, "interruptible": True},
    ]
    plan = _plan(write_scenario(tmp_path, workloads))
    assert all(p.jurisdiction == "EU" for p in plan.placements if p.workload == "eu")
    assert _where(plan, "near") == ["aws/eu-central-1/g6.xlarge/on-demand"]
    assert _where(plan, "cheap") == ["aws/us-east-1/p5.48xlarge/spot"]


def test_unplaced_workload_gets_sorted_reason_counts(tmp_path: Path) -> None:
    workloads = [{"name": "impossible", "team": "t", "gpu": {"models": ["H100"], "count": 8},
                  "residency": {"jurisdictions": ["JP"]}}]
    plan = _plan(write_scenario(tmp_path, workloads))
    assert plan.placements == ()
    (u,) = plan.unplaced
    assert u.summary == ("0/9 offers fit: 5 outside residency (jurisdiction JP), 3 GPU model not requested, "
                         "1 spot capacity (workload not interruptible)")
    assert sum(u.reasons.values()) == 9


def test_contention_is_explained(tmp_path: Path) -> None:
    inv = inventory_doc(offers=[offer("gcp", "europe-west4", "g2", "L4", 1, 0.7, available=1)], pools=[])
    workloads = [{"name": "a", "team": "t", "gpu": {"models": ["L4"], "count": 1}, "priority": 200},
                 {"name": "b", "team": "t", "gpu": {"models": ["L4"], "count": 1}, "priority": 100}]
    plan = _plan(write_scenario(tmp_path, workloads, inventory=inv))
    assert _where(plan, "a") == ["gcp/europe-west4/g2/on-demand"]
    (u,) = plan.unplaced
    assert u.workload == "b"
    assert "1 fit on their own but the remaining capacity of those offers is used by other workloads" in u.summary


def test_budgets(tmp_path: Path) -> None:
    workloads = [
        {"name": "capped", "team": "t", "gpu": {"models": ["H100"], "count": 8}, "budget_hourly_usd": 50},
        {"name": "team1", "team": "fraud", "gpu": {"models": ["L4"], "count": 1}, "replicas": 3},
    ]
    policies = {"teams.yaml": {"teams": {"fraud": {"budget_hourly_usd": 2.0}, "t": {}}}}
    plan = _plan(write_scenario(tmp_path, workloads, policies=policies))
    # 8×H100 costs 98.32 on demand, 110 in eu, 8 on-prem GPUs cost 12.8: the only way under $50/h
    assert _where(plan, "capped") == ["corp/fra/h100-8g/owned"]
    # 3 × L4 at ≥ $0.71 is over the $2/h team budget: all-or-nothing means none is placed
    assert [u.workload for u in plan.unplaced] == ["team1"]
    assert "team fraud budget $2.00/h would be exceeded" in plan.unplaced[0].summary


def test_spread_over_providers_and_min_replicas(tmp_path: Path) -> None:
    workloads = [{"name": "ha", "team": "t", "replicas": 3, "gpu": {"models": ["L4"], "count": 1},
                  "spread": {"min_providers": 2, "min_regions": 3}}]
    plan = _plan(write_scenario(tmp_path, workloads))
    providers = {p.provider for p in plan.placements}
    regions = {(p.provider, p.region) for p in plan.placements}
    assert len(providers) >= 2 and len(regions) >= 3


def test_throughput_lets_fewer_faster_gpus_stand_in(tmp_path: Path) -> None:
    inv = inventory_doc(
        offers=[offer("aws", "us-east-1", "a100x2", "A100", 2, 8.0), offer("aws", "us-east-1", "h100x1", "H100", 1, 6.0)],
        pools=[],
    )
    w = {"name": "ft", "team": "t", "gpu": {"models": ["A100", "H100"], "count": 2, "throughput": {"A100": 1, "H100": 2}}}
    plan = _plan(write_scenario(tmp_path, [w], inventory=inv))
    assert _where(plan, "ft") == ["aws/us-east-1/h100x1/on-demand"]
    assert plan.placements[0].nodes == 1


def test_multi_node_replicas_and_egress(tmp_path: Path) -> None:
    w = {"name": "train", "team": "t", "kind": "batch", "gpu": {"models": ["H100"], "count": 16},
         "dataset": {"provider": "aws", "region": "eu-central-1", "size_gb": 7300, "amortization_hours": 730}}
    plan = _plan(write_scenario(tmp_path, [w]))
    (p,) = plan.placements
    assert p.nodes == 2 and p.offer_id == "aws/us-east-1/p5.48xlarge/on-demand"
    assert p.egress_hourly_usd == pytest.approx(7300 * 0.09 / 730)


def _exact_cost(workloads: list[dict[str, Any]], offers: list[dict[str, Any]]) -> float:
    """Enumerate every assignment of single-replica workloads to offers (or nowhere).

    A replica needing more GPUs than an instance has takes several instances of that offer (services
    may not: they run on one node); each node beyond the first adds the $0.01/h tie-break; an
    unplaced replica costs priority × (1 + the dearest single-replica option, rounded up).
    """

    def nodes(w: dict[str, Any], o: dict[str, Any]) -> int:
        return math.ceil(w["gpu"]["count"] / o["gpu_count"])

    def cost(w: dict[str, Any], o: dict[str, Any]) -> float:
        return nodes(w, o) * o["hourly_usd"] + 0.01 * (nodes(w, o) - 1)

    fits = {(wi, oi) for wi, w in enumerate(workloads) for oi, o in enumerate(offers)
            if o["gpu_model"] in w["gpu"]["models"] and (o.get("available") is None or nodes(w, o) <= o["available"])
            and (w.get("kind") == "batch" or nodes(w, o) == 1)}
    penalty = math.ceil(1 + max((cost(workloads[wi], offers[oi]) for wi, oi in fits), default=0.0))
    best = None
    for choice in itertools.product(range(-1, len(offers)), repeat=len(workloads)):
        used: dict[int, int] = {}
        total = 0.0
        for wi, c in enumerate(choice):
            w = workloads[wi]
            if c < 0:
                total += penalty * w.get("priority", 100)
                continue
            if (wi, c) not in fits:
                break
            used[c] = used.get(c, 0) + nodes(w, offers[c])
            total += cost(w, offers[c])
        else:
            if all(o.get("available") is None or used.get(i, 0) <= o["available"] for i, o in enumerate(offers)):
                best = total if best is None else min(best, total)
    assert best is not None
    return best


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_matches_exhaustive_search_on_small_instances(tmp_path: Path, seed: int) -> None:
    import random

    rng = random.Random(seed)
    gpus = ["H100", "A100", "L4"]
    offers = [offer("aws", rng.choice(["us-east-1", "eu-central-1"]), f"t{i}", rng.choice(gpus),
                    rng.choice([1, 2, 4]), round(rng.uniform(0.5, 20), 2), available=rng.choice([1, 2]))
              for i in range(5)]
    workloads = [{"name": f"w{i}", "team": "t", "kind": rng.choice(["service", "batch"]),
                  "gpu": {"models": rng.sample(gpus, rng.randint(1, 2)), "count": rng.choice([1, 2, 4])}}
                 for i in range(4)]
    plan = _plan(write_scenario(tmp_path, workloads, inventory=inventory_doc(offers=offers, pools=[])))
    assert plan.solver.status == "OPTIMAL"
    assert plan.solver.objective == pytest.approx(_exact_cost(workloads, offers), abs=1e-3)


def test_same_inputs_give_byte_identical_plans(tmp_path: Path) -> None:
    workloads = [{"name": f"w{i}", "team": "t", "replicas": 2, "gpu": {"models": ["L4", "H100"], "count": 1}}
                 for i in range(6)]
    folder = write_scenario(tmp_path, workloads)
    outs = []
    for n in range(2):
        out = tmp_path / f"plan{n}.json"
        subprocess.run([sys.executable, "-m", "placement.cli", "plan", str(folder), "--out", str(out)],
                       check=True, capture_output=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert json.loads(outs[0])["format_version"] == 1


def test_plan_file_round_trip_and_tamper_detection(tmp_path: Path) -> None:
    folder = write_scenario(tmp_path, [{"name": "inf", "team": "t", "gpu": {"models": ["L4"], "count": 1}}])
    plan = make_plan(load_scenario(folder), PlanOptions())
    path = tmp_path / "plan.json"
    path.write_text(plan_to_json(plan))
    assert read_plan(path) == plan
    path.write_text(plan_to_json(plan).replace('"hourly_usd": 0.71', '"hourly_usd": 0.01', 1))
    with pytest.raises(PlanError, match="modified after it was written"):
        read_plan(path)


def test_time_limited_solve_is_feasible_and_reports_its_gap(tmp_path: Path) -> None:
    import random

    rng = random.Random(7)
    gpus = ["H100", "A100", "L4", "L40S"]
    offers = [offer(rng.choice(["aws", "gcp"]), rng.choice(["us-east-1", "eu-central-1"]) if i % 2 else "us-east-1",
                    f"t{i}", rng.choice(gpus), rng.choice([1, 2, 4, 8]), round(rng.uniform(0.5, 40), 2),
                    available=rng.randint(1, 6))
              for i in range(40)]
    for o in offers:
        if o["provider"] == "gcp":
            o["region"] = "europe-west4"
    workloads = [{"name": f"w{i}", "team": f"t{i % 5}", "kind": "batch", "replicas": rng.randint(1, 3),
                  "priority": rng.randint(1, 300),
                  "gpu": {"models": rng.sample(gpus, 2), "count": rng.choice([1, 2, 4, 8])}}
                 for i in range(150)]
    folder = write_scenario(tmp_path, workloads, inventory=inventory_doc(offers=offers, pools=[]))
    scenario = load_scenario(folder)
    plan = make_plan(scenario, PlanOptions(max_deterministic_time=0.02, workers=2))
    assert verify_plan(plan, scenario) == []
    assert plan.solver.objective >= plan.solver.best_bound - 1e-6
    if plan.solver.status == "FEASIBLE":
        assert plan.solver.gap == pytest.approx(
            (plan.solver.objective - plan.solver.best_bound) / plan.solver.objective, abs=1e-5)
    again = make_plan(scenario, PlanOptions(max_deterministic_time=0.02, workers=2))
    assert plan_to_json(again) == plan_to_json(plan)


def test_plan_records_policy_commit_and_dirty_flag(tmp_path: Path) -> None:
    folder = write_scenario(tmp_path, [{"name": "inf", "team": "t", "gpu": {"models": ["L4"], "count": 1}}],
                            policies={"teams.yaml": {"teams": {"t": {"budget_hourly_usd": 10}}}})

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", "policies")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "policies")
    head = git("rev-parse", "HEAD").strip()
    detail = make_plan(load_scenario(folder)).inputs["policies"].detail
    assert detail["commit"] == head and detail["dirty"] is False
    (folder / "policies" / "teams.yaml").write_text("teams:\n  t: {budget_hourly_usd: 11}\n")
    detail = make_plan(load_scenario(folder)).inputs["policies"].detail
    assert detail["commit"] == head and detail["dirty"] is True


def test_policy_spread_applies_to_services_with_enough_replicas(tmp_path: Path) -> None:
    workloads = [{"name": "ha", "team": "t", "replicas": 2, "gpu": {"models": ["L4"], "count": 1}},
                 {"name": "solo", "team": "t", "replicas": 1, "gpu": {"models": ["L4"], "count": 1}},
                 {"name": "job", "team": "t", "kind": "batch", "replicas": 2, "gpu": {"models": ["L4"], "count": 1}}]
    folder = write_scenario(tmp_path, workloads, policies={"spread.yaml": {"spread": {"min_regions": 2}}})
    scenario = load_scenario(folder)
    plan = make_plan(scenario)
    assert verify_plan(plan, scenario) == []
    regions = {w: {(p.provider, p.region) for p in plan.placements if p.workload == w} for w in ("ha", "solo", "job")}
    assert len(regions["ha"]) == 2 and len(regions["solo"]) == 1
    spread = {w.name: w.spread.min_regions for w in scenario.workloads.workloads}
    assert spread == {"ha": 2, "solo": 1, "job": 1}  # batch work and single replicas are not spread
