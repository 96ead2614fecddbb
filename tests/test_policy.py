"""Policy repository tooling: `policy check`, `policy test` and `explain`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from placement.candidates import candidates_for, region_egress_table
from placement.cli_policy import explain_command, policy_app
from placement.inputs import load_inventory
from placement.models import Offer, PolicySet, Workload
from placement.planner import make_plan, plan_to_json
from placement.policy import evaluate, explain, is_known_rule_id, rule_id_of
from placement.scenario import load_scenario
from tests.helpers import inventory_doc, offer, write_scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("eu-bank", "inference-fleet", "training-burst")


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(policy_app, name="policy")
    app.command("explain")(explain_command)
    return app


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(_app(), list(args))
    if result.exit_code not in (0, 1):
        raise AssertionError(f"exit code {result.exit_code}: {result.output}") from result.exception
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, result.stderr


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


# --------------------------------------------------------------------------------------------------
# policy check
# --------------------------------------------------------------------------------------------------

BROKEN_PROVIDERS = """\
format_version: 1
allowed_providers: [aws, corp, nebius, hyperstak]
forbidden_providers: [aws]
forbidden_regions: [aws/mars-1]
"""

BROKEN_GPUS = """\
gpus:
  allowed: [H100, A100, MI300X]
  forbidden: [A100]
  throughput:
    H100: 1.0
    A100: 0.5
"""

BROKEN_CLASSES = """\
data_classes:
  restricted:
    allowed_jurisdictions: [EU]
    allowed_countries: [DE, GB]
    allowed_providers: [corp, nebius]
    allowed_provider_kinds: [on-prem, hyperscaler]
  sealed:
    allowed_providers: [corp]
    required_certifications: [C5]
  typo:
    required_certifications: [ISO2700l]
teams:
  tiny:
    budget_hourly_usd: 0.1
  mixed-up:
    budget_hourly_usd: 100
    budget_monthly_usd: 50
"""


def test_check_reports_each_problem_with_file_and_line(tmp_path: Path) -> None:
    folder = _write(tmp_path / "policies", {"providers.yaml": BROKEN_PROVIDERS, "gpus.yaml": BROKEN_GPUS,
                                            "classes.yaml": BROKEN_CLASSES})
    code, out, err = _run("policy", "check", str(folder))
    assert code == 1
    p, g, c = folder / "providers.yaml", folder / "gpus.yaml", folder / "classes.yaml"
    expected = [
        f"{p}:2: allowed_providers[3]: unknown provider 'hyperstak'",
        f"{p}:3: forbidden_providers[0]: provider 'aws' is both forbidden and allowed (allowed_providers at {p}:2)",
        f"{p}:4: forbidden_regions[0]: unknown region 'aws/mars-1'",
        f"{g}:2: gpus.allowed[2]: GPU model 'MI300X' is allowed but no offer in the inventory",
        f"{g}:3: gpus.forbidden[0]: GPU model 'A100' is both forbidden and allowed (gpus.allowed at {g}:2)",
        f"{g}:6: gpus.throughput.A100: throughput given for GPU model 'A100', which gpus.forbidden rules out",
        f"{c}:4: data_classes.restricted.allowed_countries[1]: country GB is in jurisdiction UK, outside this "
        "class's allowed_jurisdictions (EU)",
        f"{c}:5: data_classes.restricted.allowed_providers[1]: provider 'nebius' is specialist, not one of this "
        "class's allowed_provider_kinds (on-prem, hyperscaler)",
        f"{c}:6: data_classes.restricted.allowed_provider_kinds[1]: provider kind 'hyperscaler' is allowed but none "
        "of this class's allowed_providers (corp, nebius) is of that kind",
        f"{c}:7: data_classes.sealed: data class 'sealed' admits no offer of the inventory",
        f"{c}:11: data_classes.typo.required_certifications[0]: no offer in the inventory",
        f"{c}:14: teams.tiny.budget_hourly_usd: team 'tiny' may spend $0.10/h, less than the cheapest offer",
        f"{c}:17: teams.mixed-up.budget_monthly_usd: monthly budget $50.00 is less than the hourly budget $100.00",
    ]
    lines = out.splitlines()
    for start in expected:
        assert any(line.startswith(start) for line in lines), f"missing {start!r} in:\n{out}"
    assert len(lines) == len(expected), out
    assert "13 problems" in err


def test_check_reports_schema_errors_located(tmp_path: Path) -> None:
    folder = _write(tmp_path / "p", {"a.yaml": "gpus:\n  allowed: [H100, H1000]\n  forbiden: [V100]\n",
                                     "b.yaml": "teams:\n  x: {budget_hourly_usd: -1}\n"})
    code, out, _ = _run("policy", "check", str(folder))
    assert code == 1
    assert f"{folder / 'a.yaml'}:2: gpus.allowed: unknown GPU model 'H1000'" in out
    assert f"{folder / 'a.yaml'}:3: gpus.forbiden: unknown field" in out
    assert f"{folder / 'b.yaml'}:2: teams.x.budget_hourly_usd: Input should be greater than or equal to 0" in out


def test_check_refuses_missing_and_empty_folders(tmp_path: Path) -> None:
    code, _, err = _run("policy", "check", str(tmp_path / "nope"))
    assert code == 1 and "not found" in err
    (tmp_path / "empty").mkdir()
    code, out, _ = _run("policy", "check", str(tmp_path / "empty"))
    assert code == 1 and "no policy files" in out
    code, _, err = _run("policy", "check", str(ROOT / "policies"), "--inventory", str(tmp_path / "inv.yaml"))
    assert code == 1 and f"{tmp_path / 'inv.yaml'}: file not found" in err


def test_repository_policies_pass_check() -> None:
    code, out, _ = _run("policy", "check", str(ROOT / "policies"))
    assert code == 0, out
    assert out.startswith("ok: 6 files, 27 rules")


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_policies_pass_check_with_their_workloads(name: str) -> None:
    folder = ROOT / "scenarios" / name
    inventory = folder / "inventory.yaml"
    code, out, _ = _run("policy", "check", str(folder / "policies"), "--workloads", str(folder / "workloads.yaml"),
                        "--inventory", str(inventory) if inventory.exists() else "default")
    assert code == 0, out


def test_check_names_unknown_teams_and_data_classes_of_workloads(tmp_path: Path) -> None:
    workloads = tmp_path / "workloads.yaml"
    workloads.write_text(yaml.safe_dump({"format_version": 1, "workloads": [
        {"name": "a", "team": "ml-platform", "gpu": {"models": ["H100"], "count": 1}, "data_class": "restricted"},
        {"name": "b", "team": "nobody", "gpu": {"models": ["H100"], "count": 1}, "data_class": "secret"},
        {"name": "c", "team": "search", "gpu": {"models": ["V100"], "count": 1}},
    ]}, sort_keys=False))
    code, out, _ = _run("policy", "check", str(ROOT / "policies"), "--workloads", str(workloads), "--format", "text")
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 3, out
    assert lines[0].startswith(f"{workloads}:") and "workloads[1].team: unknown team 'nobody'" in lines[0]
    assert "workloads[1].data_class: unknown data class 'secret'" in lines[1]
    assert "workloads[2].gpu.models: every GPU model this workload accepts (V100) is ruled out" in lines[2]


def test_check_github_format_annotates_file_and_line(tmp_path: Path) -> None:
    folder = _write(tmp_path / "p", {"providers.yaml": "allowed_providers: [aws, hyperstak]\n"})
    code, out, _ = _run("policy", "check", str(folder), "--format", "github")
    assert code == 1
    assert out.startswith(f"::error file={folder / 'providers.yaml'},line=1,title=allowed_providers[1]::unknown provider")


# --------------------------------------------------------------------------------------------------
# rule ids
# --------------------------------------------------------------------------------------------------


def _offer(**extra: object) -> Offer:
    fields: dict[str, object] = {
        "provider": "aws", "provider_kind": "hyperscaler", "region": "eu-central-1", "country": "DE",
        "jurisdiction": "EU", "location": {"lat": 50.1, "lon": 8.7}, "instance_type": "p5.4xlarge",
        "gpu_model": "H100", "gpu_count": 1, "gpu_memory_gib": 80, "vcpus": 16, "memory_gib": 256,
        "capacity_type": "on-demand", "hourly_usd": 7.0, "certifications": ["ISO27001"],
    }
    fields.update(extra)
    return Offer.model_validate(fields)


def _workload(**extra: object) -> Workload:
    fields: dict[str, object] = {"name": "w", "team": "t", "gpu": {"models": ["H100"], "count": 1}}
    fields.update(extra)
    return Workload.model_validate(fields)


CLASSES = PolicySet.model_validate({"data_classes": {
    "eu": {"allowed_jurisdictions": ["EU"]},
    "de": {"allowed_countries": ["DE"]},
    "own": {"allowed_providers": ["corp"]},
    "onprem": {"allowed_provider_kinds": ["on-prem"]},
    "c5": {"required_certifications": ["C5"]},
    "nospot": {"interruptible_allowed": False},
}})


@pytest.mark.parametrize(
    ("workload", "offer_fields", "policies", "rule"),
    [
        ({}, {"unavailable_reason": "sold out"}, {}, "unavailable"),
        ({"gpu": {"models": ["A100"], "count": 1}}, {}, {}, "gpu_model"),
        ({"gpu": {"models": ["H100"], "count": 1, "min_memory_gib": 94}}, {}, {}, "gpu_memory"),
        ({}, {"capacity_type": "spot"}, {}, "spot"),
        ({"residency": {"jurisdictions": ["US"]}}, {}, {}, "residency.jurisdictions"),
        ({"residency": {"countries": ["FR"]}}, {}, {}, "residency.countries"),
        ({"residency": {"regions": ["gcp/europe-west4"]}}, {}, {}, "residency.regions"),
        ({}, {}, {"allowed_providers": ["gcp"]}, "allowed_providers"),
        ({}, {}, {"forbidden_providers": ["aws"]}, "forbidden_providers"),
        ({}, {}, {"forbidden_regions": ["aws/eu-central-1"]}, "forbidden_regions"),
        ({}, {}, {"gpus": {"allowed": ["A100"]}}, "gpus.allowed"),
        ({}, {}, {"gpus": {"forbidden": ["H100"]}}, "gpus.forbidden"),
        ({"data_class": "eu"}, {"jurisdiction": "UK", "country": "GB"}, None, "data_classes.eu.allowed_jurisdictions"),
        ({"data_class": "de"}, {"country": "NL"}, None, "data_classes.de.allowed_countries"),
        ({"data_class": "own"}, {}, None, "data_classes.own.allowed_providers"),
        ({"data_class": "onprem"}, {}, None, "data_classes.onprem.allowed_provider_kinds"),
        ({"data_class": "c5"}, {}, None, "data_classes.c5.required_certifications"),
        ({"data_class": "nospot", "interruptible": True}, {"capacity_type": "spot"}, None,
         "data_classes.nospot.interruptible_allowed"),
        ({"gpu": {"models": ["H100"], "count": 2}}, {}, {}, "max_nodes"),
        ({"kind": "batch", "gpu": {"models": ["H100"], "count": 4, "max_nodes": 2}}, {}, {}, "max_nodes"),
        ({"vcpus": 64}, {}, {}, "vcpus"),
        ({"memory_gib": 512}, {}, {}, "memory"),
        ({"users": [{"name": "tokyo", "location": {"lat": 35.7, "lon": 139.7}, "max_latency_ms": 40}]}, {}, {},
         "latency"),
        ({}, {"available": 0}, {}, "capacity"),
        ({"budget_hourly_usd": 5}, {}, {}, "budget"),
    ],
)
def test_every_rejection_reason_has_a_rule_id(workload: dict[str, object], offer_fields: dict[str, object],
                                              policies: dict[str, object] | None, rule: str) -> None:
    pol = CLASSES if policies is None else PolicySet.model_validate(policies)
    decision = evaluate(_workload(**workload), _offer(**offer_fields), pol)
    assert decision.allowed is False
    assert decision.rule_id == rule, decision.reason
    assert is_known_rule_id(rule)


def test_allowed_pair_and_unknown_reason() -> None:
    decision = evaluate(_workload(data_class="eu"), _offer(), CLASSES)
    assert decision.allowed and decision.rule_id is None and "data_classes.eu: allowed" in decision.reason
    assert rule_id_of("some future reason") == "some future reason"
    assert not is_known_rule_id("data_classes.eu.allowed_provider")


def test_evaluate_agrees_with_the_planner_on_a_whole_scenario() -> None:
    scenario = load_scenario(ROOT / "scenarios" / "eu-bank")
    inv, pol = scenario.inventory.inventory, scenario.policies.policies
    egress = region_egress_table(inv)
    for w in scenario.workloads.workloads:
        planner = candidates_for(w.model_copy(update={"budget_hourly_usd": None}), inv, pol, egress)
        fitting = {inv.offers[c.offer_index].id for c in planner.candidates}
        for o in inv.offers:
            decision = evaluate(w.model_copy(update={"budget_hourly_usd": None}), o, pol, inv)
            assert decision.allowed == (o.id in fitting), (w.name, o.id, decision)


# --------------------------------------------------------------------------------------------------
# policy test
# --------------------------------------------------------------------------------------------------


def test_repository_policy_tests_pass() -> None:
    code, out, _ = _run("policy", "test", str(ROOT / "policies"))
    assert code == 0, out
    lines = out.splitlines()
    assert all(line.startswith("PASS ") for line in lines[:-1])
    assert lines[-1] == f"{len(lines) - 1} passed, 0 failed"
    assert len(lines) - 1 >= 20


def test_policy_test_fails_when_a_rule_is_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", folder)
    case = "restricted data never runs on a US-headquartered hyperscaler, even in Frankfurt"
    code, out, _ = _run("policy", "test", str(folder))
    assert code == 0 and f": {case}" in out
    classes = folder / "data-classes.yaml"
    text = classes.read_text()
    assert "    allowed_providers: [corp, nebius, verda]\n" in text
    classes.write_text(text.replace("    allowed_providers: [corp, nebius, verda]\n", ""))
    code, out, _ = _run("policy", "test", str(folder))
    assert code == 1
    fail = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert any(f": {case}: expected denied by data_classes.restricted.allowed_providers, got allowed" in line
               for line in fail), out
    assert out.splitlines()[-1].endswith(f"{len(fail)} failed") and len(fail) >= 1


def test_policy_test_fails_when_a_denial_moves_to_another_rule(tmp_path: Path) -> None:
    folder = _write(tmp_path / "p", {
        "providers.yaml": "forbidden_regions: [aws/us-east-1]\n",
        "tests/regions.yaml": (
            "tests:\n"
            "  - name: no Virginia\n"
            "    workload: {gpu: {models: [L4], count: 1}}\n"
            "    offer_id: aws/us-east-1/g6.xlarge/on-demand\n"
            "    expect: denied\n"
            "    rule: forbidden_regions\n"
        ),
    })
    code, out, _ = _run("policy", "test", str(folder))
    assert code == 0 and out.splitlines()[-1] == "1 passed, 0 failed"
    (folder / "providers.yaml").write_text("forbidden_providers: [aws]\n")
    code, out, _ = _run("policy", "test", str(folder))
    assert code == 1
    assert (f"FAIL {folder / 'tests' / 'regions.yaml'}:2: no Virginia: expected denied by forbidden_regions, "
            "got denied by forbidden_providers (provider forbidden by policy)") in out
    assert out.splitlines()[-1] == "0 passed, 1 failed"


def test_policy_test_reports_malformed_cases_located(tmp_path: Path) -> None:
    folder = _write(tmp_path / "p", {
        "gpus.yaml": "gpus: {forbidden: [V100]}\n",
        "tests/bad.yaml": (
            "- name: a\n"
            "  workload: {gpu: {models: [H100], count: 0}}\n"
            "  offer_id: nope/none\n"
            "  expect: denied\n"
            "  rule: gpus.forbiden\n"
            "- name: b\n"
            "  workload: {gpu: {models: [H100], count: 1}}\n"
            "  offer: {provider: mars, region: base-1}\n"
            "  expect: allowed\n"
        ),
    })
    code, _, err = _run("policy", "test", str(folder))
    assert code == 1
    bad = folder / "tests" / "bad.yaml"
    assert f"{bad}:2: [0].workload.gpu.count: Input should be greater than or equal to 1" in err
    assert f"{bad}:3: [0].offer_id: no offer 'nope/none' in the inventory" in err
    assert f"{bad}:5: [0].rule: unknown rule id 'gpus.forbiden'" in err
    assert f"{bad}:8: [1].offer: mars/base-1 is not a region of the inventory" in err


def test_policy_test_without_tests_is_an_error(tmp_path: Path) -> None:
    folder = _write(tmp_path / "p", {"gpus.yaml": "gpus: {forbidden: [V100]}\n"})
    code, _, err = _run("policy", "test", str(folder))
    assert code == 1 and "no policy tests" in err


def test_offer_fields_are_derived_from_the_inventory_and_the_workload(tmp_path: Path) -> None:
    # An offer given by provider and region alone takes the region's attributes from the inventory
    # and a shape that fits the workload, so only the policy decides.
    folder = _write(tmp_path / "p", {
        "classes.yaml": "data_classes:\n  c5: {required_certifications: [C5]}\n",
        "tests/c5.yaml": (
            "tests:\n"
            "  - name: Frankfurt holds C5\n"
            "    workload: {gpu: {models: [H100], count: 2}, vcpus: 40, memory_gib: 300, data_class: c5}\n"
            "    offer: {provider: aws, region: eu-central-1}\n"
            "    expect: allowed\n"
            "  - name: Ireland does not\n"
            "    workload: {gpu: {models: [H100], count: 2}, vcpus: 40, memory_gib: 300, data_class: c5}\n"
            "    offer: {provider: aws, region: eu-west-1}\n"
            "    expect: denied\n"
            "    rule: data_classes.c5.required_certifications\n"
        ),
    })
    code, out, _ = _run("policy", "test", str(folder))
    assert code == 0, out
    assert load_inventory("default").inventory  # the bundled inventory is what offer fields come from


# --------------------------------------------------------------------------------------------------
# explain
# --------------------------------------------------------------------------------------------------


def _plan_file(folder: Path, workloads: list[dict[str, object]]) -> Path:
    offers = [
        offer("gcp", "europe-west4", "g2-standard-4", "L4", 1, 0.71, available=2),
        offer("aws", "eu-central-1", "g6.xlarge", "L4", 1, 0.98),
        offer("aws", "us-east-1", "g6.xlarge", "L4", 1, 0.80),
        offer("gcp", "asia-northeast1", "g2-standard-4", "L4", 1, 0.86),
    ]
    write_scenario(folder, workloads, inventory_doc(offers, pools=[]))
    plan = make_plan(load_scenario(folder))
    path = folder / "plan.json"
    path.write_text(plan_to_json(plan))
    return path


def test_explain_names_runner_up_with_extra_cost(tmp_path: Path) -> None:
    path = _plan_file(tmp_path / "s", [{"name": "chat", "team": "genai", "gpu": {"models": ["L4"], "count": 1},
                                        "residency": {"jurisdictions": ["EU"]}}])
    from placement.apply import scenario_of
    from placement.planner import read_plan

    plan = read_plan(path)
    data = explain(plan, scenario_of(plan), "chat")
    assert data["replicas_placed"] == 1 and data["unplaced"] is None
    assert data["placements"][0]["offer_id"] == "gcp/europe-west4/g2-standard-4/on-demand"
    assert any(r.startswith("cost: $0.71/h per replica, rank 1 of 2") for r in data["placements"][0]["reasons"])
    assert data["runners_up"] == [{
        "offer_id": "aws/eu-central-1/g6.xlarge/on-demand", "provider": "aws", "region": "eu-central-1",
        "capacity_type": "on-demand", "gpu_model": "L4", "gpus": 1, "nodes": 1, "hourly_usd": 0.98,
        "objective_hourly_usd": 0.98, "extra_hourly_usd": 0.27,
    }]
    code, out, _ = _run("explain", "chat", "--plan", str(path))
    assert code == 0
    assert "placed: 1 × gcp/europe-west4/g2-standard-4/on-demand" in out
    assert "1. aws/eu-central-1/g6.xlarge/on-demand — 1× L4, on-demand, $0.98/h (+$0.27/h)" in out


def test_explain_unplaced_workload_gives_reason_counts(tmp_path: Path) -> None:
    path = _plan_file(tmp_path / "s", [
        {"name": "chat", "team": "genai", "gpu": {"models": ["L4"], "count": 1}},
        {"name": "trainer", "team": "genai", "gpu": {"models": ["L4"], "count": 1},
         "residency": {"countries": ["DE"]},
         "users": [{"name": "tokyo", "location": {"lat": 35.7, "lon": 139.7}, "max_latency_ms": 30}]},
    ])
    code, out, _ = _run("explain", "trainer", "--plan", str(path))
    assert code == 0
    assert "trainer (team genai): 0/1 replica(s) placed" in out
    assert "unplaced: 1 replica(s): 0/4 offers fit" in out
    assert "      3 outside residency (countries DE)" in out
    assert "      1 latency to tokyo over 30 ms" in out
    code, _, err = _run("explain", "nobody", "--plan", str(path))
    assert code == 1 and "unknown workload 'nobody'; the plan has chat, trainer" in err
    code, _, err = _run("explain", "chat", "--plan", str(tmp_path / "missing.json"))
    assert code == 1 and "plan file not found" in err


def test_explain_extra_cost_is_against_the_cheapest_chosen_offer(tmp_path: Path) -> None:
    path = _plan_file(tmp_path / "s", [{"name": "chat", "team": "genai", "replicas": 3,
                                        "gpu": {"models": ["L4"], "count": 1}}])
    from placement.apply import scenario_of
    from placement.planner import read_plan

    plan = read_plan(path)
    data = explain(plan, scenario_of(plan), "chat")
    assert [(p["offer_id"], p["replicas"]) for p in data["placements"]] == [
        ("aws/us-east-1/g6.xlarge/on-demand", 1), ("gcp/europe-west4/g2-standard-4/on-demand", 2)]
    assert [(r["offer_id"], r["extra_hourly_usd"]) for r in data["runners_up"]] == [
        ("gcp/asia-northeast1/g2-standard-4/on-demand", 0.15), ("aws/eu-central-1/g6.xlarge/on-demand", 0.27)]
