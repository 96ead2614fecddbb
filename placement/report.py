"""A self-contained HTML report of one or more plans, and the monthly cost forecast of the state.

The report is one HTML file that needs no network: plotly.js is inlined once, every later figure
reuses it, and the world map's basemap comes from a topology embedded in the page (a plotly
``world_110m`` TopoJSON file given with ``topology``, or the one shipped at
``placement/data/geo/world_110m.json`` when present). Without a topology the map is drawn on its
graticule alone: plotly.js fetches a missing topology from a CDN, so the page always hands it one
(an empty one if need be) and never lets it look elsewhere.

Every string that comes from the inputs (workload, team, provider, region, pool and file names,
reasons, descriptions) is HTML-escaped before it goes into the page or into a figure's labels.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from placement.candidates import HOURS_PER_MONTH
from placement.errors import PlacementError
from placement.models import Placement, Plan, PolicySet
from placement.planner import gpu_mix, read_plan
from placement.scenario import Scenario
from placement.whatif import (
    MoveCounts,
    OwnedUse,
    apply_changes,
    describe_change,
    move_counts,
    owned_capacity,
    variant_of_plan,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go

# Colours that stay the same for a provider in every chart (plotly's default qualitative palette).
PALETTE = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880", "#FF97FF",
           "#FECB52")
CAPACITY_COLOURS = {"on-demand": "#636EFA", "spot": "#FFA15A", "reserved": "#AB63FA", "owned": "#00CC96"}
IDLE_COLOUR = "#D5D8DC"
EMPTY_TOPOLOGY: dict[str, Any] = {"type": "Topology", "objects": {}, "arcs": []}
# Where the map writes continent names when it has no basemap (latitude, longitude).
CONTINENT_LABELS = {"North America": (58.0, -110.0), "South America": (-15.0, -60.0), "Europe": (40.0, 15.0),
                    "Africa": (5.0, 20.0), "Asia": (48.0, 90.0), "Oceania": (-25.0, 135.0)}
# The layers of a plotly world topology the map draws when it has one.
BASEMAP_LAYERS = ("land", "ocean", "coastlines", "countries")
# typesetMath off: labels such as "$1.20/h ($876/month)" are money, not TeX. topojsonURL points at the
# page's own folder, so that even a missing basemap would never be fetched from the network.
PLOT_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True, "typesetMath": False,
                               "topojsonURL": "./", "modeBarButtonsToRemove": ["sendDataToCloud"]}


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def money(value: float) -> str:
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}"


# --------------------------------------------------------------------------------------------------
# Plans and their inputs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportPlan:
    """A plan to report on, with its inputs when they can still be read."""

    name: str
    source: str
    plan: Plan
    scenario: Scenario | None
    changes: tuple[str, ...] = ()
    note: str = ""


def _inputs_key(plan: Plan) -> str:
    return json.dumps({k: [v.files, v.detail.get("path")] for k, v in sorted(plan.inputs.items())
                       if k in ("workloads", "inventory", "policies")}, sort_keys=True, default=str)


def scenario_for_plan(plan: Plan, cache: dict[str, Scenario] | None = None) -> tuple[Scenario | None, str]:
    """The plan's inputs (with its what-if changes applied), or None and why not.

    ``cache`` keeps scenarios already read, keyed by the input files a plan names: the variants of a
    what-if share the base's files.
    """
    from placement.apply import scenario_of

    try:
        key = _inputs_key(plan)
        if cache is not None and key in cache:
            scenario = cache[key]
        else:
            scenario = scenario_of(plan)
            if cache is not None:
                cache[key] = scenario
        found = variant_of_plan(plan)
        if found is not None:
            scenario = apply_changes(scenario, found[0].changes, found[1])
    except PlacementError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"inputs not available ({first}); locations and owned capacity are not shown"
    current = {"workloads": scenario.workloads.digest, "inventory": scenario.inventory.digest,
               "policies": scenario.policies.digest}
    changed = [k for k, digest in current.items() if k in plan.inputs and plan.inputs[k].digest != digest]
    note = f"the {', '.join(changed)} changed since planning; locations and capacity come from the current files" \
        if changed else ""
    return scenario, note


def load_report_plan(path: Path, cache: dict[str, Scenario] | None = None) -> ReportPlan:
    plan = read_plan(path)
    scenario, note = scenario_for_plan(plan, cache)
    found = variant_of_plan(plan)
    if found is None:
        return ReportPlan(path.stem, str(path), plan, scenario, (), note)
    variant = found[0]
    return ReportPlan(variant.name, str(path), plan, scenario, tuple(describe_change(c) for c in variant.changes), note)


def unique_names(plans: Sequence[ReportPlan]) -> list[ReportPlan]:
    """Give plans that share a name a numbered suffix, so that legends and tables tell them apart."""
    seen: dict[str, int] = defaultdict(int)
    out = []
    for rp in plans:
        seen[rp.name] += 1
        if seen[rp.name] > 1:
            rp = ReportPlan(f"{rp.name}-{seen[rp.name]}", rp.source, rp.plan, rp.scenario, rp.changes, rp.note)
        out.append(rp)
    return out


# --------------------------------------------------------------------------------------------------
# Aggregates
# --------------------------------------------------------------------------------------------------


def region_key(p: Placement) -> str:
    return f"{p.provider}/{p.region}"


def cost_by(plan: Plan, key: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for p in plan.placements:
        name = region_key(p) if key == "region" else str(getattr(p, key))
        out[name] += p.total_hourly_usd
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def carbon_by_region(plan: Plan) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for p in plan.placements:
        out[region_key(p)] += p.carbon_kg_per_hour or 0.0
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def gpus_by_model_and_capacity(plan: Plan) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for p in plan.placements:
        out[p.capacity_type][p.gpu_model] += p.nodes * p.gpus_per_node
    return {k: dict(v) for k, v in sorted(out.items())}


@dataclass(frozen=True)
class Site:
    """Placements of one plan in one provider/region, with its location when the inputs give one."""

    provider: str
    region: str
    country: str
    lat: float | None
    lon: float | None
    replicas: int
    gpus: int
    hourly_usd: float
    workloads: tuple[str, ...]


def sites(plan: Plan, scenario: Scenario | None) -> list[Site]:
    where: dict[str, tuple[float, float]] = {}
    by_region: dict[str, tuple[float, float]] = {}
    if scenario is not None:
        for o in scenario.inventory.inventory.offers:
            where[o.id] = (o.location.lat, o.location.lon)
            by_region.setdefault(o.region_key, (o.location.lat, o.location.lon))
    groups: dict[str, list[Placement]] = defaultdict(list)
    for p in plan.placements:
        groups[region_key(p)].append(p)
    out = []
    for key, items in sorted(groups.items()):
        first = items[0]
        loc = where.get(first.offer_id) or by_region.get(key)
        out.append(Site(
            provider=first.provider, region=first.region, country=first.country,
            lat=None if loc is None else loc[0], lon=None if loc is None else loc[1], replicas=len(items),
            gpus=sum(p.nodes * p.gpus_per_node for p in items), hourly_usd=sum(p.total_hourly_usd for p in items),
            workloads=tuple(sorted({p.workload for p in items})),
        ))
    return out


def provider_colours(plans: Iterable[Plan]) -> dict[str, str]:
    names = sorted({p.provider for plan in plans for p in plan.placements})
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(title={"text": esc(title), "x": 0.01, "xanchor": "left"}, height=height,
                      margin={"l": 10, "r": 10, "t": 60, "b": 40}, template="plotly_white",
                      font={"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12},
                      legend={"orientation": "h", "y": -0.12})
    return fig


def fig_cost_breakdown(plan: Plan, colours: Mapping[str, str]) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    parts = [("provider", cost_by(plan, "provider")), ("region", cost_by(plan, "region")), ("team", cost_by(plan, "team"))]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[f"by {k}" for k, _ in parts], horizontal_spacing=0.12)
    for col, (key, data) in enumerate(parts, start=1):
        labels = list(reversed(list(data)))
        values = [data[k] for k in labels]
        if key == "provider":
            colour: Any = [colours.get(k, PALETTE[0]) for k in labels]
        elif key == "region":
            colour = [colours.get(k.split("/", 1)[0], PALETTE[0]) for k in labels]
        else:
            colour = "#636EFA"
        fig.add_trace(go.Bar(x=values, y=[esc(k) for k in labels], orientation="h", marker={"color": colour},
                             text=[money(v) for v in values], textposition="outside", cliponaxis=False,
                             showlegend=False, hovertemplate="%{y}: %{x:$,.2f}/h<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="$/h", range=[0, 1.3 * max(values, default=1.0)], row=1, col=col)
    rows = max(len(d) for _, d in parts) if plan.placements else 1
    return _layout(fig, f"Cost: {money(plan.totals.hourly_usd)}/h ({money(plan.totals.monthly_usd)}/month)",
                   max(320, 60 + 24 * rows))


def fig_gpu_mix(plan: Plan) -> go.Figure:
    import plotly.graph_objects as go

    mix = gpus_by_model_and_capacity(plan)
    models = list(gpu_mix(plan))
    fig = go.Figure()
    for capacity, per_model in mix.items():
        fig.add_trace(go.Bar(name=esc(capacity), x=[esc(m) for m in models], y=[per_model.get(m, 0) for m in models],
                             marker={"color": CAPACITY_COLOURS.get(capacity, PALETTE[4])},
                             hovertemplate=f"{esc(capacity)} %{{x}}: %{{y}} GPUs<extra></extra>"))
    fig.update_layout(barmode="stack", yaxis_title="GPUs")
    return _layout(fig, f"GPU mix: {plan.totals.gpus} GPUs by model and capacity type", 360)


def fig_world_map(site_list: Sequence[Site], colours: Mapping[str, str], has_basemap: bool) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    located = [s for s in site_list if s.lat is not None and s.lon is not None]
    if not has_basemap:
        # Without coastlines, continent names keep the reader oriented; drawn first, under the sites.
        names = list(CONTINENT_LABELS)
        fig.add_trace(go.Scattergeo(
            lat=[CONTINENT_LABELS[n][0] for n in names], lon=[CONTINENT_LABELS[n][1] for n in names], text=names,
            mode="text", textfont={"color": "#9AA3AD", "size": 13}, hoverinfo="skip", showlegend=False,
        ))

    biggest = max((s.gpus for s in located), default=1) or 1
    for provider in sorted({s.provider for s in located}):
        mine = [s for s in located if s.provider == provider]
        fig.add_trace(go.Scattergeo(
            name=esc(provider), lat=[s.lat for s in mine], lon=[s.lon for s in mine], mode="markers",
            marker={"size": [10 + 30 * (s.gpus / biggest) ** 0.5 for s in mine], "color": colours.get(provider),
                    "opacity": 0.8, "line": {"width": 1, "color": "#333"}},
            text=[esc(f"{s.provider}/{s.region} ({s.country}): {s.replicas} replica(s), {s.gpus} GPUs, "
                      f"{money(s.hourly_usd)}/h") + "<br>" + "<br>".join(esc(w) for w in s.workloads[:12])
                  for s in mine],
            hoverinfo="text",
        ))
    fig.update_geos(
        projection_type="natural earth", resolution=110, showframe=True,
        showland=has_basemap, landcolor="#EEF0F2", showcoastlines=has_basemap, coastlinecolor="#9AA3AD",
        showcountries=has_basemap, countrycolor="#C5CCD3", showocean=has_basemap, oceancolor="#F7FBFF",
        showlakes=False, showrivers=False, showsubunits=False,
        lataxis={"showgrid": True, "dtick": 30, "gridcolor": "#E3E6EA"},
        lonaxis={"showgrid": True, "dtick": 30, "gridcolor": "#E3E6EA", "range": [-180, 180]},
    )
    fig.update_layout(geo={"fitbounds": False})
    return _layout(fig, "Where replicas run (marker size: GPUs)", 580)


def fig_region_grid(plan: Plan) -> go.Figure:
    import plotly.graph_objects as go

    cells: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    juris: dict[str, str] = {}
    for p in plan.placements:
        cell = cells[(p.provider, p.country)]
        cell[0] += p.nodes * p.gpus_per_node
        cell[1] += p.total_hourly_usd
        juris[p.country] = p.jurisdiction
    countries = sorted(juris, key=lambda c: (juris[c], c))
    providers = sorted({p for p, _ in cells}, reverse=True)
    z = [[cells[(pr, c)][0] if (pr, c) in cells else None for c in countries] for pr in providers]
    text = [[f"{int(cells[(pr, c)][0])} GPU{'' if cells[(pr, c)][0] == 1 else 's'}<br>{money(cells[(pr, c)][1])}/h" if (pr, c) in cells else ""
             for c in countries] for pr in providers]
    fig = go.Figure(go.Heatmap(
        z=z, x=[esc(f"{c} ({juris[c]})") for c in countries], y=[esc(p) for p in providers], text=text,
        texttemplate="%{text}", colorscale="Blues", hoverongaps=False, colorbar={"title": {"text": "GPUs"}},
        hovertemplate="%{y} in %{x}<br>%{text}<extra></extra>",
    ))
    fig.update_xaxes(title_text="country (jurisdiction)", side="bottom")
    return _layout(fig, "Region grid: GPUs and cost by provider and country", max(300, 90 + 40 * len(providers)))


def fig_owned(owned: OwnedUse | None, plan: Plan) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    if owned is not None and owned.pools:
        pools = list(reversed(owned.pools))
        labels = [esc(f"{u.pool} ({'/'.join(u.gpu_models)})") for u in pools]
        fig.add_trace(go.Bar(name="used", y=labels, x=[u.used_gpus for u in pools], orientation="h",
                             marker={"color": CAPACITY_COLOURS["owned"]}, text=[u.used_gpus for u in pools],
                             hovertemplate="%{y}: %{x} GPUs used<extra></extra>"))
        fig.add_trace(go.Bar(name="idle", y=labels, x=[u.idle_gpus for u in pools], orientation="h",
                             marker={"color": IDLE_COLOUR}, text=[u.idle_gpus or "" for u in pools],
                             hovertemplate="%{y}: %{x} GPUs idle<extra></extra>"))
        fig.update_layout(barmode="stack", xaxis_title="GPUs")
        share = f" ({owned.share:.0%})" if owned.share is not None else ""
        title = f"Owned capacity: {owned.used_gpus} of {owned.available_gpus} GPUs used{share}, " \
                f"{owned.available_gpus - min(owned.used_gpus, owned.available_gpus)} idle"
        return _layout(fig, title, max(260, 100 + 36 * len(pools)))
    used: dict[str, int] = defaultdict(int)
    for p in plan.placements:
        if p.capacity_type == "owned":
            used[region_key(p)] += p.nodes * p.gpus_per_node
    fig.add_trace(go.Bar(y=[esc(k) for k in used], x=list(used.values()), orientation="h",
                         marker={"color": CAPACITY_COLOURS["owned"]}, name="used"))
    fig.update_layout(xaxis_title="GPUs")
    return _layout(fig, f"Owned GPUs used: {sum(used.values())} (capacity unknown without the inputs)", 260)


def fig_carbon(plan: Plan, colours: Mapping[str, str]) -> go.Figure:
    import plotly.graph_objects as go

    data = carbon_by_region(plan)
    labels = list(reversed(list(data)))
    fig = go.Figure(go.Bar(
        x=[data[k] for k in labels], y=[esc(k) for k in labels], orientation="h",
        marker={"color": [colours.get(k.split("/", 1)[0], PALETTE[0]) for k in labels]},
        text=[f"{data[k]:,.2f}" for k in labels], textposition="outside", cliponaxis=False,
        hovertemplate="%{y}: %{x:,.2f} kg CO2e/h<extra></extra>",
    ))
    fig.update_layout(xaxis_title="kg CO2e per hour", xaxis_range=[0, 1.15 * max(data.values(), default=1.0)])
    return _layout(fig, f"Carbon: {plan.totals.carbon_kg_per_hour:,.1f} kg CO2e/h by region",
                   max(280, 80 + 24 * len(labels)))


def fig_compare_cost(plans: Sequence[ReportPlan]) -> go.Figure:
    import plotly.graph_objects as go

    providers = sorted({p.provider for rp in plans for p in rp.plan.placements})
    fig = go.Figure()
    for i, rp in enumerate(plans):
        data = cost_by(rp.plan, "provider")
        fig.add_trace(go.Bar(name=esc(rp.name), x=[esc(p) for p in providers], y=[data.get(p, 0.0) for p in providers],
                             marker={"color": PALETTE[i % len(PALETTE)]},
                             hovertemplate=f"{esc(rp.name)}<br>%{{x}}: %{{y:$,.2f}}/h<extra></extra>"))
    fig.update_layout(barmode="group", yaxis_title="$/h")
    return _layout(fig, "Cost by provider, per plan", 400)


def fig_compare_gpus(plans: Sequence[ReportPlan]) -> go.Figure:
    import plotly.graph_objects as go

    models = sorted({m for rp in plans for m in gpu_mix(rp.plan)})
    fig = go.Figure()
    for i, rp in enumerate(plans):
        mix = gpu_mix(rp.plan)
        fig.add_trace(go.Bar(name=esc(rp.name), x=[esc(m) for m in models], y=[mix.get(m, 0) for m in models],
                             marker={"color": PALETTE[i % len(PALETTE)]},
                             hovertemplate=f"{esc(rp.name)}<br>%{{x}}: %{{y}} GPUs<extra></extra>"))
    fig.update_layout(barmode="group", yaxis_title="GPUs")
    return _layout(fig, "GPU mix, per plan", 360)


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1f2933; background: #f5f7fa; }
header { background: #1f2933; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 4px 0; font-size: 22px; }
header p { margin: 2px 0; color: #cbd2d9; font-size: 13px; }
main { padding: 8px 28px 40px 28px; }
section { background: #fff; border-radius: 8px; padding: 14px 18px; margin: 16px 0;
          box-shadow: 0 1px 3px rgba(0,0,0,0.08); }
h2 { font-size: 17px; margin: 4px 0 10px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 14px; }
.card { background: #fff; border-radius: 8px; padding: 10px 16px; min-width: 150px;
        box-shadow: 0 1px 3px rgba(0,0,0,0.08); }
.card .v { font-size: 20px; font-weight: 600; }
.card .k { font-size: 12px; color: #616e7c; }
table.data { border-collapse: collapse; width: 100%; font-size: 13px; }
table.data th, table.data td { border-bottom: 1px solid #e4e7eb; padding: 5px 8px; text-align: left; vertical-align: top; }
table.data th { background: #f0f4f8; }
table.data td.n, table.data th.n { text-align: right; white-space: nowrap; }
.note { color: #616e7c; font-size: 12px; margin: 6px 0; }
.warn { color: #8d2b0b; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
@media (max-width: 1100px) { .grid2 { grid-template-columns: 1fr; } }
"""


class _Figures:
    """Turns figures into HTML fragments: plotly.js inlined with the first one, reused after it."""

    def __init__(self) -> None:
        self.count = 0

    def html(self, fig: go.Figure) -> str:
        self.count += 1
        return str(fig.to_html(full_html=False, include_plotlyjs=self.count == 1, include_mathjax=False,
                               div_id=f"figure-{self.count}", config=PLOT_CONFIG))


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Iterable[int] = ()) -> str:
    """An HTML table; ``rows`` hold already-escaped HTML."""
    nums = set(numeric)
    head = "".join(f'<th{" class=n" if i in nums else ""}>{esc(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in nums else ""}>{c}</td>' for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cards(rp: ReportPlan, owned: OwnedUse | None) -> str:
    t = rp.plan.totals
    items = [
        (money(t.hourly_usd) + "/h", "cost"),
        (money(t.monthly_usd), "per month (730 h)"),
        (f"{t.replicas_placed}", "replicas placed"),
        (f"{t.replicas_unplaced}", "replicas not placed"),
        (f"{t.gpus}", "GPUs"),
        (f"{t.carbon_kg_per_hour:,.1f} kg", "CO2e per hour"),
    ]
    if owned is not None:
        items.append((f"{owned.used_gpus} / {owned.available_gpus}", "owned GPUs used / available"))
    items.append((esc(rp.plan.solver.status), f"solver, gap {rp.plan.solver.gap:.2%}"))
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{v}</div><div class="k">{esc(k)}</div></div>' for v, k in items) + "</div>"


def _unplaced_rows(plans: Sequence[ReportPlan], with_plan: bool) -> list[list[str]]:
    rows = []
    for rp in plans:
        for u in rp.plan.unplaced:
            row = [esc(u.workload), esc(u.team), str(u.replicas), esc(u.summary)]
            rows.append([esc(rp.name), *row] if with_plan else row)
    return rows


def _comparison(plans: Sequence[ReportPlan], owned: Sequence[OwnedUse | None], figures: _Figures) -> str:
    base = plans[0]
    moves: list[MoveCounts | None] = [None, *(move_counts(rp.plan, base.plan) for rp in plans[1:])]
    rows = []
    for rp, own, mv in zip(plans, owned, moves, strict=True):
        t = rp.plan.totals
        delta = t.hourly_usd - base.plan.totals.hourly_usd
        pct = f" ({100 * delta / base.plan.totals.hourly_usd:+.1f}%)" if base.plan.totals.hourly_usd and mv else ""
        unplaced = ", ".join(f"{u.workload} ({u.replicas})" for u in rp.plan.unplaced) or "—"
        rows.append([
            f"<b>{esc(rp.name)}</b>", "<br>".join(esc(c) for c in rp.changes) or "—",
            money(t.hourly_usd), money(t.monthly_usd),
            "—" if mv is None else f"{'+' if delta > 0 else ''}{money(delta)}/h{esc(pct)}",
            str(t.replicas_placed), f"{t.replicas_unplaced}: {esc(unplaced)}" if t.replicas_unplaced else "0",
            "—" if mv is None else f"{mv.moved} moved, {mv.created} new, {mv.deleted} removed",
            str(t.gpus), "—" if own is None else f"{own.used_gpus} / {own.available_gpus}",
            f"{t.carbon_kg_per_hour:,.1f}",
        ])
    table = _table(["plan", "changes", "$/h", "$/month", f"Δ vs {base.name}", "placed", "not placed",
                    f"moves vs {base.name}", "GPUs", "owned used / available", "kg CO2e/h"], rows,
                   numeric=(2, 3, 4, 5, 8, 10))
    return (f'<section id="comparison"><h2>What-if comparison ({len(plans)} plans, against {esc(base.name)})</h2>'
            f'{table}<div class="grid2"><div>{figures.html(fig_compare_cost(plans))}</div>'
            f'<div>{figures.html(fig_compare_gpus(plans))}</div></div></section>')


def world_topology(path: Path | None = None) -> dict[str, Any] | None:
    """A plotly world_110m TopoJSON: the given file, else the one shipped with the package, else None."""
    if path is None:
        shipped = Path(str(resources.files("placement") / "data" / "geo" / "world_110m.json"))
        if not shipped.exists():
            return None
        path = shipped
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlacementError(f"{path}: not a readable TopoJSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("type") != "Topology" or not isinstance(data.get("objects"), dict):
        raise PlacementError(f"{path}: not a TopoJSON topology (expected type: Topology with objects)")
    missing = [name for name in BASEMAP_LAYERS if name not in data["objects"]]
    if missing:
        raise PlacementError(f"{path}: not a plotly world topology: no {', '.join(missing)} object(s) "
                             f"(expected {', '.join(BASEMAP_LAYERS)}, as in plotly's world_110m.json)")
    return data


def _geo_assets(topology: Mapping[str, Any] | None) -> str:
    """Hands plotly.js its basemap so that it never fetches one (it looks here before going online)."""
    payload = json.dumps({"topojson": {"world_110m": topology or EMPTY_TOPOLOGY}}, separators=(",", ":"))
    payload = payload.replace("</", "<\\/")
    return f"<script>window.PlotlyGeoAssets = {payload};</script>"


def build_report(plans: Sequence[ReportPlan], title: str | None = None,
                 topology: Mapping[str, Any] | None = None) -> str:
    """The whole HTML page for these plans; the first one is the base of any comparison."""
    if not plans:
        raise PlacementError("give at least one plan")
    plans = unique_names(plans)
    figures = _Figures()
    colours = provider_colours(rp.plan for rp in plans)
    owned = [None if rp.scenario is None else owned_capacity(rp.plan, rp.scenario) for rp in plans]
    first = plans[0]
    title = title or ("Placement plan report" if len(plans) == 1 else "Placement what-if report")
    notes = "".join(f'<p class="note warn">{esc(rp.name)}: {esc(rp.note)}</p>' for rp in plans if rp.note)
    sources = "".join(
        f"<p>{esc(rp.name)}: {esc(rp.source)} — plan {esc(rp.plan.digest[:19])}, inventory "
        f"{esc(rp.plan.inputs['inventory'].detail.get('snapshot', '?') if 'inventory' in rp.plan.inputs else '?')}</p>"
        for rp in plans)
    parts = [f"<header><h1>{esc(title)}</h1>{sources}</header><main>{notes}"]
    parts.append(_cards(first, owned[0]))
    # plotly.js comes with the first figure; the what-if section goes first when there is one.
    if len(plans) > 1:
        parts.append(_comparison(plans, owned, figures))
    detail = f" — {esc(first.name)}" if len(plans) > 1 else ""
    parts.append(f'<section id="cost"><h2>Cost{detail}</h2>{figures.html(fig_cost_breakdown(first.plan, colours))}'
                 "</section>")
    parts.append(f'<section id="gpus"><h2>GPU mix{detail}</h2>{figures.html(fig_gpu_mix(first.plan))}</section>')
    site_list = sites(first.plan, first.scenario)
    located = any(s.lat is not None for s in site_list)
    map_html = ""
    if located:
        basemap = "" if topology else (
            '<p class="note">No basemap topology is available, so the map shows its 30° graticule only; '
            "the page loads nothing from the network.</p>")
        map_html = figures.html(fig_world_map(site_list, colours, topology is not None)) + basemap
    else:
        map_html = ('<p class="note">Locations need the plan\'s input files, which cannot be read; '
                    "the region grid shows where replicas run.</p>")
    parts.append(f'<section id="map"><h2>Placements{detail}</h2>{map_html}'
                 f"{figures.html(fig_region_grid(first.plan))}</section>")
    unplaced_rows = _unplaced_rows(plans, with_plan=len(plans) > 1)
    headers = ["workload", "team", "replicas", "why"]
    if len(plans) > 1:
        headers = ["plan", *headers]
    unplaced = _table(headers, unplaced_rows, numeric=(len(headers) - 2,)) if unplaced_rows else \
        '<p class="note">Every replica is placed.</p>'
    parts.append(f'<section id="unplaced"><h2>Unplaced workloads</h2>{unplaced}</section>')
    parts.append(f'<section id="owned"><h2>Idle owned capacity{detail}</h2>{figures.html(fig_owned(owned[0], first.plan))}'
                 "</section>")
    parts.append(f'<section id="carbon"><h2>Carbon{detail}</h2>{figures.html(fig_carbon(first.plan, colours))}</section>')
    parts.append("</main>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{_CSS}</style>{_geo_assets(topology)}</head><body>{''.join(parts)}</body></html>\n")


def write_report(paths: Sequence[Path], out: Path, title: str | None = None, topology_path: Path | None = None) -> str:
    cache: dict[str, Scenario] = {}
    plans = [load_report_plan(p, cache) for p in paths]
    page = build_report(plans, title, world_topology(topology_path))
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise PlacementError(f"cannot write the report to {out}: {exc}") from None
    return page


# --------------------------------------------------------------------------------------------------
# Monthly cost forecast from the state
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeamCost:
    team: str
    hourly_usd: float
    monthly_usd: float
    by_provider_monthly_usd: dict[str, float]
    budget_hourly_usd: float | None
    budget_monthly_usd: float | None
    limit_monthly_usd: float | None  # the tighter budget, as a month: min(hourly × 730, monthly)

    @property
    def over_monthly_usd(self) -> float | None:
        """Forecast minus the limit: positive is over budget, negative is what is left."""
        return None if self.limit_monthly_usd is None else round(self.monthly_usd - self.limit_monthly_usd, 2)


@dataclass(frozen=True)
class CostForecast:
    serial: int
    lineage: str | None
    replicas: int
    hourly_usd: float
    monthly_usd: float
    by_provider_monthly_usd: dict[str, float]
    teams: tuple[TeamCost, ...]
    policies: str | None
    unpriced: int = 0  # replicas in the state with no recorded placement spec, so no known cost


def forecast_costs(placements: Sequence[Placement], policies: PolicySet | None, *, serial: int = 0,
                   lineage: str | None = None, policy_source: str | None = None, unpriced: int = 0) -> CostForecast:
    """Monthly cost (730 h) per team and provider of what runs now, against the teams' budgets."""
    hourly: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for p in placements:
        hourly[p.team][p.provider] += p.total_hourly_usd
    rules = policies.teams if policies is not None else {}
    teams = []
    for team in sorted(set(hourly) | set(rules)):
        per = hourly.get(team, {})
        total = sum(per.values())
        rule = rules.get(team)
        limit = None if rule is None or rule.hourly_limit_usd is None else round(rule.hourly_limit_usd * HOURS_PER_MONTH, 2)
        teams.append(TeamCost(
            team=team, hourly_usd=round(total, 4), monthly_usd=round(total * HOURS_PER_MONTH, 2),
            by_provider_monthly_usd={k: round(v * HOURS_PER_MONTH, 2) for k, v in sorted(per.items())},
            budget_hourly_usd=None if rule is None else rule.budget_hourly_usd,
            budget_monthly_usd=None if rule is None else rule.budget_monthly_usd,
            limit_monthly_usd=limit,
        ))
    providers: dict[str, float] = defaultdict(float)
    for per in hourly.values():
        for k, v in per.items():
            providers[k] += v
    total = sum(providers.values())
    return CostForecast(
        serial=serial, lineage=lineage, replicas=len(placements), hourly_usd=round(total, 4),
        monthly_usd=round(total * HOURS_PER_MONTH, 2),
        by_provider_monthly_usd={k: round(v * HOURS_PER_MONTH, 2) for k, v in sorted(providers.items())},
        teams=tuple(teams), policies=policy_source, unpriced=unpriced,
    )


def forecast_document(forecast: CostForecast) -> dict[str, Any]:
    return {
        "format_version": 1,
        "kind": "placement-cost-forecast",
        "hours_per_month": HOURS_PER_MONTH,
        "state": {"serial": forecast.serial, "lineage": forecast.lineage, "replicas": forecast.replicas,
                  "replicas_without_cost": forecast.unpriced},
        "policies": forecast.policies,
        "hourly_usd": forecast.hourly_usd,
        "monthly_usd": forecast.monthly_usd,
        "by_provider_monthly_usd": forecast.by_provider_monthly_usd,
        "teams": [{
            "team": t.team, "hourly_usd": t.hourly_usd, "monthly_usd": t.monthly_usd,
            "by_provider_monthly_usd": t.by_provider_monthly_usd, "budget_hourly_usd": t.budget_hourly_usd,
            "budget_monthly_usd": t.budget_monthly_usd, "limit_monthly_usd": t.limit_monthly_usd,
            "over_monthly_usd": t.over_monthly_usd,
            "status": None if t.over_monthly_usd is None else ("over" if t.over_monthly_usd > 0 else "under"),
        } for t in forecast.teams],
    }


__all__ = ["CostForecast", "ReportPlan", "build_report", "forecast_costs", "load_report_plan",
           "write_report"]
