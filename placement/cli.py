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

from placement.cli_policy import explain_command, policy_app, price_policies_command, relax_command
from placement.diff import EMPTY_STATE, StateView, attach_state, hint_from_state, view_from_snapshot
from placement.errors import InputError, PlacementError
from placement.idle import with_idle
from placement.models import Inventory, Plan, PolicySet, WorkloadSet
from placement.planner import PlanOptions, make_plan, plan_to_json
from placement.scenario import load_scenario

STATE_ENV = "PLACEMENT_STATE"
PROVIDERS_ENV = "PLACEMENT_PROVIDERS"

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
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=True, width=200)
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
    changes = plan.changes()
    if plan.actions:
        counts = {k: sum(1 for a in plan.actions if a.action == k) for k in ("create", "move", "delete", "keep")}
        console.print(
            f"changes: {counts['create']} to create, {counts['move']} to move, {counts['delete']} to delete, "
            f"{counts['keep']} unchanged"
        )
        for a in changes:
            sign = {"create": "+", "delete": "-", "move": "~"}[a.action]
            target = a.offer_id or a.from_offer_id
            console.print(f"  {sign} {a.action} {a.workload}[{a.replica}] {target}: {a.reason}", markup=False)
    if plan.idle_owned:
        idle_gpus = sum(i.gpus_idle for i in plan.idle_owned)
        idle_usd = sum(i.idle_hourly_usd for i in plan.idle_owned)
        console.print(f"idle owned capacity: {idle_gpus} GPU(s) costing {_money(idle_usd)}/h that buy nothing")
        for i in plan.idle_owned:
            if i.gpus_idle:
                console.print(f"  {i.pool}: {i.gpus_idle} of {i.gpus_free} free {i.gpu_model} idle "
                              f"({_money(i.idle_hourly_usd)}/h at {_money(i.gpu_hour_usd)}/GPU-h)", markup=False)
    s = plan.solver
    wall = f", {s.wall_time_s:.2f} s" if s.wall_time_s is not None else ""
    fixed = (f" (both include {_money(s.fixed_penalty)}/h of penalty no plan avoids; the gap leaves it out)"
             if s.fixed_penalty else "")
    console.print(
        f"solver {s.method}: {s.status}, objective {_money(s.objective)}/h, bound {_money(s.best_bound)}/h, "
        f"gap {s.gap:.2%}{wall}{fixed}; {s.candidates_kept}/{s.candidates_total} workload×offer pairs passed the filters"
    )
    console.print(f"plan digest {plan.digest}", markup=False)


@app.command()
@user_errors
def plan(
    scenario: Annotated[Path | None, typer.Argument(help="scenario folder (workloads.yaml, inventory.yaml, policies/)")] = None,
    workloads: Annotated[list[Path] | None, typer.Option("--workloads", "-w", help="workload file(s)")] = None,
    inventory: Annotated[str | None, typer.Option("--inventory", "-i", help="inventory file, 'default' (bundled snapshot) or 'live' (refresh from the configured providers first)")] = None,
    policies: Annotated[Path | None, typer.Option("--policies", "-p", help="policy folder or file")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the plan JSON here")] = None,
    output_format: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    time_limit: Annotated[float | None, typer.Option("--time-limit", help="solver deterministic-time limit")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="solver workers; for large inputs, worker processes solving independent parts and threads filtering blocks of workloads")] = None,
    method: Annotated[str, typer.Option("--method", help="auto (exact up to about 500 workloads, then the large-instance planner), exact or scale")] = "auto",
    record_wall_time: Annotated[bool, typer.Option("--record-wall-time", help="store the wall-clock solve time in the plan (makes plans differ run to run)")] = False,
    state: Annotated[str | None, typer.Option("--state", help=f"state store: SQLite file or SQLAlchemy URL (env {STATE_ENV})")] = None,
    detailed_exitcode: Annotated[bool, typer.Option("--detailed-exitcode", help="exit 0: no changes, 2: changes, 1: error")] = False,
    price_policies: Annotated[bool, typer.Option("--price-policies", help="also report what the plan would cost without each policy rule")] = False,
    providers_config: Annotated[Path | None, typer.Option("--providers", help="providers config, for --inventory live")] = None,
    snapshot_dir: Annotated[Path, typer.Option("--snapshot-dir", help="where --inventory live writes its snapshot")] = Path("inventory"),
) -> None:
    """Plan where every workload should run and what would change. Changes no resources."""
    if output_format not in ("table", "json"):
        raise PlacementError(f"--format must be 'table' or 'json', not {output_format!r}")
    if method not in ("auto", "exact", "scale"):
        raise PlacementError(f"--method must be 'auto', 'exact' or 'scale', not {method!r}")
    if inventory == "live":
        inventory = str(_refresh_live(providers_config, snapshot_dir))
    loaded = load_scenario(scenario, workloads, inventory, policies)
    current = read_state_view(state)
    base = make_plan(loaded, PlanOptions(max_deterministic_time=time_limit, workers=workers,
                                         record_wall_time=record_wall_time, hint=hint_from_state(current), method=method))
    result = with_idle(attach_state(base, current), loaded.inventory.inventory)
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
    if price_policies:
        from placement.relax import price_of_policies, render_prices

        prices = price_of_policies(loaded)
        if output_format == "json":
            sys.stderr.write(json.dumps([p.to_json() for p in prices], indent=2, sort_keys=True) + "\n")
        else:
            console = _out_console()
            console.print("price of each policy rule:")
            for line in render_prices(prices):
                console.print(line, markup=False)
    if detailed_exitcode and result.changes():
        raise typer.Exit(2)


def _refresh_live(providers: Path | None, out_dir: Path) -> Path:
    from placement.refresh import refresh_inventory
    from providers.registry import load_providers_config

    config = load_providers_config(_providers_path(providers))
    if not config.providers:
        raise PlacementError("--inventory live needs configured providers; see `placement providers check`")
    report = refresh_inventory(sorted(config.providers), _compute_factory(providers), out_dir)
    console = _err_console()
    for name, err in sorted({**report.stale, **report.missing}.items()):
        console.print(f"warning: {name}: refresh failed ({err})", markup=False)
    return report.path


def state_location(state: str | None) -> str:
    import os

    from placement.state import DEFAULT_STATE_PATH

    return state or os.environ.get(STATE_ENV) or DEFAULT_STATE_PATH


def _is_missing_sqlite_file(location: str) -> bool:
    return "://" not in location and not Path(location).exists()


def read_state_view(state: str | None) -> StateView:
    """The current placements, or an empty state when the default SQLite file does not exist yet."""
    location = state_location(state)
    if _is_missing_sqlite_file(location):
        return EMPTY_STATE
    from placement.state import StateStore

    with StateStore.open(location) as store:
        return view_from_snapshot(store.snapshot())


def _providers_path(providers: Path | None) -> Path | None:
    import os

    if providers is not None:
        return providers
    env = os.environ.get(PROVIDERS_ENV)
    if env:
        return Path(env)
    default = Path("providers.yaml")
    return default if default.exists() else None


def _compute_factory(providers: Path | None) -> Any:
    from providers.registry import build_compute, load_providers_config

    config = load_providers_config(_providers_path(providers))
    cache: dict[str, Any] = {}

    def factory(name: str) -> Any:
        if name not in cache:
            cache[name] = build_compute(name, config, prices=_snapshot_prices(name))
        return cache[name]

    return factory


def _snapshot_prices(provider: str) -> dict[tuple[str, str], float]:
    """On-demand list prices of the bundled snapshot, the adapters' fallback when a price API is out of reach."""
    from placement.inputs import load_inventory

    inv = load_inventory("default").inventory
    return {(o.region, o.instance_type): o.hourly_usd for o in inv.offers
            if o.provider == provider and o.capacity_type == "on-demand"}


def _owner() -> str:
    from placement.state import default_owner

    return default_owner()


@app.command()
@user_errors
def apply(
    plan_file: Annotated[Path, typer.Argument(help="a plan saved by `placement plan --out`")],
    state: Annotated[str | None, typer.Option("--state", help=f"state store (env {STATE_ENV})")] = None,
    providers: Annotated[Path | None, typer.Option("--providers", help=f"providers config (env {PROVIDERS_ENV}; default ./providers.yaml)")] = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="do not ask for confirmation")] = False,
    parallelism: Annotated[int, typer.Option("--parallelism", min=1, max=64, help="actions run at once")] = 4,
    lock_timeout: Annotated[float, typer.Option("--lock-timeout", min=0, help="seconds to wait for the state lock")] = 0.0,
    no_failover: Annotated[bool, typer.Option("--no-failover", help="stop on capacity or quota errors instead of re-planning")] = False,
) -> None:
    """Execute a saved plan, and nothing else."""
    from placement.apply import ApplyOptions, prepare_apply, run_prepared
    from placement.state import StateStore

    console = _out_console()

    def confirm(plan: Plan) -> bool:
        changes = plan.changes()
        console.print(f"{len(changes)} change(s) will be made:")
        for a in changes:
            console.print(f"  {a.action} {a.workload}[{a.replica}] {a.offer_id or a.from_offer_id}", markup=False)
        if not sys.stdin.isatty():
            raise PlacementError("confirmation needed but there is no terminal; pass --auto-approve")
        return typer.confirm("Apply these changes?", default=False)

    factory = _compute_factory(providers)
    options = ApplyOptions(owner=_owner(), auto_approve=auto_approve, parallelism=parallelism,
                           lock_timeout_s=lock_timeout, failover=not no_failover, confirm=confirm)
    prepared = prepare_apply(plan_file, factory, options)  # every check that needs no state, first
    with StateStore.open(state_location(state)) as store:
        report = run_prepared(prepared, store, options)
    if report.cancelled:
        console.print("apply cancelled; nothing changed")
        raise typer.Exit(1)
    if not report.done and not report.failed:
        console.print(f"no changes: every action of plan {report.plan_digest[:19]} is already done")
        return
    console.print(f"apply: {len(report.done)} action(s) done, {len(report.skipped)} already done, "
                  f"{len(report.failed)} failed")
    for line in report.failovers:
        console.print(f"  failover: {line}", markup=False)
    for line in report.failed:
        console.print(f"  [red]failed[/]: {line}")
    if report.failed:
        raise typer.Exit(1)


@app.command()
@user_errors
def status(
    state: Annotated[str | None, typer.Option("--state", help=f"state store (env {STATE_ENV})")] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="compare with what the providers report (drift)")] = False,
    providers: Annotated[Path | None, typer.Option("--providers", help="providers config")] = None,
) -> None:
    """What runs where, from the state store."""
    console = _out_console()
    location = state_location(state)
    if _is_missing_sqlite_file(location):
        console.print(f"no state at {location}: nothing has been applied yet")
        if refresh:
            _print_owned_capacity(console, _compute_factory(providers), _configured(providers))
        return
    from placement.state import StateStore

    with StateStore.open(location) as store:
        snap = store.snapshot()
        lock = store.current_lock()
    table = Table(title=f"State serial {snap.serial} (lineage {snap.lineage})", title_justify="left")
    for col in ("workload", "replica", "provider", "region", "offer", "resources", "$/h", "since"):
        table.add_column(col)
    total = 0.0
    for rec in snap.placements:
        cost = rec.placement().total_hourly_usd
        total += cost
        table.add_row(rec.workload, str(rec.replica), rec.provider, rec.zone or rec.region, rec.offer_id,
                      rec.resource_id or "", _money(cost), rec.created_at or "")
    console.print(table)
    console.print(f"{len(snap.placements)} replica(s), {_money(total)}/h")
    if lock is not None:
        console.print(f"lock: {lock.describe()}", markup=False)
    if refresh:
        factory = _compute_factory(providers)
        known = {(r.provider, r.idempotency_key): r for r in snap.placements}
        seen: set[tuple[str, str]] = set()
        drift = 0
        for provider in sorted({r.provider for r in snap.placements} | set(_configured(providers))):
            for res in factory(provider).list_managed():
                seen.add((provider, res.key))
                if (provider, res.key) not in known:
                    drift += 1
                    console.print(f"  drift: {provider} resources {','.join(res.resource_ids)} carry the engine's tags "
                                  f"({res.workload}[{res.replica}]) but the state does not know them", markup=False)
        for (provider, key), rec in sorted(known.items()):
            if (provider, key) not in seen:
                drift += 1
                console.print(f"  drift: {rec.workload}[{rec.replica}] on {provider} ({rec.resource_id}) is gone",
                              markup=False)
        console.print("no drift" if not drift else f"{drift} drift finding(s)")
        _print_owned_capacity(console, factory, _configured(providers))
        if drift:
            raise typer.Exit(2)
    else:
        console.print("idle owned capacity: run `placement status --refresh` to read it from the clusters")


def _print_owned_capacity(console: Console, factory: Any, names: list[str]) -> None:
    """Owned GPUs per pool from every adapter that reports them (Kubernetes, Slurm): free ones are idle."""
    rows: list[tuple[str, Any]] = []
    for name in names:
        compute = factory(name)
        owned = getattr(compute, "owned_capacity", None)
        if callable(owned):
            rows.extend((name, c) for c in owned())
    if not rows:
        return
    table = Table(title="Owned GPU capacity", title_justify="left")
    for col in ("provider", "pool", "GPU", "GPUs", "in use", "idle", "$/GPU-h", "idle $/h"):
        table.add_column(col)
    idle_usd = owned_usd = 0.0
    idle_gpus = 0
    for name, c in rows:
        price = c.gpu_hour_usd
        table.add_row(name, c.pool_id, c.gpu_model, str(c.gpus_total), str(c.gpus_total - c.gpus_free),
                      str(c.gpus_free), "—" if price is None else _money(price),
                      "—" if price is None else _money(price * c.gpus_free))
        idle_gpus += c.gpus_free
        if price is not None:
            idle_usd += price * c.gpus_free
            owned_usd += price * c.gpus_total
    console.print(table)
    share = f" ({idle_usd / owned_usd:.0%} of what the owned GPUs cost)" if owned_usd else ""
    console.print(f"idle owned capacity: {idle_gpus} GPU(s), {_money(idle_usd)}/h that buys nothing{share}")


def _configured(providers: Path | None) -> list[str]:
    from providers.registry import load_providers_config

    return sorted(load_providers_config(_providers_path(providers)).providers)


@app.command()
@user_errors
def destroy(
    state: Annotated[str | None, typer.Option("--state", help=f"state store (env {STATE_ENV})")] = None,
    providers: Annotated[Path | None, typer.Option("--providers", help="providers config")] = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="do not ask for confirmation")] = False,
    lock_timeout: Annotated[float, typer.Option("--lock-timeout", min=0)] = 0.0,
) -> None:
    """Delete everything the engine manages according to the state."""
    from placement.apply import destroy_all
    from placement.state import StateStore

    console = _out_console()
    location = state_location(state)
    if _is_missing_sqlite_file(location):
        console.print("nothing to destroy: no state yet")
        return
    factory = _compute_factory(providers)
    with StateStore.open(location) as store:
        records = store.placements()
        if not records:
            console.print("nothing to destroy")
            return
        if not auto_approve:
            console.print(f"{len(records)} replica(s) will be deleted.")
            if not sys.stdin.isatty() or not typer.confirm("Destroy them?", default=False):
                console.print("destroy cancelled; nothing changed")
                raise typer.Exit(1)
        failed = destroy_all(store, factory, _owner(), lock_timeout)
    for line in failed:
        console.print(f"  [red]failed[/]: {line}")
    if failed:
        raise typer.Exit(1)
    console.print(f"destroyed {len(records)} replica(s)")


@app.command("force-unlock")
@user_errors
def force_unlock(
    lock_id: Annotated[str, typer.Argument(help="the lock id named by the error message")],
    state: Annotated[str | None, typer.Option("--state", help=f"state store (env {STATE_ENV})")] = None,
) -> None:
    """Break a lock left by a process that died."""
    from placement.state import StateStore

    with StateStore.open(state_location(state)) as store:
        info = store.force_unlock(lock_id)
        store.audit(_owner(), "force-unlock", None, "succeeded", {"lock_id": lock_id, "holder": info.owner})
    _out_console().print(f"lock {lock_id} ({info.owner}, {info.operation}) removed", markup=False)


providers_app = typer.Typer(help="Provider accounts: what is configured and usable.", no_args_is_help=True)
inventory_app = typer.Typer(help="Inventory snapshots from the configured providers.", no_args_is_help=True)
app.add_typer(providers_app, name="providers")
app.add_typer(inventory_app, name="inventory")
app.add_typer(policy_app, name="policy")
app.command("explain")(explain_command)
app.command("relax")(relax_command)
app.command("price-policies")(price_policies_command)


def _yes(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


@providers_app.command("check")
@user_errors
def providers_check(
    providers: Annotated[Path | None, typer.Option("--providers", help=f"providers config (env {PROVIDERS_ENV})")] = None,
    policies: Annotated[Path | None, typer.Option("--policies", "-p", help="policy folder: are they allowed?")] = None,
    no_probe: Annotated[bool, typer.Option("--no-probe", help="do not call the providers' APIs")] = False,
) -> None:
    """Which providers are configured, reachable and allowed, and what the others need."""
    from placement.inputs import load_policies
    from providers.check import check_providers
    from providers.registry import load_providers_config

    config = load_providers_config(_providers_path(providers))
    pol = load_policies(policies).policies if policies is not None else None
    rows = check_providers(config, pol, probe=not no_probe)
    table = Table(title="Providers", title_justify="left")
    for col in ("provider", "type", "configured", "credentials", "reachable", "allowed", "detail"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.name, r.type, _yes(r.configured), _yes(r.credentials), _yes(r.reachable), _yes(r.allowed),
                      r.detail)
    console = _out_console()
    console.print(table)
    usable = [r.name for r in rows if r.configured and r.credentials and r.reachable is not False and r.allowed]
    console.print(f"usable: {', '.join(usable) if usable else 'none'}")


@inventory_app.command("refresh")
@user_errors
def inventory_refresh(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="where snapshots are written")] = Path("inventory"),
    providers: Annotated[Path | None, typer.Option("--providers", help=f"providers config (env {PROVIDERS_ENV})")] = None,
    only: Annotated[list[str] | None, typer.Option("--provider", help="refresh only these providers")] = None,
) -> None:
    """Write a dated inventory snapshot from the configured providers."""
    from placement.refresh import refresh_inventory
    from providers.registry import load_providers_config

    config = load_providers_config(_providers_path(providers))
    names = sorted(only or config.providers)
    unknown = sorted(set(names) - set(config.providers))
    if unknown or not names:
        raise PlacementError(f"not configured: {', '.join(unknown) or 'no providers'}; see `placement providers check`")
    report = refresh_inventory(names, _compute_factory(providers), out_dir)
    console = _out_console()
    for name, n in sorted(report.fresh.items()):
        console.print(f"  {name}: {n} offers", markup=False)
    for name, err in sorted(report.stale.items()):
        console.print(f"  [yellow]{name}: refresh failed ({err}); its last good offers are used, marked stale[/]")
    for name, err in sorted(report.missing.items()):
        console.print(f"  [red]{name}: refresh failed ({err}) and there is no earlier snapshot[/]")
    console.print(f"wrote {report.path} ({report.offers} offers) and {out_dir / 'latest.yaml'}", markup=False)
    if report.missing:
        raise typer.Exit(1)


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


from placement.cli_whatif import cost_command, report_command, whatif_command  # noqa: E402

app.command("whatif")(user_errors(whatif_command))
app.command("report")(user_errors(report_command))
app.command("cost")(user_errors(cost_command))

from placement.cli_reoptimize import reoptimize_command, schedule_command  # noqa: E402

app.command("reoptimize")(user_errors(reoptimize_command))
app.command("schedule")(user_errors(schedule_command))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
