"""Malformed inputs give one clear, located error per problem and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from placement.errors import InputError
from placement.inputs import load_inventory, load_policies, load_workloads
from placement.scenario import load_scenario
from tests.helpers import inventory_doc, write_scenario

GOOD = {"name": "chat", "team": "genai", "gpu": {"models": ["H100"], "count": 1}}


def _problems(folder: Path) -> list[str]:
    with pytest.raises(InputError) as info:
        load_scenario(folder)
    return [str(p) for p in info.value.problems]


def test_valid_scenario_loads(tmp_path: Path) -> None:
    scenario = load_scenario(write_scenario(tmp_path, [GOOD]))
    assert [w.name for w in scenario.workloads.workloads] == ["chat"]
    assert len(scenario.inventory.inventory.offers) == 9
    corp = [o for o in scenario.inventory.inventory.offers if o.provider == "corp"]
    # provider and region attributes are inherited by offers
    assert corp[0].provider_kind == "on-prem" and corp[0].jurisdiction == "EU" and corp[0].pue == 1.5


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        ({"replicas": -2}, "workloads[0].replicas", "greater than or equal to 1"),
        ({"gpu": {"models": ["H1000"], "count": 1}}, "workloads[0].gpu.models", "unknown GPU model 'H1000'"),
        ({"gpu": {"models": ["H100"], "count": "two"}}, "workloads[0].gpu.count", "valid integer"),
        ({"vcpu": 4}, "workloads[0].vcpu", "unknown field"),
        ({"priority": 0}, "workloads[0].priority", "greater than or equal to 1"),
        ({"residency": {"regions": ["mars-1"]}}, "workloads[0].residency.regions[0]", "unknown region 'mars-1'"),
        ({"residency": {"jurisdictions": ["XX"]}}, "workloads[0].residency.jurisdictions[0]",
         "unknown jurisdiction 'XX'"),
        ({"residency": {"countries": ["germany"]}}, "workloads[0].residency.countries[0]", "should match pattern"),
        ({"users": [{"name": "fra", "location": {"lat": 95, "lon": 0}, "max_latency_ms": 10}]},
         "workloads[0].users[0].location.lat", "less than or equal to 90"),
        ({"dataset": {"provider": "aws", "region": "nowhere-1", "size_gb": 10}}, "workloads[0].dataset",
         "unknown region 'aws/nowhere-1'"),
        ({"replicas": 2, "min_replicas": 3}, "workloads[0]", "min_replicas (3) is larger than replicas (2)"),
    ],
)
def test_bad_workload_is_located(tmp_path: Path, change: dict[str, object], field: str, expected: str) -> None:
    folder = write_scenario(tmp_path, [{**GOOD, **change}])
    problems = _problems(folder)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{folder / 'workloads.yaml'}:"), problems
    assert f" {field}: " in problems[0] and expected in problems[0], problems


def test_line_numbers_point_at_the_field(tmp_path: Path) -> None:
    folder = write_scenario(tmp_path, [GOOD])
    (folder / "workloads.yaml").write_text(
        "format_version: 1\nworkloads:\n  - name: a\n    team: t\n    gpu:\n      models: [H100]\n      count: 0\n"
    )
    problems = _problems(folder)
    assert problems == [f"{folder / 'workloads.yaml'}:7: workloads[0].gpu.count: "
                        "Input should be greater than or equal to 1 (got 0)"]


def test_every_problem_is_reported(tmp_path: Path) -> None:
    folder = write_scenario(tmp_path, [{**GOOD, "replicas": 0}, {**GOOD, "name": "b", "vcpus": -1}])
    problems = _problems(folder)
    assert len(problems) == 2
    assert "workloads[0].replicas" in problems[0] and "workloads[1].vcpus" in problems[1]


def test_bad_yaml_syntax(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("workloads:\n  - name: a\n   team: b\n")
    with pytest.raises(InputError) as info:
        load_workloads([path])
    assert str(info.value.problems[0]).startswith(f"{path}:3: invalid YAML")


def test_duplicate_key_and_duplicate_workload(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("workloads:\n  - name: a\n    name: b\n")
    with pytest.raises(InputError) as info:
        load_workloads([path])
    assert "key 'name' appears twice" in str(info.value)
    folder = write_scenario(tmp_path / "s", [GOOD, GOOD])
    assert any("workload name 'chat' is used twice" in p for p in _problems(folder))


def test_missing_workload_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        load_workloads([tmp_path / "nope.yaml"])
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: file not found"


def test_bad_inventory_offer(tmp_path: Path) -> None:
    doc = inventory_doc()
    doc["offers"][0]["gpu_count"] = -8
    doc["offers"][1]["capacity_type"] = "cheap"
    doc["offers"].append({**doc["offers"][2], "region": "unknown-9", "instance_type": "x"})
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError) as info:
        load_inventory(path)
    text = str(info.value)
    assert "offers[0].gpu_count: Input should be greater than or equal to 1" in text
    assert "offers[1].capacity_type: Input should be 'on-demand', 'spot', 'reserved' or 'owned'" in text
    assert "offers[9].region: region aws/unknown-9 is not described under 'regions'" in text


def test_offer_refers_to_unknown_pool(tmp_path: Path) -> None:
    doc = inventory_doc(pools=[])
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="unknown capacity pool 'corp/fra/h100'"):
        load_inventory(path)


def test_policies_merge_and_conflict(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("teams:\n  fraud: {budget_hourly_usd: 40}\n")
    (tmp_path / "b.yaml").write_text("teams:\n  risk: {budget_hourly_usd: 10}\ndata_classes:\n  restricted: {}\n")
    loaded = load_policies(tmp_path)
    assert set(loaded.policies.teams) == {"fraud", "risk"}
    (tmp_path / "c.yaml").write_text("teams:\n  fraud:\n    budget_hourly_usd: 50\n")
    with pytest.raises(InputError) as info:
        load_policies(tmp_path)
    assert f"{tmp_path / 'c.yaml'}:2: teams.fraud: teams entry 'fraud' is already defined in {tmp_path / 'a.yaml'}:2" \
        == str(info.value)


def test_policy_field_error_names_its_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("teams:\n  fraud: {budget_hourly_usd: 40}\n")
    (tmp_path / "b.yaml").write_text("gpus:\n  forbidden: [H1000]\n")
    with pytest.raises(InputError) as info:
        load_policies(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'b.yaml'}:2: gpus.forbidden: unknown GPU model 'H1000'")


def test_unknown_team_and_data_class(tmp_path: Path) -> None:
    folder = write_scenario(
        tmp_path, [{**GOOD, "data_class": "secret"}],
        policies={"p.yaml": {"teams": {"fraud": {}}, "data_classes": {"restricted": {}}}},
    )
    problems = _problems(folder)
    assert any("workloads[0].data_class: unknown data class 'secret'" in p for p in problems)
    assert any("workloads[0].team: unknown team 'genai'" in p for p in problems)
