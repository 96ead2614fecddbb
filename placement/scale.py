"""The large-instance planner: thousands of workloads and offers.

One CP-SAT model over every (workload, offer) pair stops being useful between 1,000 and 5,000
workloads. This planner minimises the same objective under the same hard constraints as
``placement.solver`` (read its docstring for the objective, the money units and ``penalty_unit``):

0. **Merge** nodes alike (``placement.aggregate``): pools with the same limit whose offers match one
   to one but for their ids (an on-prem cluster described node by node) become one pool and one
   offer per shape. The model below is then over classes, a relaxation of the node-by-node one
   (its bounds stay valid); each merged candidate holds at most what its members each hold. The
   plan's replicas are packed onto the nodes at the end, largest first; what does not pack is
   dropped as the LP rounding drops (never on slices that divide the nodes, as GPU slices do).
1. **Filter** with numpy (``placement.fastfilter``): the same candidates and costs as
   ``placement.candidates``, as arrays. ``Candidate`` objects are built only for the pairs the plan
   uses, and the scalar filter runs again only for workloads left unplaced, to explain them.
2. **Model** as arrays (``Model``): per candidate its replica cap, cost and usage of every limit, all
   in the solver's integer units. Workloads no plan can place (spread wider than their candidates,
   budget below their cheapest ``min_replicas``) get no capacity; each workload's budget caps how
   many replicas it can have at all (``affordable``).
3. **Decompose** into independent components: workloads linked through the limits they share
   (offers with limited availability, capacity pools, team budgets and spot shares). Offers without
   a limit link nothing. Above ``PRUNE_MIN_CANDIDATES`` candidates (hundreds per workload), every
   workload keeps its ``PRUNE_KEEP`` cheapest candidates and ``PRUNE_SPREAD`` more (``prune``);
   the relaxations may still place their replicas at the cheapest price dropped, without using any
   shared limit, so every bound stays valid for the whole candidate set. Per component, cheapest first:
   - the relaxation without shared limits, budgets and spread (every workload on its cheapest
     candidates, all-or-nothing kept): when its solution keeps every hard constraint it is optimal;
   - components above ``POP_MAX_WORKLOADS`` workloads (too large for one LP by column generation):
     their first plan takes the workloads with little choice first (``_order``'s ``scarce_first``),
     then those it left short (``squeaky``). Their prices and bound come from one LP over the whole
     component, restricted to each workload's cheapest few candidates and the first plan's
     (``whole_lp_model``, ``whole_lp_start``), solved in a worker process from the first plan on,
     while this one runs the squeaky rounds; the Lagrangian at its duals bounds all candidates, and
     the first plan is repaired as a whole at them (``pop_finish``). That process keeps the LP for
     a second round during the repair, on the columns that price out at its duals
     (``whole_lp_more``), for the bound. Where that LP gives no prices
     (its iteration limit), POP: the component is split into parts (``pop_parts``), each solved
     as a large component below (in parallel), their prices bound it and their plans, merged,
     are repaired instead of the first plan where they are better;
   - small components: one exact model (several small components share one), solved by HiGHS'
     branch and bound through OR-Tools' MathOpt, with its dual bound;
   - large components: the **LP relaxation by column generation**: a restricted LP over each
     workload's cheapest candidates and those of the capacity-aware greedy plan (HiGHS' dual
     simplex through OR-Tools' MathOpt), then every candidate priced at the LP's duals in numpy
     and the most negative added, until the Lagrangian value at the duals (each workload's own
     problem solved exactly at the prices: all-or-nothing down to ``min_replicas``, at most the
     replicas its budget affords, its spread kept; a valid lower bound whatever the column set)
     meets the restricted LP's optimum. The restricted LP stays in one HiGHS instance (highspy)
     between rounds, so each re-solve starts from the last basis. The duals are the prices of the
     shared limits. First plans: the capacity-aware greedy at cost, then the LP **rounded down**
     (workloads under their minimum or spread dropped, team spot shares restored) and topped up by
     the greedy at the LP's reduced costs, that greedy from scratch, and a greedy that follows
     the LP's split (each workload's candidates by its LP value, those with a minimum or a spread
     first). Then **neighbourhood repair** on half of the work budget, one MIP over the whole
     component restricted to each workload's best candidates at the LP's reduced costs
     (components up to ``GLOBAL_MIP_WORKLOADS``; first, before any neighbourhood, up to
     ``GLOBAL_MIP_FIRST_WORKLOADS``, and there after one MIP over only the workloads the LP splits,
     the rest kept as the LP has them: ``fix_integral``), and repair again on the rest. Every MIP starts from the
     current plan (a complete solution hint). Neighbourhood repair: MIPs over a tenth of the
     component's workloads, 300 at least, the rest fixed, accepted only when they improve the
     plan: first around the workloads with unplaced replicas (with the workloads holding the
     offers and pools they need), and when those stall with few left short, around each along
     chains of moves (its offers' holders, their offers' holders...: ``_chains``); then around
     those paying most above their cheapest candidate and the most contended limits, 300
     workloads each at first and twice as many whenever a round brings nothing
     (``COST_FIRST_WORKLOADS``); until the gap is under ``TARGET_GAP`` or the work budget is
     spent; then the greedy tops up the workloads still short where the moves left room. A few subgradient steps from the LP's prices
     may then lift the bound above the LP's. A component still more than ``BOUND_MIP_GAP`` above
     its bound after the whole-component MIP (the LP is weak where all-or-nothing workloads fill
     offers: it places fractions of replicas in their last room) gets, before the second repair,
     the root node of its MIP over every candidate (up to ``BOUND_MIP_CANDIDATES``; not where
     candidates were pruned): HiGHS' cutting planes bound the integer problem itself, and its
     dual bound counts from then on.
4. **Assemble** the plan in the exact path's format (same placements, reasons, explanations).

CP-SAT is not used here: given this model with a good plan as hint, one CP-SAT worker hardly improves
on the plan in tens of seconds, while HiGHS repairs a 300-workload neighbourhood in a fraction of one.

Components are solved in worker processes when ``PlanOptions.workers`` > 1, and blocks of workloads
filtered, modelled and pruned in as many threads (``filtered_model``). Every step is
deterministic (iteration counts, node limits, one thread, fixed seeds, never a time limit), so the
plan depends neither on machine load nor on the number of worker processes. The work budget is
``PlanOptions.max_deterministic_time`` (else the policy's ``solver.max_deterministic_time``), counted
in HiGHS simplex iterations of the neighbourhood MIPs (``ITERATIONS_PER_UNIT`` a unit, at least
``NEIGHBOURHOOD_WORK`` per neighbourhood), ``GLOBAL_MIP_WORK`` for the whole-component MIP and the
root node's simplex iterations for the bound; the plan's ``deterministic_time`` reports the units spent.
The LP over a whole split component has its own limit instead (``POP_LP_ITERATIONS``).

The reported bound is the sum over components of valid lower bounds (the best Lagrangian value,
the LP relaxation, the MIP dual bound loosened by its tolerance, or the exact optimum of the
relaxation) in the units of the exact path's objective, so the reported gap is an honest one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import multiprocessing
import threading
import time
from array import array
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from placement.aggregate import Aggregation, aggregate_offers, disaggregate
from placement.candidates import (
    Candidate,
    _admitting_rules,
    candidates_for,
    latency_ms,
    region_egress_table,
)
from placement.errors import PlacementError
from placement.fastfilter import CandidateArrays, FilterCache, candidate_arrays
from placement.idle import idle_owned
from placement.models import Inventory, Placement, Plan, PolicySet, SolverStats, Unplaced, Workload
from placement.solver import MONEY_SCALE, SHARE_SCALE

if TYPE_CHECKING:
    from placement.planner import PlanOptions
    from placement.scenario import Scenario

# ``make_plan`` with method "auto" uses this planner from this many workload x offer pairs, or this
# many workloads. Below it one CP-SAT model proves optimality in seconds on the bundled scenarios;
# at 1,000 x 200 it takes a minute and more (bench/RESULTS.md).
SCALE_MIN_PAIRS = 100_000
SCALE_MIN_WORKLOADS = 500

EXACT_MAX_CANDIDATES = 1_500  # components up to this many candidates: one exact model
EXACT_BATCH_CANDIDATES = 6_000  # small components solved together, up to this many candidates
EXACT_NODES = 2_000  # branch-and-bound node limit of an exact model
LP_FIRST_COLUMNS = 8  # per workload, its cheapest candidates in the first restricted LP
LP_ADD_COLUMNS = 10  # per workload, its most negative reduced-cost candidates added in round 1 (doubling, to 16x)
LP_ROUNDS = 12  # column-generation rounds at most
LP_PRIMAL_SHARE = 0.1  # a re-solve after adding fewer columns than this share of those in it: primal simplex
LP_TOLERANCE = 5e-4  # stop when the Lagrangian bound is this close to the restricted LP (relative)
BOUND_ITERATIONS = 12  # subgradient steps from the LP's prices after the repair, for the bound
THETA0 = 2.0  # initial subgradient step factor, halved after STALL iterations without a better bound
STALL = 8
STEP_FRACTION = 0.005  # step target: best bound + this fraction of (objective - best bound)
TARGET_GAP = 0.001  # the repair stops below this gap (measured above the work no plan can place)
SCARCE_ROOM = 8  # _order(scarce_first): workloads whose candidates hold at most this many times their replicas go first
SQUEAKY_ROUNDS = 4  # squeaky-wheel rounds of the first plan where a component is split (``squeaky``)
GREEDY_BATCH = 256  # workloads whose candidates the greedy screens for room at once
GREEDY_HEAD = 8  # per workload, its candidates the greedy reads ahead (the rest when it gets that far)
NEIGHBOURHOOD_WORKLOADS = 300  # workloads freed in one neighbourhood at least,
NEIGHBOURHOOD_SHARE = 10  # and one in this many of the component's workloads
COST_FIRST_WORKLOADS = 300  # costly-placement neighbourhoods at first (``solve_large``), doubled when a round brings nothing
CHAIN_WORKLOADS = 300  # a chain neighbourhood around one short workload (``_chains``) holds up to this many,
CHAIN_OFFERS = 6  # reached through each one's this many best offers at the reduced costs
SEEDS_PER_NEIGHBOURHOOD = 12  # workloads with unplaced replicas at the centre of one neighbourhood
FEW_SHORT = 24  # up to this many workloads with unplaced replicas: one neighbourhood each
NEIGHBOURHOOD_TOP_K = 16  # candidates per freed workload: its cheapest at the final prices + those in use
NEIGHBOURHOOD_NODES = 200  # branch-and-bound node limit of a neighbourhood model
REGRET_SEEDS = 40  # placed workloads paying most above their cheapest candidate, per neighbourhood
REGRET_BLOCKS = 10
ITERATIONS_PER_UNIT = 2_400  # HiGHS simplex iterations counted as one deterministic work unit
NEIGHBOURHOOD_WORK = 0.5  # deterministic work units one neighbourhood counts at least
GLOBAL_MIP_WORKLOADS = 20_000  # components up to this many workloads get one MIP over their best candidates
GLOBAL_MIP_TOP_K = 4  # candidates per workload in it: best 4 at the LP's reduced costs, 2 cheapest, those in use
GLOBAL_MIP_NODES = 20  # its branch-and-bound node limit (HiGHS mostly solves it at the root)
GLOBAL_MIP_WORK = 10.0  # deterministic work units it counts against the budget
GLOBAL_MIP_FIRST_WORKLOADS = 2_000  # components up to this many workloads get it before any neighbourhood
NO_BOUND = -(2**62)  # a lower bound below every objective: none known yet
BOUND_MIP_GAP = 0.01  # a component this far above its bound after its whole-component MIP gets a root-node
BOUND_MIP_CANDIDATES = 500_000  # MIP over all its candidates, for HiGHS' cuts to lift the bound (up to this many)
POP_MAX_WORKLOADS = 12_000  # components above this many workloads are split into parts of about
POP_PART_WORKLOADS = 10_000  # this many, solved independently (in parallel), then merged and repaired
POP_BOUND_ITERATIONS = 10  # subgradient steps on the whole component after the merge, for its bound
POP_BY_OFFER = True  # parts get whole offers (pop_parts by_offer) rather than a share of each
POP_LP_COLUMNS = 4  # the LP over a whole split component, for its prices: each workload's cheapest candidates
POP_LP_ITERATIONS = 1_000_000  # (and the first plan's), at most this many simplex iterations (no prices beyond)
POP_LP_ADD_COLUMNS = 2  # then, for its second round, each workload's this many of most negative reduced cost,
POP_LP_MORE_SHARE = 0.25  # at most this share of the first round's simplex iterations
PRUNE_MIN_CANDIDATES = 4_000_000  # models with more candidates than this are pruned (``filtered_model``):
PRUNE_KEEP = 96  # every workload keeps this many cheapest candidates,
PRUNE_SPREAD = 32  # and this many more spread through the rest by cost
PRUNE_CHUNK_CANDIDATES = 2_000_000  # candidates per chunk of the pruning pass
BLOCK_PAIRS = 10_000_000  # workload x offer cells filtered, modelled and pruned at once (``filtered_model``)


def use_scale(scenario: Scenario) -> bool:
    """Whether ``make_plan`` with method "auto" should use this planner."""
    n_w = len(scenario.workloads.workloads)
    return n_w * len(scenario.inventory.inventory.offers) >= SCALE_MIN_PAIRS or n_w >= SCALE_MIN_WORKLOADS


# ==================================================================================================
# The model as arrays
# ==================================================================================================


@dataclass
class Model:
    """The CP-SAT path's model as arrays (money in 1/10,000 USD per hour, as in placement.solver)."""

    # workloads
    replicas: np.ndarray  # int64
    fewest: np.ndarray  # int64
    penalty: np.ndarray  # int64, money per unplaced replica
    team: np.ndarray  # int64, index into teams (-1: none)
    budget: np.ndarray  # int64 money, -1: none
    min_providers: np.ndarray  # int64
    min_regions: np.ndarray  # int64
    start: np.ndarray  # int64, candidate groups
    # candidates
    cw: np.ndarray  # int64 workload
    offer: np.ndarray  # int64
    cap: np.ndarray  # int64 replicas it can hold: the workload's, within its offer's availability and pools
    cost: np.ndarray  # int64 money, objective per replica
    hourly: np.ndarray  # int64 money, cost per replica (budgets)
    nodes: np.ndarray  # int64
    gpus: np.ndarray  # int64, GPUs per replica
    spot: np.ndarray  # bool
    provider: np.ndarray  # int64 code
    region: np.ndarray  # int64 code
    # offers, pools, teams (global)
    avail: np.ndarray  # int64, -1: unlimited
    pool_start: np.ndarray  # int64 CSR per offer
    pool_id: np.ndarray  # int64
    pool_per_node: np.ndarray  # int64
    pool_limit: np.ndarray  # int64
    team_budget: np.ndarray  # int64 money, -1: none
    team_share: np.ndarray  # int64 per-mille, -1: none
    most: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # replicas the budget allows at most
    cache: dict[str, Any] = field(default_factory=dict, repr=False)  # derived lists, built once
    workload_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # global workload index
    cand_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # global candidate index
    # Per workload, a lower bound on the objective per replica of the candidates ``prune`` dropped
    # (inf: none dropped; empty: the model was never pruned). Only the relaxations use it.
    dropped: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["cache"] = {}  # derived data is rebuilt where the model is used, not shipped
        return state

    @property
    def n_w(self) -> int:
        return int(self.replicas.shape[0])

    @property
    def n_c(self) -> int:
        return int(self.cw.shape[0])

    @property
    def pruned(self) -> bool:
        """Whether ``prune`` dropped candidates of any of its workloads: then a MIP over its candidates
        bounds only those it kept, and its relaxations (which use ``dropped``) bound them all."""
        return len(self.dropped) > 0 and bool(np.isfinite(self.dropped).any())

    def spot_coef(self) -> np.ndarray:
        """Per candidate, its term in the team spot-share row sum((1000 spot - share) g x) <= 0."""
        if "coef" not in self.cache:
            self.cache["coef"] = self._spot_coef()
        out: np.ndarray = self.cache["coef"]
        return out

    def _spot_coef(self, cands: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The spot-share terms of the candidates ``cands`` (all by default)."""
        if not len(self.team_share):
            return np.zeros(len(self.cw[cands]), np.int64)
        t = self.team[self.cw[cands]]
        share = np.where(t >= 0, self.team_share[np.maximum(t, 0)], -1)
        coef = (SHARE_SCALE * self.spot[cands].astype(np.int64) - share) * self.gpus[cands]
        out: np.ndarray = np.where(share >= 0, coef, 0)
        return out

    def most_replicas(self) -> np.ndarray:
        """Per workload, the most replicas it can have: its replicas, capped by what its budget
        affords where ``build_model`` computed that (``most``). A new array."""
        if len(self.most) == self.n_w:
            return np.minimum(self.replicas, self.most)
        return self.replicas.copy()

    def objective(self, x: np.ndarray) -> int:
        nz = np.flatnonzero(x)
        xv = x[nz]
        placed = np.bincount(self.cw[nz], weights=xv, minlength=self.n_w).astype(np.int64)
        return int((self.cost[nz] * xv).sum() + (self.penalty * (self.replicas - placed)).sum())


def _money(values: np.ndarray) -> np.ndarray:
    """placement.solver.money, vectorised: round half to even, like Python's round."""
    out: np.ndarray = np.round(values * MONEY_SCALE).astype(np.int64)
    return out


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The indices ``starts[i], ..., starts[i] + counts[i] - 1`` of every i, one after the other."""
    counts = np.asarray(counts, np.int64)
    total = int(counts.sum())
    if not total:
        return np.zeros(0, np.int64)
    return np.repeat(np.asarray(starts, np.int64) - (np.cumsum(counts) - counts), counts) + np.arange(total)


def _offer_arrays(inv: Inventory, pol: PolicySet, agg: Aggregation | None = None) -> dict[str, Any]:
    """What ``build_model`` needs of the offers, pools and teams (the same for every block of workloads).
    With ``agg``, ``inv`` is its merged inventory, and each merged offer's nodes are also counted
    per member (``o_member_nodes``: what one member offer could hold)."""
    offers = inv.offers
    teams = sorted(t for t, r in pol.teams.items()
                   if r.hourly_limit_usd is not None or r.max_interruptible_share is not None)
    avail = np.asarray([-1 if o.available is None else o.available for o in offers], np.int64)
    # Pools: CSR per offer.
    pool_index = {p.id: i for i, p in enumerate(inv.pools)}
    ps, pid, pper = [0], [], []
    for o in offers:
        for p in o.pools:
            unit = inv.pools[pool_index[p]].unit
            pid.append(pool_index[p])
            pper.append({"instances": 1, "gpus": o.gpu_count, "vcpus": o.vcpus}[unit])
        ps.append(len(pid))
    pool_limit = np.asarray([p.limit for p in inv.pools], np.int64)
    o_members = agg.offer_members if agg is not None else np.ones(len(offers), np.int64)
    p_members = agg.pool_members if agg is not None else np.ones(len(inv.pools), np.int64)

    def nodes_within(avail: np.ndarray, limits: np.ndarray) -> np.ndarray:
        """Nodes of an offer that its availability and every pool it draws on could hold (-1: unlimited)."""
        o_nodes = avail.copy()
        if pid:
            starts = np.asarray(ps, np.int64)
            per_pool = limits[np.asarray(pid, np.int64)] // np.maximum(np.asarray(pper, np.int64), 1)
            has = np.flatnonzero(starts[1:] > starts[:-1])
            by_pools = np.minimum.reduceat(per_pool, starts[has])
            o_nodes[has] = np.where(o_nodes[has] >= 0, np.minimum(o_nodes[has], by_pools), by_pools)
        return o_nodes

    o_nodes = nodes_within(avail, pool_limit)
    merged = agg is not None and bool((o_members > 1).any())
    o_member_nodes = nodes_within(np.where(avail >= 0, avail // o_members, -1), pool_limit // p_members) \
        if merged else o_nodes
    prov_code: dict[str, int] = {}
    reg_code: dict[str, int] = {}
    return {
        "team_idx": {t: i for i, t in enumerate(teams)},
        "avail": avail, "pool_start": np.asarray(ps, np.int64), "pool_id": np.asarray(pid, np.int64),
        "pool_per_node": np.asarray(pper, np.int64), "pool_limit": pool_limit, "o_nodes": o_nodes,
        "o_member_nodes": o_member_nodes, "o_members": o_members, "merged": merged,
        "o_prov": np.asarray([prov_code.setdefault(o.provider, len(prov_code)) for o in offers], np.int64),
        "o_reg": np.asarray([reg_code.setdefault(o.region_key, len(reg_code)) for o in offers], np.int64),
        "o_gpus": np.asarray([o.gpu_count for o in offers], np.int64),
        "o_spot": np.asarray([o.capacity_type == "spot" for o in offers], bool),
        "team_budget": np.asarray([-1 if (b := pol.teams[t].hourly_limit_usd) is None else round(b * MONEY_SCALE)
                                   for t in teams], np.int64),
        "team_share": np.asarray([-1 if (s := pol.teams[t].max_interruptible_share) is None
                                  else round(s * SHARE_SCALE) for t in teams], np.int64),
    }


def build_model(workloads: tuple[Workload, ...] | list[Workload], inv: Inventory, pol: PolicySet,
                ca: CandidateArrays, offer_arrays: dict[str, Any] | None = None) -> tuple[Model, float]:
    """The model of ``workloads`` over their candidates ``ca``, and its penalty unit. ``offer_arrays``
    (``_offer_arrays``) saves rebuilding the offers' part when called block by block."""
    n_w = len(workloads)
    obj = ca.objective_hourly_usd
    penalty_unit = float(math.ceil(1.0 + (float(obj.max()) if len(ca) else 0.0)))
    oa = offer_arrays if offer_arrays is not None else _offer_arrays(inv, pol)
    team_idx = oa["team_idx"]
    o_prov, o_reg, o_gpus, o_spot = oa["o_prov"], oa["o_reg"], oa["o_gpus"], oa["o_spot"]
    team_budget, team_share = oa["team_budget"], oa["team_share"]
    cw = ca.workload.astype(np.int64)
    co = ca.offer.astype(np.int64)
    nodes = ca.nodes.astype(np.int64)
    replicas = np.asarray([w.replicas for w in workloads], np.int64)
    cap = replicas[cw]
    lim = oa["o_nodes"][co]
    per = np.maximum(nodes, 1)
    cap = np.where(lim >= 0, np.minimum(cap, lim // per), cap)
    if oa["merged"]:
        # A merged offer (placement.aggregate) holds at most what its members each hold: no
        # replica bigger than one member.
        lim = oa["o_member_nodes"][co]
        cap = np.where(lim >= 0, np.minimum(cap, oa["o_members"][co] * (lim // per)), cap)
    model = Model(
        replicas=replicas,
        fewest=np.asarray([w.fewest_replicas for w in workloads], np.int64),
        penalty=np.asarray([round(penalty_unit * w.priority * MONEY_SCALE) for w in workloads], np.int64),
        team=np.asarray([team_idx.get(w.team, -1) for w in workloads], np.int64),
        budget=np.asarray([-1 if w.budget_hourly_usd is None else round(w.budget_hourly_usd * MONEY_SCALE)
                           for w in workloads], np.int64),
        min_providers=np.asarray([w.spread.min_providers for w in workloads], np.int64),
        min_regions=np.asarray([w.spread.min_regions for w in workloads], np.int64),
        start=ca.start.astype(np.int64),
        cw=cw, offer=co, cap=cap.astype(np.int64), cost=_money(obj), hourly=_money(ca.hourly_usd), nodes=nodes,
        gpus=nodes * o_gpus[co], spot=o_spot[co], provider=o_prov[co], region=o_reg[co],
        avail=oa["avail"], pool_start=oa["pool_start"], pool_id=oa["pool_id"],
        pool_per_node=oa["pool_per_node"], pool_limit=oa["pool_limit"],
        team_budget=team_budget, team_share=team_share,
        workload_ids=np.arange(n_w, dtype=np.int64), cand_ids=np.arange(len(ca), dtype=np.int64),
    )
    dead = unplaceable(model)
    model.cap[dead[model.cw]] = 0
    model.most = affordable(model)
    return model, penalty_unit


def affordable(m: Model) -> np.ndarray:
    """Most replicas each workload can have within its own budget (its cheapest candidates first)."""
    most = m.replicas.copy()
    for w in np.flatnonzero(m.budget >= 0).tolist():
        s, e = int(m.start[w]), int(m.start[w + 1])
        left, n = int(m.budget[w]), 0
        for c in (s + np.argsort(m.hourly[s:e], kind="stable")).tolist():
            h, cap = int(m.hourly[c]), int(m.cap[c])
            take = cap if h == 0 else min(cap, left // h)
            n += take
            left -= take * h
            if take < cap:
                break
        most[w] = min(most[w], n)
    return most


def unplaceable(m: Model) -> np.ndarray:
    """Workloads no plan can place whatever the others do: too few distinct providers or regions
    for their spread, fewer replicas fitting on all their candidates together than the least they
    can have (``min_replicas``, and one replica per provider or region their spread asks for), or a
    budget below the cheapest such least."""
    counts = m.start[1:] - m.start[:-1]
    room = _room(m)
    # The least a workload can have: its minimum, and one replica per provider or region of its spread.
    least = np.maximum(m.fewest, np.maximum(m.min_providers, m.min_regions))
    dead = (counts > 0) & (room < least)
    for w in np.flatnonzero(~dead & ((m.budget >= 0) | (m.min_providers > 1) | (m.min_regions > 1))).tolist():
        s, e = int(m.start[w]), int(m.start[w + 1])
        if s == e:
            continue
        if len(set(m.provider[s:e].tolist())) < m.min_providers[w] or \
                len(set(m.region[s:e].tolist())) < m.min_regions[w]:
            dead[w] = True
            continue
        if m.budget[w] >= 0:
            need, cost = int(least[w]), 0
            for c in (s + np.argsort(m.hourly[s:e], kind="stable")).tolist():
                take = min(need, int(m.cap[c]))
                cost += take * int(m.hourly[c])
                need -= take
                if need == 0:
                    break
            dead[w] = need > 0 or cost > m.budget[w]
    return dead


def _room(m: Model) -> np.ndarray:
    """Per workload, the replicas all its candidates together can hold (the sum of their caps)."""
    counts = m.start[1:] - m.start[:-1]
    room = np.zeros(m.n_w, np.int64)
    ne = np.flatnonzero(counts > 0)
    if len(ne):
        room[ne] = np.add.reduceat(m.cap, m.start[ne])
    return room


def fixed_penalty(m: Model) -> int:
    """The penalty every plan pays: workloads without a candidate that can hold a replica (none at
    all, or ``unplaceable`` ones, whose caps ``build_model`` set to 0)."""
    return int((m.penalty * m.replicas)[_room(m) == 0].sum())


def restrict(m: Model, wsel: np.ndarray) -> Model:
    """The model over a sorted subset of its workloads (resources stay global)."""
    wsel = np.asarray(wsel, np.int64)
    counts = m.start[wsel + 1] - m.start[wsel]
    csel = _ranges(m.start[wsel], counts)
    local = np.repeat(np.arange(len(wsel), dtype=np.int64), counts)
    return replace(
        m, replicas=m.replicas[wsel], fewest=m.fewest[wsel], penalty=m.penalty[wsel], team=m.team[wsel],
        budget=m.budget[wsel], min_providers=m.min_providers[wsel], min_regions=m.min_regions[wsel],
        cache={}, most=m.most[wsel], start=np.r_[0, np.cumsum(counts)].astype(np.int64), workload_ids=m.workload_ids[wsel],
        dropped=m.dropped[wsel] if len(m.dropped) else m.dropped, **_candidates_of(m, csel, cw=local),
    )


_CANDIDATE_FIELDS = ("cw", "offer", "cap", "cost", "hourly", "nodes", "gpus", "spot", "provider", "region", "cand_ids")


def _candidates_of(m: Model, csel: np.ndarray, cw: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The per-candidate arrays of the candidates ``csel`` (indices), for ``replace``; ``cw``
    renumbers their workloads when given."""
    out = {f: getattr(m, f)[csel] for f in _CANDIDATE_FIELDS if cw is None or f != "cw"}
    if cw is not None:
        out["cw"] = cw
    return out


def prune(m: Model, keep_per_workload: int, first: int = 0) -> tuple[Model, np.ndarray]:
    """The model with every workload's candidates cut to its ``keep_per_workload``
    cheapest (equal costs in an order rotated per workload; spread workloads keep 4 times as many),
    further until they can hold every replica the workload may have, and ``PRUNE_SPREAD`` more at
    even steps through the rest by cost; workloads of teams with a spot-share rule keep all theirs. Each pruned workload's ``dropped`` is the cheapest objective per replica it lost:
    the relaxations (``relaxed_solution``, the LP) may place replicas at that price on a candidate
    that uses no shared limit, so their bounds stay valid for the unpruned model, while every plan
    uses kept candidates only. Works through the workloads in chunks of about
    ``PRUNE_CHUNK_CANDIDATES`` candidates, so that its temporary arrays stay small.

    ``first`` is the number of the model's first workload among all (the rotation depends on it).

    Returns (pruned model with candidate ids renumbered 0.., positions of the kept candidates in
    ``m``)."""
    sel = np.ones(m.n_w, bool)
    if len(m.team_share):
        # A team's spot-share price lowers the reduced cost of its on-demand candidates below their
        # cost, so the cheapest cost dropped would not bound them: those workloads keep everything.
        sel &= ~((m.team >= 0) & (m.team_share[np.maximum(m.team, 0)] >= 0))
    n_o = len(m.avail)
    spread = (m.min_providers > 1) | (m.min_regions > 1)
    k_of = np.where(spread, 4 * keep_per_workload, keep_per_workload)
    most = m.most_replicas()
    keep = np.ones(m.n_c, bool)
    lost = np.full(m.n_w, np.inf)
    a = 0
    while a < m.n_w:
        b = max(a + 1, int(np.searchsorted(m.start, m.start[a] + PRUNE_CHUNK_CANDIDATES, side="right")) - 1)
        b = min(b, m.n_w)
        s0, e0 = int(m.start[a]), int(m.start[b])
        if e0 > s0:
            lstart = m.start[a:b + 1] - s0
            cw = m.cw[s0:e0] - a
            cost, cap = m.cost[s0:e0], m.cap[s0:e0]
            # Equal costs (identical nodes of one cluster, say) are kept in a rotation that differs
            # from workload to workload, so that workloads do not all keep the same offers.
            rotated = (m.offer[s0:e0] + (first + a + cw) * 7919) % max(1, n_o)
            key = cost * n_o + rotated
            # _rank_in_group, where each workload's candidates are already together: the sorted
            # order keeps every workload's block where it is (``lstart``).
            order = _group_order(cw, key)
            group_start = lstart[:-1][cw]  # per position, its workload's first (the same sorted or not)
            rank = np.empty(e0 - s0, np.int64)
            rank[order] = np.arange(e0 - s0) - group_start
            k_w = k_of[a:b][cw]
            kp = ~sel[a:b][cw] | (rank < k_w)
            # Beyond the cheapest, PRUNE_SPREAD more at even steps through the rest of the workload's
            # candidates by cost: other GPU models, sizes and regions to spill to where every
            # workload's cheapest offers are the same few.
            count = np.diff(lstart)[cw]
            step = np.maximum(1, (count - k_w) // max(1, PRUNE_SPREAD))
            beyond = rank - k_w
            kp |= (beyond >= 0) & (beyond % step == 0) & (beyond // step < PRUNE_SPREAD)
            # Enough room for every replica the workload may have, at zero prices: there the pruned
            # relaxation equals the unpruned one. Candidates in rank order within their workload:
            by_rank = cap[order]
            cum = np.cumsum(by_rank)
            cum -= by_rank
            before = np.empty_like(cap)  # room of the cheaper candidates of the workload
            before[order] = cum - cum[group_start]
            kp |= before < most[a:b][cw]
            keep[s0:e0] = kp
            vals = np.where(~kp & (cap > 0), cost.astype(np.float64), np.inf)
            ne = np.flatnonzero(lstart[1:] > lstart[:-1])
            lost[a + ne] = np.minimum.reduceat(vals, lstart[:-1][ne])
        a = b
    dropped = lost if not len(m.dropped) else np.minimum(m.dropped.astype(np.float64), lost)
    kept = np.flatnonzero(keep)
    out = replace(_keep_candidates(m, keep), cand_ids=np.arange(len(kept), dtype=np.int64), dropped=dropped)
    return out, kept


@dataclass
class Filtered:
    """The candidates behind a model (``filtered_model``), and what a plan's explanations need of
    every candidate the filter kept, pruned ones included."""

    blocks: list[CandidateArrays]  # the model's candidates, block after block, in its order
    block_first: np.ndarray  # int64, per block: the model's index of its first candidate
    n_all: int  # candidates the filter kept
    obj_start: np.ndarray  # int64, per workload: its candidates in ``obj``
    obj: np.ndarray  # float64, objective per replica of every candidate the filter kept
    best_offer: np.ndarray  # int64, per workload: offer of its cheapest candidate (the first such), -1: none
    best_hourly: np.ndarray  # float64, that candidate's cost per replica
    # int64, per entry of ``obj``: the concrete offers its offer stands for (merged offers,
    # placement.aggregate); empty: one each
    obj_weight: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def take(self, cands: np.ndarray) -> CandidateArrays:
        """The model's candidates ``cands`` (indices), in that order (``start`` left empty)."""
        cands = np.asarray(cands, np.int64)
        block = np.searchsorted(self.block_first, cands, side="right") - 1
        fields: dict[str, np.ndarray] = {}
        for f in dataclasses.fields(CandidateArrays):
            if f.name == "start":
                continue
            out = np.empty(len(cands), getattr(self.blocks[0], f.name).dtype)
            for i, b in enumerate(self.blocks):
                sel = block == i
                out[sel] = getattr(b, f.name)[cands[sel] - self.block_first[i]]
            fields[f.name] = out
        return CandidateArrays(start=np.zeros(0, np.int64), **fields)


def _cheapest(ca: CandidateArrays, n_w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per workload, the offer and cost of its first candidate of least objective (-1, nan: none)."""
    obj = ca.objective_hourly_usd
    best_offer = np.full(n_w, -1, np.int64)
    best_hourly = np.full(n_w, np.nan)
    ne = np.flatnonzero(ca.start[1:] > ca.start[:-1])
    if len(ne):
        low = np.full(n_w, np.inf)
        low[ne] = np.minimum.reduceat(obj, ca.start[ne])
        hits = np.flatnonzero(obj == low[ca.workload])
        ws, first = np.unique(ca.workload[hits], return_index=True)
        best_offer[ws] = ca.offer[hits[first]]
        best_hourly[ws] = ca.hourly_usd[hits[first]]
    return best_offer, best_hourly


def _subset(ca: CandidateArrays, sel: np.ndarray | None, first: int) -> CandidateArrays:
    """The candidates ``sel`` (positions; None: all) of ``ca``, their workloads numbered from ``first``
    (``start`` left empty: the model groups them)."""
    fields = {f.name: getattr(ca, f.name) for f in dataclasses.fields(ca) if f.name != "start"}
    if sel is not None:
        fields = {k: v[sel] for k, v in fields.items()}
    fields["workload"] = (fields["workload"].astype(np.int64) + first).astype(np.int32)
    return CandidateArrays(start=np.zeros(0, np.int64), **fields)


def _concat_models(parts: list[Model], penalty: np.ndarray, threads: int = 1) -> Model:
    """The model of consecutive blocks of workloads (``filtered_model``); shared limits are global.
    ``threads``: fields concatenated at once (numpy copies without the GIL)."""
    first = np.cumsum([0] + [p.n_w for p in parts]).tolist()
    names = [f for f in ("replicas", "fewest", "team", "budget", "min_providers", "min_regions", "most", "dropped",
                         *_CANDIDATE_FIELDS) if f != "cand_ids"]

    def one(f: str) -> np.ndarray:
        if f == "cw":
            return np.concatenate([p.cw + first[i] for i, p in enumerate(parts)])
        return np.concatenate([getattr(p, f) for p in parts])

    if threads > 1:
        with ThreadPoolExecutor(max_workers=threads) as ex:
            cat = dict(zip(names, ex.map(one, names), strict=True))
    else:
        cat = {f: one(f) for f in names}
    n_w = int(first[-1])
    start = np.zeros(n_w + 1, np.int64)
    np.cumsum(np.bincount(cat["cw"], minlength=n_w), out=start[1:])
    cat["cand_ids"] = np.arange(len(cat["cw"]), dtype=np.int64)
    return replace(parts[0], cache={}, start=start, penalty=penalty, workload_ids=np.arange(n_w, dtype=np.int64),
                   **cat)


def filtered_model(workloads: tuple[Workload, ...] | list[Workload], inv: Inventory,
                   pol: PolicySet, agg: Aggregation | None = None, threads: int = 1) -> tuple[Model, Filtered]:
    """The candidate filter, ``build_model`` and ``prune`` block by block of workloads (about
    ``BLOCK_PAIRS`` workload x offer cells each), so that the candidates of all workloads are never
    held at once, only those the pruning keeps. The result is the one of the three steps on all
    workloads at once: each works workload by workload, except the penalty per unplaced replica,
    set from the most expensive candidate of all blocks, and the decision to prune (above
    ``PRUNE_MIN_CANDIDATES`` candidates in all), which blocks held until then follow too.

    With ``threads`` > 1, that many blocks are filtered, modelled and (once the candidates of the
    blocks done exceed ``PRUNE_MIN_CANDIDATES``) pruned at once in threads (numpy releases the GIL
    in its array operations), at most ``threads`` blocks ahead of the one being collected. Blocks are
    collected in order and each step is a function of its block alone, so the result does not depend
    on the number of threads."""
    n_w, n_o = len(workloads), len(inv.offers)
    size = max(1, BLOCK_PAIRS // max(1, n_o))
    cache = FilterCache()
    offer_arrays = _offer_arrays(inv, pol, agg)
    lock = threading.Lock()
    seen = 0  # candidates of the blocks filtered so far, in whatever order they finished

    def stage(a: int) -> tuple[CandidateArrays, Model, float, tuple[Model, CandidateArrays] | None]:
        nonlocal seen
        block = workloads[a:a + size]
        ca = candidate_arrays(block, inv, pol, cache)
        m, unit_b = build_model(block, inv, pol, ca, offer_arrays)
        with lock:
            seen += len(ca)
            sure = seen > PRUNE_MIN_CANDIDATES  # then the total is too: every block is pruned
        if not sure:
            return ca, m, unit_b, None
        pm, kept = prune(m, PRUNE_KEEP, first=a)
        return ca, m, unit_b, (pm, _subset(ca, kept, a))

    held: list[tuple[int, Model, CandidateArrays]] = []
    models: list[Model] = []
    cands: list[CandidateArrays] = []
    objs: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    best_offer: list[np.ndarray] = []
    best_hourly: list[np.ndarray] = []
    unit, total, pruning = 0.0, 0, False
    weights: list[np.ndarray] = []
    firsts = list(range(0, max(1, n_w), size))

    def results() -> Iterator[tuple[CandidateArrays, Model, float, tuple[Model, CandidateArrays] | None]]:
        if threads <= 1 or len(firsts) <= 1:
            yield from map(stage, firsts)
            return
        yield stage(firsts[0])  # the offer tables first, once: the threads share them
        with ThreadPoolExecutor(max_workers=threads) as ex:
            ahead = deque(ex.submit(stage, a) for a in firsts[1:1 + threads])
            for nxt in firsts[1 + threads:]:
                out = ahead.popleft().result()
                ahead.append(ex.submit(stage, nxt))
                yield out
            while ahead:
                yield ahead.popleft().result()

    for a, (ca, m, unit_b, pruned) in zip(firsts, results(), strict=True):
        unit = max(unit, unit_b)
        total += len(ca)
        objs.append(ca.objective_hourly_usd)
        if agg is not None:
            weights.append(agg.offer_members[ca.offer])
        counts.append(np.diff(ca.start))
        bo, bh = _cheapest(ca, len(ca.start) - 1)
        best_offer.append(bo)
        best_hourly.append(bh)
        # A block pruned in its thread: the candidates of all blocks exceed the threshold too.
        pruning = pruning or total > PRUNE_MIN_CANDIDATES or pruned is not None
        if not pruning:
            held.append((a, m, ca))
            continue
        for first, mb, cb in held:
            pm, kept = prune(mb, PRUNE_KEEP, first=first)
            models.append(pm)
            cands.append(_subset(cb, kept, first))
        held = []
        if pruned is None:
            pm, kept = prune(m, PRUNE_KEEP, first=a)
            pruned = (pm, _subset(ca, kept, a))
        models.append(pruned[0])
        cands.append(pruned[1])
    if len(models) + len(held) == 1:  # one block: the three steps' own result
        m = (models or [held[0][1]])[0]
        cands = cands or [held[0][2]]
    else:
        for first, mb, cb in held:
            models.append(mb)
            cands.append(_subset(cb, None, first))
        penalty = np.asarray([round(unit * w.priority * MONEY_SCALE) for w in workloads], np.int64)
        m = _concat_models(models, penalty, threads)
    block_first = np.cumsum([0] + [len(c) for c in cands[:-1]]).astype(np.int64)
    obj_start = np.zeros(n_w + 1, np.int64)
    np.cumsum(np.concatenate(counts), out=obj_start[1:])
    return m, Filtered(blocks=cands, block_first=block_first, n_all=total, obj_start=obj_start,
                       obj=np.concatenate(objs),
                       best_offer=np.concatenate(best_offer), best_hourly=np.concatenate(best_hourly),
                       obj_weight=np.concatenate(weights) if weights else np.zeros(0, np.int64))


def _keep_candidates(m: Model, keep: np.ndarray) -> Model:
    """The model with only the candidates ``keep`` (a mask); ``cand_ids`` still name the originals."""
    kept = np.flatnonzero(keep)
    counts = np.bincount(m.cw[kept], minlength=m.n_w)
    return replace(m, cache={}, start=np.r_[0, np.cumsum(counts)].astype(np.int64), **_candidates_of(m, kept))


def _pool_matrix(m: Model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per candidate x pool entry: (candidate, pool, units per replica)."""
    if "pools" not in m.cache:
        m.cache["pools"] = _pool_entries(m)
    out: tuple[np.ndarray, np.ndarray, np.ndarray] = m.cache["pools"]
    return out


def _pool_entries(m: Model, cands: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candidate, pool, units per replica) of every candidate, or of ``cands`` only (then the first
    array gives positions in ``cands``)."""
    offer = m.offer if cands is None else m.offer[cands]
    nodes = m.nodes if cands is None else m.nodes[cands]
    counts = m.pool_start[offer + 1] - m.pool_start[offer]
    cidx = np.repeat(np.arange(len(offer), dtype=np.int64), counts)
    if not len(cidx):
        return cidx, cidx.copy(), cidx.copy()
    first = _ranges(m.pool_start[offer], counts)
    return cidx, m.pool_id[first], m.pool_per_node[first] * nodes[cidx]


@dataclass
class Usage:
    """What a plan uses of every limit, computed from its non-zero entries only (a plan holds a few
    replicas per workload among hundreds of candidates)."""

    placed: np.ndarray  # per workload, replicas
    spent: np.ndarray  # per workload, money per hour
    offer: np.ndarray  # per offer, nodes
    pool: np.ndarray  # per pool, units
    team_budget: np.ndarray  # per team, money per hour
    team_spot: np.ndarray  # per team, the spot-share row's value

    @staticmethod
    def of(m: Model, x: np.ndarray) -> Usage:
        nz = np.flatnonzero(x)
        xv = x[nz]
        cw = m.cw[nz]
        n_t = len(m.team_budget)
        ci, pi, per = _pool_entries(m, nz)
        tc = m.team[cw]
        has = tc >= 0
        money = m.hourly[nz] * xv
        return Usage(
            placed=np.bincount(cw, weights=xv, minlength=m.n_w).astype(np.int64),
            spent=np.bincount(cw, weights=money, minlength=m.n_w).astype(np.int64),
            offer=np.bincount(m.offer[nz], weights=m.nodes[nz] * xv, minlength=len(m.avail)).astype(np.int64),
            pool=np.bincount(pi, weights=per * xv[ci], minlength=len(m.pool_limit)).astype(np.int64),
            team_budget=np.bincount(tc[has], weights=money[has], minlength=n_t).astype(np.int64),
            team_spot=np.bincount(tc[has], weights=(m.spot_coef()[nz] * xv)[has], minlength=n_t).astype(np.int64),
        )


def check(m: Model, x: np.ndarray) -> list[str]:
    """Every hard constraint of the model that ``x`` breaks (empty: feasible)."""
    out: list[str] = []
    nz = np.flatnonzero(x)
    if (x[nz] < 0).any() or (x[nz] > m.cap[nz]).any():
        out.append("replicas outside [0, cap]")
    u = Usage.of(m, x)
    placed = u.placed
    if (placed > m.replicas).any():
        out.append("too many replicas")
    if ((placed > 0) & (placed < m.fewest)).any():
        out.append("fewer than min_replicas")
    if ((m.avail >= 0) & (u.offer > m.avail)).any():
        out.append("offer availability")
    if (u.pool > m.pool_limit).any():
        out.append("pool limit")
    if ((m.budget >= 0) & (u.spent > m.budget)).any():
        out.append("workload budget")
    if ((m.team_budget >= 0) & (u.team_budget > m.team_budget)).any():
        out.append("team budget")
    if ((m.team_share >= 0) & (u.team_spot > 0)).any():
        out.append("team spot share")
    for w in np.flatnonzero((placed > 0) & ((m.min_providers > 1) | (m.min_regions > 1))):
        s, e = m.start[w], m.start[w + 1]
        on = x[s:e] > 0
        if len(set(m.provider[s:e][on].tolist())) < m.min_providers[w] or \
                len(set(m.region[s:e][on].tolist())) < m.min_regions[w]:
            out.append("spread")
            break
    return out


# ==================================================================================================
# Lagrangian relaxation
# ==================================================================================================


def _group_first_min(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group (contiguous, non-empty): minimum value and the position of its first occurrence."""
    gmin = np.minimum.reduceat(values, starts)
    eq = np.flatnonzero(values == np.repeat(gmin, counts))
    grp = np.searchsorted(starts, eq, side="right") - 1  # the group of each (fewer than the values)
    first = eq[np.r_[True, grp[1:] != grp[:-1]]]
    return gmin, first


def relaxed_solution(m: Model, rc: np.ndarray) -> tuple[np.ndarray, float]:
    """Each workload's own optimum at reduced costs ``rc`` (money per replica): candidate caps and
    all-or-nothing down to min_replicas and spread (``_spread_optimum``) kept, at most the replicas
    its budget affords, budgets otherwise and shared limits dropped. On a pruned model (``prune``) a
    workload may also place replicas at its ``dropped`` price, and there its spread is dropped (the
    groups of the dropped candidates are unknown); ``x`` leaves the dropped ones out.

    Returns (x, sum over workloads of (its optimum + penalty x replicas))."""
    x = np.zeros(m.n_c, np.int64)
    counts_all = m.start[1:] - m.start[:-1]
    groups = np.flatnonzero(counts_all > 0)
    if not len(groups):
        return x, float((m.penalty * m.replicas).sum())
    cur = rc.astype(np.float64)  # a copy (taken candidates are set to inf)
    most = m.most_replicas()
    need = most.copy()
    rounds_c: list[np.ndarray] = []  # per round, per workload: candidate taken (-1 none)
    rounds_n: list[np.ndarray] = []
    rounds_v: list[np.ndarray] = []
    active = groups
    cand_idx: np.ndarray | None = None  # the candidates of the active workloads (None: all, in the first round)
    pruned = len(m.dropped) > 0
    while len(active):
        counts = counts_all[active]
        starts_local = np.r_[0, np.cumsum(counts)[:-1]]
        gmin, first = _group_first_min(cur if cand_idx is None else cur[cand_idx], starts_local, counts)
        c_of = np.full(m.n_w, -1, np.int64)
        n_of = np.zeros(m.n_w, np.int64)
        v_of = np.full(m.n_w, np.inf)
        ok = np.isfinite(gmin)
        if pruned:  # the candidates prune() dropped, as one without limits (c_of -1), where cheaper
            lost = m.dropped[active]
            virtual = lost < gmin
            ok &= ~virtual
            wv = active[virtual]
            n_of[wv], v_of[wv] = need[wv], lost[virtual]
            need[wv] = 0
        wa, ca = active[ok], (first[ok] if cand_idx is None else cand_idx[first[ok]])
        take = np.minimum(m.cap[ca], need[wa])
        c_of[wa], n_of[wa], v_of[wa] = ca, take, gmin[ok]
        need[wa] -= take
        cur[ca] = np.inf
        rounds_c.append(c_of)
        rounds_n.append(n_of)
        rounds_v.append(v_of)
        nxt = wa[need[wa] > 0]
        if not len(nxt):
            break
        active = nxt
        cnt = counts_all[active]
        cand_idx = np.repeat(m.start[active] - np.cumsum(np.r_[0, cnt[:-1]]), cnt) + np.arange(int(cnt.sum()))
    pen = m.penalty.astype(np.float64)
    total = np.zeros(m.n_w, np.int64)
    kprime = np.zeros(m.n_w, np.int64)
    for n_of, v_of in zip(rounds_n, rounds_v, strict=True):
        total += n_of
        kprime += np.where(v_of < pen, n_of, 0)
    k = np.where(kprime >= m.fewest, kprime, 0)
    low = (kprime < m.fewest) & (total >= m.fewest)
    if low.any():
        val_f = np.zeros(m.n_w)
        got = np.zeros(m.n_w, np.int64)
        for n_of, v_of in zip(rounds_n, rounds_v, strict=True):
            use = np.clip(m.fewest - got, 0, n_of)
            val_f += np.where(use > 0, use * (np.where(np.isfinite(v_of), v_of, 0.0) - pen), 0.0)
            got += use
        k = np.where(low & (val_f < 0), m.fewest, k)
    value = (pen * m.replicas).astype(np.float64)
    got = np.zeros(m.n_w, np.int64)
    for c_of, n_of, v_of in zip(rounds_c, rounds_n, rounds_v, strict=True):
        use = np.clip(k - got, 0, n_of)
        sel = use > 0
        real = sel & (c_of >= 0)  # not the dropped candidates' stand-in
        x[c_of[real]] += use[real]
        value += np.where(sel, use * (np.where(np.isfinite(v_of), v_of, 0.0) - pen), 0.0)
        got += use
    # Workloads with a spread: their own optimum with the spread kept (a tighter value, still a
    # relaxation). Not where pruned candidates stand in (their providers and regions are unknown).
    spread = np.flatnonzero(((m.min_providers > 1) | (m.min_regions > 1)) & (counts_all > 0))
    if pruned:
        spread = spread[~np.isfinite(m.dropped[spread])]
    for w in spread.tolist():
        s, e = int(m.start[w]), int(m.start[w + 1])
        best: tuple[float, np.ndarray] | None = None
        for least, key in ((int(m.min_providers[w]), m.provider), (int(m.min_regions[w]), m.region)):
            if least > 1:
                r = _spread_optimum(rc[s:e], m.cap[s:e], key[s:e], least, int(m.fewest[w]), int(most[w]),
                                    float(pen[w]))
                if best is None or r[0] > best[0]:
                    best = r
        assert best is not None
        value[w] = float(pen[w] * m.replicas[w]) + best[0]
        x[s:e] = best[1]
    return x, float(value.sum())


def _spread_optimum(rc: np.ndarray, cap: np.ndarray, group: np.ndarray, least: int, fewest: int, most: int,
                    penalty: float) -> tuple[float, np.ndarray]:
    """One workload's optimum at reduced costs ``rc`` (per replica, each less ``penalty``) with
    replicas in at least ``least`` distinct groups (providers or regions), between ``fewest`` and
    ``most`` of them, or none: (its value, its replicas per candidate). Optimal: some optimum holds
    one replica on the cheapest candidate of each of the ``least`` groups whose cheapest is
    cheapest (exchange argument), and the rest on the cheapest places left."""
    x = np.zeros(len(rc), np.int64)
    live = np.flatnonzero((cap > 0) & np.isfinite(rc))
    lo = max(fewest, least)
    if most < lo or len(live) == 0:
        return 0.0, x
    order = live[np.lexsort((live, rc[live]))]
    _, first = np.unique(group[order], return_index=True)
    if len(first) < least:
        return 0.0, x
    reps = order[np.sort(first)[:least]]  # the cheapest candidate of each group, cheapest groups first
    x[reps] = 1
    room = cap - x
    rest = order[room[order] > 0]
    slots = np.repeat(rest, room[rest])[:most - least]  # every further replica's place, cheapest first
    if len(slots) < lo - least:
        return 0.0, np.zeros(len(rc), np.int64)
    extra = max(lo - least, int(np.count_nonzero(rc[slots] < penalty)))
    np.add.at(x, slots[:extra], 1)
    total = float((rc[reps] - penalty).sum() + (rc[slots[:extra]] - penalty).sum())
    if total >= 0:
        return 0.0, np.zeros(len(rc), np.int64)
    return total, x


@dataclass
class Prices:
    offer: np.ndarray  # per offer, money per node
    pool: np.ndarray  # per pool, money per unit
    budget: np.ndarray  # per team, per money unit of cost
    share: np.ndarray  # per team, per unit of the spot row

    def reduced(self, m: Model, pools: tuple[np.ndarray, np.ndarray, np.ndarray], spot_coef: np.ndarray) -> np.ndarray:
        """Per candidate, its cost plus the prices of the limits it uses. Each term goes through one
        work array, filled in place (on 20 M candidates each array is 160 MB)."""
        rc = m.cost.astype(np.float64)
        tmp = self.offer[m.offer]
        np.multiply(tmp, m.nodes, out=tmp)
        rc += tmp
        ci, pi, per = pools
        if len(ci):
            weights = self.pool[pi]
            np.multiply(weights, per, out=weights)
            rc += np.bincount(ci, weights=weights, minlength=m.n_c)
            del weights
        if len(self.budget):
            # Per workload, its team's prices (0 without a team), then per candidate.
            has = m.team >= 0
            tt = np.maximum(m.team, 0)
            budget = np.where(has, self.budget[tt], 0.0)
            share = np.where(has, self.share[tt], 0.0)
            np.take(budget, m.cw, out=tmp)
            np.multiply(tmp, m.hourly, out=tmp)
            rest = share[m.cw]
            np.multiply(rest, spot_coef, out=rest)
            tmp += rest
            rc += tmp
        return rc

    def rhs_value(self, m: Model) -> float:
        return float((self.offer * np.maximum(m.avail, 0)).sum() + (self.pool * m.pool_limit).sum()
                     + (self.budget * np.maximum(m.team_budget, 0)).sum())


# ==================================================================================================
# Primal: price-guided greedy
# ==================================================================================================


_I4 = array("i").itemsize == 4  # array.array's C int: 32 bits on Linux, macOS and Windows


def _ints(values: np.ndarray) -> array[int]:
    """The values as an ``array.array`` (indexing gives Python ints): of 32-bit integers where they
    all fit, half the memory (about 80 MB per list on 20 M candidates), otherwise 64-bit. The
    lists built from them are read, never written."""
    v = np.asarray(values)
    small = _I4 and (not len(v) or (int(v.min()) >= -(2**31) and int(v.max()) < 2**31))
    out = array("i" if small else "q")
    out.frombytes(np.ascontiguousarray(v, np.int32 if small else np.int64).data.cast("B"))
    return out


_PER_CANDIDATE = frozenset(("offer", "nodes", "hourly", "cap", "coef", "provider", "region"))


class Residual:
    """What is left of every shared limit, for a greedy that keeps all hard constraints."""

    offer: Sequence[int]  # per candidate, built on first use (``__getattr__``)
    nodes: Sequence[int]
    hourly: Sequence[int]
    cap: Sequence[int]
    coef: Sequence[int]
    provider: Sequence[int]
    region: Sequence[int]

    def __init__(self, m: Model, x: np.ndarray | None = None) -> None:
        self.m = m
        lists = m.cache.get("lists")
        if lists is None:
            lists = m.cache["lists"] = {
                "pools_of": [list(zip(m.pool_id[m.pool_start[o]:m.pool_start[o + 1]].tolist(),
                                      m.pool_per_node[m.pool_start[o]:m.pool_start[o + 1]].tolist(), strict=True))
                             for o in range(len(m.avail))],
                "team": m.team.tolist(),
            }
        self.lists = lists
        self.pools_of: list[list[tuple[int, int]]] = lists["pools_of"]
        self.team: list[int] = lists["team"]
        self.has_budget = [b >= 0 for b in m.team_budget.tolist()]
        self.has_share = [s >= 0 for s in m.team_share.tolist()]
        if x is None or not x.any():
            self.avail = m.avail.tolist()
            self.pool = m.pool_limit.tolist()
            self.team_budget = m.team_budget.tolist()
            self.team_spot = [0] * len(self.has_share)  # slack of the spot row
            return
        u = Usage.of(m, x)
        self.avail = np.where(m.avail >= 0, m.avail - u.offer, m.avail).tolist()
        self.pool = (m.pool_limit - u.pool).tolist()
        self.team_budget = np.where(m.team_budget >= 0, m.team_budget - u.team_budget, m.team_budget).tolist()
        self.team_spot = (-u.team_spot).tolist()

    def __getattr__(self, name: str) -> Sequence[int]:
        """A per-candidate lookup (``offer``, ``nodes``, ``hourly``, ``cap``, ``coef``, ``provider``,
        ``region``), built on first use and kept: 8-byte machine integers (array.array) rather than
        lists of Python ints, several GB less on a 10 M-candidate model at about the same access speed."""
        if name not in _PER_CANDIDATE:
            raise AttributeError(name)
        out = self.lists.get(name)
        if out is None:
            values = self.m.spot_coef() if name == "coef" else getattr(self.m, name)
            out = self.lists[name] = _ints(values)
        setattr(self, name, out)
        return cast("Sequence[int]", out)

    def fits(self, c: int, n: int, t: int) -> int:
        return self.fits_v(self.offer[c], self.nodes[c], self.hourly[c], self.coef[c], n, t)

    def take(self, c: int, n: int, t: int) -> None:
        self.take_v(self.offer[c], self.nodes[c], self.hourly[c], self.coef[c], n, t)

    def fits_v(self, o: int, nodes: int, h: int, k: int, n: int, t: int) -> int:
        """Replicas (at most ``n``) of a candidate on offer ``o`` (``nodes`` per replica, ``h`` per
        replica, ``k`` in its team's spot row) that fit what is left; ``t`` its team (-1: none)."""
        a = self.avail[o]
        if a >= 0:
            n = min(n, a // nodes)
        for p, per in self.pools_of[o]:
            n = min(n, self.pool[p] // (per * nodes))
        if t >= 0:
            if self.has_budget[t] and h > 0:
                n = min(n, self.team_budget[t] // h)
            if self.has_share[t] and k > 0:
                n = min(n, self.team_spot[t] // k)
        return max(0, n)

    def take_v(self, o: int, nodes: int, h: int, k: int, n: int, t: int) -> None:
        if self.avail[o] >= 0:
            self.avail[o] -= n * nodes
        for p, per in self.pools_of[o]:
            self.pool[p] -= n * per * nodes
        if t >= 0:
            if self.has_budget[t]:
                self.team_budget[t] -= n * h
            if self.has_share[t]:
                self.team_spot[t] -= n * k


def greedy(m: Model, rc: np.ndarray, order: list[int], res: Residual | None = None,
           x: np.ndarray | None = None) -> np.ndarray:
    """Workloads in ``order``, each on its candidates by ascending reduced cost, every hard constraint
    kept; a workload that misses its minimum or its spread places nothing.

    With ``x`` (a feasible partial plan, ``res`` its residual) a workload that already has replicas
    there is topped up: its spread and minimum are already met, so only the missing replicas are
    added, within its candidates' caps and what its budget has left."""
    res = res or Residual(m)
    if x is None or not x.any():
        x = np.zeros(m.n_c, np.int64) if x is None else x
        have = [0] * m.n_w
        spent = [0] * m.n_w
    else:
        have = np.bincount(m.cw, weights=x, minlength=m.n_w).astype(np.int64).tolist()
        spent = np.bincount(m.cw, weights=m.hourly * x, minlength=m.n_w).astype(np.int64).tolist()
    start = m.start.tolist()
    replicas = m.replicas.tolist()
    fewest = m.fewest.tolist()
    budget = m.budget.tolist()
    minp = m.min_providers.tolist()
    minr = m.min_regions.tolist()
    # Workloads go in batches. What is left of every offer and pool only shrinks within a batch (a
    # workload given up returns only what it took), so a candidate whose offer had no room for one
    # replica when its batch began has none later either: each workload goes through its other
    # candidates only, by ascending reduced cost (then position), and takes what it took before.
    # Most take their first or second: the batch's lookups are built for each workload's first
    # ``GREEDY_HEAD`` candidates, and for the rest only where a workload gets that far (on xl-tight,
    # 67 k candidates looked at of 6.8 M).
    order_a = np.asarray(order, np.int64)
    has_pools = np.flatnonzero(m.pool_start[1:] > m.pool_start[:-1])
    pool_entry = np.repeat(np.arange(len(m.avail)), np.diff(m.pool_start))
    batch_size = GREEDY_BATCH
    span: dict[int, tuple[int, int, int, int]] = {}
    head: list[tuple[int, int, int, int, int, int, int, int]] = []
    idx = np.zeros(0, np.int64)

    def rows_of(cands: np.ndarray) -> list[tuple[int, int, int, int, int, int, int, int]]:
        """Per candidate: (candidate, offer, nodes, hourly, spot coefficient, cap, provider, region)."""
        return list(zip(cands.tolist(), m.offer[cands].tolist(), m.nodes[cands].tolist(),
                        m.hourly[cands].tolist(), m._spot_coef(cands).tolist(), m.cap[cands].tolist(),
                        m.provider[cands].tolist(), m.region[cands].tolist(), strict=True))

    def extended(rows: list[tuple[int, int, int, int, int, int, int, int]], f0: int, f1: int) -> bool:
        """Append to a workload's ``rows`` (its first candidates) the rest of its candidates, the
        batch's sorted ``idx[f0:f1]``; whether any were missing."""
        if len(rows) >= f1 - f0:
            return False
        rows.extend(rows_of(idx[f0 + len(rows):f1]))
        return True

    for pos, w in enumerate(order):
        if pos % batch_size == 0:
            ws = order_a[pos:pos + batch_size]
            counts = m.start[ws + 1] - m.start[ws]
            idx = _ranges(m.start[ws], counts)
            wpos = np.repeat(np.arange(len(ws), dtype=np.uint8 if batch_size <= 256 else np.int64), counts)
            room = np.asarray(res.avail, np.int64)
            room = np.where(room >= 0, room, np.iinfo(np.int64).max)
            if len(has_pools):
                per_entry = np.asarray(res.pool, np.int64)[m.pool_id] // np.maximum(m.pool_per_node, 1)
                by_pool = np.full(len(m.avail), np.iinfo(np.int64).max)
                np.minimum.at(by_pool, pool_entry, per_entry)
                room = np.minimum(room, by_pool)
            ok = room[m.offer[idx]] >= m.nodes[idx]
            idx, wpos = idx[ok], wpos[ok]
            # By workload, then reduced cost, then position (a workload's candidates are in position
            # order already): two stable sorts, the second of small integers.
            srt = np.argsort(rc[idx], kind="stable")
            srt = srt[np.argsort(wpos[srt], kind="stable")]
            idx, wpos = idx[srt], wpos[srt]
            bounds = np.searchsorted(wpos, np.arange(len(ws) + 1))
            first = bounds[:-1][wpos] + GREEDY_HEAD > np.arange(len(idx))
            head = rows_of(idx[first])
            hb = np.searchsorted(wpos[first], np.arange(len(ws) + 1)).tolist()
            bl = bounds.tolist()
            span = {int(ws[i]): (hb[i], hb[i + 1], bl[i], bl[i + 1]) for i in range(len(ws))}
        s, e = start[w], start[w + 1]
        if s == e:
            continue
        t = res.team[w]
        left = replicas[w] - have[w]
        if left <= 0:
            continue
        wb = budget[w] if budget[w] < 0 else budget[w] - spent[w]
        h0, h1, f0, f1 = span[w]
        rows = head[h0:h1]  # the workload's candidates in order, the rest appended when reached
        taken: list[tuple[int, int]] = []  # (position in rows, replicas)
        spread = (minp[w] > 1 or minr[w] > 1) and have[w] == 0
        if spread:
            provs: set[int] = set()
            regs: set[int] = set()
            j = 0
            while j < len(rows) or extended(rows, f0, f1):
                if len(provs) >= minp[w] and len(regs) >= minr[w]:
                    break
                _c, o, nd, h, k, _cap, p, r = rows[j]
                if (len(provs) < minp[w] and p not in provs) or (len(regs) < minr[w] and r not in regs):
                    n = res.fits_v(o, nd, h, k, 1, t)
                    if n and (wb < 0 or h <= wb):
                        res.take_v(o, nd, h, k, 1, t)
                        taken.append((j, 1))
                        left -= 1
                        if wb >= 0:
                            wb -= h
                        provs.add(p)
                        regs.add(r)
                j += 1
            if len(provs) < minp[w] or len(regs) < minr[w]:
                left = -1
        if left > 0:
            used = {rows[j][0]: n for j, n in taken}
            if have[w]:
                for c in range(s, e):
                    if x[c]:
                        used[c] = int(x[c])
            j = 0
            while j < len(rows) or extended(rows, f0, f1):
                c, o, nd, h, k, cap, _p, _r = rows[j]
                j += 1
                n = min(left, cap - used.get(c, 0))
                if n <= 0:
                    continue
                n = res.fits_v(o, nd, h, k, n, t)
                if wb >= 0 and h > 0:
                    n = min(n, wb // h)
                if n <= 0:
                    continue
                res.take_v(o, nd, h, k, n, t)
                taken.append((j - 1, n))
                left -= n
                if wb >= 0:
                    wb -= n * h
                if left == 0:
                    break
        placed = have[w] + sum(n for _, n in taken)
        if left < 0 or placed < fewest[w]:
            for j, n in taken:
                _c, o, nd, h, k, *_ = rows[j]
                res.take_v(o, nd, h, k, -n, t)
            continue
        for j, n in taken:
            x[rows[j][0]] += n
    return x


# ==================================================================================================
# CP-SAT over a set of workloads, the others fixed
# ==================================================================================================


@dataclass
class SubResult:
    x: np.ndarray  # full candidate vector
    objective: int
    bound: int | None  # valid lower bound on the objective restricted to the freed workloads + fixed part
    status: str
    det_time: float


def _highs_params(seed: int) -> Any:
    """HiGHS settings every solve here shares: quiet, one thread (deterministic), a fixed seed."""
    from ortools.math_opt import parameters_pb2

    params = parameters_pb2.SolveParametersProto()
    params.highs.bool_options["output_flag"] = False
    params.highs.int_options["threads"] = 1
    params.highs.int_options["random_seed"] = seed
    return params


def _highs(proto: Any, params: Any, hint: np.ndarray | None = None) -> Any:
    """Solve a MathOpt model proto with HiGHS, from the complete solution ``hint`` if given."""
    from ortools.math_opt import callback_pb2, model_parameters_pb2, parameters_pb2
    from ortools.math_opt.core.python import solver as core

    model_params = model_parameters_pb2.ModelSolveParametersProto()
    if hint is not None:
        h = model_params.solution_hints.add()
        h.variable_values.ids.extend(range(len(hint)))
        h.variable_values.values.extend(hint.tolist())
    return core.solve(proto, parameters_pb2.SolverTypeProto.SOLVER_TYPE_HIGHS,
                      parameters_pb2.SolverInitializerProto(), params, model_params, None,
                      callback_pb2.CallbackRegistrationProto(), None, None)


def mip(m: Model, free: np.ndarray, x: np.ndarray, node_limit: int, rc: np.ndarray | None = None,
        top_k: int | None = None, seed: int = 0, presolve: bool = True) -> SubResult:
    """Re-optimise the workloads ``free`` (sorted indices) with the others fixed as in ``x``: the same
    model as placement.solver restricted to them, on what the fixed ones leave of every limit, solved
    by HiGHS' branch and bound through OR-Tools' MathOpt. On this model HiGHS finds good packings
    far faster than CP-SAT (which, with the plan as hint, hardly improves on it: bench/README.md).

    With ``top_k`` each freed workload keeps only its ``top_k`` candidates of lowest ``rc``, its
    ``top_k // 2`` cheapest and those it uses now (a restriction: the result stays feasible, no bound is returned).

    HiGHS starts from ``x`` (a complete solution hint), so it prunes against it from the root.

    Deterministic: one thread, a fixed seed, a node limit and no time limit. Integer values are read
    back rounded and the result is re-checked with ``check``; one that breaks a limit (solver
    tolerances) is dropped, as is one that is not better than ``x``."""
    from ortools.math_opt import model_pb2

    is_free = np.zeros(m.n_w, bool)
    is_free[free] = True
    xf = np.where(~is_free[m.cw], x, 0)
    res = Residual(m, xf)
    var_c: list[int] = []
    ub: list[int] = []
    obj: list[float] = []
    rows_lo: list[float] = []
    rows_hi: list[float] = []
    tr: list[int] = []
    tc: list[int] = []
    tv: list[float] = []
    inf = math.inf
    extra_vars: list[tuple[int, float]] = []  # (ub, objective) of binaries, after the candidate vars

    def row(lo: float, hi: float, cols: list[int], vals: list[float]) -> None:
        r = len(rows_lo)
        rows_lo.append(lo)
        rows_hi.append(hi)
        tr.extend([r] * len(cols))
        tc.extend(cols)
        tv.extend(vals)

    const = 0
    shared: dict[tuple[str, int], list[tuple[int, float]]] = defaultdict(list)
    binaries: list[tuple[int, list[int], list[float], str]] = []
    for w in free.tolist():
        s, e = int(m.start[w]), int(m.start[w + 1])
        t = res.team[w]
        rep = int(m.replicas[w])
        pen = int(m.penalty[w])
        const += pen * rep
        cands: list[int] = list(range(s, e))
        if top_k is not None and rc is not None and e - s > top_k:
            keep = set((s + np.argsort(rc[s:e], kind="stable")[:top_k]).tolist())
            keep.update((s + np.argsort(m.cost[s:e], kind="stable")[:top_k // 2]).tolist())
            keep.update((s + np.flatnonzero(x[s:e])).tolist())
            cands = sorted(keep)
        cols: list[int] = []
        for c in cands:
            u = res.fits(c, res.cap[c], -1)
            h = res.hourly[c]
            if t >= 0 and res.has_budget[t] and h > 0:
                u = min(u, max(0, res.team_budget[t]) // h)
            if m.budget[w] >= 0 and h > 0:
                u = min(u, int(m.budget[w]) // h)
            if u <= 0:
                continue
            j = len(var_c)
            var_c.append(c)
            ub.append(u)
            obj.append(float(int(m.cost[c]) - pen))
            cols.append(j)
            o = res.offer[c]
            nd = res.nodes[c]
            if res.avail[o] >= 0:
                shared[("o", o)].append((j, float(nd)))
            for p, per in res.pools_of[o]:
                shared[("p", p)].append((j, float(per * nd)))
            if t >= 0:
                if res.has_budget[t]:
                    shared[("b", t)].append((j, float(h)))
                if res.has_share[t]:
                    shared[("s", t)].append((j, float(res.coef[c])))
        if not cols:
            continue
        row(-inf, rep, cols, [1.0] * len(cols))
        few = int(m.fewest[w])
        if few > 1 or m.min_providers[w] > 1 or m.min_regions[w] > 1:
            on = len(extra_vars)
            extra_vars.append((1, 0.0))
            binaries.append((on, cols, [1.0] * len(cols), f"on:{max(1, few)}:{rep}"))
            for minimum, key in ((int(m.min_providers[w]), res.provider), (int(m.min_regions[w]), res.region)):
                if minimum <= 1:
                    continue
                groups: dict[int, list[int]] = defaultdict(list)
                for j in cols:
                    groups[key[var_c[j]]].append(j)
                ys = []
                for _g, js in sorted(groups.items()):
                    y = len(extra_vars)
                    extra_vars.append((1, 0.0))
                    binaries.append((y, js, [1.0] * len(js), "y"))
                    ys.append(y)
                binaries.append((on, ys, [1.0] * len(ys), f"spread:{minimum}"))
        if m.budget[w] >= 0:
            row(-inf, float(m.budget[w]), cols, [float(res.hourly[var_c[j]]) for j in cols])
    n_x = len(var_c)
    if not n_x:
        return SubResult(x, m.objective(x), None, "EMPTY", 0.0)
    limits = {"o": res.avail, "p": res.pool, "b": res.team_budget, "s": res.team_spot}
    for (rkind, ri), items in shared.items():
        row(-inf, float(limits[rkind][ri]), [j for j, _ in items], [v for _, v in items])
    for b, bcols, bvals, bkind in binaries:
        bj = n_x + b
        if bkind.startswith("on:"):
            _, few_s, rep_s = bkind.split(":")
            row(0.0, inf, [*bcols, bj], [*bvals, -float(few_s)])
            row(-inf, 0.0, [*bcols, bj], [*bvals, -float(rep_s)])
        elif bkind == "y":
            row(0.0, inf, [*bcols, bj], [*bvals, -1.0])
        else:
            least = float(bkind.split(":")[1])
            row(0.0, inf, [n_x + c for c in bcols] + [bj], [*bvals, -least])
    n_var = n_x + len(extra_vars)
    proto = model_pb2.ModelProto()
    proto.variables.ids.extend(range(n_var))
    proto.variables.lower_bounds.extend([0.0] * n_var)
    proto.variables.upper_bounds.extend([float(u) for u in ub] + [float(u) for u, _ in extra_vars])
    proto.variables.integers.extend([True] * n_var)
    scale = 1.0 / MONEY_SCALE
    proto.objective.linear_coefficients.ids.extend(range(n_x))
    proto.objective.linear_coefficients.values.extend([v * scale for v in obj])
    proto.linear_constraints.ids.extend(range(len(rows_lo)))
    proto.linear_constraints.lower_bounds.extend(rows_lo)
    proto.linear_constraints.upper_bounds.extend(rows_hi)
    tr_a = np.asarray(tr, np.int64)
    tc_a = np.asarray(tc, np.int64)
    tv_a = np.asarray(tv, np.float64)
    order = np.lexsort((tc_a, tr_a))
    proto.linear_constraint_matrix.row_ids.extend(tr_a[order].tolist())
    proto.linear_constraint_matrix.column_ids.extend(tc_a[order].tolist())
    proto.linear_constraint_matrix.coefficients.extend(tv_a[order].tolist())
    params = _highs_params(seed)
    params.node_limit = node_limit
    params.highs.double_options["mip_rel_gap"] = 1e-6
    if not presolve:  # on the whole component's MIP, HiGHS' presolve costs more than it saves
        params.highs.string_options["presolve"] = "off"
        # nor does the feasibility jump heuristic pay there: the plan it starts from is better
        params.highs.bool_options["mip_heuristic_run_feasibility_jump"] = False
    # The current plan as the solver's start: every freed workload's replicas where they are, its
    # on/spread indicators set from them.
    hint = np.zeros(n_var)
    hint[:n_x] = x[np.asarray(var_c, np.int64)]
    for b, bcols, _bvals, bkind in binaries:
        if bkind == "y" or bkind.startswith("on:"):
            hint[n_x + b] = float(hint[bcols].sum() > 0)
    result = _highs(proto, params, hint)
    nzf = np.flatnonzero(xf)
    fixed = int((m.cost[nzf] * xf[nzf]).sum())
    placed_fixed = np.bincount(m.cw[nzf], weights=xf[nzf], minlength=m.n_w).astype(np.int64)
    fixed += int((m.penalty * (m.replicas - placed_fixed))[~is_free].sum())
    bound: int | None = None
    dual = result.termination.objective_bounds.dual_bound
    if top_k is None and math.isfinite(dual):
        # The solver's bound, in $/h, back to money units, loosened by its tolerances.
        bound = fixed + const + math.floor(dual * MONEY_SCALE - 1e-6 * abs(dual * MONEY_SCALE) - 1)
    work = result.solve_stats.simplex_iterations / ITERATIONS_PER_UNIT  # deterministic, unlike seconds
    if not result.solutions or not result.solutions[0].primal_solution.variable_values.ids:
        return SubResult(x, m.objective(x), bound, "NOSOLUTION", work)
    vals = result.solutions[0].primal_solution.variable_values
    xn = xf.copy()
    got = dict(zip(vals.ids, vals.values, strict=True))
    for j, c in enumerate(var_c):
        xn[c] = round(got.get(j, 0.0))
    if check(m, xn):
        return SubResult(x, m.objective(x), bound, "ROUNDING", work)
    return SubResult(xn, m.objective(xn), bound, "FEASIBLE", work)


# ==================================================================================================
# One component
# ==================================================================================================


@dataclass
class ComponentResult:
    x: np.ndarray
    objective: int
    bound: int
    optimal: bool
    det_time: float
    trajectory: list[tuple[float, int, int]]  # (seconds since the component started, objective, bound)
    prices: Prices | None = None  # the prices behind the bound (large components)


def _order(m: Model, x_relaxed: np.ndarray, rc: np.ndarray, scarce_first: bool = False) -> list[int]:
    """Greedy order: higher penalty first; workloads the relaxation places before those it does not;
    then fewer GPUs per replica (more replicas fit), then index.

    ``scarce_first``: workloads with little choice go first (a budget of their own, or candidates
    that together hold at most ``SCARCE_ROOM`` times the replicas they may have), and within a
    penalty those with less room per replica. At cost, without prices, this keeps the cheap offers
    they can afford for them; otherwise higher priorities fill those offers first, where they could
    have gone elsewhere for a little more."""
    placed = np.bincount(m.cw, weights=x_relaxed, minlength=m.n_w) > 0
    counts = m.start[1:] - m.start[:-1]
    min_gpus = np.full(m.n_w, np.iinfo(np.int64).max)
    ne = np.flatnonzero(counts > 0)
    if len(ne):
        min_gpus[ne] = np.minimum.reduceat(m.gpus, m.start[ne])
    if scarce_first:
        most = np.maximum(1, m.most_replicas())
        per_replica = np.where(m.budget >= 0, m.budget // most, np.iinfo(np.int64).max)
        afford = (m.cap > 0) & (m.hourly <= per_replica[m.cw])
        room = np.bincount(m.cw, weights=np.where(afford, m.cap, 0), minlength=m.n_w) / most
        scarce = (m.budget >= 0) | (room <= SCARCE_ROOM)
        keys = np.lexsort((np.arange(m.n_w), min_gpus, ~placed, room, -m.penalty, ~scarce))
    else:
        keys = np.lexsort((np.arange(m.n_w), min_gpus, ~placed, -m.penalty))
    return [int(w) for w in keys if counts[w] > 0]


def _lp_guided(x_lp: np.ndarray, rc: np.ndarray) -> np.ndarray:
    """A greedy key that takes each workload's candidates by how much of it the LP put there (most
    first), then by reduced cost: the greedy then follows the LP's split of the shared limits
    where rounding it down would drop a workload below its minimum or spread."""
    key = np.empty(len(rc), np.int64)
    key[np.lexsort((rc, -np.round(x_lp, 6)))] = np.arange(len(rc), dtype=np.int64)
    return key


def _gangs_first(m: Model, order: list[int]) -> list[int]:
    """``order`` with the workloads that have a minimum above one or a spread first (stable): they
    need room in several places at once, which the others would take."""
    hard = ((m.fewest > 1) | (m.min_providers > 1) | (m.min_regions > 1)).tolist()
    return [w for w in order if hard[w]] + [w for w in order if not hard[w]]


def solve_exact(m: Model, seed: int) -> ComponentResult:
    t0 = time.perf_counter()
    rc = m.cost.astype(np.float64)
    x0, lb0 = relaxed_solution(m, rc)
    x = greedy(m, rc, _order(m, x0, rc))
    obj = m.objective(x)
    bound = min(obj, math.floor(lb0 - 1e-6 * abs(lb0)))
    traj = [(time.perf_counter() - t0, obj, bound)]
    r = mip(m, np.arange(m.n_w, dtype=np.int64), x, EXACT_NODES, seed=seed)
    det = r.det_time
    if r.bound is not None:
        bound = max(bound, r.bound)
    if r.objective < obj:
        x, obj = r.x, r.objective
    bound = min(bound, obj)
    traj.append((time.perf_counter() - t0, obj, bound))
    return ComponentResult(x, obj, bound, obj == bound, det, traj)


class Lagrange:
    """Subgradient ascent on the prices of the shared limits; every evaluation is a valid lower bound."""

    def __init__(self, m: Model) -> None:
        self.m = m
        self.pools = _pool_matrix(m)
        self.coef = m.spot_coef()
        n_o, n_p, n_t = len(m.avail), len(m.pool_limit), len(m.team_budget)
        self.prices = Prices(np.zeros(n_o), np.zeros(n_p), np.zeros(n_t), np.zeros(n_t))
        self.best_prices = self.prices
        self.best_lb = -math.inf
        # Row scales (each row divided by its limit), so that one step suits limits in instances,
        # GPUs, vCPUs and money alike.
        self.s_offer = np.maximum(m.avail, 1).astype(np.float64)
        self.s_pool = np.maximum(m.pool_limit, 1).astype(np.float64)
        self.s_budget = np.maximum(m.team_budget, 1).astype(np.float64)
        self.tc = m.team.astype(np.int32)[m.cw]  # (teams are few: half the memory of int64)
        self.has_t = self.tc >= 0
        self.s_share = np.maximum(1.0, np.bincount(self.tc[self.has_t],
                                                   weights=np.abs(self.coef[self.has_t]) * m.cap[self.has_t],
                                                   minlength=n_t)) if n_t else np.zeros(0)
        self.theta = THETA0
        self.stall = 0
        self.iterations = 0

    def evaluate(self, prices: Prices) -> tuple[np.ndarray, np.ndarray, float]:
        rc = prices.reduced(self.m, self.pools, self.coef)
        x_rel, val = relaxed_solution(self.m, rc)
        return rc, x_rel, val - prices.rhs_value(self.m)

    def evaluate_and_keep(self, prices: Prices) -> tuple[np.ndarray, np.ndarray, float]:
        """``evaluate``, keeping the prices as the best so far when their bound is."""
        rc, x_rel, lb = self.evaluate(prices)
        if lb > self.best_lb:
            self.best_lb, self.best_prices = lb, prices
        return rc, x_rel, lb

    def run(self, iterations: int, upper_of: Callable[[], float],
            on_iteration: Callable[[int, np.ndarray, np.ndarray], None] | None = None) -> None:
        m = self.m
        n_o, n_p, n_t = len(m.avail), len(m.pool_limit), len(m.team_budget)
        lim_offer = m.avail >= 0
        for it in range(iterations):
            prices = self.prices
            rc, x_rel, lb = self.evaluate(prices)
            self.iterations += 1
            if lb > self.best_lb + 1e-12 * abs(lb):
                self.best_lb, self.best_prices, self.stall = lb, prices, 0
            else:
                self.stall += 1
                if self.stall >= STALL:
                    self.theta, self.stall = self.theta / 2, 0
            if on_iteration is not None:
                on_iteration(it, rc, x_rel)
            upper = upper_of()
            used_o = np.bincount(m.offer, weights=m.nodes * x_rel, minlength=n_o)
            g_o = np.where(lim_offer, (used_o - m.avail) / self.s_offer, 0.0)
            ci, pi, per = self.pools
            used_p = np.bincount(pi, weights=per * x_rel[ci], minlength=n_p) if len(ci) else np.zeros(n_p)
            g_p = (used_p - m.pool_limit) / self.s_pool
            if n_t:
                tc, has = self.tc, self.has_t
                used_b = np.bincount(tc[has], weights=(m.hourly * x_rel)[has], minlength=n_t)
                g_b = np.where(m.team_budget >= 0, (used_b - m.team_budget) / self.s_budget, 0.0)
                used_s = np.bincount(tc[has], weights=(self.coef * x_rel)[has], minlength=n_t)
                g_s = np.where(m.team_share >= 0, used_s / self.s_share, 0.0)
            else:
                g_b = g_s = np.zeros(0)
            g_o = np.where((prices.offer <= 0) & (g_o < 0), 0.0, g_o)
            g_p = np.where((prices.pool <= 0) & (g_p < 0), 0.0, g_p)
            g_b = np.where((prices.budget <= 0) & (g_b < 0), 0.0, g_b)
            g_s = np.where((prices.share <= 0) & (g_s < 0), 0.0, g_s)
            norm = float((g_o**2).sum() + (g_p**2).sum() + (g_b**2).sum() + (g_s**2).sum())
            if norm <= 1e-18:
                break  # the relaxed solution keeps every shared limit: its value is the optimum
            # A target just above the best bound so far (Polyak's rule with the plan's objective
            # overshoots by orders of magnitude while that plan is far from optimal).
            target = self.best_lb + STEP_FRACTION * max(0.0, upper - self.best_lb)
            step = self.theta * max(target - lb, 1e-7 * abs(upper)) / norm
            self.prices = Prices(np.maximum(0.0, prices.offer + step * g_o / self.s_offer),
                                 np.maximum(0.0, prices.pool + step * g_p / self.s_pool),
                                 np.maximum(0.0, prices.budget + step * g_b / self.s_budget),
                                 np.maximum(0.0, prices.share + step * g_s / self.s_share))

    def bound(self, objective: int) -> int:
        if self.best_lb == -math.inf:
            return NO_BOUND
        return min(objective, math.floor(self.best_lb - 1e-9 * abs(self.best_lb)))


# ==================================================================================================
# LP relaxation by column generation
# ==================================================================================================


@dataclass
class LPResult:
    x: np.ndarray  # float per candidate: the LP solution (0 for columns never generated)
    prices: Prices  # the LP's duals on the shared limits, as Lagrangian prices (money units)
    value: float  # the restricted LP's optimum (money units): an upper bound on the LP optimum
    bound: float  # Lagrangian value at those prices (money units): a valid lower bound on the integer optimum
    rounds: int
    columns: int


def _group_order(group: np.ndarray, key: np.ndarray) -> np.ndarray:
    """The elements' order by ``group``, then ``key``, then position."""
    if len(group) and key.dtype.kind in "iu" and group.dtype.kind in "iu":
        lo, span = int(key.min()), int(key.max()) - int(key.min()) + 1
        if int(group.max()) * span + span < 2**62:  # one stable sort of one int64 key: much faster
            return np.argsort(group.astype(np.int64) * span + (key.astype(np.int64) - lo), kind="stable")
    return np.lexsort((key, group))  # stable: ties keep their positions


def _rank_in_group(group: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Per element, its rank by ``key`` (then position) among the elements of its ``group`` (0 = lowest)."""
    order = _group_order(group, key)
    g = group[order]
    first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(g) else np.zeros(0, np.int64)
    rank = np.empty(len(group), np.int64)
    rank[order] = np.arange(len(group)) - np.repeat(first, np.diff(np.r_[first, len(group)]))
    return rank


class _LPRows:
    """The LP relaxation's fixed row set: one row per workload (replicas, capped at what its budget
    affords), per workload budget, per limited offer, per pool, per team budget and per team spot
    share, and the spread rows (with their indicator columns) of workloads with a spread, as the
    exact model has them. The candidate columns are any subset; the rows do not depend on it."""

    def __init__(self, m: Model) -> None:
        self.m = m
        live = m.cap > 0
        n = 0
        self.w_rows = np.unique(m.cw[live])
        n += len(self.w_rows)
        self.b_rows = np.unique(m.cw[live & (m.budget[m.cw] >= 0)])
        n += len(self.b_rows)
        self.o_rows = np.flatnonzero(m.avail >= 0)
        n += len(self.o_rows)
        self.n_pools = len(m.pool_limit)
        n += self.n_pools
        self.t_budget = np.flatnonzero(m.team_budget >= 0)
        n += len(self.t_budget)
        self.t_share = np.flatnonzero(m.team_share >= 0)
        n += len(self.t_share)
        most = m.most_replicas()
        hi = [most[self.w_rows], m.budget[self.b_rows], m.avail[self.o_rows], m.pool_limit,
              m.team_budget[self.t_budget], np.zeros(len(self.t_share), np.int64)]
        # Spread, relaxed as in the exact model: per workload an indicator ``on`` in [0, 1] with
        # lo * on <= placed <= most * on, and per spread dimension an indicator per group (provider
        # or region) of its candidates, at most what the group holds, adding up to least * on. Not
        # for workloads whose pruned candidates stand in as one column (their groups are unknown).
        sw = np.flatnonzero((m.min_providers > 1) | (m.min_regions > 1))
        sw = sw[np.isin(sw, self.w_rows)]
        if len(m.dropped):
            sw = sw[~np.isfinite(m.dropped[sw])]
        self.s_w = sw
        self.s_pos = np.full(m.n_w, -1, np.int64)
        self.s_pos[sw] = np.arange(len(sw))
        self.s_base = n
        n += 2 * len(sw)
        self.s_dims: list[tuple[np.ndarray, np.ndarray, int, np.ndarray, int]] = []
        aux_r: list[np.ndarray] = [self.s_base + np.arange(len(sw)), self.s_base + len(sw) + np.arange(len(sw))]
        aux_c: list[np.ndarray] = [np.arange(len(sw)), np.arange(len(sw))]
        aux_v: list[np.ndarray] = [np.maximum(m.fewest[sw], 1).astype(np.float64), -most[sw].astype(np.float64)]
        n_aux = len(sw)
        for least, key in ((m.min_providers, m.provider), (m.min_regions, m.region)):
            dw = sw[least[sw] > 1]
            if not len(dw):
                continue
            counts = m.start[dw + 1] - m.start[dw]
            cs = _ranges(m.start[dw], counts)
            cs = cs[m.cap[cs] > 0]
            span = int(key.max()) + 1
            keys = np.unique(m.cw[cs] * span + key[cs])  # the groups, by workload
            g_base = n
            n += len(keys)
            c_base = n  # the count rows, one per workload of this dimension
            n += len(dw)
            dpos = np.full(m.n_w, -1, np.int64)
            dpos[dw] = np.arange(len(dw))
            gw = keys // span
            y_cols = n_aux + np.arange(len(keys))
            aux_r += [g_base + np.arange(len(keys)), c_base + dpos[gw],
                      c_base + np.arange(len(dw))]
            aux_c += [y_cols, y_cols, self.s_pos[dw]]
            aux_v += [np.ones(len(keys)), -np.ones(len(keys)), least[dw].astype(np.float64)]
            n_aux += len(keys)
            self.s_dims.append((key, keys, span, dpos, g_base))
        hi.append(np.zeros(n - self.s_base, np.int64))
        self.n_aux = n_aux
        self.aux = (np.concatenate(aux_r), np.concatenate(aux_c), np.concatenate(aux_v))
        self.n_rows = n
        self.hi = np.concatenate(hi).astype(np.float64)

    def _spread_rows(self, cols: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """(rows, positions in ``cols``, value) of the candidates ``cols`` in the spread rows."""
        m = self.m
        k = np.flatnonzero(self.s_pos[m.cw[cols]] >= 0)
        if not len(k):
            return []
        c = cols[k]
        sp = self.s_pos[m.cw[c]]
        out = [(self.s_base + sp, k, -1.0), (self.s_base + len(self.s_w) + sp, k, 1.0)]
        for key, keys, span, dpos, g_base in self.s_dims:
            sel = dpos[m.cw[c]] >= 0
            g = np.searchsorted(keys, m.cw[c[sel]] * span + key[c[sel]])
            out.append((g_base + g, k[sel], -1.0))
        return out

    def spread_term(self, y: np.ndarray) -> np.ndarray:
        """Per candidate, the sum over the spread rows of its coefficient times the row's dual."""
        m = self.m
        out = np.zeros(m.n_c)
        if len(self.s_w):
            cs = np.flatnonzero((self.s_pos[m.cw] >= 0) & (m.cap > 0))  # the candidates that can be columns
            for rows, k, v in self._spread_rows(cs):
                np.add.at(out, cs[k], v * np.minimum(y[rows], 0.0))
        return out

    def matrix(self, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column position, value) triplets of the candidates ``cols``."""
        m = self.m
        k = np.arange(len(cols), dtype=np.int64)
        cw, off = m.cw[cols], m.offer[cols]
        r: list[np.ndarray] = [np.searchsorted(self.w_rows, cw)]
        c: list[np.ndarray] = [k]
        v: list[np.ndarray] = [np.ones(len(cols))]
        base = len(self.w_rows)
        hb = m.budget[cw] >= 0
        r.append(base + np.searchsorted(self.b_rows, cw[hb]))
        c.append(k[hb])
        v.append(m.hourly[cols][hb].astype(np.float64))
        base += len(self.b_rows)
        lim = m.avail[off] >= 0
        r.append(base + np.searchsorted(self.o_rows, off[lim]))
        c.append(k[lim])
        v.append(m.nodes[cols][lim].astype(np.float64))
        base += len(self.o_rows)
        ci, pi, per = _pool_matrix(m)
        pos = np.full(m.n_c, -1)
        pos[cols] = k
        sel = pos[ci] >= 0
        r.append(base + pi[sel])
        c.append(pos[ci[sel]])
        v.append(per[sel].astype(np.float64))
        base += self.n_pools
        t = m.team[cw]
        if len(self.t_budget):
            pos = np.full(len(m.team_budget), -1)
            pos[self.t_budget] = np.arange(len(self.t_budget))
            sel = (t >= 0) & (pos[np.maximum(t, 0)] >= 0)
            r.append(base + pos[t[sel]])
            c.append(k[sel])
            v.append(m.hourly[cols][sel].astype(np.float64))
        base += len(self.t_budget)
        if len(self.t_share):
            pos = np.full(len(m.team_share), -1)
            pos[self.t_share] = np.arange(len(self.t_share))
            coef = m.spot_coef()[cols]
            sel = (t >= 0) & (pos[np.maximum(t, 0)] >= 0) & (coef != 0)
            r.append(base + pos[t[sel]])
            c.append(k[sel])
            v.append(coef[sel].astype(np.float64))
        for rows, pos_k, val in self._spread_rows(cols):
            r.append(rows)
            c.append(pos_k)
            v.append(np.full(len(rows), val))
        return np.concatenate(r), np.concatenate(c), np.concatenate(v)

    def duals(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, Prices]:
        """Row duals (in $ per row unit, <= 0) as per-workload duals, per-workload budget duals and
        Lagrangian prices on the shared limits (money units, >= 0)."""
        m = self.m
        y = np.minimum(y, 0.0)
        a = len(self.w_rows)
        yw = np.zeros(m.n_w)
        yw[self.w_rows] = y[:a]
        yb = np.zeros(m.n_w)
        yb[self.b_rows] = y[a:a + len(self.b_rows)]
        a += len(self.b_rows)
        yo = np.zeros(len(m.avail))
        yo[self.o_rows] = y[a:a + len(self.o_rows)]
        a += len(self.o_rows)
        yp = y[a:a + self.n_pools].copy()
        a += self.n_pools
        ytb = np.zeros(len(m.team_budget))
        ytb[self.t_budget] = y[a:a + len(self.t_budget)]
        a += len(self.t_budget)
        yts = np.zeros(len(m.team_share))
        yts[self.t_share] = y[a:a + len(self.t_share)]
        s = float(MONEY_SCALE)
        return yw, yb, Prices(-yo * s, -yp * s, -ytb * s, -yts * s)


class _RestrictedLP:
    """The restricted LP of the column generation, kept in one HiGHS instance (highspy): the rows
    are added once, columns between solves, so that each re-solve starts from the previous optimal
    basis (the new columns only need primal simplex steps). Rebuilding the LP for every round
    through MathOpt cost as much as the first solve every time (bench/README.md).

    highspy is pinned to the HiGHS release that the pinned ortools embeds (pyproject.toml): the
    two share this process. One thread and a fixed seed keep it deterministic."""

    def __init__(self, m: Model, rows: _LPRows) -> None:
        import highspy

        self.m, self.rows = m, rows
        self.h = highspy.Highs()
        # Without presolve: on the large instances' first restricted LPs it took half the solve
        # (bench/README.md).
        for name, value in (("output_flag", False), ("threads", 1), ("random_seed", 0), ("presolve", "off")):
            self.h.setOptionValue(name, value)
        self.solved = 0  # columns in the LP at its last solve
        n = rows.n_rows
        self.h.addRows(n, np.full(n, -highspy.kHighsInf), rows.hi, 0, np.zeros(1, np.int32), np.zeros(0, np.int32),
                       np.zeros(0))
        self.cols = np.zeros(0, np.int64)
        self._optimal = highspy.HighsModelStatus.kOptimal
        # On a pruned model, one column per workload for the candidates prune() dropped: its row
        # only (replicas), at the cheapest price dropped, so that the LP stays a relaxation of the
        # unpruned one. These columns come first.
        self.n_virtual = 0
        if len(m.dropped):
            w = rows.w_rows[m.dropped[rows.w_rows] < m.penalty[rows.w_rows]]
            if len(w):
                obj = (m.dropped[w] - m.penalty[w]) / MONEY_SCALE
                pos = np.searchsorted(rows.w_rows, w).astype(np.int32)
                self.h.addCols(len(w), obj, np.zeros(len(w)), rows.hi[pos], len(w),
                               np.arange(len(w), dtype=np.int32), pos, np.ones(len(w)))
                self.n_virtual = len(w)
        # The spread indicators (``_LPRows``), then the candidates.
        if rows.n_aux:
            r, c, v = rows.aux
            order = np.lexsort((r, c))
            r, c, v = r[order], c[order], v[order]
            starts = np.searchsorted(c, np.arange(rows.n_aux)).astype(np.int32)
            self.h.addCols(rows.n_aux, np.zeros(rows.n_aux), np.zeros(rows.n_aux), np.ones(rows.n_aux), len(v),
                           starts, r.astype(np.int32), v.astype(np.float64))
        self.n_skip = self.n_virtual + rows.n_aux

    def add(self, cols: np.ndarray) -> None:
        """Add the candidates ``cols`` as columns (none of them may be in the LP already)."""
        if not len(cols):
            return
        m = self.m
        r, c, v = self.rows.matrix(cols)
        order = np.lexsort((r, c))
        r, c, v = r[order], c[order], v[order]
        starts = np.searchsorted(c, np.arange(len(cols))).astype(np.int32)
        # The objective in $/h (money units / MONEY_SCALE) keeps HiGHS' tolerances meaningful.
        obj = (m.cost[cols] - m.penalty[m.cw[cols]]).astype(np.float64) / MONEY_SCALE
        self.h.addCols(len(cols), obj, np.zeros(len(cols)), m.cap[cols].astype(np.float64), len(v), starts,
                       r.astype(np.int32), v.astype(np.float64))
        self.cols = np.concatenate([self.cols, cols])

    def solve(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(values of the columns in the order added, row duals, optimum in money units).

        A re-solve after a few new columns (under ``LP_PRIMAL_SHARE`` of those before) runs the primal
        simplex: the last basis stays primal feasible (the new columns are at zero) but not dual
        feasible (they price below zero). On the large instances' last rounds the dual simplex took
        about as many iterations there as a fresh solve (15-19 k), the primal 1.5-2 k. After many new
        columns the dual simplex is still faster."""
        added = len(self.cols) - self.solved
        primal = self.solved > 0 and added < LP_PRIMAL_SHARE * self.solved
        self.h.setOptionValue("simplex_strategy", 4 if primal else 1)
        self.solved = len(self.cols)
        self.h.run()
        status = self.h.getModelStatus()
        if status != self._optimal:
            raise PlacementError(f"internal error in the large-instance planner: LP relaxation ended "
                                 f"{self.h.modelStatusToString(status)}")
        sol = self.h.getSolution()
        const = float((self.m.penalty * self.m.replicas).sum())
        value = const + float(self.h.getInfo().objective_function_value) * MONEY_SCALE
        return (np.asarray(sol.col_value, np.float64)[self.n_skip:], np.asarray(sol.row_dual, np.float64),
                value)


def lp_relaxation(m: Model, x_start: np.ndarray, lagrange: Lagrange, floor: float) -> LPResult:
    """The LP relaxation of the model by column generation.

    The restricted LP starts from every workload's ``LP_FIRST_COLUMNS`` cheapest candidates and the
    candidates ``x_start`` uses; each round prices every candidate at the LP's duals (numpy, all
    candidates at once) and adds each workload's ``LP_ADD_COLUMNS`` most negative (twice as many
    each round, up to 16 times as many: slow convergence gets more columns). It stops when the
    Lagrangian value at the duals (a valid lower bound, computed by ``lagrange``) is within
    ``LP_TOLERANCE`` of the restricted LP's optimum (which is at least the LP's optimum), measured
    above ``floor`` (the penalty of the work no plan can place), when no
    column prices out, or after ``LP_ROUNDS`` rounds. The restricted LP stays in one HiGHS instance
    between rounds (``_RestrictedLP``). Deterministic: HiGHS on one thread."""
    rows = _LPRows(m)
    lp = _RestrictedLP(m, rows)
    live = m.cap > 0
    keep = live & ((_rank_in_group(m.cw, m.cost) < LP_FIRST_COLUMNS) | (x_start > 0))
    added = np.zeros(m.n_c, bool)
    best: LPResult | None = None
    for rnd in range(1, LP_ROUNDS + 1):
        lp.add(np.flatnonzero(keep & ~added))
        added |= keep
        xv, y, value = lp.solve()
        yw, yb, prices = rows.duals(y)
        rc, _x_rel, lb = lagrange.evaluate(prices)
        x = np.zeros(m.n_c)
        x[lp.cols] = xv
        if best is None or lb > best.bound:
            best = LPResult(x, prices, value, lb, rnd, len(lp.cols))
        else:
            best = replace(best, x=x, value=min(best.value, value), rounds=rnd, columns=len(lp.cols))
        # Reduced costs of the LP columns at these duals, in $ (the per-workload rows included).
        red = ((m.cost - m.penalty[m.cw]) / MONEY_SCALE - yw[m.cw] - yb[m.cw] * m.hourly
               + (rc - m.cost) / MONEY_SCALE - rows.spread_term(y))
        spread = max(1.0, value - floor)
        if (value - best.bound) <= LP_TOLERANCE * spread:
            break
        neg = np.flatnonzero(live & ~keep & (red < -1e-7))
        if not len(neg):
            break
        keep[neg[_rank_in_group(m.cw[neg], red[neg]) < LP_ADD_COLUMNS << min(rnd - 1, 4)]] = True
    assert best is not None
    return best


def round_lp(m: Model, x_lp: np.ndarray) -> np.ndarray:
    """The LP solution rounded down to a plan that keeps every hard constraint: replicas floored,
    workloads left under their minimum or their spread dropped, and spot replicas taken off teams
    whose interruptible share the rounding broke (most spot GPUs first)."""
    x = np.minimum(np.floor(x_lp + 1e-6).astype(np.int64), m.cap)
    placed = np.bincount(m.cw, weights=x, minlength=m.n_w).astype(np.int64)
    bad = (placed > 0) & (placed < m.fewest)
    for w in np.flatnonzero((placed > 0) & ((m.min_providers > 1) | (m.min_regions > 1))).tolist():
        s, e = int(m.start[w]), int(m.start[w + 1])
        on = x[s:e] > 0
        if len(set(m.provider[s:e][on].tolist())) < m.min_providers[w] or \
                len(set(m.region[s:e][on].tolist())) < m.min_regions[w]:
            bad[w] = True
    x[bad[m.cw]] = 0
    if len(m.team_share):
        coef = m.spot_coef()
        tc = m.team[m.cw]
        has = tc >= 0
        row = np.bincount(tc[has], weights=(coef * x)[has], minlength=len(m.team_share))
        for t in np.flatnonzero((m.team_share >= 0) & (row > 0)).tolist():
            over = float(row[t])
            held = np.flatnonzero((tc == t) & (x > 0) & (coef > 0))
            for w in dict.fromkeys(m.cw[held[np.argsort(-coef[held], kind="stable")]].tolist()):
                if over <= 0:
                    break
                s, e = int(m.start[w]), int(m.start[w + 1])
                over -= float((coef[s:e] * x[s:e]).sum())
                x[s:e] = 0
    return x


def fix_integral(m: Model, x_lp: np.ndarray, x: np.ndarray, seed: int) -> SubResult:
    """The LP's solution kept wherever it is integral, the workloads it splits (and those its
    rounding drops) re-optimised by one MIP over all their candidates, the rest fixed: RINS at the
    LP, with no incumbent to agree with. Where the LP of a component is nearly integral, this MIP
    is small and often lands within a fraction of a percent of the LP. Returns ``x`` unchanged
    (its objective, no work) when the LP is integral; the result is checked like every MIP's and
    is not necessarily better than ``x`` (the integral part may leave the split workloads no
    room)."""
    split = np.abs(x_lp - np.round(x_lp)) > 1e-6
    is_free = np.zeros(m.n_w, bool)
    is_free[m.cw[split]] = True
    if not is_free.any():
        return SubResult(x, m.objective(x), None, "INTEGRAL", 0.0)
    kept = np.where(is_free[m.cw], 0.0, x_lp)
    xk = round_lp(m, kept)
    is_free[m.cw[np.round(kept).astype(np.int64) != xk]] = True
    xk[is_free[m.cw]] = 0
    r = mip(m, np.flatnonzero(is_free), xk, NEIGHBOURHOOD_NODES, seed=seed)
    return replace(r, det_time=max(NEIGHBOURHOOD_WORK, r.det_time))


def _repair(m: Model, x: np.ndarray, obj: int, rc: np.ndarray, lag: Lagrange, det_budget: float, seed: int,
            k: int, gap: Callable[[int], float], improved_to: Callable[[np.ndarray, int], None],
            seed_size: int | None = None, cost_size: int | None = None) -> tuple[np.ndarray, int, float, int]:
    """Neighbourhood repair of ``x`` at reduced costs ``rc``: rounds of neighbourhoods around
    unplaced replicas while they improve; when they stall with at most ``FEW_SHORT`` workloads
    short, one round of chain neighbourhoods around those (``_chains``; once per set of short
    workloads); then one round around costly placements and contended limits, again while that
    improves. Those start at ``cost_size`` workloads (default: the full size, ``_hood_size``) and
    double, up to the full size, after a round that brings nothing; the repair ends after such a
    round at the full size. Each neighbourhood counts its HiGHS simplex iterations
    (``ITERATIONS_PER_UNIT`` a unit), at least ``NEIGHBOURHOOD_WORK``
    deterministic units against ``det_budget``. Stops when ``gap(obj)`` is under ``TARGET_GAP``.
    ``seed_size`` caps the neighbourhoods around short workloads (``_neighbourhoods``).
    Returns (plan, objective, units spent, neighbourhoods solved so far)."""
    tight_offers = np.argsort(-(lag.best_prices.offer * (m.avail >= 0)), kind="stable")
    tight_pools = np.argsort(-lag.best_prices.pool, kind="stable")

    def topped_up(x: np.ndarray, obj: int) -> tuple[np.ndarray, int]:
        # The neighbourhoods move work around and can leave room where a workload outside them is
        # still short: the greedy tops those up.
        xt = top_up(m, x, rc)
        if xt is not x and (ot := m.objective(xt)) < obj:
            improved_to(xt, ot)
            return xt, ot
        return x, obj

    det = 0.0
    seeds_phase = True
    chained: set[bytes] = set()  # the sets of short workloads chain neighbourhoods were tried around
    chain = False
    full = _hood_size(m)
    size = full if cost_size is None else min(cost_size, full)
    while det < det_budget and gap(obj) > TARGET_GAP:
        improved = False
        if chain:
            hoods = _chains(m, x, rc)
        else:
            hoods = _neighbourhoods(m, x, rc, tight_offers, tight_pools, lag.best_prices, seeds_phase, seed_size,
                                    size)
        for hood in hoods:
            if det >= det_budget or gap(obj) <= TARGET_GAP:
                break
            r = mip(m, hood, x, NEIGHBOURHOOD_NODES, rc, NEIGHBOURHOOD_TOP_K, seed=seed + k)
            det += max(NEIGHBOURHOOD_WORK, r.det_time)
            k += 1
            if r.objective < obj:
                x, obj = r.x, r.objective
                improved = True
                improved_to(x, obj)
                # At once, before later neighbourhoods take the room it left for smaller gains (on
                # xxl-tight the top-up after four neighbourhoods gained 158 k $/h, after seven more none).
                x, obj = topped_up(x, obj)
        if chain:  # then the seeds again if it placed something, else the costly placements
            chain = False
            seeds_phase = improved
        elif seeds_phase and (not improved or not hoods):
            # The seeds' neighbourhoods stall: chains around the workloads still short first.
            chain = bool(hoods) and _chain_worth(m, x, chained)
            seeds_phase = chain
        elif not seeds_phase:
            if not improved:
                if size >= full:
                    break
                size = min(full, 2 * size)
                continue
            seeds_phase = True
    x, obj = topped_up(x, obj)  # (it changes the plan only where no neighbourhood improved it)
    return x, obj, det, k


def _short_by_penalty(m: Model, x: np.ndarray) -> np.ndarray:
    """The workloads ``x`` leaves short (``_short``), the highest penalty first (then by index)."""
    short = np.flatnonzero(_short(m, np.bincount(m.cw, weights=x, minlength=m.n_w).astype(np.int64)))
    out: np.ndarray = short[np.lexsort((short, -m.penalty[short]))]
    return out


def _offer_holders(m: Model, x: np.ndarray) -> dict[int, list[int]]:
    """Per offer, the workloads ``x`` places on it."""
    holders: dict[int, list[int]] = defaultdict(list)
    for c in np.flatnonzero(x).tolist():
        holders[int(m.offer[c])].append(int(m.cw[c]))
    return holders


def _chain_worth(m: Model, x: np.ndarray, tried: set[bytes]) -> bool:
    """Whether chain neighbourhoods (``_chains``) are worth a round: at most ``FEW_SHORT`` workloads
    left short, and not this same set of them already (it is added to ``tried``)."""
    short = _short_by_penalty(m, x)
    key = short.tobytes()
    if not 0 < len(short) <= FEW_SHORT or key in tried:
        return False
    tried.add(key)
    return True


def _chains(m: Model, x: np.ndarray, rc: np.ndarray) -> list[np.ndarray]:
    """Per workload left short, a neighbourhood grown breadth-first along chains of moves: its best
    offers at the reduced costs ``rc`` (``CHAIN_OFFERS``), their holders, those holders' best offers,
    theirs, and so on, up to ``CHAIN_WORKLOADS`` workloads; only those that reach past the holders
    of its own offers (the seeds' neighbourhood held those already). Where the room a short workload needs
    is held by workloads whose own alternatives are full too, only a chain frees it: the
    neighbourhoods of ``_neighbourhoods`` stop at the holders of its offers and their pools. (On
    large-tight from another LP vertex, one replica stayed short through them and was placed only by
    the whole-component MIP, a 22 s solve; its offer's 12 holders had to move first. A chain
    neighbourhood of 300 placed it in 0.2 s.)"""
    holders = _offer_holders(m, x)
    out = []
    for seed in _short_by_penalty(m, x).tolist():
        chosen = dict.fromkeys([seed])
        frontier = [seed]
        seen: set[int] = set()
        ring = 0  # of the workloads added now: 1 = holders of the seed's own offers
        far = False  # whether any holder beyond those was added
        while frontier and len(chosen) < CHAIN_WORKLOADS:
            ring += 1
            nxt = []
            for w in frontier:
                s, e = int(m.start[w]), int(m.start[w + 1])
                for c in (s + np.argsort(rc[s:e], kind="stable")[:CHAIN_OFFERS]).tolist():
                    o = int(m.offer[c])
                    if o in seen:
                        continue
                    seen.add(o)
                    for h in holders.get(o, ()):
                        if h not in chosen and len(chosen) < CHAIN_WORKLOADS:
                            chosen[h] = None
                            nxt.append(h)
                            far = far or ring > 1
            frontier = nxt
        # A chain that ends at the holders of the short workload's own offers holds no more than its
        # seeds' neighbourhood did (those holders, and more): not solved again.
        if far:
            out.append(np.asarray(sorted(chosen), np.int64))
    return out


def _short(m: Model, placed: np.ndarray) -> np.ndarray:
    """Per workload, whether it could have more replicas than the ``placed`` ones: fewer than it
    may have (``most_replicas``), and not one no plan can place (no room among its candidates)."""
    out: np.ndarray = (placed < m.most_replicas()) & (_room(m) > 0)
    return out


def squeaky(m: Model, rc: np.ndarray, order: list[int], x: np.ndarray, obj: int, rounds: int,
            improved: Callable[[int], None] | None = None) -> tuple[np.ndarray, int]:
    """Squeaky-wheel rounds of the greedy (Joslin and Clements, JAIR 1999): the greedy again from
    scratch, the workloads the last plan ``x`` left short (``_short``) first, then the others, each
    group in the last round's ``order``; at most ``rounds`` times, until a round brings no better
    plan. Returns the best plan and its objective; ``improved`` hears of each better one."""
    for _ in range(rounds):
        placed = np.bincount(m.cw, weights=x, minlength=m.n_w).astype(np.int64)
        short = _short(m, placed).tolist()
        order = [w for w in order if short[w]] + [w for w in order if not short[w]]
        xn = greedy(m, rc, order)
        on = m.objective(xn)
        if on >= obj:
            break
        x, obj = xn, on
        if improved is not None:
            improved(obj)
    return x, obj


def top_up(m: Model, x: np.ndarray, rc: np.ndarray) -> np.ndarray:
    """``x`` with the workloads that could have more replicas (``_short``) topped up by the greedy
    at ``rc`` where the shared limits still have room; ``x`` itself when none could."""
    short = _short(m, np.bincount(m.cw, weights=x, minlength=m.n_w).astype(np.int64))
    if not short.any():
        return x
    order = [w for w in _order(m, x, rc) if short[w]]
    return greedy(m, rc, order, Residual(m, x), x.copy())


def solve_large(m: Model, det_budget: float, seed: int, unplaceable: int,
                progress: Callable[[int, int], None] | None = None, start: np.ndarray | None = None,
                prove: bool = True) -> ComponentResult:
    """One large component: the LP relaxation, its rounding, neighbourhood repair and one MIP over
    every workload's best candidates (module docstring). ``start`` is a feasible first plan (the
    capacity-aware greedy at cost, when the caller has it already). ``prove`` allows the root-node
    MIP for the bound (not for a part of a split component, whose bound nothing uses)."""
    t0 = time.perf_counter()
    traj: list[tuple[float, int, int]] = []
    lag = Lagrange(m)
    cost = m.cost.astype(np.float64)
    x = start.copy() if start is not None else greedy(m, cost, _order(m, np.zeros(m.n_c, np.int64), cost))
    obj = m.objective(x)

    proven = NO_BOUND  # the best MIP dual bound of the whole component

    def best_bound(o: int | None = None) -> int:
        o = obj if o is None else o
        return min(o, max(lag.bound(o), proven))

    def note() -> None:
        b = best_bound()
        traj.append((time.perf_counter() - t0, obj, b))
        if progress is not None:
            progress(obj, b)

    def consider(xn: np.ndarray) -> None:
        nonlocal x, obj
        on = m.objective(xn)
        if on < obj and not check(m, xn):
            x, obj = xn, on

    # Zero prices: the relaxation without shared limits, a first valid bound.
    lag.evaluate_and_keep(lag.prices)
    note()
    # The LP relaxation (column generation); its duals are the prices, its value the bound.
    lp = lp_relaxation(m, x, lag, float(unplaceable))
    lag.prices = lp.prices
    rc, x_rel, _ = lag.evaluate_and_keep(lp.prices)
    order = _order(m, x_rel, rc)
    # Primal plans: the LP rounded down and topped up at the LP's reduced costs; the greedy at them.
    xr = round_lp(m, lp.x)
    consider(greedy(m, rc, order, Residual(m, xr), xr))
    consider(greedy(m, rc, order))
    consider(greedy(m, _lp_guided(lp.x, rc), _gangs_first(m, order)))
    note()

    def gap(o: int | None = None) -> float:
        o = obj if o is None else o
        return (o - best_bound(o)) / max(1.0, o - unplaceable)

    def improved_to(xn: np.ndarray, on: int) -> None:
        nonlocal x, obj
        x, obj = xn, on
        note()

    # Neighbourhood repair first, on half of the budget (the whole-component MIP's share aside): it
    # puts back most of what the rounding dropped within seconds.
    global_mip = m.n_w <= GLOBAL_MIP_WORKLOADS and det_budget >= GLOBAL_MIP_WORK
    # (A component of up to GLOBAL_MIP_FIRST_WORKLOADS gets its MIP first: HiGHS solves it in about
    # the time of a few neighbourhoods, and better from a plan close to the LP than from a repaired one.)
    first = max(0.0, det_budget - (GLOBAL_MIP_WORK if global_mip else 0.0)) / 2
    det0 = 0.0
    if global_mip and m.n_w <= GLOBAL_MIP_FIRST_WORKLOADS:
        first = 0.0
        # Before it, the LP kept where it is integral and one small MIP over the rest: on a tight
        # component this is most of the way in a fraction of the whole component's MIP, which then
        # starts from it.
        fixed = fix_integral(m, lp.x, x, seed)
        det0 = fixed.det_time
        if fixed.objective < obj:
            improved_to(fixed.x, fixed.objective)
    x, obj, det, k = _repair(m, x, obj, rc, lag, first, seed, 0, gap, improved_to,
                             cost_size=COST_FIRST_WORKLOADS)
    det += det0
    if global_mip and gap() > TARGET_GAP:
        # The whole component as one MIP over each workload's few best candidates at the LP's
        # reduced costs (and those the plan uses): the LP is nearly integral, so HiGHS closes most
        # of what the neighbourhoods leave at its root (they stall where a dropped workload needs
        # many others moved at once).
        r = mip(m, np.arange(m.n_w, dtype=np.int64), x, GLOBAL_MIP_NODES, rc, GLOBAL_MIP_TOP_K, seed=seed,
                presolve=False)
        det += GLOBAL_MIP_WORK
        if r.objective < obj:
            improved_to(r.x, r.objective)
    if prove and gap() > BOUND_MIP_GAP and m.n_c <= BOUND_MIP_CANDIDATES and not m.pruned:
        # Still far above the bound: the LP may be weak where all-or-nothing workloads meet full
        # offers (it fills the last room of an offer with a fraction of a replica). The root node of
        # the whole component's MIP over every candidate, with HiGHS' cutting planes, bounds the
        # integer problem itself (large-residency: 13.4 % above the LP, 0.3 % above this bound).
        r = mip(m, np.arange(m.n_w, dtype=np.int64), x, 1, seed=seed, presolve=False)
        det += r.det_time
        if r.bound is not None:
            proven = max(proven, r.bound)
        if r.objective < obj:
            improved_to(r.x, r.objective)
        else:
            note()
    x, obj, spent, k = _repair(m, x, obj, rc, lag, det_budget - det, seed, k, gap, improved_to,
                               cost_size=COST_FIRST_WORKLOADS)
    det += spent
    if gap() > TARGET_GAP:
        # A few subgradient steps from the LP's prices: the integer per-workload problems can lift
        # the bound above the LP's.
        lag.theta = THETA0 / 8
        lag.run(BOUND_ITERATIONS, lambda: float(obj))
        note()
    bound = best_bound()
    return ComponentResult(x, obj, bound, obj == bound, det, traj, lag.best_prices)


def _hood_size(m: Model) -> int:
    """The full size of a neighbourhood: a tenth of the component's workloads, 300 at least."""
    return max(NEIGHBOURHOOD_WORKLOADS, m.n_w // NEIGHBOURHOOD_SHARE)


def _neighbourhoods(m: Model, x: np.ndarray, rc: np.ndarray, tight_offers: np.ndarray, tight_pools: np.ndarray,
                    prices: Prices, seeds_phase: bool, seed_size: int | None = None,
                    cost_size: int | None = None) -> list[np.ndarray]:
    """Sets of workloads to re-optimise together, deterministic: around the workloads with unplaced
    replicas (with the workloads holding the offers and pools they would use) when ``seeds_phase``;
    otherwise around the workloads paying most above their cheapest candidate, then the most
    contended offers and pools. ``seed_size`` caps the size of the neighbourhoods around short
    workloads (default: the full size, ``_hood_size``), ``cost_size`` that of the others (default:
    the full size)."""
    placed = np.bincount(m.cw, weights=x, minlength=m.n_w).astype(np.int64)
    counts = m.start[1:] - m.start[:-1]
    # Workloads that could have more replicas: not those no plan can place (no room at all) nor
    # those at the most their budget affords.
    short = _short_by_penalty(m, x)
    holders_o = _offer_holders(m, x)
    pools_of = [m.pool_id[m.pool_start[o]:m.pool_start[o + 1]].tolist() for o in range(len(m.avail))]
    holders_p: dict[int, set[int]] = defaultdict(set)
    for o, ws in holders_o.items():
        for p in pools_of[o]:
            holders_p[p].update(ws)
    out: list[np.ndarray] = []
    size = _hood_size(m)
    small = size if cost_size is None else cost_size

    def grow(seeds: list[int], offers: list[int], size: int = small) -> np.ndarray:
        chosen = dict.fromkeys(seeds)
        pools_seen: set[int] = set()
        for o in offers:
            for w in holders_o.get(o, []):
                chosen.setdefault(w)
            pools_seen.update(pools_of[o])
        extra: set[int] = set()
        for p in sorted(pools_seen):
            extra.update(holders_p.get(p, ()))
        for w in sorted(extra, key=lambda w: (int(m.penalty[w]), w)):
            if len(chosen) >= size:
                break
            chosen.setdefault(w)
        ws = list(chosen)[:size]
        return np.asarray(sorted(ws), np.int64)

    # Few workloads left short: one neighbourhood each, so that all the room around one goes to it
    # (a dropped all-or-nothing workload may need every holder of its offers moved at once).
    per = SEEDS_PER_NEIGHBOURHOOD if len(short) > FEW_SHORT else 1
    around = min(size, seed_size) if seed_size is not None else size
    for i in range(0, len(short), per):
        seeds = short[i:i + per].tolist()
        offers: list[int] = []
        for w in seeds:
            s, e = int(m.start[w]), int(m.start[w + 1])
            best = s + np.argsort(rc[s:e], kind="stable")[:6]
            offers.extend(int(m.offer[c]) for c in best)
            offers.extend(int(m.offer[c]) for c in s + np.argsort(m.cost[s:e], kind="stable")[:6])
        out.append(grow(seeds, sorted(set(offers)), around))
    if seeds_phase:
        return [h for h in out if len(h)]
    out = []
    # Cost: the placed workloads paying most above their cheapest candidate, with the holders of those.
    ne = np.flatnonzero(counts > 0)
    if len(ne):
        cheapest = np.zeros(m.n_w, np.int64)
        cheapest[ne] = np.minimum.reduceat(m.cost, m.start[ne])
        paid = np.bincount(m.cw, weights=m.cost * x, minlength=m.n_w)
        regret = paid - placed * cheapest
        worst = np.flatnonzero(regret > 0)
        worst = worst[np.lexsort((worst, -regret[worst]))][:REGRET_BLOCKS * REGRET_SEEDS]
        for i in range(0, len(worst), REGRET_SEEDS):
            seeds = worst[i:i + REGRET_SEEDS].tolist()
            offers = []
            for w in seeds:
                s, e = int(m.start[w]), int(m.start[w + 1])
                offers.extend(int(m.offer[c]) for c in s + np.argsort(m.cost[s:e], kind="stable")[:3])
            out.append(grow(seeds, sorted(set(offers))))
    for o in tight_offers[:20].tolist():
        if prices.offer[o] <= 0:
            break
        out.append(grow([], [o]))
    for p in tight_pools[:10].tolist():
        if prices.pool[p] <= 0:
            break
        offers = [o for o in range(len(m.avail)) if p in pools_of[o]]
        out.append(grow([], offers))
    return [h for h in out if len(h)]


# ==================================================================================================
# POP-style partitioning of very large components
# ==================================================================================================


def _split(total: np.ndarray, demand: np.ndarray) -> np.ndarray:
    """Integer shares of each limit ``total`` (n) between k parts in proportion to their ``demand``
    (k x n); the shares of a limit add up to it (largest remainders first, then the lower part).
    Unlimited limits (-1) stay unlimited in every part."""
    k = demand.shape[0]
    d = demand.astype(np.float64)
    tot = d.sum(axis=0)
    frac = np.where(tot > 0, d / np.where(tot > 0, tot, 1.0), 1.0 / k)
    t = np.maximum(total, 0).astype(np.float64)
    raw = frac * t
    base = np.floor(raw + 1e-9).astype(np.int64)
    left = np.maximum(total, 0) - base.sum(axis=0)
    order = np.argsort(-(raw - base), axis=0, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(k)[:, None].repeat(len(total), 1), axis=0)
    base += rank < left[None, :]
    out: np.ndarray = np.where(total[None, :] >= 0, base, total[None, :])
    return out


def pop_parts(m: Model, k: int, by_offer: bool = False) -> list[Model]:
    """The component split into ``k`` parts (POP, SOSP 2021): workloads dealt round-robin within
    each team, each part a model of its own workloads with a share of every offer's availability,
    every pool and every team budget in proportion to what its workloads could use of it. Any
    plans of the parts add up to a plan of the whole that keeps every limit.

    ``by_offer``: the offers with limited availability are dealt round-robin too, each whole to
    one part, and a part's workloads keep only their candidates on its own offers and on unlimited
    ones. Splitting an availability of a few instances k ways leaves no part room for a multi-node
    replica; dealing whole offers keeps it."""
    order = np.lexsort((np.arange(m.n_w), m.team))
    part = np.empty(m.n_w, np.int64)
    part[order] = np.arange(m.n_w) % k
    if by_offer:
        limited = np.flatnonzero(m.avail >= 0)
        o_part = np.full(len(m.avail), -1, np.int64)
        o_part[limited] = np.arange(len(limited)) % k
        op = o_part[m.offer]
        m = _keep_candidates(m, (op < 0) | (op == part[m.cw]))
    pc = part[m.cw]
    use = m.cap * m.nodes
    n_o, n_p, n_t = len(m.avail), len(m.pool_limit), len(m.team_budget)
    d_o = np.zeros((k, n_o))
    np.add.at(d_o, (pc, m.offer), use)
    ci, pi, per = _pool_matrix(m)
    d_p = np.zeros((k, n_p))
    if len(ci):
        np.add.at(d_p, (pc[ci], pi), per * m.cap[ci])
    d_t = np.zeros((k, n_t))
    has = m.team[m.cw] >= 0
    if n_t and has.any():
        np.add.at(d_t, (pc[has], m.team[m.cw][has]), (m.hourly * m.cap)[has])
    avail = _split(m.avail, d_o)
    pools = _split(m.pool_limit, d_p)
    budgets = _split(m.team_budget, d_t) if n_t else np.zeros((k, 0), np.int64)
    out = []
    for j in range(k):
        sub = restrict(m, np.flatnonzero(part == j))
        out.append(replace(sub, avail=avail[j], pool_limit=pools[j], team_budget=budgets[j], cache={}))
    return out


def _without_own_rows(m: Model) -> Model:
    """``m`` without workloads' own budgets and spread: the model of the LP over a whole split
    component (``whole_lp_model``), whose rows for them would outnumber the shared limits' many
    times over (the Lagrangian keeps both exactly)."""
    one = np.ones(m.n_w, np.int64)
    return replace(m, cache={}, min_providers=one, min_regions=one, budget=np.full(m.n_w, -1, np.int64))


def whole_lp_model(m: Model, start: np.ndarray) -> Model:
    """The model of ``whole_lp_start`` for a component too large for the LP by column generation:
    each workload's ``POP_LP_COLUMNS`` cheapest candidates and those the plan ``start`` uses, without
    budgets of their own and spread (``_without_own_rows``)."""
    live = np.flatnonzero(m.cap > 0)
    keep = start > 0
    keep[live[_rank_in_group(m.cw[live], m.cost[live]) < POP_LP_COLUMNS]] = True
    return _without_own_rows(_keep_candidates(m, keep))


# The LPs over whole split components that ``whole_lp_start`` solved in this process, by key, kept
# for their second round (``whole_lp_more``).
_WHOLE_LPS: dict[int, tuple[_RestrictedLP, _LPRows, int]] = {}


def whole_lp_start(lm: Model, key: int | None = None) -> tuple[Prices, np.ndarray] | None:
    """The duals of the LP over every candidate of ``lm`` (``whole_lp_model``): the prices of the
    shared limits and the workloads' own duals (per workload, for ``_priced_out``). Dual simplex
    without presolve: with presolve, the same LP spent most of its time removing the cost
    perturbation. One thread: deterministic. None if HiGHS stops at ``POP_LP_ITERATIONS``. With a
    ``key``, the LP is kept in this process for one more round (``whole_lp_more``)."""
    rows = _LPRows(lm)
    lp = _RestrictedLP(lm, rows)
    lp.h.setOptionValue("simplex_iteration_limit", POP_LP_ITERATIONS)
    lp.add(np.arange(lm.n_c, dtype=np.int64))
    try:
        _xv, y, _value = lp.solve()
    except PlacementError:
        return None
    if key is not None:
        _WHOLE_LPS[key] = (lp, rows, int(lp.h.getInfo().simplex_iteration_count))
    yw, _yb, prices = rows.duals(y)
    return prices, yw


def whole_lp_more(key: int, more: Model | None, share: float | None = None) -> Prices | None:
    """The second round of the LP ``whole_lp_start`` kept under ``key``: the candidates of ``more``
    (the model it was built from, with other candidates: ``_priced_out``) added as columns, the LP
    re-solved from its last basis, for at most ``share`` of the first round's simplex iterations
    (default ``POP_LP_MORE_SHARE``; the caller passes it, as a worker process has its own module);
    its new prices, optimal or not (dual simplex: the Lagrangian at any prices is a valid bound, and
    the caller keeps the better). The LP is dropped either way (``more`` None: only that). On
    xl-tight (49,625 workloads) the first round's prices bounded the component at 240 k $/h, two
    more columns per workload and one re-solve to optimality (9 s alone) at 280 k, the LP itself
    (four rounds of four, 215 s) at 329 k; the plan repaired at the LP's own prices was no better.
    Uncapped, the re-solve on xxl-loose outlasted the repair by 105 s (bench/README.md)."""
    kept = _WHOLE_LPS.pop(key, None)
    if kept is None or more is None or not more.n_c:
        return None
    lp, rows, first = kept
    # Same workloads, offers, pools and teams, so the same rows; only the candidates differ.
    lp.m = rows.m = more
    lp.add(np.arange(more.n_c, dtype=np.int64))
    share = POP_LP_MORE_SHARE if share is None else share
    lp.h.setOptionValue("simplex_iteration_limit", max(1, int(share * first)))
    lp.h.setOptionValue("simplex_strategy", 1)
    lp.h.run()
    if lp.h.getInfo().dual_solution_status == 0:  # (kSolutionStatusNone) no duals at all
        return None
    return rows.duals(np.asarray(lp.h.getSolution().row_dual, np.float64))[2]


def _priced_out(m: Model, rc: np.ndarray, yw: np.ndarray, in_lp: np.ndarray) -> Model | None:
    """For the second round of the LP over a whole split component: each workload's
    ``POP_LP_ADD_COLUMNS`` candidates of most negative reduced cost in that LP (``rc``: the
    Lagrangian's reduced costs at its prices, ``yw``: its workloads' duals), among those not in it
    (``in_lp``), as a model of that LP (``_without_own_rows``); None if none prices out."""
    red = (rc - m.penalty[m.cw]) / MONEY_SCALE - yw[m.cw]
    neg = np.flatnonzero((m.cap > 0) & ~in_lp & (red < -1e-7))
    if not len(neg):
        return None
    keep = np.zeros(m.n_c, bool)
    keep[neg[_rank_in_group(m.cw[neg], red[neg]) < POP_LP_ADD_COLUMNS]] = True
    return _without_own_rows(_keep_candidates(m, keep))


@dataclass
class WholeLP:
    """The first round of the LP over a whole split component (``whole_lp_start``), for
    ``pop_finish``: its prices, its workloads' duals, which of the component's candidates it has,
    and where it is kept: under ``key`` in ``pool``'s process, or in this one (``pool`` None)."""

    prices: Prices
    yw: np.ndarray
    in_lp: np.ndarray
    key: int
    pool: ProcessPoolExecutor | None

    def more(self, columns: Model | None) -> Callable[[], Prices | None]:
        """Starts its second round (``whole_lp_more``) on ``columns`` where the LP is kept, and
        returns a call that waits for that round's prices (here: that runs it)."""
        if self.pool is None:
            return partial(whole_lp_more, self.key, columns, POP_LP_MORE_SHARE)
        return self.pool.submit(whole_lp_more, self.key, columns, POP_LP_MORE_SHARE).result


def _zero_priced(m: Model) -> tuple[Lagrange, np.ndarray, np.ndarray, float]:
    """The Lagrangian of ``m`` at zero prices (a first bound): its ``Lagrange`` (which keeps that
    bound as its best), then the reduced costs, the relaxed solution and the bound."""
    lag = Lagrange(m)
    return lag, *lag.evaluate_and_keep(lag.prices)


def pop_finish(m: Model, x: np.ndarray | None, start: np.ndarray, prices: list[Prices], det_budget: float, seed: int,
               unplaceable: int, by_offer: bool, lp_prices: Prices | None = None,
               zero: list[tuple[Lagrange, np.ndarray, np.ndarray, float]] | None = None,
               whole: WholeLP | None = None) -> ComponentResult:
    """A component too large for one LP, from its first feasible plan ``start`` or, where it was
    split into parts, their plans ``x`` merged (None: not split): a bound for the whole component
    (the Lagrangian at zero prices, at the parts' mean prices and at ``lp_prices``, those of
    ``whole_lp_start``, then subgradient steps from the best), the capacity the parts left unused
    filled by the greedy at those prices, then neighbourhood repair (across the parts' seams) at
    them, from ``start`` where that is better than the merge. (On xxl-tight the whole LP's prices
    took the plan from 908 k to 750 k above the penalty, the bound from 342 k to 512 k. The greedy
    at those prices on ``start`` before the repair, 913 k instead of 1.01 M, left the repair at
    904 k even with twice its budget.) ``zero``: ``[_zero_priced(m)]``, where the caller has it already
    (taken out of the list: its per-candidate arrays are not held through the repair).
    The subgradient steps run in a thread during the repair; the repair itself goes on at the best
    prices before them. ``whole``: the first round of that LP (its prices are ``lp_prices``), whose
    second round (``whole_lp_more``, on the columns that price out at them) runs during the repair
    too, where the LP was solved (a worker process); the steps start from its prices where they
    bound more. For the bound only: the plan is the same with or without it."""
    t0 = time.perf_counter()
    lag, rc, x_rel, lb = zero.pop() if zero else _zero_priced(m)
    if prices:
        # Offers dealt whole to one part (``by_offer``) are priced by that part alone (the others
        # price them 0); shared ones at the parts' mean.
        offer = (np.sum if by_offer else np.mean)([p.offer for p in prices], axis=0)
        lag.prices = Prices(offer, np.mean([p.pool for p in prices], axis=0),
                            np.mean([p.budget for p in prices], axis=0), np.mean([p.share for p in prices], axis=0))
        rc, x_rel, lb = lag.evaluate_and_keep(lag.prices)
    later: Callable[[], Prices | None] | None = None
    if lp_prices is not None:
        rc_lp, x_rel_lp, lb_lp = lag.evaluate_and_keep(lp_prices)
        if whole is not None:
            later = whole.more(_priced_out(m, rc_lp, whole.yw, whole.in_lp))
        if lb_lp > lb:  # the better prices steer the fill and the repair too
            lag.prices, rc, x_rel = lp_prices, rc_lp, x_rel_lp
        del rc_lp, x_rel_lp  # per-candidate arrays of the whole component: not held through the repair
    first = m.objective(start)
    if x is not None:
        x = greedy(m, rc, _order(m, x_rel, rc), Residual(m, x), x.copy())
        obj = m.objective(x)
    del x_rel
    if x is None or first < obj:  # the repair goes on from the better of the two
        x, obj = start.copy(), first
    # Subgradient steps from the best prices, for the bound only: in a thread, on a copy (numpy
    # releases the GIL; the copy shares the model's arrays), while the repair runs at those prices.
    # On xxl-tight, ten steps took 16 s and raised the bound by 3 k $/h of 512 k.
    lifted = copy.copy(lag)
    lifted.theta = THETA0 / 8
    upper = float(obj)

    def lift() -> None:
        if later is not None and (second := later()) is not None:
            lifted.evaluate_and_keep(second)
            lifted.prices = lifted.best_prices
        lifted.run(POP_BOUND_ITERATIONS, lambda: upper)

    ex = ThreadPoolExecutor(max_workers=1)
    steps = ex.submit(lift)
    ex.shutdown(wait=False)
    traj = [(time.perf_counter() - t0, obj, lag.bound(obj))]

    def gap(o: int) -> float:
        return (o - lag.bound(o)) / max(1.0, o - unplaceable)

    def improved_to(_xn: np.ndarray, on: int) -> None:
        traj.append((time.perf_counter() - t0, on, lag.bound(on)))

    # Around short workloads, their offers' holders matter more than a tenth of the component
    # (about 10,000 workloads in a component split into parts: the budget affords about five such
    # neighbourhoods, where it affords dozens of the smallest). The others keep the full size from
    # the start (``COST_FIRST_WORKLOADS`` is measured on components up to 10,000 workloads only).
    x, obj, det, _k = _repair(m, x, obj, rc, lag, det_budget, seed, 0, gap, improved_to,
                              seed_size=NEIGHBOURHOOD_WORKLOADS)
    steps.result()
    if lifted.best_lb > lag.best_lb:
        lag.best_lb, lag.best_prices = lifted.best_lb, lifted.best_prices
    bound = lag.bound(obj)
    return ComponentResult(x, obj, bound, obj == bound, det, traj, lag.best_prices)


# ==================================================================================================
# Decomposition and the whole problem
# ==================================================================================================


def components(m: Model) -> list[np.ndarray]:
    """Workloads linked by limited offers, pools and team rules; sorted lists of workload indices,
    ordered by their first workload. Connected components of the graph of workloads, offers, pools
    and teams (SciPy's ``connected_components``), its adjacency built row by row as CSR: a
    workload's row lists its limited offers (its candidates are consecutive), an offer's its pools,
    a team's its workloads."""
    n_w, n_o, n_p, n_t = m.n_w, len(m.avail), len(m.pool_limit), len(m.team_budget)
    lim = ((m.avail >= 0) | (m.pool_start[1:] > m.pool_start[:-1]))[m.offer]
    before = np.zeros(m.n_c + 1, np.int64)
    np.cumsum(lim, out=before[1:])
    has_t = m.team >= 0
    by_team = np.flatnonzero(has_t)
    by_team = by_team[np.argsort(m.team[by_team], kind="stable")]
    team_rows = np.bincount(m.team[by_team], minlength=n_t) if n_t else np.zeros(0, np.int64)
    rows = np.concatenate([np.diff(before[m.start]), np.diff(m.pool_start), np.zeros(n_p, np.int64), team_rows])
    indptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(rows, out=indptr[1:])
    n = n_w + n_o + n_p + n_t
    # float64 data and int32 indices where they fit: the types connected_components works in
    small = max(n, int(indptr[-1])) < 2**31 - 1
    ix = np.int32 if small else np.int64
    indices = np.concatenate([m.offer[lim] + n_w, m.pool_id + n_w + n_o, by_team]).astype(ix)
    graph = csr_matrix((np.ones(len(indices)), indices, indptr.astype(ix)), shape=(n, n))
    _count, label = connected_components(graph, directed=False)
    wl = label[:n_w]
    order = np.argsort(wl, kind="stable")
    cuts = np.flatnonzero(np.diff(wl[order])) + 1
    groups = [np.sort(g) for g in np.split(order, cuts)]
    groups.sort(key=lambda g: int(g[0]))
    return groups


@dataclass
class Task:
    kind: str  # "exact", "large" or "part" (of a component split by pop_parts)
    model: Model
    det: float
    seed: int
    unplaceable: int
    start: np.ndarray | None = None  # a feasible first plan of a large component


def _run_task(task: Task) -> ComponentResult:
    if task.kind == "exact":
        return solve_exact(task.model, task.seed)
    return solve_large(task.model, task.det, task.seed, task.unplaceable, start=task.start,
                       prove=task.kind == "large")  # "large", "part"


@dataclass
class ScaleResult:
    x: np.ndarray
    objective: int
    bound: int
    optimal: bool
    det_time: float
    components: int
    trajectory: list[tuple[float, float, float]] = field(default_factory=list)  # (s, objective $/h, bound $/h)


def solve_model(m: Model, det_budget: float, seed: int, workers: int,
                trajectory: list[tuple[float, float, float]] | None = None) -> ScaleResult:
    t0 = time.perf_counter()
    traj = trajectory if trajectory is not None else []
    # 0. The relaxation at cost: optimal wherever it keeps every constraint of its component.
    comps = components(m)
    rc0 = m.cost.astype(np.float64)
    x0, lb0 = relaxed_solution(m, rc0)
    # A first feasible plan straight away: the capacity-aware greedy at cost over all workloads. No
    # limit links two components, and the order keeps each one's workloads in their own relative
    # order, so this is also, component by component, that component's own greedy (reused below).
    # Components too large for one LP (``POP_MAX_WORKLOADS``) are repaired from this plan: there the
    # workloads with little choice go first (``_order``). Elsewhere the LP's plans take over, and
    # from this start they ended no better, on large-tight worse (bench/README.md).
    scarce = any(len(ws) > POP_MAX_WORKLOADS for ws in comps)
    order0 = _order(m, x0, rc0, scarce_first=scarce)
    x_first = greedy(m, rc0, order0)
    obj_first = m.objective(x_first)
    floor0 = math.floor(lb0 - 1e-9 * abs(lb0))

    def first_plan(o: int) -> None:
        traj.append((time.perf_counter() - t0, o / MONEY_SCALE, min(o, floor0) / MONEY_SCALE))

    first_plan(obj_first)
    # Components too large for one LP by column generation (those of them the relaxation at cost
    # does not solve): the LP over the whole, for their prices (``whole_lp_start``), from now on in a
    # worker process where there is one, while this one goes on with the squeaky rounds and the
    # other components.
    subs: dict[int, Model] = {}
    for i, ws in enumerate(comps):
        if len(ws) > POP_MAX_WORKLOADS:
            sub = restrict(m, ws)
            if check(sub, x0[sub.cand_ids]):
                subs[i] = sub
    lp_models = {i: whole_lp_model(sub, x_first[sub.cand_ids]) for i, sub in subs.items()}
    ctx = multiprocessing.get_context("spawn")
    with contextlib.ExitStack() as stack:
        pool = (stack.enter_context(ProcessPoolExecutor(max_workers=workers - 1, mp_context=ctx))
                if workers > 1 else None)
        # The LPs over whole components in a process of their own, which keeps each for its second
        # round (``whole_lp_more``) while the other worker processes take the other components.
        lp_pool = (stack.enter_context(ProcessPoolExecutor(max_workers=1, mp_context=ctx))
                   if workers > 1 and lp_models else None)
        early = {i: lp_pool.submit(whole_lp_start, lm, i) for i, lm in lp_models.items()} if lp_pool else {}
        if scarce:  # and those the greedy left short go first in a few more rounds
            x_first, obj_first = squeaky(m, rc0, order0, x_first, obj_first, SQUEAKY_ROUNDS, first_plan)
        # The derived data of the whole model (the greedy's per-candidate lists, ``Residual``) is not
        # used again: each component builds its own, and these are freed to make room for them.
        m.cache.clear()
        del rc0
        x = np.zeros(m.n_c, np.int64)
        obj_of: dict[int, int] = {}
        bound_of: dict[int, int] = {}
        optimal = True
        exact: list[int] = []
        large: list[int] = []
        for i, ws in enumerate(comps):
            if i in subs:  # to be split: its relaxation at cost breaks a limit (checked above)
                sub = subs[i]
            else:
                sub = restrict(m, ws)
                xs = x0[sub.cand_ids]
                if not check(sub, xs):
                    x[sub.cand_ids] = xs
                    obj_of[i] = bound_of[i] = sub.objective(xs)
                    continue
                subs[i] = sub
            # A pruned component's exact model would bound only its kept candidates: its relaxations do better.
            (exact if sub.n_c <= EXACT_MAX_CANDIDATES and not sub.pruned else large).append(i)
        # 1. A first feasible plan everywhere else: the capacity-aware greedy at cost.
        for i in exact + large:
            sub = subs[i]
            x[sub.cand_ids] = x_first[sub.cand_ids]
            obj_of[i] = sub.objective(x[sub.cand_ids])
            _, lb = relaxed_solution(sub, sub.cost.astype(np.float64))
            bound_of[i] = min(obj_of[i], math.floor(lb - 1e-9 * abs(lb)))
        del x0, x_first  # whole-model arrays, as the lists above

        def record() -> None:
            traj.append((time.perf_counter() - t0, sum(obj_of.values()) / MONEY_SCALE,
                         sum(bound_of.values()) / MONEY_SCALE))

        record()
        # 2. Tasks: small components batched into exact models, large ones one by one.
        tasks: list[tuple[list[int], Task]] = []
        batch: list[int] = []
        size = 0
        total_c = max(1, sum(subs[i].n_c for i in large) + sum(subs[i].n_c for i in exact))

        def flush() -> None:
            nonlocal batch, size
            if batch:
                ws = np.sort(np.concatenate([comps[i] for i in batch]))
                tasks.append((batch, Task("exact", restrict(m, ws), 0.0, seed, 0)))
            batch, size = [], 0

        for i in exact:
            if size + subs[i].n_c > EXACT_BATCH_CANDIDATES:
                flush()
            batch.append(i)
            size += subs[i].n_c
        flush()
        # Components too large for one LP: their first plan, kept where the merged parts end worse (below).
        by_offer = POP_BY_OFFER  # how components are split into parts (pop_parts), and so merged
        split: dict[int, np.ndarray] = {}
        for i in large:
            sub = subs[i]
            if sub.n_w > POP_MAX_WORKLOADS:
                split[i] = x[sub.cand_ids].copy()
                continue
            share = max(1.0, det_budget * sub.n_c / total_c)
            tasks.append(([i], Task("large", sub, share, seed, fixed_penalty(sub), x[sub.cand_ids].copy())))
        det = 0.0

        def merge(ids: list[int], task: Task, r: ComponentResult) -> None:
            nonlocal det, optimal
            x[task.model.cand_ids] = r.x
            det += r.det_time
            if task.kind == "part":  # finished with the whole component, below
                return
            optimal = optimal and r.optimal
            if len(ids) == 1:
                obj_of[ids[0]], bound_of[ids[0]] = r.objective, r.bound
                return
            for i in ids:
                obj_of.pop(i, None)
                bound_of.pop(i, None)
            obj_of[ids[0]], bound_of[ids[0]] = r.objective, r.bound

        def run_here(ids: list[int], task: Task) -> ComponentResult:
            if task.kind != "large":  # exact models and parts report no progress of their own
                return _run_task(task)
            key = ids[0]

            def progress(o: int, b: int) -> None:
                obj_of[key], bound_of[key] = o, b
                record()

            return solve_large(task.model, task.det, task.seed, task.unplaceable, progress, task.start)

        def run_all(todo: list[tuple[list[int], Task]]) -> list[ComponentResult]:
            """The tasks' results, in task order, each merged into the plan."""
            results: dict[int, ComponentResult] = {}
            if pool is not None and len(todo) > 1:
                # The largest task runs here (reporting progress), the others in workers - 1 fresh
                # processes. Each task is deterministic, and results are merged in task order: the plan
                # does not depend on the number of processes.
                main = max(range(len(todo)), key=lambda i: (todo[i][1].model.n_c, -i))
                pending = {i: pool.submit(_run_task, t) for i, (_ids, t) in enumerate(todo) if i != main}
                results[main] = run_here(*todo[main])
                # Then, here too, every task no worker has started yet, in turn; then wait for the rest.
                while pending:
                    free = next((i for i, fut in pending.items() if fut.cancel()), None)
                    if free is None:
                        results.update({i: fut.result() for i, fut in pending.items()})
                        break
                    del pending[free]
                    results[free] = run_here(*todo[free])
                for i, (ids, task) in enumerate(todo):
                    merge(ids, task, results[i])
                record()
            else:
                for i, (ids, task) in enumerate(todo):
                    results[i] = run_here(ids, task)
                    merge(ids, task, results[i])
                    record()
            return [results[i] for i in range(len(todo))]

        run_all(tasks)
        tasks.clear()  # their models: freed before the largest components' repair
        # 3. Components too large for one LP: repaired and bounded as a whole at the prices of the LP
        # over the whole (``whole_lp_start``), from their first plan. Where that LP gives no prices,
        # POP: the component is split into parts solved independently (in parallel), whose prices
        # bound it and whose plans, merged, replace the first plan where they are better. (Where the
        # LP gave prices, on xl and xxl, the merged parts were 14-85 % above the first plan after its
        # squeaky rounds, and their prices gave lower bounds: bench/README.md.)
        for i, start in split.items():
            sub = subs[i]
            share = max(1.0, det_budget * sub.n_c / total_c) / 2  # the repair's, with or without parts
            # The Lagrangian at zero prices while the worker is still solving the LP (on xxl the
            # squeaky rounds end about 11 s before it).
            zero = [_zero_priced(sub)] if i in early else []
            first = early[i].result() if i in early else whole_lp_start(lp_models[i], i)
            whole = None
            if first is not None:
                in_lp = np.zeros(sub.n_c, bool)
                in_lp[np.searchsorted(sub.cand_ids, lp_models[i].cand_ids)] = True
                whole = WholeLP(first[0], first[1], in_lp, i, lp_pool)
            prices: list[Prices] = []
            merged = None
            if whole is None:
                zero.clear()  # not held while the parts run: pop_finish evaluates it after them
                k = math.ceil(sub.n_w / POP_PART_WORKLOADS)
                x[sub.cand_ids] = 0  # the parts' plans replace it (each part sees only some candidates)
                parts = [([i], Task("part", part, share / k, seed, fixed_penalty(part)))
                         for part in pop_parts(sub, k, by_offer)]
                prices = [p for p in (r.prices for r in run_all(parts)) if p is not None]
                del parts
                merged = x[sub.cand_ids]
            r = pop_finish(sub, merged, start, prices, share, seed, fixed_penalty(sub), by_offer,
                           None if whole is None else whole.prices, zero, whole)
            del whole
            x[sub.cand_ids] = r.x
            det += r.det_time
            optimal = optimal and r.optimal
            obj_of[i], bound_of[i] = r.objective, r.bound
            record()
        obj = m.objective(x)
        bound = min(obj, sum(bound_of.values()))
        return ScaleResult(x, obj, bound, optimal and obj == bound, det, len(comps), traj)


# ==================================================================================================
# Plan
# ==================================================================================================


def plan_large(scenario: Scenario, options: PlanOptions,
               trajectory: list[tuple[float, float, float]] | None = None) -> Plan:
    from placement.planner import (
        UnfitFacts,
        _r,
        compute_totals,
        explain_unplaced,
        new_placement,
        placement_reasons,
        plan_inputs,
        unfit_facts,
        with_digest,
    )

    started = time.perf_counter()
    inv = scenario.inventory.inventory
    pol = scenario.policies.policies
    workloads = scenario.workloads.workloads
    # Nodes alike (one pool per node of an on-prem cluster) are merged into classes; the plan packs
    # each class's replicas onto its nodes at the end (placement.aggregate). options.hint (where
    # work runs now) is a suggestion for CP-SAT; this planner starts from its own plans, and only
    # that packing follows the hint.
    agg = aggregate_offers(inv)
    # Hundreds of candidates per workload: each keeps its cheapest (the bound stays valid); the
    # unpruned model is never held whole (``filtered_model``).
    settings = pol.solver
    det_budget = options.max_deterministic_time or settings.max_deterministic_time
    seed = settings.seed if options.seed is None else options.seed
    workers = options.workers or settings.workers
    m, filtered = filtered_model(workloads, agg.inventory if agg else inv, pol, agg, threads=workers)
    n_vars = m.n_w + m.n_c
    steps: list[tuple[float, float, float]] | None = [] if agg is not None and trajectory is not None else trajectory
    solve_started = time.perf_counter()
    res = solve_model(m, det_budget, seed, workers, steps)
    problems = check(m, res.x)
    if problems:  # never return a plan that breaks a hard constraint
        raise PlacementError(f"internal error in the large-instance planner: {', '.join(problems)}")

    offers = inv.offers
    used = np.flatnonzero(res.x)
    ca = filtered.take(used)  # the plan's candidates: ca's k-th is the model's used[k]
    held = res.x[used]
    # Per candidate of the plan: (concrete offer index, replicas).
    where: list[list[tuple[int, int]]] = [[(int(o), int(n))] for o, n in zip(ca.offer, held, strict=True)]
    objective_money = res.objective
    if agg is not None:
        packing = time.perf_counter()
        x, objective_money, where = _unmerge(agg, inv, m, res.x, used, ca, options.hint, workloads)
        packing = time.perf_counter() - packing
        held = x[used]
        if steps is not None and trajectory is not None:
            # The search's plans are plans of the merged model. Where the final one packs whole, its
            # steps stand, each later by the time packing takes; otherwise the one plan known on the
            # nodes is the final one, from now.
            if objective_money == res.objective:
                trajectory.extend((t + packing, o, b) for t, o, b in steps)
            elif steps:
                trajectory.append((time.perf_counter() - solve_started, objective_money / MONEY_SCALE,
                                   steps[-1][2]))
    obj = ca.objective_hourly_usd
    hourly = ca.hourly_usd
    weight = filtered.obj_weight
    placements: list[Placement] = []
    unplaced: list[Unplaced] = []
    chosen: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for k in np.flatnonzero(held).tolist():
        for o, n in where[k]:
            chosen[int(ca.workload[k])].append((k, o, n))
    team_spend: dict[str, float] = defaultdict(float)
    for wi, items in chosen.items():
        for c, _o, n in items:
            team_spend[workloads[wi].team] += float(hourly[c]) * n
    egress_table = region_egress_table(inv)
    unfit: dict[str, UnfitFacts] = {}
    for wi, w in enumerate(workloads):
        s, e = int(filtered.obj_start[wi]), int(filtered.obj_start[wi + 1])
        replica = 0
        items = sorted(chosen.get(wi, []), key=lambda con: offers[con[1]].id)
        if items:
            objs = filtered.obj[s:e]
            ws = weight[s:e] if len(weight) else np.ones(e - s, np.int64)
            cheapest_id = (agg.inventory.offers if agg else offers)[int(filtered.best_offer[wi])].id
            cheapest_hourly = float(filtered.best_hourly[wi])
        for c, o, n in items:
            offer = offers[o]
            cand = _candidate(ca, c, o, w, offer, inv, pol)
            rank = 1 + int(ws[objs < float(obj[c]) - 1e-9].sum())
            reasons = placement_reasons(cand, rank, int(ws.sum()), cheapest_id, cheapest_hourly)
            for _ in range(n):
                placements.append(new_placement(w, offer, cand, replica, reasons))
                replica += 1
        if replica < w.replicas:
            # The scalar filter, once per workload as it is but for its name (trace-derived
            # scenarios repeat the same request thousands of times).
            key = w.model_dump_json(exclude={"name"})
            facts = unfit.get(key)
            if facts is None:
                facts = unfit[key] = unfit_facts(candidates_for(w, inv, pol, egress_table), inv)
            summary, counts = explain_unplaced(w, facts, pol, replica, team_spend[w.team])
            unplaced.append(Unplaced(workload=w.name, team=w.team, replicas=w.replicas - replica,
                                     summary=summary, reasons=counts))
    totals = compute_totals(placements, unplaced)
    objective = objective_money / MONEY_SCALE
    bound = res.bound / MONEY_SCALE
    fixed = fixed_penalty(m) / MONEY_SCALE
    optimal = res.optimal and objective_money == res.objective
    gap = 0.0 if optimal else abs(objective - bound) / max(abs(objective - fixed), 1.0 / MONEY_SCALE)
    stats = SolverStats(
        method="scale",
        status="OPTIMAL" if optimal else "FEASIBLE",
        objective=_r(objective),
        best_bound=_r(bound),
        gap=_r(gap, 6),
        deterministic_time=_r(res.det_time, 3),
        variables=n_vars,
        candidates_total=len(workloads) * len(offers),
        candidates_kept=int(filtered.obj_weight.sum()) if len(filtered.obj_weight) else filtered.n_all,
        wall_time_s=_r(time.perf_counter() - started, 3) if options.record_wall_time else None,
        fixed_penalty=_r(fixed),
    )
    inputs = plan_inputs(scenario)
    if options.extra_inputs:
        inputs.update(options.extra_inputs)
    plan = Plan(inputs=inputs, placements=tuple(placements), unplaced=tuple(unplaced), totals=totals, solver=stats,
                idle_owned=idle_owned(inv, placements))
    return with_digest(plan)


def _unmerge(agg: Aggregation, inv: Inventory, m: Model, x: np.ndarray, used: np.ndarray, ca: CandidateArrays,
             hint: dict[str, dict[str, int]] | None, workloads: Sequence[Workload],
             ) -> tuple[np.ndarray, int, list[list[tuple[int, int]]]]:
    """The merged model's plan ``x`` on the concrete offers (``placement.aggregate.disaggregate``;
    ``ca`` holds the candidates ``used``): the plan as far as it packs, with workloads a
    replica that did not pack leaves under their minimum or spread dropped (and spot replicas
    of teams whose share that breaks, as ``round_lp`` does), its objective, and per candidate of
    ``used`` its (concrete offer, replicas)."""
    hint_idx: dict[int, dict[int, int]] | None = None
    if hint:
        offer_index = {o.id: i for i, o in enumerate(inv.offers)}
        w_index = {w.name: i for i, w in enumerate(workloads)}
        hint_idx = {w_index[w]: {offer_index[o]: n for o, n in per.items() if o in offer_index}
                    for w, per in hint.items() if w in w_index}
    placed, where = disaggregate(agg, inv, ca.offer, ca.nodes, x[used], hint_idx, ca.workload)
    if (placed == x[used]).all():
        return x, m.objective(x), where
    short = x.copy()
    short[used] = placed
    kept = round_lp(m, short.astype(np.float64))
    for k, c in enumerate(used.tolist()):
        if kept[c] != placed[k]:  # round_lp drops whole workloads
            where[k] = []
    problems = check(m, kept)
    if problems:
        raise PlacementError(f"internal error in the large-instance planner: {', '.join(problems)}")
    return kept, m.objective(kept), where


def _candidate(ca: CandidateArrays, c: int, o: int, w: Workload, offer: Any, inv: Inventory,
               pol: PolicySet) -> Candidate:
    lat = {u.name: round(latency_ms(inv, u.name, u.location, offer), 1) for u in w.users}
    carbon = float(ca.carbon_kg_per_hour[c])
    return Candidate(
        offer_index=o, gpus_needed=int(ca.gpus_needed[c]), nodes=int(ca.nodes[c]),
        instance_hourly_usd=float(ca.instance_hourly_usd[c]), egress_hourly_usd=float(ca.egress_hourly_usd[c]),
        carbon_kg_per_hour=None if math.isnan(carbon) else carbon,
        preference_hourly_usd=float(ca.preference_hourly_usd[c]), latency_ms=lat,
        rules=_admitting_rules(w, offer, pol),
    )
