"""Commands `reoptimize` and `schedule`: re-plan running work and move it only when it pays.

One run: take the ``reoptimize`` lock in the state store (another run holding it: log and exit 0),
refresh the inventory when asked (a failing provider keeps its last good offers, marked stale, and
no work moves to or from it), re-plan against the state (placement.reoptimize), write the plan, and
with ``--apply`` apply it when the reoptimization.auto_apply policy allows; otherwise the plan stays
written for review. A partly failed apply is journalled; the next run re-plans from the state and
retries what is still missing. ``schedule`` runs the same in a loop on a cron expression.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from placement.errors import PlacementError
from placement.models import Plan
from placement.observe import RunMetrics, configure_logging, log_event

REOPTIMIZE_LOCK = "reoptimize"


@dataclass(frozen=True)
class RunSettings:
    scenario: Path | None
    workloads: list[Path] | None
    inventory: str | None
    policies: Path | None
    state: str | None
    providers: Path | None
    snapshot_dir: Path
    out: Path | None
    out_dir: Path
    apply: bool
    time_limit: float | None
    workers: int | None
    lock_ttl: float
    now: dt.datetime | None
    metrics_file: str | None
    pushgateway: str | None
    parallelism: int = 4


def run_once(settings: RunSettings, logger: logging.Logger, metrics: RunMetrics) -> str:
    """One re-optimisation run. Returns its outcome: planned, applied, review, no-change, locked, failed."""
    from placement.apply import ApplyOptions, prepare_apply, run_prepared
    from placement.cli import _compute_factory, _owner, _refresh_live, state_location
    from placement.diff import view_from_snapshot
    from placement.planner import plan_to_json
    from placement.reoptimize import ReoptimizeOptions, auto_apply_refusals, reoptimize
    from placement.scenario import load_scenario
    from placement.state import LockHeldError, StateStore

    started = time.perf_counter()
    owner = _owner()
    location = state_location(settings.state)
    with StateStore.open(location) as store:
        try:
            lock = store.acquire_lock(owner, "reoptimize", 0.0, ttl_s=settings.lock_ttl, name=REOPTIMIZE_LOCK)
        except LockHeldError as exc:
            log_event(logger, "lock_held", f"another run holds the reoptimize lock ({exc.holder.describe()}); "
                      "nothing to do", holder=exc.holder.owner, lock_id=exc.holder.lock_id)
            metrics.runs.labels("locked").inc()
            metrics.export(settings.metrics_file, settings.pushgateway)
            return "locked"
        try:
            now = settings.now or dt.datetime.now(dt.UTC)
            inventory = settings.inventory
            if inventory == "live":
                inventory = str(_refresh_live(settings.providers, settings.snapshot_dir))
            loaded = load_scenario(settings.scenario, settings.workloads, inventory, settings.policies)
            inv = loaded.inventory.inventory
            if inv.snapshot.stale_providers:
                log_event(logger, "stale_inventory", "stale inventory, no work moves to or from: "
                          + ", ".join(inv.snapshot.stale_providers), logging.WARNING,
                          providers=list(inv.snapshot.stale_providers))
            view = view_from_snapshot(store.snapshot())
            plan = reoptimize(loaded, view, ReoptimizeOptions(
                now=now, max_deterministic_time=settings.time_limit, workers=settings.workers))
            path = settings.out or settings.out_dir / f"reoptimize-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(plan_to_json(plan), encoding="utf-8")
            except OSError as exc:
                raise PlacementError(f"cannot write plan to {path}: {exc}") from None
            seconds = time.perf_counter() - started
            metrics.record_plan(plan, inv, seconds, now)
            _log_plan(logger, plan, path, seconds)
            outcome = "planned"
            if not plan.changes():
                outcome = "no-change"
            elif settings.apply:
                refusals = auto_apply_refusals(plan, loaded)
                if refusals:
                    outcome = "review"
                    log_event(logger, "review", f"plan written to {path} for review; not applied: "
                              + "; ".join(refusals), plan=str(path), refusals=refusals)
                else:
                    options = ApplyOptions(owner=owner, auto_approve=True, lock_timeout_s=0.0,
                                           parallelism=settings.parallelism)
                    prepared = prepare_apply(path, _compute_factory(settings.providers), options)
                    try:
                        report = run_prepared(prepared, store, options)
                    except LockHeldError as exc:
                        log_event(logger, "state_locked", f"the state is locked ({exc.holder.describe()}); "
                                  "the plan was not applied and the next run will re-plan", logging.WARNING)
                        metrics.runs.labels("state-locked").inc()
                        return "state-locked"
                    moves_done = sum(1 for a in report.done if a.startswith("move:"))
                    applied_saving = _applied_saving(plan, set(report.done))
                    metrics.record_applied(moves_done, applied_saving)
                    outcome = "applied" if report.ok else "failed"
                    log_event(logger, "applied", f"applied {len(report.done)} action(s), {len(report.failed)} failed; "
                              f"saving ${applied_saving:,.2f}/h", logging.INFO if report.ok else logging.ERROR,
                              done=report.done, failed=report.failed, failovers=report.failovers,
                              saving_usd_per_hour=applied_saving)
            metrics.runs.labels(outcome).inc()
            return outcome
        finally:
            metrics.last_run.set(time.time())
            try:
                store.release_lock(lock.lock_id, name=REOPTIMIZE_LOCK)
            except PlacementError as exc:
                log_event(logger, "lock_lost", str(exc), logging.ERROR)
            metrics.export(settings.metrics_file, settings.pushgateway)


def _applied_saving(plan: Plan, done: set[str]) -> float:
    return round(-sum(a.hourly_usd_delta for a in plan.actions if a.action == "move" and a.id in done), 4)


def _log_plan(logger: logging.Logger, plan: Plan, path: Path, seconds: float) -> None:
    s = plan.reoptimization
    assert s is not None
    log_event(
        logger, "planned",
        f"{s.moves} move(s) save ${s.saving_usd_per_hour:,.2f}/h of ${s.available_saving_usd_per_hour:,.2f}/h "
        f"available (now ${s.current_hourly_usd:,.2f}/h); {len(s.held_back)} held back; plan {path}",
        plan=str(path), digest=plan.digest, moves=s.moves, moves_allowed=s.moves_allowed,
        saving_usd_per_hour=s.saving_usd_per_hour, available_saving_usd_per_hour=s.available_saving_usd_per_hour,
        current_hourly_usd=s.current_hourly_usd, migration_usd=s.migration_usd, held_back=s.held_back,
        budgets=list(s.budgets), stale_providers=list(s.stale_providers), unplaced=len(plan.unplaced),
        gap=plan.solver.gap, seconds=round(seconds, 3),
    )
    for a in plan.actions:
        if a.action == "move":
            log_event(logger, "move", f"move {a.workload}[{a.replica}] {a.from_offer_id} -> {a.offer_id}: {a.reason}",
                      workload=a.workload, replica=a.replica, source=a.from_offer_id, target=a.offer_id,
                      hourly_usd_delta=a.hourly_usd_delta, migration_usd=a.migration_usd, payback_hours=a.payback_hours)


def render_reoptimization(plan: Plan) -> list[str]:
    s = plan.reoptimization
    if s is None:
        return []
    lines = [
        f"running now: ${s.current_hourly_usd:,.2f}/h for {s.running_workloads} workload(s); after this plan "
        f"${s.planned_hourly_usd:,.2f}/h; an unconstrained re-plan: ${s.unconstrained_hourly_usd:,.2f}/h",
        f"{s.moves} move(s) save ${s.saving_usd_per_hour:,.2f}/h of ${s.available_saving_usd_per_hour:,.2f}/h "
        f"available, for ${s.migration_usd:,.2f} of one-off moving cost",
    ]
    lines += [f"budget: {b}" for b in s.budgets]
    if s.forced_moves:
        lines.append(f"forced moves (their current place is no longer admitted; outside the budgets): "
                     f"{', '.join(s.forced_moves)}")
    if s.stale_providers:
        lines.append(f"stale inventory (no moves to or from): {', '.join(s.stale_providers)}")
    for name, why in sorted(s.held_back.items()):
        lines.append(f"held back: {name}: {why}")
    return lines


_Scenario = Annotated[Path | None, typer.Argument(help="scenario folder (workloads.yaml, inventory.yaml, policies/)")]
_Workloads = Annotated[list[Path] | None, typer.Option("--workloads", "-w", help="workload file(s)")]
_Inventory = Annotated[str | None, typer.Option("--inventory", "-i", help="inventory file, 'default' or 'live' (refresh first)")]
_Policies = Annotated[Path | None, typer.Option("--policies", "-p", help="policy folder or file")]
_State = Annotated[str | None, typer.Option("--state", help="state store: SQLite file or SQLAlchemy URL (env PLACEMENT_STATE)")]
_Providers = Annotated[Path | None, typer.Option("--providers", help="providers config")]
_SnapshotDir = Annotated[Path, typer.Option("--snapshot-dir", help="where --inventory live writes snapshots")]
_OutDir = Annotated[Path, typer.Option("--out-dir", help="where plans are written (one file per run)")]
_Apply = Annotated[bool, typer.Option("--apply", help="apply when the reoptimization.auto_apply policy allows")]
_TimeLimit = Annotated[float | None, typer.Option("--time-limit", help="solver deterministic-time limit")]
_Workers = Annotated[int | None, typer.Option("--workers", help="solver workers")]
_LogFormat = Annotated[str, typer.Option("--log-format", help="text or json (one JSON object per line on stderr)")]
_MetricsFile = Annotated[str | None, typer.Option("--metrics-file", help="write Prometheus metrics here (textfile collector)")]
_Pushgateway = Annotated[str | None, typer.Option("--pushgateway", help="push metrics to this Prometheus Pushgateway")]
_Parallelism = Annotated[int, typer.Option("--parallelism", min=1, max=64, help="actions applied at once")]
_LockTtl = Annotated[float, typer.Option("--lock-ttl", min=1, help="seconds after which a crashed run's lock expires")]


def _parse_now(now: str | None) -> dt.datetime | None:
    if now is None:
        return None
    try:
        value = dt.datetime.fromisoformat(now)
    except ValueError:
        raise PlacementError(f"--now must be an ISO 8601 time such as 2026-11-23T22:30:00Z, not {now!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def reoptimize_command(
    scenario: _Scenario = None,
    workloads: _Workloads = None,
    inventory: _Inventory = None,
    policies: _Policies = None,
    state: _State = None,
    providers: _Providers = None,
    snapshot_dir: _SnapshotDir = Path("inventory"),
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the plan here")] = None,
    out_dir: _OutDir = Path("plans"),
    apply: _Apply = False,
    output_format: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    time_limit: _TimeLimit = None,
    workers: _Workers = None,
    now: Annotated[str | None, typer.Option("--now", help="evaluate disruption windows at this time (ISO 8601)")] = None,
    log_format: _LogFormat = "text",
    metrics_file: _MetricsFile = None,
    pushgateway: _Pushgateway = None,
    lock_ttl: _LockTtl = 3600.0,
    parallelism: _Parallelism = 4,
) -> None:
    """Re-plan running work; move it only where the saving pays for the move, within the budgets."""
    from placement.cli import _out_console, render_plan
    from placement.planner import read_plan

    if output_format not in ("table", "json"):
        raise PlacementError(f"--format must be 'table' or 'json', not {output_format!r}")
    logger = _logger(log_format)
    when = _parse_now(now) or dt.datetime.now(dt.UTC)
    path = out or out_dir / f"reoptimize-{when.strftime('%Y%m%dT%H%M%SZ')}.json"
    settings = RunSettings(scenario, workloads, inventory, policies, state, providers, snapshot_dir, path, out_dir,
                           apply, time_limit, workers, lock_ttl, when, metrics_file, pushgateway, parallelism)
    outcome = run_once(settings, logger, RunMetrics())
    if outcome in ("locked", "state-locked"):
        return
    plan = read_plan(path)
    if output_format == "json":
        sys.stdout.write(path.read_text(encoding="utf-8"))
    else:
        console = _out_console()
        render_plan(plan, console)
        for line in render_reoptimization(plan):
            console.print(line, markup=False)
        console.print(f"plan written to {path} ({outcome})", markup=False)
    if outcome == "failed":
        raise typer.Exit(1)


def _logger(log_format: str) -> logging.Logger:
    if log_format not in ("text", "json"):
        raise PlacementError(f"--log-format must be 'text' or 'json', not {log_format!r}")
    return configure_logging(log_format)


def schedule_command(
    cron: Annotated[str, typer.Option("--cron", help="when to run, 5-field cron, e.g. '*/15 * * * *'")],
    scenario: _Scenario = None,
    workloads: _Workloads = None,
    inventory: _Inventory = None,
    policies: _Policies = None,
    state: _State = None,
    providers: _Providers = None,
    snapshot_dir: _SnapshotDir = Path("inventory"),
    out_dir: _OutDir = Path("plans"),
    apply: _Apply = False,
    time_limit: _TimeLimit = None,
    workers: _Workers = None,
    timezone: Annotated[str, typer.Option("--timezone", help="time zone of the cron expression")] = "UTC",
    log_format: _LogFormat = "json",
    metrics_file: _MetricsFile = None,
    pushgateway: _Pushgateway = None,
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="serve Prometheus metrics on this port")] = None,
    max_runs: Annotated[int | None, typer.Option("--max-runs", min=1, help="stop after this many runs")] = None,
    lock_ttl: _LockTtl = 3600.0,
    parallelism: _Parallelism = 4,
) -> None:
    """Run `reoptimize` on a cron schedule until stopped. Safe to run on several hosts at once."""
    from placement.cron import check_cron, next_fire

    try:
        check_cron(cron, timezone)
    except ValueError as exc:
        raise PlacementError(f"--cron: {exc}") from None
    logger = _logger(log_format)
    metrics = RunMetrics()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, registry=metrics.registry)
    runs = 0
    log_event(logger, "schedule_started", f"re-optimising on '{cron}' ({timezone})", cron=cron, timezone=timezone)
    while max_runs is None or runs < max_runs:
        fire = next_fire(cron, dt.datetime.now(dt.UTC), timezone)
        while (wait := (fire - dt.datetime.now(dt.UTC)).total_seconds()) > 0:
            time.sleep(min(wait, 30.0))
        settings = RunSettings(scenario, workloads, inventory, policies, state, providers, snapshot_dir, None,
                               out_dir, apply, time_limit, workers, lock_ttl, fire, metrics_file, pushgateway,
                               parallelism)
        try:
            outcome = run_once(settings, logger, metrics)
        except Exception as exc:  # one failed run (bad input, provider down, a bug) must not end the schedule
            outcome = "failed"
            metrics.runs.labels("failed").inc()
            log_event(logger, "run_failed", str(exc), logging.ERROR, exc_info=not isinstance(exc, PlacementError))
        runs += 1
        log_event(logger, "run_finished", f"run {runs}: {outcome}; next at {next_fire(cron, fire, timezone).isoformat()}",
                  outcome=outcome, run=runs)
