"""`placement policy check|test` and `placement explain`: argument parsing and rendering only."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from placement.errors import InputError, PlacementError, Problem

policy_app = typer.Typer(
    help="Check and test a policy repository (the folder of policy YAML files kept in git).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")


def _user_errors(func: F) -> F:
    """The engine's errors become a message on stderr and exit code 1, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            n = len(exc.problems)
            _err(f"error: {n} problem{'s' if n != 1 else ''} in the input files:")
            for problem in exc.problems:
                _err(f"  {problem}")
            raise typer.Exit(1) from None
        except PlacementError as exc:
            _err(f"error: {exc}")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _github_annotation(problem: Problem) -> str:
    """A GitHub Actions workflow command that annotates the file and line in the pull request."""

    def escape(text: str, prop: bool = False) -> str:
        text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        return text.replace(":", "%3A").replace(",", "%2C") if prop else text

    props = [f"file={escape(problem.file, True)}"]
    if problem.line:
        props.append(f"line={problem.line}")
    if problem.field:
        props.append(f"title={escape(problem.field, True)}")
    return f"::error {','.join(props)}::{escape(problem.message)}"


def _load_inventory(inventory: str) -> Any:
    from placement.inputs import load_inventory

    return load_inventory(inventory).inventory


@policy_app.command("check")
@_user_errors
def check_command(
    directory: Annotated[Path, typer.Argument(help="policy folder (or one policy file)")],
    inventory: Annotated[str, typer.Option("--inventory", "-i", help="inventory to check names against, or 'default'")] = "default",
    workloads: Annotated[list[Path] | None, typer.Option("--workloads", "-w", help="also check the teams and data classes these workload files use")] = None,
    output_format: Annotated[str, typer.Option("--format", help="text (file:line: field: message) or github (workflow annotations)")] = "text",
) -> None:
    """Validate a policy folder: schema, names against the inventory, contradictory rules.

    Prints one line per problem and exits 1 if there is any; exits 0 otherwise.
    """
    from placement.policy import check_policy_folder

    if output_format not in ("text", "github"):
        raise PlacementError(f"--format must be 'text' or 'github', not {output_format!r}")
    if not directory.exists():
        raise PlacementError(f"{directory}: policy folder or file not found")
    inv = _load_inventory(inventory)
    report = check_policy_folder(directory, inv, workloads or [])
    for problem in report.problems:
        _out(_github_annotation(problem) if output_format == "github" else str(problem))
    if not report.ok:
        n = len(report.problems)
        _err(f"{n} problem{'s' if n != 1 else ''} in {directory}")
        raise typer.Exit(1)
    _out(f"ok: {report.files} file{'s' if report.files != 1 else ''}, {report.rules} rule{'s' if report.rules != 1 else ''} "
         f"(checked against inventory {inv.snapshot.name}, {len(inv.offers)} offers)")


@policy_app.command("test")
@_user_errors
def test_command(
    directory: Annotated[Path, typer.Argument(help="policy folder; its tests are in DIR/tests/*.yaml")],
    inventory: Annotated[str, typer.Option("--inventory", "-i", help="inventory that offer_id refers to, or 'default'")] = "default",
) -> None:
    """Run the policy unit tests: each case expects a workload on an offer to be allowed or denied."""
    from placement.policy import run_policy_tests

    if not directory.is_dir():
        raise PlacementError(f"{directory}: policy folder not found")
    results = run_policy_tests(directory, _load_inventory(inventory))
    if not results:
        raise PlacementError(f"no policy tests in {directory / 'tests'} (*.yaml, *.yml) or in `tests:` sections")
    for r in results:
        if r.passed:
            _out(f"PASS {r.case.where}: {r.case.name}")
        else:
            _out(f"FAIL {r.case.where}: {r.case.name}: {r.message}")
    failed = sum(1 for r in results if not r.passed)
    _out(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        raise typer.Exit(1)


@_user_errors
def explain_command(
    workload: Annotated[str, typer.Argument(help="workload name")],
    plan_file: Annotated[Path, typer.Option("--plan", help="a plan saved by `placement plan --out`")],
    output_format: Annotated[str, typer.Option("--format", help="text or json")] = "text",
) -> None:
    """Explain one workload of a saved plan: where it runs and why, the runners-up, what is missing."""
    from placement.apply import scenario_of
    from placement.planner import read_plan
    from placement.policy import explain, render_explanation

    if output_format not in ("text", "json"):
        raise PlacementError(f"--format must be 'text' or 'json', not {output_format!r}")
    plan = read_plan(plan_file)
    data = explain(plan, scenario_of(plan), workload)
    if output_format == "json":
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return
    for line in render_explanation(data):
        _out(line)


@_user_errors
def relax_command(
    scenario: Annotated[Path, typer.Argument(help="scenario folder (workloads.yaml, inventory.yaml, policies/)")],
    workload: Annotated[list[str], typer.Argument(help="unplaced workload(s) to find a relaxation for")],
    output_format: Annotated[str, typer.Option("--format", help="text or json")] = "text",
) -> None:
    """Why unplaced workloads are left out: a minimal conflicting rule set and the cheapest relaxation."""
    from placement.relax import relax, render_relaxation
    from placement.scenario import load_scenario

    if output_format not in ("text", "json"):
        raise PlacementError(f"--format must be 'text' or 'json', not {output_format!r}")
    result = relax(load_scenario(scenario), workload)
    if output_format == "json":
        sys.stdout.write(json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")
        return
    for line in render_relaxation(result):
        _out(line)


@_user_errors
def price_policies_command(
    scenario: Annotated[Path, typer.Argument(help="scenario folder (workloads.yaml, inventory.yaml, policies/)")],
    output_format: Annotated[str, typer.Option("--format", help="text or json")] = "text",
) -> None:
    """The price of each policy rule: the plan's $/h and placed replicas with and without it."""
    from placement.relax import price_of_policies, render_prices
    from placement.scenario import load_scenario

    if output_format not in ("text", "json"):
        raise PlacementError(f"--format must be 'text' or 'json', not {output_format!r}")
    prices = price_of_policies(load_scenario(scenario))
    if output_format == "json":
        sys.stdout.write(json.dumps([p.to_json() for p in prices], indent=2, sort_keys=True) + "\n")
        return
    for line in render_prices(prices):
        _out(line)
