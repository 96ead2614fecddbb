"""The `placement` command line: parses arguments, calls the library, renders results."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from placement.errors import InputError, PlacementError
from placement.models import Inventory, Plan, PolicySet, WorkloadSet
from placement.planner import PlanOptions, make_plan, plan_to_json
from placement.scenario import load_scenario

app = typer.Typer(
    help="Plan GPU workloads across hyperscalers, specialist GPU clouds and on-prem pools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def _err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def user_errors(func: F) -> F:
    """Turn the engine's errors into a clear message and exit code 1, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            console = _err_console()
            n = len(exc.problems)
            console.print(f"[bold red]error:[/] {n} problem{'s' if n != 1 else ''} in the input files:", markup=True)
            for problem in exc.problems:
                console.print(f"  {problem}", markup=False)
            raise typer.Exit(1) from None
        except PlacementError as exc:
            _err_console().print(f"[bold red]error:[/] {exc}", markup=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _out_console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)
    return console


def _money(value: float) -> str:
    return f"${value:,.2f}"


def render_plan(plan: Plan, console: Console) -> None:
    table = Table(title="Placement plan", title_justify="left", show_lines=False)
    for col, justify in (("workload", "left"), ("replicas", "right"), ("provider", "left"), ("region", "left"),
                         ("instance", "left"), ("capacity", "left"), ("GPUs", "left"), ("$/h", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for p in plan.placements:
        groups[(p.workload, p.offer_id)].append(p)
    for (workload, _), items in sorted(groups.items()):
        p = items[0]
        gpus = p.nodes * p.gpus_per_node
        nodes = f" ({p.nodes} nodes)" if p.nodes > 1 else ""
        table.add_row(
            workload, str(len(items)), p.provider, p.region + (f" ({p.zone})" if p.zone else ""), p.instance_type,
            p.capacity_type, f"{gpus}× {p.gpu_model}{nodes}", _money(sum(i.total_hourly_usd for i in items)),
        )
    t = plan.totals
    table.add_section()
    table.add_row("total", str(t.replicas_placed), "", "", "", "", f"{t.gpus} GPUs", _money(t.hourly_usd))
    console.print(table)
    console.print(
        f"cost {_money(t.hourly_usd)}/h ({_money(t.monthly_usd)}/month), of which data egress "
        f"{_money(t.egress_hourly_usd)}/h; carbon {t.carbon_kg_per_hour:,.1f} kg CO2e/h"
    )
    if plan.unplaced:
        console.print(f"[bold yellow]{t.replicas_unplaced} replica(s) not placed:[/]")
        for u in plan.unplaced:
            console.print(f"  {u.workload} ({u.replicas} replica(s)): {u.summary}", markup=False)
    s = plan.solver
    wall = f", {s.wall_time_s:.2f} s" if s.wall_time_s is not None else ""
    console.print(
        f"solver {s.method}: {s.status}, objective {_money(s.objective)}/h, bound {_money(s.best_bound)}/h, "
        f"gap {s.gap:.2%}{wall}; {s.candidates_kept}/{s.candidates_total} workload×offer pairs passed the filters"
    )
    console.print(f"plan digest {plan.digest}", markup=False)


@app.command()
@user_errors
def plan(
    scenario: Annotated[Path | None, typer.Argument(help="scenario folder (workloads.yaml, inventory.yaml, policies/)")] = None,
    workloads: Annotated[list[Path] | None, typer.Option("--workloads", "-w", help="workload file(s)")] = None,
    inventory: Annotated[str | None, typer.Option("--inventory", "-i", help="inventory file, or 'default'")] = None,
    policies: Annotated[Path | None, typer.Option("--policies", "-p", help="policy folder or file")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the plan JSON here")] = None,
    output_format: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    time_limit: Annotated[float | None, typer.Option("--time-limit", help="solver deterministic-time limit")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="solver workers")] = None,
    record_wall_time: Annotated[bool, typer.Option("--record-wall-time", help="store the wall-clock solve time in the plan (makes plans differ run to run)")] = False,
) -> None:
    """Plan where every workload should run. Changes nothing."""
    if output_format not in ("table", "json"):
        raise PlacementError(f"--format must be 'table' or 'json', not {output_format!r}")
    loaded = load_scenario(scenario, workloads, inventory, policies)
    result = make_plan(loaded, PlanOptions(max_deterministic_time=time_limit, workers=workers,
                                           record_wall_time=record_wall_time))
    text = plan_to_json(result)
    if out is not None:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise PlacementError(f"cannot write plan to {out}: {exc}") from None
    if output_format == "json":
        sys.stdout.write(text)
    else:
        console = _out_console()
        render_plan(result, console)
        if out is not None:
            console.print(f"plan written to {out}", markup=False)


@app.command()
@user_errors
def schema(
    kind: Annotated[str, typer.Argument(help="workloads, inventory-offer, policies or plan")] = "workloads",
) -> None:
    """Print the JSON Schema of an input format (for editors and CI)."""
    models: dict[str, Any] = {"workloads": WorkloadSet, "inventory": Inventory, "policies": PolicySet, "plan": Plan}
    if kind not in models:
        raise PlacementError(f"unknown schema {kind!r}; choose one of {', '.join(models)}")
    sys.stdout.write(json.dumps(models[kind].model_json_schema(), indent=2, sort_keys=True) + "\n")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
