"""Observability of unattended runs: Prometheus metrics and structured JSON logs.

Metrics go to a Prometheus registry of their own (prometheus-client), exported as a node_exporter
textfile (``--metrics-file``), pushed to a Pushgateway (``--pushgateway``) or served over HTTP by the
scheduler (``--metrics-port``). Logs are one JSON object per line (python-json-logger) with an
``event`` field and the run's facts as fields.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway, write_to_textfile
from pythonjsonlogger.json import JsonFormatter

from placement.models import Inventory, Plan

LOGGER_NAME = "placement"


def configure_logging(fmt: str = "text", level: int = logging.INFO) -> logging.Logger:
    """The engine's logger, writing to stderr as JSON lines (``json``) or plain text (``text``)."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', not {fmt!r}")
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(
            "{asctime}{levelname}{name}{message}", style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        ))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def log_event(logger: logging.Logger, event: str, message: str, level: int = logging.INFO, *,
              exc_info: bool = False, **fields: Any) -> None:
    logger.log(level, message, exc_info=exc_info, extra={"event": event, **fields})


class RunMetrics:
    """The gauges and counters one re-optimisation process exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.plan_hourly = Gauge("placement_plan_hourly_usd", "Hourly cost of the latest plan", registry=r)
        self.current_hourly = Gauge("placement_current_hourly_usd", "Hourly cost of the running work at today's prices", registry=r)
        self.saving_found = Gauge("placement_saving_found_usd_per_hour", "Hourly saving of the moves the latest run planned", registry=r)
        self.saving_available = Gauge("placement_saving_available_usd_per_hour", "Hourly saving an unconstrained re-plan would find", registry=r)
        self.saving_applied = Gauge("placement_saving_applied_usd_per_hour", "Hourly saving of the moves the latest run applied", registry=r)
        self.saving_applied_total = Counter("placement_savings_applied_usd_per_hour", "Hourly savings applied, summed over runs", registry=r)
        self.moves_planned = Gauge("placement_moves_planned", "Moves in the latest plan", registry=r)
        self.moves_applied = Counter("placement_moves_applied", "Moves applied", registry=r)
        self.moves_held = Gauge("placement_moves_held_back", "Moves an unconstrained re-plan would make that the latest run held back", registry=r)
        self.unplaced = Gauge("placement_unplaced_workloads", "Workloads the latest plan could not place", registry=r)
        self.solve_seconds = Gauge("placement_solve_seconds", "Wall time of the latest re-optimisation", registry=r)
        self.gap = Gauge("placement_solver_gap", "Relative gap between the plan and the solver's bound", registry=r)
        self.idle_gpus = Gauge("placement_idle_owned_gpus", "Owned GPUs no planned replica uses", ["pool"], registry=r)
        self.idle_hourly = Gauge("placement_idle_owned_hourly_usd", "Internal cost of idle owned GPUs", ["pool"], registry=r)
        self.inventory_age = Gauge("placement_inventory_age_seconds", "Age of each provider's inventory", ["provider"], registry=r)
        self.stale = Gauge("placement_inventory_stale", "1 when a provider's inventory was carried over from an older snapshot", ["provider"], registry=r)
        self.runs = Counter("placement_reoptimize_runs", "Re-optimisation runs by outcome", ["outcome"], registry=r)
        self.last_run = Gauge("placement_reoptimize_last_run_timestamp_seconds", "When the latest run finished", registry=r)

    def record_plan(self, plan: Plan, inventory: Inventory, seconds: float, now: dt.datetime) -> None:
        self.plan_hourly.set(plan.totals.hourly_usd)
        self.unplaced.set(len(plan.unplaced))
        self.solve_seconds.set(seconds)
        self.gap.set(plan.solver.gap)
        summary = plan.reoptimization
        if summary is not None:
            self.current_hourly.set(summary.current_hourly_usd)
            self.saving_found.set(summary.saving_usd_per_hour)
            self.saving_available.set(summary.available_saving_usd_per_hour)
            self.moves_planned.set(summary.moves)
            self.moves_held.set(len(summary.held_back))
        for idle in plan.idle_owned:
            self.idle_gpus.labels(idle.pool).set(idle.gpus_idle)
            self.idle_hourly.labels(idle.pool).set(idle.idle_hourly_usd)
        snap = inventory.snapshot
        providers = sorted({o.provider for o in inventory.offers})
        for provider in providers:
            taken = snap.provider_taken_at.get(provider)
            when = (dt.datetime.fromisoformat(taken) if taken
                    else dt.datetime.combine(snap.taken_on, dt.time(), tzinfo=dt.UTC))
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            self.inventory_age.labels(provider).set(max(0.0, (now - when).total_seconds()))
            self.stale.labels(provider).set(1.0 if provider in snap.stale_providers else 0.0)

    def record_applied(self, moves: int, saving: float) -> None:
        self.moves_applied.inc(moves)
        self.saving_applied.set(saving)
        if saving > 0:
            self.saving_applied_total.inc(saving)

    def export(self, textfile: str | None = None, pushgateway: str | None = None, job: str = "placement-reoptimize") -> None:
        if textfile:
            write_to_textfile(textfile, self.registry)
        if pushgateway:
            push_to_gateway(pushgateway, job=job, registry=self.registry)
