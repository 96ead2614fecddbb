"""The HTML report: self-contained, escaped, and rendered by a real browser (headless Chromium)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from placement.diff import EMPTY_STATE
from placement.errors import PlacementError
from placement.models import Unplaced
from placement.planner import make_plan, plan_to_json, read_plan
from placement.report import (
    ReportPlan,
    build_report,
    load_report_plan,
    scenario_for_plan,
    world_topology,
    write_report,
)
from placement.scenario import load_scenario
from placement.whatif import load_whatif, run_whatif
from tests.helpers import write_scenario

ROOT = Path(__file__).resolve().parent.parent
FLEET = ROOT / "scenarios" / "inference-fleet"
CHROMIUM = Path("/usr/bin/chromium")

# A tiny plotly-style world topology (one square of land with its coastline), to check the embedded
# basemap path without shipping a real one in the tests.
TOPOLOGY = {
    "type": "Topology",
    "arcs": [[[-10.0, 40.0], [30.0, 40.0], [30.0, 65.0], [-10.0, 65.0], [-10.0, 40.0]]],
    "objects": {
        "land": {"type": "GeometryCollection", "geometries": [{"type": "Polygon", "arcs": [[0]]}]},
        "coastlines": {"type": "GeometryCollection", "geometries": [{"type": "LineString", "arcs": [0]}]},
        "countries": {"type": "GeometryCollection", "geometries": [{"type": "Polygon", "arcs": [[0]], "id": "EU"}]},
        "ocean": {"type": "GeometryCollection", "geometries": []},
    },
}

# Loaded first in a copy of the page: records console errors and warnings, failed loads, uncaught
# errors, every resource the page fetched, and how many plotly figures drew their SVG.
PROBE = """<script>
window.__probe = {errors: [], warnings: []};
(function () {
  var err = console.error, warn = console.warn;
  console.error = function () { window.__probe.errors.push(Array.prototype.join.call(arguments, " ")); return err.apply(console, arguments); };
  console.warn = function () { window.__probe.warnings.push(Array.prototype.join.call(arguments, " ")); return warn.apply(console, arguments); };
  window.addEventListener("error", function (e) { window.__probe.errors.push("error event: " + (e.message || (e.target && (e.target.src || e.target.href)) || "?")); }, true);
  window.addEventListener("unhandledrejection", function (e) { window.__probe.errors.push("unhandled rejection: " + e.reason); });
  window.addEventListener("load", function () { setTimeout(function () {
    var divs = document.querySelectorAll(".plotly-graph-div"), drawn = 0;
    divs.forEach(function (d) { if (d.querySelector(".plot-container .main-svg")) { drawn++; } });
    window.__probe.figures = divs.length; window.__probe.drawn = drawn;
    window.__probe.geo_points = document.querySelectorAll(".trace.scattergeo path.point").length;
    window.__probe.land = document.querySelectorAll(".layer.land path").length;
    window.__probe.resources = performance.getEntriesByType("resource").map(function (e) { return e.name; });
    var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(window.__probe);
    document.body.appendChild(pre);
  }, 1500); });
})();
</script>"""

NETWORK_LOAD = re.compile(
    r"""(<(script|img|iframe|link|source|video|audio|embed|object)\b[^>]*\b(src|href|data)\s*=\s*["']?\s*(https?:)?//)"""
    r"""|(url\(\s*["']?\s*(https?:)?//)|(@import\s+["']?(url\()?\s*["']?(https?:)?//)""",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def plan_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The base plan and every variant of the fleet's what-if file, written as `placement whatif --out-dir` does."""
    folder = tmp_path_factory.mktemp("plans")
    result = run_whatif(load_scenario(FLEET), load_whatif(FLEET / "whatif.yaml"), EMPTY_STATE)
    paths = []
    for outcome in result.outcomes:
        path = folder / f"{outcome.name}.json"
        path.write_text(plan_to_json(outcome.plan), encoding="utf-8")
        paths.append(path)
    return paths


def _figures(page: str) -> list[str]:
    """The ``Plotly.newPlot`` calls of the page (figure data, layout and config), not plotly.js itself."""
    return [chunk.split("</script>", 1)[0] for chunk in page.split("Plotly.newPlot(")[1:]]


def _chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         # No name resolves: whatever the page (or the browser) asks for on the network fails here.
         "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={user_dir}", "--enable-logging=stderr", "--v=0",
         *args],
        capture_output=True, text=True, timeout=180, check=False,
    )


def _probe(page: Path, tmp_path: Path) -> tuple[dict[str, object], str, str]:
    """Open a copy of the page with the probe in headless Chromium; the probe's findings, the DOM and stderr."""
    text = page.read_text(encoding="utf-8")
    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    run = _chromium("--virtual-time-budget=15000", "--window-size=1400,2000", "--dump-dom", probed.as_uri(),
                    user_dir=tmp_path / f"profile-{page.stem}")
    found = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.DOTALL)
    assert found, f"the probe did not report (exit {run.returncode}): {run.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1))), run.stdout, run.stderr


def test_report_is_self_contained(plan_files: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    page = write_report(plan_files, out)
    assert out.read_text(encoding="utf-8") == page
    assert not NETWORK_LOAD.search(page), NETWORK_LOAD.search(page)
    assert page.count("window.PlotlyConfig") == 1, "plotly.js is inlined once"
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert scripts and all("src" not in s for s in scripts)
    assert "window.PlotlyGeoAssets" in page and '"topojsonURL": "./"' in page
    # base + 6 variants: comparison (2 figures) + cost, GPU mix, map, region grid, owned, carbon
    figures = _figures(page)
    assert len(figures) == 8
    assert sum('"lat":[' in f for f in figures) == 1  # one map (the templates name every trace type)
    for name in ("chat-traffic-10x", "gcp-europe-west4-outage", "ashburn-l40s-cluster", "no-lambda"):
        assert name in page
    assert "What-if comparison (7 plans, against base)" in page
    assert "chat-llm-japan" in page and "team assistant budget" in page


def test_variant_plans_rebuild_their_scenario(plan_files: list[Path]) -> None:
    for path in plan_files:
        plan = read_plan(path)
        scenario, note = scenario_for_plan(plan)
        assert scenario is not None and note == "", (path.name, note)
        for key in ("workloads", "inventory", "policies"):
            assert getattr(scenario, key).digest == plan.inputs[key].digest, (path.name, key)
    rp = load_report_plan(next(p for p in plan_files if p.stem == "ashburn-l40s-cluster"))
    assert rp.name == "ashburn-l40s-cluster" and rp.changes and rp.scenario is not None
    assert any(o.region == "iad-dc3" for o in rp.scenario.inventory.inventory.offers)


def test_report_escapes_strings_from_inputs(plan_files: list[Path]) -> None:
    rp = load_report_plan(plan_files[0])
    evil = "<script>alert('x')</script>"
    plan = rp.plan.model_copy(update={"unplaced": (Unplaced(workload="w", team="t", replicas=1,
                                                            summary=f"0/1 offers fit: 1 {evil}"),)})
    page = build_report([ReportPlan(f"base{evil}", f"plans/{evil}.json", plan, rp.scenario, (evil,), evil),
                         ReportPlan("other", "other.json", rp.plan, None)])
    assert evil not in page
    assert html.escape(evil) in page
    assert "alert(" in page  # present, but only in escaped form
    assert page.count("<script>alert") == 0


def test_report_without_inputs_uses_the_region_grid(tmp_path: Path) -> None:
    folder = write_scenario(tmp_path / "gone", [{"name": "svc", "team": "a", "replicas": 2,
                                                 "gpu": {"models": ["L4"], "count": 1}}])
    path = tmp_path / "plan.json"
    path.write_text(plan_to_json(make_plan(load_scenario(folder))), encoding="utf-8")
    shutil.rmtree(folder)
    rp = load_report_plan(path)
    assert rp.scenario is None and "inputs not available" in rp.note
    page = build_report([rp])
    figures = _figures(page)
    assert not any('"lat":[' in f for f in figures)
    assert any('"type":"heatmap","x":[' in f or '"z":[' in f for f in figures)
    assert "Locations need the plan" in page and "capacity unknown without the inputs" in page
    assert not NETWORK_LOAD.search(page)


def test_world_topology_is_checked(tmp_path: Path) -> None:
    good = tmp_path / "world.json"
    good.write_text(json.dumps(TOPOLOGY))
    assert world_topology(good) == TOPOLOGY
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**TOPOLOGY, "objects": {"land": TOPOLOGY["objects"]["land"]}}))  # type: ignore[index]
    with pytest.raises(PlacementError, match="no ocean, coastlines, countries"):
        world_topology(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(PlacementError, match="not a TopoJSON topology"):
        world_topology(bad)


def test_report_renders_in_headless_chromium(plan_files: list[Path], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package to run the browser test")
    page = tmp_path / "report.html"
    write_report(plan_files, page)
    probe, dom, stderr = _probe(page, tmp_path)
    print(f"browser probe: {json.dumps({k: v for k, v in probe.items() if k != 'resources'})}, "
          f"resources {probe['resources']}")
    assert probe["errors"] == [], probe["errors"]
    assert "Uncaught" not in stderr, [line for line in stderr.splitlines() if "Uncaught" in line]
    assert not [r for r in probe["resources"] if str(r).startswith(("http:", "https:", "//"))]  # type: ignore[attr-defined]
    assert probe["figures"] == probe["drawn"] == 8
    assert dom.count("main-svg") >= 8 and "plot-container" in dom
    assert probe["geo_points"], "the world map shows the sites"
    shipped = world_topology() is not None
    assert bool(probe["land"]) == shipped, "land is drawn exactly when the package ships a basemap"

    shot = tmp_path / "report.png"
    run = _chromium("--virtual-time-budget=15000", "--hide-scrollbars", f"--screenshot={shot}",
                    "--window-size=1400,2000", page.as_uri(), user_dir=tmp_path / "profile-shot")
    assert shot.exists() and shot.stat().st_size > 50_000, run.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")

    with_map = tmp_path / "report-basemap.html"
    world = tmp_path / "world.json"
    world.write_text(json.dumps(TOPOLOGY))
    write_report(plan_files[:1], with_map, topology_path=world)
    probe, _, stderr = _probe(with_map, tmp_path)
    assert probe["errors"] == [] and "Uncaught" not in stderr, probe["errors"]
    assert probe["figures"] == probe["drawn"] == 6
    assert probe["land"] and probe["geo_points"], "the embedded basemap's land and the sites are drawn"
