"""Benchmark harness for the planner at scale: one command, fresh subprocess per run, RESULTS.md out.

    .venv/bin/python bench/run.py [--sizes small,medium,...] [--variants loose,...] [--quick]

Each measured run is a subprocess of this file (``--worker KIND``) so that peak RSS
(``resource.getrusage``) belongs to that run alone, a run that overshoots its budget can be killed,
and the HiGHS baselines (highspy, 2 threads) never share a process with the engine. Raw results go to
``bench/out/`` (git-ignored); ``bench/RESULTS.md`` is rebuilt from them. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import contextlib  # noqa: E402

import numpy as np  # noqa: E402

from bench import baselines as B  # noqa: E402
from bench import instances as I  # noqa: E402

OUT = ROOT / "bench" / "out"
RESULTS = ROOT / "bench" / "RESULTS.md"
PY = sys.executable

# Guards: above these the engine (or the harness' candidate prep, which uses the engine's filter) is
# skipped with a stated reason instead of exhausting the machine. Calibrated on this 2-core, 24 GiB box.
MAX_CANDIDATES_PREP = 6_000_000  # Candidate objects ~0.55 KB each in the engine's filter
MAX_VARS_ENGINE = 2_500_000  # CP-SAT model + Candidate lists; see RESULTS.md "Engine phases"
MEM_LIMIT_GIB = 20.0


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class ChildrenPeak:
    """The largest peak RSS (``VmHWM``) among this process's child processes (the engine's worker
    processes), polled from /proc by a thread. (``getrusage(RUSAGE_CHILDREN)`` cannot tell it: a
    child started by fork and exec keeps its parent's peak as its own.) A peak reached in the last
    poll interval of a child's life is missed."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.every_s = every_s
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _poll(self) -> None:
        me = str(os.getpid())
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
            except OSError:
                continue
            if fields.get("PPid", "").strip() == me and "VmHWM" in fields:
                self.peak_kib = max(self.peak_kib, int(fields["VmHWM"].split()[0]))

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._poll()

    def __enter__(self) -> ChildrenPeak:
        if os.path.isdir("/proc"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def mib(self) -> float:
        return self.peak_kib / 1024.0


# ==================================================================================================
# Workers (run in their own process)
# ==================================================================================================


def _instance_and_scenario(name: str) -> tuple[I.Instance, Any]:
    inst = I.build(name)
    return inst, I.scenario_of(inst)


def worker_prep(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Build the instance, run the engine's candidate filter (timed), save the compact problem."""
    import random

    from placement.candidates import candidates_for, region_egress_table

    t0 = time.perf_counter()
    inst, scen = _instance_and_scenario(name)
    build_s = time.perf_counter() - t0
    rss_instance = maxrss_mib()
    inv, pol = scen.inventory.inventory, scen.policies.policies
    workloads = scen.workloads.workloads
    egress = region_egress_table(inv)
    # Probe: a seeded sample of workloads, to refuse runs that would blow the budget or memory.
    sample_n = min(len(workloads), max(200, len(workloads) // 100))
    sample = random.Random(7).sample(list(workloads), sample_n)
    t1 = time.perf_counter()
    kept = sum(len(candidates_for(w, inv, pol, egress).candidates) for w in sample)
    probe_s = time.perf_counter() - t1
    scale = len(workloads) / sample_n
    est = {"est_filter_s": probe_s * scale, "est_candidates": int(kept * scale)}
    base = {"instance": name, "stats": inst.stats(), "notes": inst.notes, "description": inst.description,
            "build_s": build_s, "rss_instance_mib": rss_instance, "classes": I.class_counts(inst), **est}
    if est["est_candidates"] > MAX_CANDIDATES_PREP or est["est_filter_s"] > opts["budget"] * 0.8:
        return {**base, "status": "skipped",
                "reason": (f"engine filter estimated at {est['est_filter_s']:.0f} s and {est['est_candidates']:,} "
                           f"candidates from a {sample_n}-workload sample (limits: {opts['budget'] * 0.8:.0f} s, "
                           f"{MAX_CANDIDATES_PREP:,} candidates ~ {MAX_CANDIDATES_PREP * 0.55 / 1e6:.1f} GB of "
                           "Candidate objects)")}
    t2 = time.perf_counter()
    problems = [candidates_for(w, inv, pol, egress) for w in workloads]
    filter_s = time.perf_counter() - t2
    rss_filter = maxrss_mib()
    t3 = time.perf_counter()
    prob = B.compact_problem(problems, inv, pol)
    compact_s = time.perf_counter() - t3
    path = OUT / "cache" / f"{name}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    B.save_problem(prob, path)
    return {**base, "status": "ok", "filter_s": filter_s, "filter_us_per_pair": filter_s / max(1, inst.pairs) * 1e6,
            "compact_s": compact_s, "rss_after_filter_mib": rss_filter, "problem": B.problem_summary(prob),
            "constant_penalty": B.constant_penalty(prob)}


def _load(name: str) -> B.Problem:
    return B.load_problem(OUT / "cache" / f"{name}.npz")


def _finish(prob: B.Problem, x: np.ndarray, name: str, method: str, run: int, rec: dict[str, Any]) -> dict[str, Any]:
    rec["rss_peak_mib"] = maxrss_mib()
    rec.update(B.evaluate(prob, x))
    path = OUT / "assign" / f"{name}__{method}__{run}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(x, np.int32))
    return rec


def worker_greedy(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    prob = _load(name)
    rss0 = maxrss_mib()
    fn = B.greedy_naive if opts["method"] == "greedy-naive" else B.greedy_capacity
    t0 = time.perf_counter()
    x = fn(prob)
    t = time.perf_counter() - t0
    rec = {"status": "FEASIBLE", "time_s": t, "first_feasible_s": t, "trajectory": [], "rss_loaded_mib": rss0}
    return _finish(prob, x, name, opts["method"], opts["run"], rec)


def worker_lp(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    prob = _load(name)
    rss0 = maxrss_mib()
    t0 = time.perf_counter()
    try:
        r = B.run_highs(prob, relax=True, time_limit=opts["budget"])
        solver = "HiGHS " + _version("highspy")
    except ImportError:
        r = B.run_glop(prob)
        solver = "GLOP (ortools)"
    t = time.perf_counter() - t0
    np.save(OUT / "cache" / f"{name}.xlp.npy", r["x_lp"])
    return {"status": r["status"], "solver": solver, "time_s": t, "build_s": r["build_s"], "solve_s": r["solve_s"],
            "rows": r["rows"], "cols": r["cols"], "lp_objective": r["lp_objective"],
            "lp_objective_adj": r["lp_objective"] - B.constant_penalty(prob), "rss_loaded_mib": rss0,
            "rss_peak_mib": maxrss_mib()}


def worker_lp_round(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    prob = _load(name)
    lp_time = opts.get("lp_time_s", 0.0)
    rss0 = maxrss_mib()
    x_lp = np.load(OUT / "cache" / f"{name}.xlp.npy")
    t0 = time.perf_counter()
    x = B.lp_round_repair(prob, x_lp)
    t = time.perf_counter() - t0
    rec = {"status": "FEASIBLE", "time_s": lp_time + t, "round_repair_s": t, "first_feasible_s": lp_time + t,
           "trajectory": [], "rss_loaded_mib": rss0, "note": f"LP solve {lp_time:.2f} s (from the lp run) + rounding/repair"}
    return _finish(prob, x, name, "lp-round", opts["run"], rec)


def worker_highs_mip(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    prob = _load(name)
    rss0 = maxrss_mib()
    t0 = time.perf_counter()
    r = B.run_highs(prob, relax=False, time_limit=opts["limit"])
    t = time.perf_counter() - t0
    rec = {"status": r["status"], "time_s": t, "build_s": r["build_s"], "solve_s": r["solve_s"], "rows": r["rows"],
           "cols": r["cols"], "trajectory": r["trajectory"], "rss_loaded_mib": rss0, "limit_s": opts["limit"],
           "first_feasible_s": r["trajectory"][0][0] if r["trajectory"] else None,
           "mip_dual_bound": r.get("mip_dual_bound"), "solver": "HiGHS " + _version("highspy")}
    if "x" not in r:
        rec["rss_peak_mib"] = maxrss_mib()
        rec["status"] = f"no solution ({r['status']})"
        return rec
    return _finish(prob, r["x"], name, opts["method"], opts["run"], rec)


def worker_engine_scale(name: str, opts: dict[str, Any], scen: Any, rss0: float) -> dict[str, Any]:
    """make_plan when it takes the large-instance path (placement.scale), instrumented the same way:
    module functions wrapped in this process, the planner's own trajectory recorded."""
    import placement.scale as scale
    from placement.planner import PlanOptions, make_plan
    from placement.verify import verify_plan

    rec: dict[str, Any] = {"runs": [], "trajectory": [], "rss_instance_mib": rss0, "path": "scale"}
    marks: dict[str, float] = {}
    partial = Path(opts["partial"]) if opts.get("partial") else None
    traj: list[tuple[float, float, float]] = []

    def progress(phase: str) -> None:
        if partial is not None:
            rec["phase"] = phase
            rec["rss_now_peak_mib"] = maxrss_mib()
            rec["trajectory"] = [(round(marks.get("solve_start", 0.0) - marks.get("filtered", 0.0) + t, 4), o)
                                 for t, o, _b in traj]
            partial.write_text(json.dumps(rec, default=_json_default))

    orig_filter, orig_model, orig_solve, orig_plan = (scale.candidate_arrays, scale.filtered_model,
                                                      scale.solve_model, scale.plan_large)
    orig_build, orig_prune = scale.build_model, scale.prune
    orig_aggregate = scale.aggregate_offers
    rec["filter_s"] = 0.0
    rec["aggregate_s"] = 0.0

    def aggregate_offers(*a: Any, **k: Any) -> Any:  # merging nodes alike, before the filter: counted as filter
        t = time.perf_counter()
        out = orig_aggregate(*a, **k)
        rec["aggregate_s"] += time.perf_counter() - t
        rec["filter_s"] += time.perf_counter() - t
        return out

    # Per block of workloads: the filter, then the model and its pruning (in threads, several blocks at once).
    stage_s = {"filter": 0.0, "block": 0.0}
    lock = threading.Lock()

    def timed(fn: Any, key: str) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            out = fn(*a, **k)
            with lock:
                stage_s[key] += time.perf_counter() - t
            return out
        return call

    candidate_arrays = timed(orig_filter, "filter")
    build_model, prune = timed(orig_build, "block"), timed(orig_prune, "block")

    def filtered_model(*a: Any, **k: Any) -> Any:
        # Filter, model and pruning go block by block: the filter's share of the time counts as the
        # filter, the rest as model building, and the harness clock starts where the filter would end.
        # With several threads, the filter's share is its part of the three steps' summed time, times
        # the wall time they took together (their summed time exceeds the wall time).
        t = time.perf_counter()
        out = orig_model(*a, **k)
        end = time.perf_counter()
        summed = stage_s["filter"] + stage_s["block"]
        filter_s = stage_s["filter"] if summed <= end - t else stage_s["filter"] * (end - t) / summed
        rec["filter_threads_s"] = stage_s["filter"]
        rec["filter_s"] += filter_s
        marks["filtered"] = t + rec["filter_s"] - rec["aggregate_s"]
        rec["model_build_s"] = end - marks["filtered"]
        rec["rss_after_filter_mib"] = rec["rss_after_model_mib"] = maxrss_mib()
        progress("filtered and modelled")
        return out

    def solve_model(*a: Any, **k: Any) -> Any:
        marks["solve_start"] = time.perf_counter()
        progress("solving")
        out = orig_solve(*a, **k)
        marks["solved"] = time.perf_counter()
        rec["solve_s"] = marks["solved"] - marks["filtered"]
        rec["rss_after_solve_mib"] = maxrss_mib()
        rec["components"] = out.components
        progress("solved; assembling the plan")
        return out

    def plan_large(s: Any, o: Any, trajectory: Any = None) -> Any:
        return orig_plan(s, o, traj)

    scale.candidate_arrays, scale.filtered_model, scale.solve_model = candidate_arrays, filtered_model, solve_model
    scale.build_model, scale.prune = build_model, prune
    scale.plan_large, scale.aggregate_offers = plan_large, aggregate_offers
    t0 = time.perf_counter()
    with ChildrenPeak() as workers_peak:
        plan = make_plan(scen, PlanOptions(max_deterministic_time=opts.get("det_limit"), workers=opts.get("workers")))
    rec["time_total_s"] = time.perf_counter() - t0
    rec["assemble_s"] = time.perf_counter() - marks["solved"]
    rec["rss_peak_mib"] = maxrss_mib()
    rec["rss_workers_hwm_mib"] = workers_peak.mib
    offset = marks["solve_start"] - marks["filtered"]
    rec["trajectory"] = [(round(offset + t, 4), o) for t, o, _b in traj]
    rec["bound_trajectory"] = [(round(offset + t, 4), b) for t, _o, b in traj]
    rec["status"] = plan.solver.status
    rec["engine_objective"] = plan.solver.objective
    rec["engine_best_bound"] = plan.solver.best_bound
    rec["engine_gap"] = plan.solver.gap
    rec["engine_fixed_penalty"] = plan.solver.fixed_penalty
    rec["variables"] = plan.solver.variables
    rec["det_limit"] = opts.get("det_limit") or scen.policies.policies.solver.max_deterministic_time
    rec["time_s"] = rec["solve_s"]
    rec["first_feasible_s"] = rec["trajectory"][0][0] if rec["trajectory"] else None
    rec["plan_digest"] = plan.digest
    t = time.perf_counter()
    rec["verify_violations"] = len(verify_plan(plan, scen))
    rec["verify_s"] = time.perf_counter() - t
    # Map the plan onto the harness' compact problem (from the prep run) and evaluate it like the others.
    cache = OUT / "cache" / f"{name}.npz"
    if not cache.exists():
        rec["note"] = "no compact problem (prep skipped): evaluated by placement.verify only"
        return rec
    prob = _load(name)
    w_index = {w.name: i for i, w in enumerate(scen.workloads.workloads)}
    o_index = {o.id: i for i, o in enumerate(scen.inventory.inventory.offers)}
    pos = {(int(w), int(o)): i for i, (w, o) in enumerate(zip(prob["c_w"], prob["c_offer"], strict=True))}
    x = np.zeros(len(prob["c_w"]), np.int64)
    for p in plan.placements:
        x[pos[(w_index[p.workload], o_index[p.offer_id])]] += 1
    peak = rec["rss_peak_mib"]
    out = _finish(prob, x, name, opts["method"], opts["run"], rec)
    out["rss_peak_mib"] = peak
    return out


def worker_engine(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    """placement.planner.make_plan end to end, instrumented by wrapping module functions (no edits)."""
    from ortools.sat.python import cp_model

    import placement.planner as planner
    import placement.scale as scale
    import placement.solver as solver
    from placement.planner import PlanOptions

    _inst, scen = _instance_and_scenario(name)
    rss0 = maxrss_mib()
    if scale.use_scale(scen):
        return worker_engine_scale(name, opts, scen, rss0)
    rec: dict[str, Any] = {"runs": [], "trajectory": [], "rss_instance_mib": rss0}
    marks: dict[str, float] = {}
    store: dict[str, Any] = {}
    partial = Path(opts["partial"]) if opts.get("partial") else None

    def progress(phase: str) -> None:
        """Leave what is known so far on disk: a run killed at its budget still reports its phases."""
        if partial is not None:
            rec["phase"] = phase
            rec["rss_now_peak_mib"] = maxrss_mib()
            partial.write_text(json.dumps(rec, default=_json_default))

    orig_bc, orig_solve, orig_asm = planner.build_candidates, planner.solve, planner.assemble_plan

    def build_candidates(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        out = orig_bc(*a, **k)
        rec["filter_s"] = time.perf_counter() - t
        rec["rss_after_filter_mib"] = maxrss_mib()
        store["problems"] = out
        progress("filtered; building the CP-SAT model")
        return out

    def solve(*a: Any, **k: Any) -> Any:
        marks["solve_start"] = time.perf_counter()
        out = orig_solve(*a, **k)
        rec["solve_s"] = time.perf_counter() - marks["solve_start"]
        rec["rss_after_solve_mib"] = maxrss_mib()
        store["result"] = out
        progress("solved; assembling the plan")
        return out

    def assemble_plan(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        out = orig_asm(*a, **k)
        rec["assemble_s"] = time.perf_counter() - t
        return out

    class Recorder(cp_model.CpSolverSolutionCallback):
        def on_solution_callback(self) -> None:
            rec["trajectory"].append((round(time.perf_counter() - marks["solve_start"], 4),
                                      self.objective_value / solver.MONEY_SCALE))

    def _run(model: Any, workers: int, seed: int, budget: float, first_only: bool = False) -> Any:
        if not rec["runs"]:
            rec["model_build_s"] = time.perf_counter() - marks["solve_start"]
            rec["rss_after_model_mib"] = maxrss_mib()
        progress(f"CP-SAT search {len(rec['runs']) + 1}: {workers} worker(s), det limit {budget:.1f}"
                 f"{', first solution only' if first_only else ''}, started at "
                 f"{time.perf_counter() - marks['solve_start']:.1f} s")
        s = cp_model.CpSolver()
        p = s.parameters
        p.num_workers = workers
        p.interleave_search = workers > 1
        p.random_seed = seed
        p.max_deterministic_time = budget
        p.stop_after_first_solution = first_only
        t = time.perf_counter()
        status = s.status_name(s.solve(model, Recorder()))
        rec["runs"].append({"workers": workers, "det_budget": round(budget, 3), "first_only": first_only,
                            "start_s": round(t - marks["solve_start"], 3), "wall_s": round(time.perf_counter() - t, 3),
                            "status": status, "det_time": round(s.deterministic_time, 3)})
        progress(f"CP-SAT search {len(rec['runs'])} ended {status}")
        return s, status

    planner.build_candidates, planner.solve, planner.assemble_plan = build_candidates, solve, assemble_plan
    solver._run = _run
    t0 = time.perf_counter()
    plan = planner.make_plan(scen, PlanOptions(max_deterministic_time=opts.get("det_limit")))
    rec["time_total_s"] = time.perf_counter() - t0
    rec["rss_peak_mib"] = maxrss_mib()
    rec["rss_instance_mib"] = rss0
    rec["status"] = plan.solver.status
    rec["engine_objective"] = plan.solver.objective
    rec["engine_best_bound"] = plan.solver.best_bound
    rec["engine_gap"] = plan.solver.gap
    rec["engine_fixed_penalty"] = plan.solver.fixed_penalty
    rec["variables"] = plan.solver.variables
    rec["det_limit"] = opts.get("det_limit") or scen.policies.policies.solver.max_deterministic_time
    rec["time_s"] = rec["solve_s"]  # comparable with the other methods: from candidates to assignment
    rec["first_feasible_s"] = rec["trajectory"][0][0] if rec["trajectory"] else None
    # Map the engine's assignment onto the compact problem and evaluate it like every other method.
    prob = B.compact_problem(store["problems"], scen.inventory.inventory, scen.policies.policies)
    pos = {(int(w), int(o)): i for i, (w, o) in enumerate(zip(prob["c_w"], prob["c_offer"], strict=True))}
    x = np.zeros(len(prob["c_w"]), np.int64)
    for wi, wc in enumerate(store["problems"]):
        for cand, n in store["result"].assignment[wc.workload.name]:
            x[pos[(wi, cand.offer_index)]] += n
    peak = rec["rss_peak_mib"]
    out = _finish(prob, x, name, opts["method"], opts["run"], rec)
    out["rss_peak_mib"] = peak
    out["plan_digest"] = plan.digest
    return out


def worker_verify(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Re-check every saved assignment with the engine's independent checker, placement.verify."""
    from placement.planner import PlanOptions, assemble_plan, build_candidates
    from placement.solver import SolveResult
    from placement.verify import verify_plan

    _inst, scen = _instance_and_scenario(name)
    problems = build_candidates(scen)
    prob = B.compact_problem(problems, scen.inventory.inventory, scen.policies.policies)
    out: dict[str, Any] = {"plans": {}}
    for path in sorted((OUT / "assign").glob(f"{name}__*__1.npy")):
        method = path.name.split("__")[1]
        x = np.load(path).astype(np.int64)
        assignment: dict[str, list[Any]] = {wc.workload.name: [] for wc in problems}
        for c in np.flatnonzero(x):
            wc = problems[int(prob["c_w"][c])]
            assignment[wc.workload.name].append((wc.candidates[int(prob["c_local"][c])], int(x[c])))
        result = SolveResult(assignment=assignment, status="BENCH", objective_usd=0.0, best_bound_usd=0.0, gap=0.0,
                             deterministic_time=0.0, wall_time_s=0.0, variables=0, penalty_unit_usd=0.0)
        t = time.perf_counter()
        plan = assemble_plan(scen, problems, result, PlanOptions())
        found = verify_plan(plan, scen)
        kinds: dict[str, int] = {}
        for msg in found:
            key = msg.split(": ", 1)[-1]
            key = " ".join(w for w in key.split() if not any(ch.isdigit() for ch in w))[:60]
            kinds[key] = kinds.get(key, 0) + 1
        out["plans"][method] = {"violations": len(found), "kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:4]),
                                "verify_s": time.perf_counter() - t, "hourly_usd": plan.totals.hourly_usd,
                                "replicas_unplaced": plan.totals.replicas_unplaced}
    out["status"] = "ok"
    out["rss_peak_mib"] = maxrss_mib()
    return out


def worker_profile(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    """cProfile of the engine's Python side: the filter and the CP-SAT model build (make_plan is stopped
    when the first CP-SAT search would start; the search itself is C++ and shows in the phase table)."""
    import cProfile
    import io
    import pstats

    import placement.solver as solver
    from placement.planner import PlanOptions, make_plan

    class _Stop(Exception):
        pass

    def _run(*a: Any, **k: Any) -> Any:
        raise _Stop

    solver._run = _run
    _inst, scen = _instance_and_scenario(name)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    with contextlib.suppress(_Stop):
        make_plan(scen, PlanOptions())
    prof.disable()
    total = time.perf_counter() - t0
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(30)
    st.sort_stats("cumulative").print_stats(30)
    path = OUT / f"profile-{name}.txt"
    path.write_text(f"filter + model build of make_plan on {name}, under cProfile: {total:.1f} s\n\n" + buf.getvalue())
    return {"status": "ok", "time_s": total, "rss_peak_mib": maxrss_mib(), "file": str(path)}


WORKERS = {
    "prep": worker_prep, "greedy": worker_greedy, "lp": worker_lp, "lp-round": worker_lp_round,
    "highs-mip": worker_highs_mip, "engine": worker_engine, "verify": worker_verify, "profile": worker_profile,
}


def worker_main(kind: str, name: str, opts: dict[str, Any], result: Path) -> None:
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (int(MEM_LIMIT_GIB * 2**30), resource.RLIM_INFINITY))
    load_start = os.getloadavg()[0]
    try:
        out = WORKERS[kind](name, opts)
    except MemoryError:
        out = {"status": "error", "reason": f"MemoryError (address space limited to {MEM_LIMIT_GIB:g} GiB)"}
    except Exception as exc:
        out = {"status": "error", "reason": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
        out["rss_peak_mib"] = maxrss_mib()
    out["loadavg_1min"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    result.write_text(json.dumps(out, default=_json_default, indent=1))


def _json_default(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


# ==================================================================================================
# Orchestrator
# ==================================================================================================


def run_worker(kind: str, name: str, opts: dict[str, Any], timeout: float, tag: str) -> dict[str, Any]:
    path = OUT / "results" / name / f"{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    partial = path.with_suffix(".partial.json")
    if partial.exists():
        partial.unlink()
    if kind == "engine":
        opts = {**opts, "partial": str(partial)}
    cmd = [PY, str(Path(__file__).resolve()), "--worker", kind, "--instance", name, "--opts", json.dumps(opts),
           "--result", str(path)]
    t0 = time.perf_counter()
    log = OUT / "logs" / name / f"{tag}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=str(ROOT))
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            out = {"status": "timeout", "reason": f"killed after the {timeout:.0f} s budget"}
            if partial.exists():
                seen = json.loads(partial.read_text())
                out["reason"] += f", during: {seen.get('phase')}; no plan by then" if not seen.get("trajectory") \
                    else f", during: {seen.get('phase')}"
                out["partial"] = seen
                partial.unlink()
            out["process_wall_s"] = time.perf_counter() - t0
            path.write_text(json.dumps(out))
            return out
    wall = time.perf_counter() - t0
    if not path.exists():
        out = {"status": "error", "reason": f"worker exited with code {proc.returncode} (see {log.relative_to(ROOT)})"}
        if proc.returncode in (-9, 137):
            out["reason"] = "killed by the OS (out of memory?)"
    else:
        out = json.loads(path.read_text())
    out["process_wall_s"] = wall
    path.write_text(json.dumps(out, default=_json_default, indent=1))
    return out


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def bench_instance(name: str, args: argparse.Namespace) -> None:
    budget = args.budget
    for stale in (OUT / "assign").glob(f"{name}__*.npy"):
        stale.unlink()
    for stale in (OUT / "results" / name).glob("*.json"):
        stale.unlink()
    small = name.split("-")[0] in ("small", "medium") or name in ("catalog-1k", "alibaba-nodes-8th", "alibaba-pooled")
    prep = run_worker("prep", name, {"budget": budget}, budget + 60, "prep")
    say(f"{name}: prep {prep.get('status')} {prep.get('reason', '')} filter={prep.get('filter_s', 0):.1f}s "
        f"vars={prep.get('problem', {}).get('variables')}")
    skip_all = prep.get("status") != "ok"
    reason_all = f"no candidates: prep {prep.get('status')} ({prep.get('reason', '')})"
    done: dict[str, dict[str, Any]] = {}

    def record_skip(tag: str, reason: str) -> None:
        path = OUT / "results" / name / f"{tag}.json"
        path.write_text(json.dumps({"status": "skipped", "reason": reason}))

    methods = args.methods
    n_vars = prep.get("problem", {}).get("variables", 0)
    # LP bound first (others are measured against it)
    if "lp" in methods or "lp-round" in methods:
        if skip_all:
            record_skip("lp", reason_all)
        else:
            done["lp"] = run_worker("lp", name, {"budget": budget}, budget, "lp")
            say(f"{name}: lp {done['lp'].get('status')} {done['lp'].get('time_s', 0):.2f}s")
    runs = 1 if args.quick else 2
    for method in ("greedy-naive", "greedy-cap"):
        if method not in methods:
            continue
        for r in range(1, runs + 1):
            if skip_all:
                record_skip(f"{method}.{r}", reason_all)
                continue
            res = run_worker("greedy", name, {"method": method, "run": r}, budget, f"{method}.{r}")
            say(f"{name}: {method}#{r} {res.get('status')} {res.get('time_s', 0):.2f}s viol={res.get('violations')}")
    if "lp-round" in methods:
        lp = done.get("lp", {})
        if skip_all or "lp_objective" not in lp:
            record_skip("lp-round.1", reason_all if skip_all else "no LP solution")
        else:
            res = run_worker("lp-round", name, {"run": 1, "lp_time_s": lp.get("time_s", 0.0)}, budget, "lp-round.1")
            say(f"{name}: lp-round {res.get('status')} {res.get('time_s', 0):.2f}s viol={res.get('violations')}")
    if "highs-mip" in methods:
        mip_runs = runs if small else 1
        limit = args.mip_limit if n_vars <= 200_000 else max(args.mip_limit, args.mip_limit_large)
        for r in range(1, mip_runs + 1):
            if skip_all:
                record_skip(f"highs-mip.{r}", reason_all)
                continue
            res = run_worker("highs-mip", name, {"method": "highs-mip", "run": r, "limit": limit},
                             max(budget, limit * 2 + 120), f"highs-mip.{r}")
            say(f"{name}: highs-mip#{r} {res.get('status')} {res.get('time_s', 0):.2f}s")
    engine_reason = ""
    st = prep.get("stats") or {}
    from placement import scale

    uses_scale = (st.get("workloads", 0) * st.get("offers", 0) >= scale.SCALE_MIN_PAIRS
                  or st.get("workloads", 0) >= scale.SCALE_MIN_WORKLOADS)
    if skip_all and not (uses_scale and prep.get("status") == "skipped"):
        engine_reason = reason_all
    elif n_vars > MAX_VARS_ENGINE and not uses_scale:
        engine_reason = (f"{n_vars:,} CP-SAT variables > {MAX_VARS_ENGINE:,}: the engine's model would not fit the "
                         f"memory/time budget (see the engine phase table for the growth at smaller sizes)")
    for method, det, nruns in (("engine", None, runs if small else 1), ("cpsat-60", args.cpsat_limit, 1)):
        if method not in methods:
            continue
        for r in range(1, nruns + 1):
            tag = f"{method}.{r}"
            if engine_reason:
                record_skip(tag, engine_reason)
                continue
            eng = done.get("engine", {})
            if method == "cpsat-60" and eng:
                if eng.get("status") == "OPTIMAL":
                    record_skip(tag, "the engine run already proved optimality")
                    continue
                if (eng.get("solve_s") or 0) >= args.cpsat_limit:
                    record_skip(tag, f"the engine run already searched {eng.get('solve_s', 0):.0f} s; its own "
                                     "trajectory gives the @60s column")
                    continue
            res = run_worker("engine", name, {"method": method, "run": r, "det_limit": det}, args.engine_budget, tag)
            if method == "engine" and r == 1:
                done["engine"] = res
            say(f"{name}: {method}#{r} {res.get('status')} total={res.get('time_total_s', 0):.1f}s "
                f"solve={res.get('solve_s', 0):.1f}s {res.get('reason', '')}")
            if res.get("status") in ("timeout", "error"):
                engine_reason = f"{method} run {r}: {res.get('status')} ({res.get('reason', '')})"
    if "verify" in methods:
        if skip_all or n_vars > MAX_VARS_ENGINE:
            record_skip("verify", "engine candidates too large for the verify pass" if not skip_all else reason_all)
        else:
            res = run_worker("verify", name, {}, budget, "verify")
            say(f"{name}: verify {res.get('status')}")


# ==================================================================================================
# Report
# ==================================================================================================

METHOD_ORDER = ["greedy-naive", "greedy-cap", "lp-round", "highs-mip", "engine", "cpsat-60"]
METHOD_LABEL = {
    "greedy-naive": "greedy, ignores shared capacity",
    "greedy-cap": "greedy, capacity-aware",
    "lp-round": "LP rounding + greedy repair",
    "highs-mip": "HiGHS MIP",
    "engine": "engine make_plan (policy default 30 det-s; above the threshold of placement.scale.use_scale: the large-instance path)",
    "cpsat-60": "engine CP-SAT, 60 det-s",
}


def not_run_lines(names: list[str], args: argparse.Namespace) -> list[str]:
    out = []
    sizes = {n.split("-")[0] for n in names}
    missing = [s for s in ("small", "medium", "large", "xl", "xxl", "catalog", "alibaba") if s not in sizes]
    if missing:
        out.append(f"- not run in this run: sizes {', '.join(missing)} (bench/README.md, Caveats, says why)")
    variants = [f"{s}-{v}" for s in I.SIZES if s in sizes for v in I.VARIANTS if f"{s}-{v}" not in names]
    if variants:
        out.append(f"- not run in this run: instances {', '.join(variants)} (bench/README.md, Caveats, says why)")
    methods = [m for m in ("lp", "greedy-naive", "greedy-cap", "lp-round", "highs-mip", "engine", "cpsat-60", "verify")
               if m not in args.methods]
    if methods:
        out.append(f"- not run in this run: methods {', '.join(methods)}"
                   + (" (`cpsat-60` is the engine with a 60 det-s budget; the engine's own trajectory gives the "
                      "@60s column)" if "cpsat-60" in methods else ""))
    return out


TARGETS = [
    # (label, instance prefix, first plan s, gap, time to that gap s, peak memory MiB)
    ("1k x 200", "medium-", 0.2, 0.01, 2.0, None),
    ("10k x 1k", "large-", 2.0, 0.01, 10.0, 3 * 1024),
    ("100k x 5k", "xxl-", 10.0, 0.02, 60.0, 12 * 1024),
    ("Alibaba trace", "alibaba-", 2.0, 0.01, 10.0, None),
]


def _engine_own(eng: dict[str, Any]) -> tuple[float | None, float | None, float]:
    """An engine run judged by itself (no harness evaluation): its objective, its bound and the
    penalty no plan avoids (left out of gaps, as in the engine's own gap)."""
    return eng.get("engine_objective"), eng.get("engine_best_bound"), float(eng.get("engine_fixed_penalty") or 0.0)


def _time_to_gap(traj: list[Any], const: float, lb: float | None, gap: float) -> float | None:
    if lb is None:
        return None
    for t, obj in traj:
        g = _gap(obj - const, lb)
        if g is not None and g <= gap + 1e-12:
            return float(t)
    return None


def _bounds(res: dict[str, Any], const: float) -> tuple[float | None, float | None, float | None]:
    """An instance's LP bound (None: the LP did not solve), best proven bound, and LP floor (how far
    the best proven bound lies above the LP bound)."""
    lp = res.get("lp", {})
    lb_lp = lp.get("lp_objective_adj") if lp.get("status") == "Optimal" else None
    lb = best_bound(res, const)
    return lb_lp, lb, (_gap(lb, lb_lp) if lb is not None and lb_lp is not None else None)


def targets_section(names: list[str], skipped_instances: dict[str, str]) -> list[str]:
    """The issue's targets, instance by instance: met or not, with the measured numbers."""
    out = ["## Targets", "",
           "The targets of the planner-at-scale issue, per instance, for the engine row (run 1). *first plan* = "
           "seconds from the candidate lists to the first feasible plan (the harness clock of the Results table); "
           "*+filter* adds the engine's own candidate filter, i.e. end to end from the loaded scenario. *to gap* = "
           "first moment the engine's plan is within the target gap of the LP bound (HiGHS LP of the same model); "
           "*gap LP* / *gap best* = final gap against the LP bound / the best proven bound. A row is met only if "
           "every column is (times end to end, filter included). *LP floor* = how far the best proven bound lies "
           "above the LP bound: where it exceeds the gap target, no plan at all can be within the target of the LP "
           "bound, *to gap of best s* gives the same measure against the best proven bound instead, and the last "
           "column says whether the row is met against it (the row stays not met). *peak RSS* "
           "= the engine process's peak plus its largest worker process's peak (the engine solves parts of the "
           "model in `--workers` processes; the sum bounds what the two held at once).", "",
           "| target | instance | first plan s (target) | +filter s | gap target | to gap s (target) | gap LP | gap best "
           "| LP floor | to gap of best s | peak RSS MiB (target) | violations | met |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    seen = False
    for label, prefix, first_t, gap_t, time_t, rss_t in TARGETS:
        rows = [n for n in names if n.startswith(prefix)]
        if not rows:
            out.append(f"| {label} | — | | | | | | | | | | | not run: not in this run's --sizes or --instances "
                       "(bench/README.md, Caveats, gives the last measurements) |")
            continue
        for name in rows:
            seen = True
            res = _load_results(name)
            if name in skipped_instances:
                out.append(f"| {label} | {name} | | | | | | | | | | | not run: {skipped_instances[name]} |")
                continue
            eng = res.get("engine.1", {})
            prep = res.get("prep", {})
            const = prep.get("constant_penalty", 0.0)
            lb_lp, lb, floor = _bounds(res, const)
            if "objective_adj" not in eng and eng.get("status") not in ("OPTIMAL", "FEASIBLE"):
                out.append(f"| {label} | {name} | | | | | | | | | | | not met: engine {eng.get('status', 'missing')} "
                           f"{eng.get('reason', '')[:120]} |")
                continue
            first = eng.get("first_feasible_s")
            filt = eng.get("filter_s")
            traj = eng.get("trajectory") or []
            t_best = None
            if "objective_adj" in eng:
                obj = eng["objective_adj"]
                t_gap = _time_to_gap(traj, const, lb_lp, gap_t)
                t_best = _time_to_gap(traj, const, lb, gap_t)
                g_lp, g_best = _gap(obj, lb_lp), _gap(obj, lb)
                viol = eng.get("violations", 0)
            else:  # no harness evaluation (prep skipped): the engine's own bound and verify_plan
                obj, lb_own, fixed = _engine_own(eng)
                t_gap = _time_to_gap(traj, fixed, None if lb_own is None else lb_own - fixed, gap_t)
                g_lp, g_best = None, eng.get("engine_gap")
                viol = eng.get("verify_violations", 0)
            rss = eng.get("rss_peak_mib")
            if rss is not None and eng.get("rss_workers_hwm_mib"):
                # the main process and its largest worker process (at most both at their peaks at once)
                rss += eng["rss_workers_hwm_mib"]
            others = [first is not None and first + (filt or 0.0) <= first_t,
                      rss_t is None or (rss is not None and rss <= rss_t), viol == 0]
            checks = [*others, t_gap is not None and t_gap + (filt or 0.0) <= time_t]
            verdict = "met" if all(checks) else "not met"
            if not all(checks) and all(others) and floor is not None and floor > gap_t:
                # No plan can be within the target of the LP bound: say whether it is met against the
                # best proven bound instead, and that only so.
                of_best = t_best is not None and t_best + (filt or 0.0) <= time_t
                verdict = (f"not met: LP floor above {100 * gap_t:g}%; "
                           f"{'met' if of_best else 'not met'} against the best proven bound")
            out.append(
                f"| {label} | {name} | {_fmt(first, '.2f')} ({first_t:g}) | {_fmt(None if first is None else first + (filt or 0.0), '.2f')} | "
                f"{100 * gap_t:g}% | {_fmt(t_gap, '.2f')} ({time_t:g}) | {_pct(g_lp)} | {_pct(g_best)} | "
                f"{_pct(floor)} | {_fmt(t_best, '.2f')} | "
                f"{_fmt(rss, '.0f')}{'' if rss_t is None else f' ({rss_t:,})'} | {viol} | "
                f"{verdict} |")
    if not seen:
        out.append("")
    # 10k x 1k: engine time to 1% vs the HiGHS LP time, and engine vs capacity-aware greedy on tight instances.
    out += ["", "Relative targets:", ""]
    for name in [n for n in names if n.startswith("large-")]:
        res = _load_results(name)
        eng, lp = res.get("engine.1", {}), res.get("lp", {})
        const = res.get("prep", {}).get("constant_penalty", 0.0)
        lb_lp, lb, floor = _bounds(res, const)
        t_gap = _time_to_gap(eng.get("trajectory") or [], const, lb_lp, 0.01)
        lp_t = lp.get("solve_s") or lp.get("time_s")
        ok = t_gap is not None and lp_t is not None and t_gap + (eng.get("filter_s") or 0) <= 2 * lp_t
        why = ""
        if not ok and floor is not None and floor > 0.01:
            t_best = _time_to_gap(eng.get("trajectory") or [], const, lb, 0.01)
            why = (f"; LP floor {_pct(floor)}: no plan is within 1% of the LP bound; to 1% of the best proven "
                   f"bound {_fmt(t_best, '.1f')} s")
        out.append(f"- {name}: engine time to 1% of the LP bound {_fmt(t_gap, '.1f')} s (+{_fmt(eng.get('filter_s'), '.1f')} s "
                   f"filter) vs HiGHS LP solve {_fmt(lp_t, '.1f')} s: {'met' if ok else 'not met'} (target: at most 2x)"
                   f"{why}")
    for name in [n for n in names if n.endswith("-tight")]:
        res = _load_results(name)
        eng, gc = res.get("engine.1", {}), res.get("greedy-cap.1", {})
        if "objective_adj" in eng and "objective_adj" in gc:
            ok = eng["objective_adj"] < gc["objective_adj"]
            out.append(f"- {name}: engine objective {eng['objective_adj']:,.2f} vs capacity-aware greedy "
                       f"{gc['objective_adj']:,.2f}: {'met' if ok else 'not met'} (target: below greedy)")
    out.append("")
    return out


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "not installed"


def machine_info() -> list[str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        pass
    head = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    src = hashlib.sha256()
    for f in sorted((ROOT / "placement").glob("*.py")):
        src.update(f.read_bytes())
    return [
        f"- CPU: {cpu or platform.processor()} — {os.cpu_count()} logical cores; RAM {mem}",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        f"- ortools {_version('ortools')}, highspy {_version('highspy')}, numpy {_version('numpy')}, "
        f"pydantic {_version('pydantic')}",
        f"- engine: git HEAD {head or '?'}; placement/*.py sha256 {src.hexdigest()[:12]} (working tree, may hold "
        "uncommitted edits)",
    ]


def _fmt(v: Any, spec: str = ".2f", none: str = "—") -> str:
    if v is None:
        return none
    if isinstance(v, float) and np.isnan(v):
        return none
    return format(v, spec)


def _gap(obj: float | None, lb: float | None) -> float | None:
    if obj is None or lb is None:
        return None
    return max(0.0, (obj - lb) / max(abs(obj), 1e-9))


def _gap_at(traj: list[Any], t: float, const: float, lb: float | None, done_s: float | None) -> str:
    best = None
    for ts, obj in traj:
        if ts <= t:
            best = obj if best is None else min(best, obj)
    if best is None:
        return "none" if (done_s is None or done_s >= t) else "—"
    g = _gap(best - const, lb)
    return _pct(g)


def _pct(g: float | None) -> str:
    if g is None:
        return "—"
    if g < 5e-5:
        return "0.00%"
    return f"{100 * g:.2f}%"


def best_bound(res: dict[str, Any], const: float) -> float | None:
    """The best proven lower bound: LP relaxation, HiGHS' MIP dual bound, the engine's own bound."""
    found = []
    lp = res.get("lp", {})
    if lp.get("lp_objective_adj") is not None and lp.get("status") == "Optimal":
        found.append(lp["lp_objective_adj"])
    for key, r in res.items():
        m = key.split(".")[0]
        if m == "highs-mip" and r.get("mip_dual_bound") is not None and np.isfinite(r["mip_dual_bound"]):
            found.append(r["mip_dual_bound"] - const)
        if m in ("engine", "cpsat-60") and r.get("engine_best_bound") is not None:
            found.append(r["engine_best_bound"] - const)
    return max(found) if found else None


def _load_results(name: str) -> dict[str, Any]:
    folder = OUT / "results" / name
    out: dict[str, Any] = {}
    if folder.is_dir():
        for f in sorted(folder.glob("*.json")):
            try:
                out[f.stem] = json.loads(f.read_text())
            except json.JSONDecodeError:
                continue
    return out


def _method_runs(res: dict[str, Any], method: str) -> list[dict[str, Any]]:
    return [res[k] for k in sorted(res) if k.split(".")[0] == method]


def write_report(names: list[str], args: argparse.Namespace, command: str, skipped_instances: dict[str, str],
                 started: float) -> None:
    lines: list[str] = []
    lines += [
        "# Planner at scale: benchmark results",
        "",
        "Regenerate with (from the repository root):",
        "",
        "```",
        command,
        "```",
        "",
        f"Generated {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} in {(time.time() - started) / 60:.1f} min. "
        "Harness: see [README.md](README.md). Raw per-run JSON: `bench/out/results/` (not in git).",
        "",
        "## Machine",
        "",
        *machine_info(),
        "",
        "## Settings",
        "",
        f"- per-run wall budget {args.budget:.0f} s, engine runs {args.engine_budget:.0f} s (a run is killed "
        f"beyond it); HiGHS MIP time limit {args.mip_limit:.0f} s ({args.mip_limit_large:.0f} s above 200k "
        f"variables, where its LP alone takes about a minute); engine at its policy default (`solver.max_deterministic_time` 30, 2 workers); "
        f"`cpsat-60` = the same engine solve with a {args.cpsat_limit:.0f} det-s limit",
        f"- determinism: {'one run per method (--quick)' if args.quick else 'two runs (separate processes) of each greedy, and of the engine and HiGHS on instances up to 1k x 200 (and the small real ones); same digest = yes'}",
        f"- guards: prep (the engine's candidate filter) is skipped above {MAX_CANDIDATES_PREP:,} estimated candidates "
        f"or 80 % of the budget; the engine's exact path above {MAX_VARS_ENGINE:,} variables (the large-instance path "
        "has no such guard and runs even when prep is skipped)",
        *not_run_lines(names, args),
        "",
        "## How to read the tables",
        "",
        "- **objective** is the engine's own objective ($/h of placed replicas + soft preferences + priority x "
        "penalty per unplaced replica), minus the constant penalty of workloads that no valid plan can place (no "
        "candidate; fewer distinct providers/regions than their spread asks; fewer replicas fit on all their "
        "candidates than the least they can have, min_replicas and one per provider/region of their spread; budget "
        "below the cheapest such least), so that gaps are not flattered by it. Lower is better.",
        "- **gap LP** = (objective - LP bound) / objective, the LP bound being the LP relaxation of the same model "
        "(same candidates, capacities, pools, budgets, the unplaceable workloads fixed to 0, each workload's "
        "replicas capped at what its budget buys on its cheapest candidates and each candidate's at what its "
        "offer's headroom and quota pools hold, as in the engine's model; integrality, all-or-nothing and spread "
        "relaxed). The penalty for unplaced replicas dominates the objective, and the LP places fractions of "
        "replicas that no integer plan can (a fraction of an all-or-nothing workload in the last room of a full "
        "offer), so gap LP can stay large even for proven optima. "
        "**gap best** uses the best proven bound instead: max(LP, HiGHS' MIP dual bound, the engine's own bound: "
        "CP-SAT's best bound on its exact path); "
        "0.00% = proven optimal.",
        "- **@1s/@10s/@60s** (gap best): best plan found by then, time counted from the moment the method has the candidate "
        "lists (model building included; the engine's filtering is shown separately as *filter*). `none` = no plan "
        "yet; `—` = not an anytime method or the run ended before (its final gap holds).",
        "- **first plan** = seconds to the first feasible plan on the same clock; **time** = until the method "
        "returned. **viol** = hard-constraint violations found by the harness' checker (bench/baselines.py "
        "`evaluate`); the *verify_plan* table re-checks the same plans with the engine's independent checker.",
        "- **RSS** = peak resident memory of the run's own process (instance objects included; see per-phase RSS "
        "for the engine; the Targets table adds the engine's largest worker process).",
        "",
    ]
    # summary table
    lines += ["## Results", "",
              "| instance | W x O | vars | filter s | LP bound | best bound | method | status | first plan s | time s "
              "| objective | placed $/h | unplaced | gap LP | gap best | @1s | @10s | @60s | viol | RSS MiB | det. |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    details: list[str] = []
    engine_rows: list[str] = []
    verify_rows: list[str] = []
    for name in names:
        res = _load_results(name)
        if name in skipped_instances:
            lines.append(f"| {name} | | | | | all | skipped | | | | | | | | | | | | {skipped_instances[name]} |")
            continue
        prep = res.get("prep", {})
        st = prep.get("stats", {})
        wxo = f"{st.get('workloads', 0):,} x {st.get('offers', 0):,}" if st else "?"
        pb = prep.get("problem", {})
        const = prep.get("constant_penalty", 0.0)
        lp = res.get("lp", {})
        lb_lp = lp.get("lp_objective_adj")
        lb = best_bound(res, const)
        first = True
        head = (f"| {name} | {wxo} | {pb.get('variables', 0):,} | {_fmt(prep.get('filter_s'), '.1f')} | "
                f"{_fmt(lb_lp, ',.2f')} | {_fmt(lb, ',.2f')} |")
        blank = "| | | | | | |"
        if prep.get("status") != "ok":
            lines.append(f"{head} all | {prep.get('status', 'missing')} | | | | | | | | | | | | | | {prep.get('reason', '')} |")
            eng = res.get("engine.1", {})
            obj, lb_own, fixed = _engine_own(eng)
            if obj is not None and lb_own is not None:  # judged by its own bound and verify_plan
                traj = eng.get("trajectory") or []
                g = [_gap_at(traj, t, fixed, lb_own - fixed, eng.get("time_s")) for t in (1, 10, 60)]
                lines.append(
                    f"{blank} engine | {eng.get('status')} | {_fmt(eng.get('first_feasible_s'), '.2f')} | "
                    f"{_fmt(eng.get('time_s'), '.2f')} | {obj - fixed:,.2f} | | | — | {_pct(eng.get('engine_gap'))} "
                    f"(own bound {lb_own - fixed:,.2f}) | {g[0]} | {g[1]} | {g[2]} | {eng.get('verify_violations')} "
                    f"(verify_plan) | {_fmt(eng.get('rss_peak_mib'), '.0f')} | — |")
            continue
        for method in METHOD_ORDER:
            runs = _method_runs(res, method)
            if not runs:
                continue
            r = runs[0]
            lead = head if first else blank
            first = False
            if r.get("status") == "timeout" and r.get("partial") and method in ("engine", "cpsat-60"):
                pr = r["partial"]
                runs_txt = "; ".join(f"{x['workers']}w det≤{x['det_budget']:g}{' first-only' if x['first_only'] else ''}: "
                                     f"{x['status']} {x['wall_s']:.1f}s" for x in pr.get("runs", []))
                engine_rows.append(
                    f"| {name} | {method} | {pb.get('variables', 0):,} | {_fmt(pr.get('filter_s'), '.2f')} | "
                    f"{_fmt(pr.get('model_build_s'), '.2f')} | killed | — | >{r.get('process_wall_s', 0):.0f} | "
                    f"{_fmt(pr.get('rss_instance_mib'), '.0f')} / {_fmt(pr.get('rss_after_filter_mib'), '.0f')} / "
                    f"{_fmt(pr.get('rss_after_model_mib'), '.0f')} / >{_fmt(pr.get('rss_now_peak_mib'), '.0f')} | "
                    f"{runs_txt}{'; ' if runs_txt else ''}killed during: {pr.get('phase')} |")
            if r.get("status") == "timeout" and (r.get("partial") or {}).get("trajectory"):
                traj = r["partial"]["trajectory"]
                g = [_gap_at(traj, t, const, lb, None) if t <= r.get("process_wall_s", 0) else "—" for t in (1, 10, 60)]
                best_obj = min(o for _, o in traj) - const
                lines.append(f"{lead} {method} | timeout, plan found in search but none returned | {traj[0][0]:.2f} | "
                             f"> {r.get('process_wall_s', 0):.0f} | ({best_obj:,.2f}) | | | | {_pct(_gap(best_obj, lb))} | "
                             f"{g[0]} | {g[1]} | {g[2]} | | {_fmt(r['partial'].get('rss_now_peak_mib'), '.0f')} | "
                             f"{r.get('reason', '')[:200]} |")
                continue
            if r.get("status") in ("skipped", "timeout", "error") or "objective" not in r:
                lines.append(f"{lead} {method} | {r.get('status')} | | {_fmt(r.get('time_s'), '.2f')} | | | | | | | | | | "
                             f"{_fmt(r.get('rss_peak_mib'), '.0f')} | {r.get('reason', '')[:200]} |")
                continue
            obj = r["objective_adj"]
            traj = r.get("trajectory") or []
            anytime = method in ("highs-mip", "engine", "cpsat-60")
            done_s = r.get("time_s")
            g = [(_gap_at(traj, t, const, lb, done_s) if anytime else "—") for t in (1, 10, 60)]  # vs best bound
            gap_lp, gap_best = _pct(_gap(obj, lb_lp)), _pct(_gap(obj, lb))
            if r["violations"]:
                gap_lp = gap_best = "invalid"
            digests = {x.get("digest") for x in runs if x.get("digest")}
            det = "—" if len(runs) < 2 else ("yes" if len(digests) == 1 else "NO")
            lines.append(
                f"{lead} {method} | {r['status']} | {_fmt(r.get('first_feasible_s'), '.2f')} | {_fmt(r.get('time_s'), '.2f')} | "
                f"{obj:,.2f} | {r['cost_hourly_usd']:,.2f} | {r['replicas_unplaced']:,} | {gap_lp} | {gap_best} | "
                f"{g[0]} | {g[1]} | {g[2]} | {r['violations']:,} | {_fmt(r.get('rss_peak_mib'), '.0f')} | {det} |")
            if method in ("engine", "cpsat-60"):
                runs_txt = "; ".join(f"{x['workers']}w det≤{x['det_budget']:g}{' first-only' if x['first_only'] else ''}: "
                                     f"{x['status']} {x['wall_s']:.1f}s" for x in r.get("runs", []))
                if r.get("path") == "scale":
                    runs_txt = (f"scale path: {r.get('components', '?')} components, own bound "
                                f"{_fmt(r.get('engine_best_bound'), ',.2f')}, own gap {_pct(r.get('engine_gap'))}")
                engine_rows.append(
                    f"| {name} | {method} | {pb.get('variables', 0):,} | {_fmt(r.get('filter_s'), '.2f')} | "
                    f"{_fmt(r.get('model_build_s'), '.2f')} | {_fmt((r.get('solve_s') or 0) - (r.get('model_build_s') or 0), '.2f')} | "
                    f"{_fmt(r.get('assemble_s'), '.2f')} | {_fmt(r.get('time_total_s'), '.2f')} | "
                    f"{_fmt(r.get('rss_instance_mib'), '.0f')} / {_fmt(r.get('rss_after_filter_mib'), '.0f')} / "
                    f"{_fmt(r.get('rss_after_model_mib'), '.0f')} / {_fmt(r.get('rss_peak_mib'), '.0f')} | {runs_txt} |")
        cls = prep.get("classes") or {}
        cls_txt = (f"; aggregation potential: {cls['workload_classes']:,} distinct workloads (name aside), "
                   f"{cls['offer_classes']:,} distinct offers, {cls['offer_shapes']:,} offer shapes (pools and "
                   "availability aside)") if cls else ""
        est_txt = (f"; probe estimate {prep.get('est_filter_s', 0):,.0f} s filter, {prep.get('est_candidates', 0):,} "
                   "candidates") if prep.get("est_candidates") is not None else ""
        if prep.get("status") not in ("ok", None):
            details.append(f"- **{name}**: {prep.get('description', '')}; {st.get('pools', 0)} pools, "
                           f"{st.get('replicas', 0):,} replicas, {st.get('pairs', 0):,} pairs{est_txt}{cls_txt}. "
                           f"Prep {prep.get('status')}: {prep.get('reason', '')}")
        if prep.get("status") == "ok":
            details.append(f"- **{name}**: {prep.get('description', '')}; {st.get('pools', 0)} pools, "
                           f"{st.get('replicas', 0):,} replicas, {st.get('gpus_requested', 0):,} GPUs requested; "
                           f"{st.get('pairs', 0):,} pairs -> {pb.get('candidates_kept', 0):,} candidates "
                           f"({prep.get('filter_us_per_pair', 0):.2f} µs/pair in the engine's filter), "
                           f"{pb.get('workloads_without_candidates', 0):,} workloads / "
                           f"{pb.get('replicas_without_candidates', 0):,} replicas with no candidate, "
                           f"{pb.get('workloads_unplaceable', 0):,} / {pb.get('replicas_unplaceable', 0):,} "
                           "unplaceable in any plan; "
                           f"LP ({lp.get('solver', '')}): {lp.get('status')} in {_fmt(lp.get('time_s'), '.2f')} s, "
                           f"{lp.get('rows', 0):,} rows x {lp.get('cols', 0):,} cols, RSS {_fmt(lp.get('rss_peak_mib'), '.0f')} MiB"
                           f"{cls_txt}" + (". " + " / ".join(prep.get("notes", [])) if prep.get("notes") else ""))
        ver = res.get("verify", {})
        for method, v in (ver.get("plans") or {}).items():
            kinds = "; ".join(f"{k} ({n})" for k, n in v["kinds"].items())
            verify_rows.append(f"| {name} | {method} | {v['violations']:,} | {kinds} |")
        if ver.get("status") == "skipped":
            verify_rows.append(f"| {name} | all | skipped | {ver.get('reason', '')} |")
    loads = [v for name in names for r in _load_results(name).values() for v in (r.get("loadavg_1min") or [])]
    if loads:
        lines[lines.index("## Settings") - 1:lines.index("## Settings") - 1] = [
            f"- 1-minute load average seen by the runs: median {float(np.median(loads)):.2f}, max {max(loads):.2f} "
            f"(2 cores; the machine is shared with other jobs, so wall times carry some noise)"]
    lines[lines.index("## Results"):lines.index("## Results")] = targets_section(names, skipped_instances)
    lines += ["", "## Engine phases", "",
              "Where the engine's time and memory go (one run each). *model* = Python building the CP-SAT model "
              "(from the solve() call to the first CP-SAT search), *CP-SAT* = the searches, *assemble* = building the "
              "Plan (pydantic placements, reasons, digest). RSS columns: after building the instance / after filtering / "
              "after building the model / peak.", "",
              "| instance | method | vars | filter s | model s | CP-SAT s | assemble s | total s | RSS MiB inst/filter/model/peak | CP-SAT runs |",
              "|---|---|---|---|---|---|---|---|---|---|", *engine_rows]
    lines += ["", "## Cross-check with placement.verify.verify_plan", "",
              "Every run-1 plan rebuilt as an engine Plan (`assemble_plan`) and re-checked by the engine's independent "
              "checker. Violation kinds are the checker's messages with numbers stripped.", "",
              "| instance | method | violations | kinds |", "|---|---|---|---|", *verify_rows]
    lines += ["", "## Instances", "", *details, ""]
    RESULTS.write_text("\n".join(lines) + "\n")


# ==================================================================================================


def expand(args: argparse.Namespace) -> list[str]:
    if args.instances:
        return args.instances.split(",")
    names: list[str] = []
    variants = args.variants.split(",")
    for size in args.sizes.split(","):
        if size in I.SIZES:
            if size in ("xl", "xxl") and args.variants == ",".join(I.VARIANTS):
                names += [f"{size}-loose"]  # the largest sizes: one variant unless asked otherwise
            else:
                names += [f"{size}-{v}" for v in variants]
        elif size == "catalog":
            names += ["catalog-1k", "catalog-10k"]
        elif size == "alibaba":
            names += ["alibaba-nodes-8th", "alibaba-pooled", "alibaba-hybrid", "alibaba-nodes"]
        else:
            raise SystemExit(f"unknown size {size!r}; use {', '.join([*I.SIZES, 'catalog', 'alibaba'])}")
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="small,medium",
                    help="comma list of small, medium, large, xl, xxl, catalog, alibaba (default small,medium)")
    ap.add_argument("--variants", default=",".join(I.VARIANTS), help="synthetic variants (default all four)")
    ap.add_argument("--instances", default="", help="explicit instance names (overrides --sizes)")
    ap.add_argument("--methods", default="lp,greedy-naive,greedy-cap,lp-round,highs-mip,engine,cpsat-60,verify")
    ap.add_argument("--quick", action="store_true", help="one run per method, 10 s MIP / 10 det-s CP-SAT limits")
    ap.add_argument("--budget", type=float, default=540.0, help="wall seconds per run before it is killed")
    ap.add_argument("--engine-budget", type=float, default=None,
                    help="wall seconds per engine run before it is killed (default: --budget)")
    ap.add_argument("--mip-limit", type=float, default=None, help="HiGHS MIP time limit, s (default 60; quick 10)")
    ap.add_argument("--mip-limit-large", type=float, default=None,
                    help="HiGHS MIP time limit above 200k variables (default 300; quick 10)")
    ap.add_argument("--cpsat-limit", type=float, default=None, help="cpsat-60 det-time limit (default 60; quick 10)")
    ap.add_argument("--report-only", action="store_true", help="rewrite RESULTS.md from bench/out without running")
    ap.add_argument("--profile", default="", help="cProfile make_plan on this instance (writes bench/out/profile-*.txt)")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--instance", default="", help=argparse.SUPPRESS)
    ap.add_argument("--opts", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(args.worker, args.instance, json.loads(args.opts), Path(args.result))
        return
    args.engine_budget = args.engine_budget or args.budget
    args.mip_limit = args.mip_limit or (10.0 if args.quick else 60.0)
    args.cpsat_limit = args.cpsat_limit or (10.0 if args.quick else 60.0)
    args.mip_limit_large = args.mip_limit_large or (10.0 if args.quick else 300.0)
    args.methods = args.methods.split(",")
    OUT.mkdir(parents=True, exist_ok=True)
    if args.profile:
        res = run_worker("profile", args.profile, {"det_limit": args.cpsat_limit if args.quick else None},
                         args.budget, "profile")
        print(json.dumps(res, indent=1))
        return
    started = time.time()
    if args.report_only:  # the run's own duration: from its first to its last result file
        stamps = [f.stat().st_mtime for n in expand(args) for f in (OUT / "results" / n).glob("*.json")]
        if stamps:
            started = time.time() - (max(stamps) - min(stamps))
    # --report-only rebuilds the report of the run the other arguments describe: it is not part of the command.
    command = ".venv/bin/python bench/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:] if a != "--report-only")
    names = expand(args)
    ok, why = I.data_available()
    skipped: dict[str, str] = {}
    for name in names:
        if (name.startswith("catalog") or name.startswith("alibaba")) and not ok:
            skipped[name] = f"real data missing: {why}"
            say(f"{name}: SKIPPED, real data missing ({why})")
            continue
        if not args.report_only:
            say(f"{name}: start")
            bench_instance(name, args)
        write_report(names, args, command, skipped, started)
    write_report(names, args, command, skipped, started)
    say(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
