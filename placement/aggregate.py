"""Interchangeable capacity merged into classes, for the large-instance planner.

An on-prem cluster described node by node (one capacity pool per node, one offer per slice shape
of each node) has thousands of offers that differ only in which node they draw on. Every workload
that fits one such node fits all of its twins at the same cost, so the planner's candidates, its
model and its search repeat the same choice once per node. ``aggregate_offers`` merges such twin
pools into one pool (the sum of their limits) and their offers into one offer per shape (the sum
of their availabilities): the model is solved over classes, then ``disaggregate`` packs every
class's replicas onto its member nodes.

Twins: two pools are twins when they have the same unit and limit and the offers drawing on them
match one to one, equal in every field but their id, instance type and that pool (any other pool
they draw on must be the same). An offer is merged with at most one class.

The merged model is a relaxation of the node-by-node one: any node-by-node plan is a plan of the
merged model at the same cost (the merged limits are the sums, every other limit is unchanged).
So its bounds are valid for the node-by-node model. To keep it close, each merged candidate holds
at most ``members`` times the replicas one member offer could hold (``o_member_nodes`` in
``placement.scale._offer_arrays``), so that a replica that fits no single node is not placed on
the class. The converse holds when the
replicas pack: with sizes that divide one another (slices of 1, 2, 4, 8 GPUs on nodes of 1, 2,
4, 8 GPUs) first-fit decreasing packs any total that fits the class; otherwise ``disaggregate``
reports what it could not pack and the planner drops it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from placement.models import CapacityPool, Inventory, Offer

_NOT_IN_KEY = ("id", "instance_type", "pools")
_PER_INSTANCE = {"instances": lambda o: 1, "gpus": lambda o: o.gpu_count, "vcpus": lambda o: o.vcpus}


@dataclass
class Aggregation:
    """A merged inventory and how it maps back to the concrete one."""

    inventory: Inventory  # the merged inventory (offers and pools of no class unchanged)
    members: list[np.ndarray]  # per merged offer: its concrete offers (int64), in member-pool order
    offer_members: np.ndarray  # int64 per merged offer: number of members (1: not merged)
    pool_members: np.ndarray  # int64 per merged pool: number of concrete pools merged (1: not merged)
    class_pool: np.ndarray  # int64 per merged offer: its merged pool (index into inventory.pools), -1: none
    member_pools: dict[int, np.ndarray]  # merged pool -> its concrete pools (int64), member order

    @property
    def classes(self) -> int:
        return len(self.member_pools)


def _offer_key(o: Offer) -> str:
    return repr(tuple((k, v) for k, v in o.__dict__.items() if k not in _NOT_IN_KEY))


def aggregate_offers(inv: Inventory) -> Aggregation | None:
    """``inv`` with twin pools and their offers merged; None when no two pools are twins."""
    offers, pools = inv.offers, inv.pools
    if len(pools) < 2:
        return None
    pool_index = {p.id: i for i, p in enumerate(pools)}
    drawing: list[list[int]] = [[] for _ in pools]
    for i, offer in enumerate(offers):
        for q in offer.pools:
            drawing[pool_index[q]].append(i)
    keys: dict[int, str] = {}
    groups: dict[tuple[str, int, tuple[str, ...]], list[int]] = defaultdict(list)
    ordered: dict[int, list[int]] = {}  # pool -> its offers by key
    for pi, pool in enumerate(pools):
        on = drawing[pi]
        if not on:
            continue
        for o in on:
            if o not in keys:
                keys[o] = _offer_key(offers[o])
        own = {o: keys[o] + repr(tuple(sorted("*" if q == pool.id else q for q in offers[o].pools))) for o in on}
        ordered[pi] = sorted(on, key=lambda o: (own[o], o))
        groups[(pool.unit, pool.limit, tuple(own[o] for o in ordered[pi]))].append(pi)
    taken: set[int] = set()
    classes: list[list[int]] = []
    for members in sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0]):
        on = [o for pi in members for o in ordered[pi]]
        if taken.intersection(on):
            continue
        taken.update(on)
        classes.append(members)
    if not classes:
        return None
    ids = {p.id for p in pools}
    merged_pool: dict[int, CapacityPool] = {}  # first member pool -> the merged pool
    skip_pool: set[int] = set()
    rep_offers: dict[int, tuple[Offer, np.ndarray]] = {}  # first member offer -> merged offer, members
    skip_offer: set[int] = set()
    for members in classes:
        first = pools[members[0]]
        new_id = f"{first.id} (+{len(members) - 1} alike)"
        while new_id in ids:
            new_id += "'"
        ids.add(new_id)
        merged_pool[members[0]] = first.model_copy(update={
            "id": new_id, "limit": first.limit * len(members),
            "description": f"{len(members)} pools alike, the first {first.id}: {first.description}",
        })
        skip_pool.update(members[1:])
        for k, o in enumerate(ordered[members[0]]):
            mem = np.asarray([ordered[pi][k] for pi in members], np.int64)
            rep = offers[o]
            avail = None if rep.available is None else rep.available * len(members)
            rep_offers[o] = (rep.model_copy(update={
                "available": avail, "pools": tuple(new_id if q == first.id else q for q in rep.pools)}), mem)
            skip_offer.update(mem[1:].tolist())
    size_of = {c[0]: len(c) for c in classes}
    new_pools: list[CapacityPool] = []
    pool_members: list[int] = []
    for pi, pool in enumerate(pools):
        if pi in skip_pool:
            continue
        new_pools.append(merged_pool.get(pi, pool))
        pool_members.append(size_of.get(pi, 1))
    new_index = {p.id: i for i, p in enumerate(new_pools)}
    member_pools = {new_index[merged_pool[c[0]].id]: np.asarray(c, np.int64) for c in classes}
    merged_ids = {merged_pool[c[0]].id for c in classes}
    new_offers: list[Offer] = []
    members_of: list[np.ndarray] = []
    class_pool: list[int] = []
    for i, offer in enumerate(offers):
        if i in skip_offer:
            continue
        if i in rep_offers:
            new, mem = rep_offers[i]
            new_offers.append(new)
            members_of.append(mem)
            class_pool.append(next(new_index[q] for q in new.pools if q in merged_ids))
        else:
            new_offers.append(offer)
            members_of.append(np.asarray([i], np.int64))
            class_pool.append(-1)
    return Aggregation(
        inventory=inv.model_copy(update={"offers": tuple(new_offers), "pools": tuple(new_pools)}),
        members=members_of,
        offer_members=np.asarray([len(m) for m in members_of], np.int64),
        pool_members=np.asarray(pool_members, np.int64),
        class_pool=np.asarray(class_pool, np.int64),
        member_pools=member_pools,
    )


class _Packer:
    """The member pools of one class as they fill: room left per member pool, instances left per
    member of each merged offer."""

    def __init__(self, agg: Aggregation, concrete: Inventory, pool: int) -> None:
        self.agg, self.concrete = agg, concrete
        pools = concrete.pools
        members = agg.member_pools[pool]
        self.room = np.asarray([pools[p].limit for p in members.tolist()], np.int64)
        self.per_instance = _PER_INSTANCE[pools[int(members[0])].unit]
        self.left: dict[int, np.ndarray] = {}  # merged offer -> instances left per member (-1: unlimited)

    def size(self, a: int, nodes: int) -> int:
        """Room one replica of ``nodes`` instances of merged offer ``a`` takes in its member pool."""
        return int(self.per_instance(self.concrete.offers[int(self.agg.members[a][0])])) * nodes

    def fits(self, a: int, nodes: int, most: int) -> np.ndarray:
        """Per member, how many such replicas it still holds (at most ``most``)."""
        if a not in self.left:
            self.left[a] = np.asarray([-1 if (v := self.concrete.offers[o].available) is None else v
                                       for o in self.agg.members[a].tolist()], np.int64)
        size, left = self.size(a, nodes), self.left[a]
        by_room = self.room // size if size else np.full(len(self.room), most, np.int64)
        by_avail = np.where(left >= 0, left // max(nodes, 1), most)
        out: np.ndarray = np.minimum(np.minimum(by_room, by_avail), most)
        return out

    def put(self, a: int, nodes: int, j: int, k: int) -> int:
        """``k`` replicas on member ``j``; returns its concrete offer."""
        self.room[j] -= k * self.size(a, nodes)
        if self.left[a][j] >= 0:
            self.left[a][j] -= k * nodes
        return int(self.agg.members[a][j])


def disaggregate(agg: Aggregation, concrete: Inventory, cand_offer: np.ndarray, cand_nodes: np.ndarray,
                 counts: np.ndarray, hint: dict[int, dict[int, int]] | None = None,
                 cand_workload: np.ndarray | None = None) -> tuple[np.ndarray, list[list[tuple[int, int]]]]:
    """The replicas ``counts`` of the merged candidates (merged offer ``cand_offer``, ``cand_nodes``
    instances per replica) on concrete offers: how many of each candidate's replicas were placed
    (the rest fit no member) and where, as (concrete offer, replicas) sorted by offer. Candidates
    on unmerged offers keep their offer. Replicas the ``hint`` (workload -> {concrete offer:
    replicas}, ``cand_workload`` giving each candidate's workload) has on a member offer go there
    first where they fit; then per class the largest replicas first, each on the first members
    with room (first-fit decreasing)."""
    n = len(counts)
    placed = np.zeros(n, np.int64)
    where: list[dict[int, int]] = [defaultdict(int) for _ in range(n)]
    by_class: dict[int, list[int]] = defaultdict(list)
    for c in np.flatnonzero(counts > 0).tolist():
        a = int(cand_offer[c])
        if agg.class_pool[a] < 0:
            where[c][int(agg.members[a][0])] = int(counts[c])
            placed[c] = counts[c]
        else:
            by_class[int(agg.class_pool[a])].append(c)
    for pool, cands in sorted(by_class.items()):
        packer = _Packer(agg, concrete, pool)
        if hint and cand_workload is not None:
            for c in cands:
                a, nodes = int(cand_offer[c]), int(cand_nodes[c])
                position = {int(o): j for j, o in enumerate(agg.members[a].tolist())}
                for o, k in sorted(hint.get(int(cand_workload[c]), {}).items()):
                    j = position.get(o)
                    if j is None:
                        continue
                    take = min(int(k), int(packer.fits(a, nodes, int(counts[c] - placed[c]))[j]))
                    if take > 0:
                        where[c][packer.put(a, nodes, j, take)] += take
                        placed[c] += take
        size = {c: packer.size(int(cand_offer[c]), int(cand_nodes[c])) for c in cands}
        for c in sorted(cands, key=lambda c: (-size[c], c)):
            a, nodes, want = int(cand_offer[c]), int(cand_nodes[c]), int(counts[c] - placed[c])
            if want <= 0:
                continue
            can = packer.fits(a, nodes, want)
            for j in np.flatnonzero(can).tolist():
                take = min(int(can[j]), want)
                where[c][packer.put(a, nodes, j, take)] += take
                placed[c] += take
                want -= take
                if want == 0:
                    break
    return placed, [sorted(w.items()) for w in where]
