"""A scenario: workloads + inventory + policies, loaded together and checked against each other."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from placement.errors import InputError, Problem
from placement.inputs import (
    DEFAULT_INVENTORY,
    LoadedInventory,
    LoadedPolicies,
    LoadedWorkloads,
    load_inventory,
    load_policies,
    load_workloads,
)


@dataclass(frozen=True)
class Scenario:
    workloads: LoadedWorkloads
    inventory: LoadedInventory
    policies: LoadedPolicies
    policy_dir: Path | None
    inventory_path: str = DEFAULT_INVENTORY
    policy_path: str | None = None


def resolve_paths(
    scenario_dir: Path | None,
    workloads: list[Path] | None,
    inventory: str | None,
    policies: Path | None,
) -> tuple[list[Path], str, Path | None]:
    """Fill in whatever was not given explicitly from the scenario folder's conventional names."""
    if scenario_dir is not None and not scenario_dir.is_dir():
        raise InputError([Problem(str(scenario_dir), None, "", "scenario folder not found")])
    if not workloads:
        if scenario_dir is None:
            raise InputError([Problem("(command line)", None, "workloads",
                                      "give a scenario folder or --workloads FILE")])
        folder = scenario_dir / "workloads"
        if folder.is_dir():
            workloads = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
        else:
            workloads = [scenario_dir / "workloads.yaml"]
    if inventory is None:
        own = scenario_dir / "inventory.yaml" if scenario_dir is not None else None
        inventory = str(own) if own is not None and own.exists() else DEFAULT_INVENTORY
    if policies is None and scenario_dir is not None:
        for candidate in (scenario_dir / "policies", scenario_dir / "policies.yaml"):
            if candidate.exists():
                policies = candidate
                break
    return workloads, inventory, policies


def load_scenario(
    scenario_dir: Path | None = None,
    workloads: list[Path] | None = None,
    inventory: str | None = None,
    policies: Path | None = None,
) -> Scenario:
    wl_paths, inv_path, pol_path = resolve_paths(scenario_dir, workloads, inventory, policies)
    problems: list[Problem] = []
    loaded: dict[str, object] = {}
    for key, loader in (
        ("workloads", lambda: load_workloads(wl_paths)),
        ("inventory", lambda: load_inventory(inv_path)),
        ("policies", lambda: load_policies(pol_path)),
    ):
        try:
            loaded[key] = loader()
        except InputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputError(problems)
    scenario = Scenario(
        workloads=loaded["workloads"],  # type: ignore[arg-type]
        inventory=loaded["inventory"],  # type: ignore[arg-type]
        policies=loaded["policies"],  # type: ignore[arg-type]
        policy_dir=pol_path if pol_path is not None and pol_path.is_dir() else None,
        inventory_path=inv_path,
        policy_path=None if pol_path is None else str(pol_path),
    )
    cross_check(scenario)
    return with_policy_spread(scenario)


def with_policy_spread(scenario: Scenario) -> Scenario:
    """Raise each workload's spread to the policy's minimum where its replica count allows it."""
    rule = scenario.policies.policies.spread
    if rule.min_providers <= 1 and rule.min_regions <= 1:
        return scenario
    changed = []
    for w in scenario.workloads.workloads:
        if w.kind in rule.kinds:
            providers = max(w.spread.min_providers, min(rule.min_providers, w.replicas))
            regions = max(w.spread.min_regions, min(rule.min_regions, w.replicas))
            if (providers, regions) != (w.spread.min_providers, w.spread.min_regions):
                w = w.model_copy(update={"spread": w.spread.model_copy(
                    update={"min_providers": providers, "min_regions": regions})})
        changed.append(w)
    return dataclasses.replace(scenario, workloads=dataclasses.replace(scenario.workloads, workloads=tuple(changed)))


def cross_check(scenario: Scenario) -> None:
    """References between files: regions, jurisdictions, data classes and teams must exist."""
    inv = scenario.inventory.inventory
    pol = scenario.policies.policies
    region_keys = inv.region_keys()
    bare_regions = {o.region for o in inv.offers}
    jurisdictions = {o.jurisdiction for o in inv.offers}
    problems: list[Problem] = []
    lw = scenario.workloads
    for w in lw.workloads:
        src_index, base = lw.where[w.name]
        src = lw.sources[src_index]
        for i, region in enumerate(w.residency.regions):
            if region not in region_keys and region not in bare_regions:
                problems.append(src.problem((*base, "residency", "regions", i),
                                            f"unknown region {region!r}: no offer in the inventory is in it"))
        for i, juris in enumerate(w.residency.jurisdictions):
            if juris not in jurisdictions:
                problems.append(src.problem((*base, "residency", "jurisdictions", i),
                                            f"unknown jurisdiction {juris!r}; the inventory has "
                                            f"{', '.join(sorted(jurisdictions))}"))
        if w.dataset is not None and w.dataset.region_key not in region_keys:
            problems.append(src.problem((*base, "dataset"),
                                        f"unknown region {w.dataset.region_key!r} for the dataset: the inventory "
                                        "needs an offer there to know its egress price"))
        if w.data_class is not None and pol.data_classes and w.data_class not in pol.data_classes:
            problems.append(src.problem((*base, "data_class"),
                                        f"unknown data class {w.data_class!r}; policies define "
                                        f"{', '.join(sorted(pol.data_classes))}"))
        if pol.teams and w.team not in pol.teams:
            problems.append(src.problem((*base, "team"),
                                        f"unknown team {w.team!r}; policies define {', '.join(sorted(pol.teams))}"))
    if problems:
        raise InputError(problems)
