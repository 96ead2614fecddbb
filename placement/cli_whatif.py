"""Commands `whatif`, `report` and `cost`: argument parsing and rendering over placement.whatif and
placement.report.

The functions are plain Typer command functions; placement/cli.py registers them on its app and wraps
them in its ``user_errors`` decorator. Helpers of the main CLI are imported when a command runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from placement.errors import InputError, PlacementError, Problem
from placement.models import Plan
from placement.scenario import Scenario

COMMAND_LINE = "(command line)"


def _money(value: float) -> str:
    return f"-${abs(value):,.2f}" if value < 0 else f"${value:,.2f}"


def _signed_money(value: float) -> str:
    return ("+" if value > 0 else "") + _money(value)


def _check_format(output_format: str) -> None:
    if output_format not in ("table", "json"):
        raise PlacementError(f"--format must be 'table' or 'json', not {output_format!r}")


# --------------------------------------------------------------------------------------------------
# Changes given as flags
# --------------------------------------------------------------------------------------------------


def _flag_problem(flag: str, message: str) -> InputError:
    return InputError([Problem(COMMAND_LINE, None, flag, message)])


def _split_spec(flag: str, text: str) -> tuple[str, list[tuple[str, str]]]:
    """``HEAD[,key=value...]`` into the head and the key/value pairs."""
    head, *rest = [part.strip() for part in text.split(",")]
    pairs = []
    for part in rest:
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise _flag_problem(flag, f"expected key=value after the first comma, got {part!r} in {text!r}")
        pairs.append((key.strip(), value.strip()))
    return head, pairs


def _number(flag: str, text: str, strip: str) -> float:
    try:
        return float(text.strip().strip(strip))
    except ValueError:
        raise _flag_problem(flag, f"expected a number, got {text!r}") from None


def _validated(flag: str, raw: dict[str, Any]) -> Any:
    from placement.whatif import CHANGE_ADAPTER

    try:
        return CHANGE_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        messages = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'value'}: {e['msg'].removeprefix('Value error, ')}"
                    for e in exc.errors(include_url=False)]
        raise _flag_problem(flag, "; ".join(messages)) from None


_ALIASES = {"gpu": "gpu_model", "capacity": "capacity_type", "label": "labels", "workload": "workloads"}


def traffic_change(text: str) -> Any:
    """``FACTOR[,team=T][,label=K=V][,workload=NAME][,scale_budget=true]``; the factor may be written 10x."""
    flag = "--traffic"
    head, pairs = _split_spec(flag, text)
    raw: dict[str, Any] = {"kind": "traffic", "factor": _number(flag, head, "x×* "), "labels": {}, "workloads": []}
    for key, value in pairs:
        key = _ALIASES.get(key, key)
        if key == "labels":
            k, sep, v = value.partition("=")
            if not sep:
                raise _flag_problem(flag, f"label needs key=value, got {value!r}")
            raw["labels"][k] = v
        elif key == "workloads":
            raw["workloads"].append(value)
        elif key == "scale_budget":
            raw[key] = value.lower() in ("1", "true", "yes", "y")
        else:
            raw[key] = value
    return _validated(flag, raw)


def outage_change(text: str) -> Any:
    """``PROVIDER[/REGION[/ZONE]]``."""
    parts = [p.strip() for p in text.strip().split("/")]
    if not parts[0] or len(parts) > 3:
        raise _flag_problem("--outage", f"expected PROVIDER[/REGION[/ZONE]], got {text!r}")
    raw = dict(zip(("provider", "region", "zone"), parts, strict=False))
    return _validated("--outage", {"kind": "outage", **raw})


def price_change(text: str) -> Any:
    """``PERCENT[,provider=P][,gpu=M][,capacity=C][,region=R]``, e.g. ``+30,provider=aws``."""
    flag = "--price-shock"
    head, pairs = _split_spec(flag, text)
    raw: dict[str, Any] = {"kind": "price", "percent": _number(flag, head, "% ")}
    raw.update({_ALIASES.get(k, k): v for k, v in pairs})
    return _validated(flag, raw)


def shortage_change(text: str) -> Any:
    """``PERCENT,gpu=M[,provider=P][,unlimited=keep]``, e.g. ``50,gpu=H100``."""
    flag = "--shortage"
    head, pairs = _split_spec(flag, text)
    raw: dict[str, Any] = {"kind": "shortage", "percent": _number(flag, head, "% ")}
    raw.update({_ALIASES.get(k, k): v for k, v in pairs})
    return _validated(flag, raw)


def _yaml_mapping(path: Path, what: str) -> tuple[Any, dict[str, Any]]:
    from placement.yamlio import parse_yaml

    src = parse_yaml(path)
    if not isinstance(src.data, dict):
        raise InputError([src.problem((), f"expected a mapping ({what})")])
    return src, {k: v for k, v in src.data.items() if k != "format_version"}


def new_pool_change(path: Path) -> Any:
    """A YAML file with ``providers``, ``regions``, ``pools`` and ``offers``, as in an inventory file."""
    from placement.whatif import NewPoolChange
    from placement.yamlio import validation_problems

    src, data = _yaml_mapping(path, "providers, regions, pools, offers")
    try:
        return NewPoolChange.model_validate({**data, "kind": "new_pool"})
    except ValidationError as exc:
        raise InputError(validation_problems(exc, src)) from None


def policy_change(path: Path) -> Any:
    from placement.whatif import PolicyChange

    _, data = _yaml_mapping(path, "policy sections to merge over the loaded policies")
    return PolicyChange(patch=data)


def flag_changes(
    scenario: Scenario,
    traffic: Sequence[str] = (),
    outage: Sequence[str] = (),
    price_shock: Sequence[str] = (),
    shortage: Sequence[str] = (),
    new_pool: Sequence[Path] = (),
    policy_patch: Sequence[Path] = (),
    forbid_provider: Sequence[str] = (),
) -> list[Any]:
    """The changes the flags describe, in a fixed order: traffic, outages, prices, shortages, pools, policy."""
    from placement.whatif import PolicyChange

    changes: list[Any] = [traffic_change(t) for t in traffic]
    changes += [outage_change(o) for o in outage]
    changes += [price_change(p) for p in price_shock]
    changes += [shortage_change(s) for s in shortage]
    changes += [new_pool_change(p) for p in new_pool]
    changes += [policy_change(p) for p in policy_patch]
    if forbid_provider:
        already = list(scenario.policies.policies.forbidden_providers)
        forbidden = already + [p for p in forbid_provider if p not in already]
        changes.append(PolicyChange(patch={"forbidden_providers": forbidden}))
    return changes


# --------------------------------------------------------------------------------------------------
# whatif
# --------------------------------------------------------------------------------------------------


def _owned_text(doc: dict[str, Any]) -> str:
    owned = doc["owned"]
    share = f" ({owned['share']:.0%})" if owned["share"] is not None else ""
    return f"{owned['used_gpus']} / {owned['available_gpus']}{share}"


def render_whatif(doc: dict[str, Any], console: Console) -> None:
    outcomes = [doc["base"], *doc["variants"]]
    table = Table(title="What-if comparison", title_justify="left")
    table.add_column("", style="bold")
    for o in outcomes:
        table.add_column(o["name"], justify="right", overflow="fold")

    def row(label: str, cells: list[str]) -> None:
        table.add_row(label, *cells)

    def moves(o: dict[str, Any], key: str) -> str:
        return "—" if o["moves"] is None else str(o["moves"][key])

    row("$/h", [_money(o["hourly_usd"]) for o in outcomes])
    row("$/month", [_money(o["monthly_usd"]) for o in outcomes])
    row("Δ $/h vs base", ["—" if o is doc["base"] else
                          f"{_signed_money(o['delta_hourly_usd'])} ({o['delta_percent']:+.1f}%)"
                          if o["delta_percent"] is not None else _signed_money(o["delta_hourly_usd"])
                          for o in outcomes])
    row("Δ $/month vs base", ["—" if o is doc["base"] else _signed_money(o["delta_monthly_usd"]) for o in outcomes])
    row("replicas placed", [str(o["replicas_placed"]) for o in outcomes])
    row("replicas not placed", [str(o["replicas_unplaced"]) for o in outcomes])
    row("workloads not placed", [str(len(o["unplaced"])) for o in outcomes])
    row("replicas moved vs base", [moves(o, "moved") for o in outcomes])
    row("replicas added vs base", [moves(o, "created") for o in outcomes])
    row("replicas removed vs base", [moves(o, "deleted") for o in outcomes])
    row("GPUs", [str(o["gpus"]) for o in outcomes])
    row("GPU mix", [", ".join(f"{n} {m}" for m, n in o["gpu_mix"].items()) or "—" for o in outcomes])
    row("owned GPUs used / available", [_owned_text(o) for o in outcomes])
    row("carbon kg CO2e/h", [f"{o['carbon_kg_per_hour']:,.1f}" for o in outcomes])
    row("solver", [f"{o['solver']['status']}, gap {o['solver']['gap']:.2%}" for o in outcomes])
    console.print(table)
    for o in doc["variants"]:
        console.print(f"[bold]{o['name']}[/]" + (f": {o['description']}" if o["description"] else ""),
                      highlight=False)
        for text in o["changes_text"]:
            console.print(f"  change: {text}", markup=False)
        if not o["unplaced"]:
            console.print("  every replica placed", markup=False)
        for u in o["unplaced"]:
            console.print(f"  not placed: {u['workload']} ({u['replicas']} replica(s)): {u['summary']}", markup=False)
    base_unplaced = doc["base"]["unplaced"]
    if base_unplaced:
        console.print("[bold]base[/]: replicas not placed")
        for u in base_unplaced:
            console.print(f"  not placed: {u['workload']} ({u['replicas']} replica(s)): {u['summary']}", markup=False)


def _write_plans(out_dir: Path, outcomes: Sequence[tuple[str, Plan]]) -> list[Path]:
    from placement.planner import plan_to_json

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name, plan in outcomes:
            path = out_dir / f"{name}.json"
            path.write_text(plan_to_json(plan), encoding="utf-8")
            written.append(path)
    except OSError as exc:
        raise PlacementError(f"cannot write plans to {out_dir}: {exc}") from None
    return written


def whatif_command(
    scenario: Annotated[Path | None, typer.Argument(help="scenario folder (workloads.yaml, inventory.yaml, policies/)")] = None,
    changes: Annotated[Path | None, typer.Option("--changes", "-c", help="what-if file with named variants (default: SCENARIO/whatif.yaml when no change flag is given)")] = None,
    traffic: Annotated[list[str] | None, typer.Option("--traffic", help="FACTOR, then optional selectors ,team=T ,label=K=V ,workload=NAME: replicas × FACTOR, rounded up (e.g. 10,team=assistant)")] = None,
    outage: Annotated[list[str] | None, typer.Option("--outage", help="PROVIDER, PROVIDER/REGION or PROVIDER/REGION/ZONE: its offers become unavailable")] = None,
    price_shock: Annotated[list[str] | None, typer.Option("--price-shock", help="PERCENT, then optional ,provider=P ,gpu=M ,capacity=C ,region=R: prices change by PERCENT% (e.g. +30,provider=aws)")] = None,
    shortage: Annotated[list[str] | None, typer.Option("--shortage", help="PERCENT,gpu=M, then optional ,provider=P ,unlimited=keep: capacity −PERCENT% (e.g. 50,gpu=H100)")] = None,
    new_pool: Annotated[list[Path] | None, typer.Option("--new-pool", help="YAML inventory fragment (providers, regions, pools, offers) to add")] = None,
    policy_patch: Annotated[list[Path] | None, typer.Option("--policy-patch", help="YAML policy sections merged over the policies (JSON merge patch)")] = None,
    forbid_provider: Annotated[list[str] | None, typer.Option("--forbid-provider", help="add a provider to forbidden_providers")] = None,
    name: Annotated[str, typer.Option("--name", help="name of the variant the change flags make")] = "what-if",
    workloads: Annotated[list[Path] | None, typer.Option("--workloads", "-w", help="workload file(s)")] = None,
    inventory: Annotated[str | None, typer.Option("--inventory", "-i", help="inventory file, or 'default'")] = None,
    policies: Annotated[Path | None, typer.Option("--policies", "-p", help="policy folder or file")] = None,
    state: Annotated[str | None, typer.Option("--state", help="state store: SQLite file or SQLAlchemy URL (env PLACEMENT_STATE)")] = None,
    output_format: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="write base.json and one plan JSON per variant here")] = None,
    time_limit: Annotated[float | None, typer.Option("--time-limit", help="solver deterministic-time limit per plan")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="solver workers")] = None,
) -> None:
    """Plan the scenario and what-if variants of it side by side: cost, unplaced work, moves, GPUs, carbon."""
    from placement.cli import _out_console, read_state_view
    from placement.planner import PlanOptions
    from placement.scenario import load_scenario
    from placement.whatif import WHATIF_FILE, Variant, load_whatif, run_whatif, whatif_document

    _check_format(output_format)
    loaded = load_scenario(scenario, workloads, inventory, policies)
    flagged = flag_changes(loaded, traffic or (), outage or (), price_shock or (), shortage or (), new_pool or (),
                           policy_patch or (), forbid_provider or ())
    variants: list[Variant] = []
    if changes is None and not flagged:
        default = scenario / WHATIF_FILE if scenario is not None else None
        if default is None or not default.exists():
            raise PlacementError(f"no what-if variants: give change flags (--traffic, --outage, ...) or --changes FILE, "
                                 f"or put a {WHATIF_FILE} in the scenario folder")
        changes = default
    if changes is not None:
        variants.extend(load_whatif(changes))
    if flagged:
        try:
            variants.append(Variant(name=name, description="from the command line", changes=tuple(flagged)))
        except ValidationError as exc:
            raise _flag_problem("--name", exc.errors(include_url=False)[0]["msg"]) from None
    names = [v.name for v in variants]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise PlacementError(f"variant name(s) used twice: {', '.join(twice)} (choose another --name)")
    current = read_state_view(state)
    result = run_whatif(loaded, variants, current, PlanOptions(max_deterministic_time=time_limit, workers=workers))
    doc = whatif_document(result)
    written = _write_plans(out_dir, [(o.name, o.plan) for o in result.outcomes]) if out_dir is not None else []
    if output_format == "json":
        sys.stdout.write(json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n")
        return
    console = _out_console()
    render_whatif(doc, console)
    if written:
        console.print(f"plans written to {out_dir}: {', '.join(p.name for p in written)}", markup=False)


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------


def report_command(
    plans: Annotated[list[Path], typer.Argument(help="plan JSON files; the first is the base of the comparison")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the HTML file to write")] = Path("report.html"),
    title: Annotated[str | None, typer.Option("--title", help="page title")] = None,
    topojson: Annotated[Path | None, typer.Option("--topojson", help="plotly world_110m TopoJSON to embed as the map's basemap")] = None,
) -> None:
    """Write one self-contained HTML page (no network needed) about one or more plans."""
    from placement.cli import _out_console
    from placement.report import write_report

    write_report(plans, out, title, topojson)
    _out_console().print(f"report written to {out} ({len(plans)} plan(s))", markup=False)


# --------------------------------------------------------------------------------------------------
# cost
# --------------------------------------------------------------------------------------------------


def render_forecast(doc: dict[str, Any], console: Console) -> None:
    providers = sorted(doc["by_provider_monthly_usd"])
    table = Table(title=f"Monthly forecast ({doc['hours_per_month']:g} h) by team and provider, state serial "
                        f"{doc['state']['serial']}", title_justify="left")
    table.add_column("team")
    for p in providers:
        table.add_column(p, justify="right")
    for col in ("$/h", "$/month", "budget $/month", "over (+) / under (−)"):
        table.add_column(col, justify="right")
    for t in doc["teams"]:
        over = t["over_monthly_usd"]
        over_text = "—" if over is None else (f"[red]{_signed_money(over)}[/]" if over > 0 else _signed_money(over))
        table.add_row(
            t["team"], *[_money(t["by_provider_monthly_usd"][p]) if p in t["by_provider_monthly_usd"] else ""
                         for p in providers],
            _money(t["hourly_usd"]), _money(t["monthly_usd"]),
            "—" if t["limit_monthly_usd"] is None else _money(t["limit_monthly_usd"]), over_text,
        )
    table.add_section()
    table.add_row("total", *[_money(doc["by_provider_monthly_usd"][p]) for p in providers],
                  _money(doc["hourly_usd"]), _money(doc["monthly_usd"]), "", "")
    console.print(table)
    over = [t for t in doc["teams"] if t["status"] == "over"]
    if doc["policies"] is None:
        console.print("no budgets compared: give --policies DIR for the team budgets", markup=False)
    elif over:
        console.print(f"[bold red]{len(over)} team(s) over budget:[/] " + ", ".join(
            f"{t['team']} by {_money(t['over_monthly_usd'])}/month" for t in over))
    else:
        console.print("every team is within its budget", markup=False)


def cost_command(
    state: Annotated[str | None, typer.Option("--state", help="state store: SQLite file or SQLAlchemy URL (env PLACEMENT_STATE)")] = None,
    policies: Annotated[Path | None, typer.Option("--policies", "-p", help="policy folder or file with the team budgets")] = None,
    output_format: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Monthly cost forecast per team and provider of what runs now, against the team budgets."""
    from placement.cli import _out_console, state_location
    from placement.inputs import load_policies
    from placement.report import forecast_costs, forecast_document

    _check_format(output_format)
    pol = load_policies(policies).policies if policies is not None else None
    location = state_location(state)
    placements = []
    serial, lineage, unpriced = 0, None, 0
    if "://" in location or Path(location).exists():
        from placement.state import StateStore

        with StateStore.open(location) as store:
            snap = store.snapshot()
        placements = [rec.placement() for rec in snap.placements if rec.spec]
        serial, lineage, unpriced = snap.serial, snap.lineage, len(snap.placements) - len(placements)
    forecast = forecast_costs(placements, pol, serial=serial, lineage=lineage,
                              policy_source=None if policies is None else str(policies), unpriced=unpriced)
    doc = forecast_document(forecast)
    if output_format == "json":
        sys.stdout.write(json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n")
        return
    console = _out_console()
    if not placements and not unpriced:
        console.print(f"no placements in the state at {location}", markup=False)
    render_forecast(doc, console)
    if unpriced:
        console.print(f"{unpriced} replica(s) in the state have no recorded placement spec and are not counted",
                      markup=False)
