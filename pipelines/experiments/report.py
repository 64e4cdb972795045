"""The A/B readout report: JSON, and an HTML page with plots that reads offline (images are embedded)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

from pipelines.experiments.metrics import METRICS


def lift_figure(result: dict) -> bytes:
    """PNG: daily relative lift (treatment / control - 1) with its CI, per metric, and the window's lift."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = sorted(result["daily"])
    cols = 3
    rows = math.ceil(len(METRICS) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 2.6 * rows), squeeze=False)
    for ax, metric in zip(axes.ravel(), METRICS, strict=False):
        daily = [result["daily"][d][metric.name] for d in days]
        lift = [100 * r["rel_diff"] for r in daily]
        low = [100 * (r["rel_diff"] - r["rel_ci"][0]) for r in daily]
        high = [100 * (r["rel_ci"][1] - r["rel_diff"]) for r in daily]
        ax.errorbar(range(len(days)), lift, yerr=[low, high], fmt="o", ms=3, capsize=2, label="daily")
        overall = result["metrics"][metric.name]
        if math.isfinite(overall["rel_diff"]):
            ax.axhline(100 * overall["rel_diff"], color="C1", label="window")
            ax.axhspan(100 * overall["rel_ci"][0], 100 * overall["rel_ci"][1], color="C1", alpha=0.15)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"{metric.name} ({metric.side})", fontsize=9)
        ax.set_ylabel("lift %", fontsize=8)
        ax.set_xticks(range(len(days)), [d[5:] for d in days], fontsize=6, rotation=90)
    for ax in axes.ravel()[len(METRICS) :]:
        ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _fmt(value: float, pct: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{100 * value:+.2f}%" if pct else f"{value:.4g}"


def write_report(result: dict, out_dir: Path) -> dict[str, Path]:
    """Write ``readout.json``, ``lift.png`` and ``report.html`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "readout.json", "png": out_dir / "lift.png", "html": out_dir / "report.html"}
    paths["json"].write_text(json.dumps(result, indent=2, default=str))
    png = lift_figure(result)
    paths["png"].write_bytes(png)
    rows = []
    for metric in METRICS:
        r = result["metrics"][metric.name]
        flag = "significant" if r["significant"] else ""
        boot = r.get("bootstrap_diff_ci")
        rows.append(
            "<tr>"
            f"<td>{metric.side}</td><td title='{html.escape(metric.description)}'>{metric.name}</td>"
            f"<td>{_fmt(r['control'])}</td><td>{_fmt(r['treatment'])}</td>"
            f"<td>{_fmt(r['diff'])} [{_fmt(r['diff_ci'][0])}, {_fmt(r['diff_ci'][1])}]</td>"
            f"<td>{_fmt(r['rel_diff'], True)} [{_fmt(r['rel_ci'][0], True)}, {_fmt(r['rel_ci'][1], True)}]</td>"
            f"<td>{_fmt(r['p_value'])}</td><td>{flag}</td>"
            f"<td>{'' if not boot else f'[{_fmt(boot[0])}, {_fmt(boot[1])}]'}</td>"
            "</tr>"
        )
    srm = result["srm"]
    srm_text = (
        f"<p style='color:#b00'><b>Sample-ratio mismatch</b>: units {srm['counts']} vs expected shares "
        f"{srm['expected_share']} (p = {srm['p_value']:.2g}). Do not trust the results below.</p>"
        if srm["mismatch"]
        else f"<p>No sample-ratio mismatch: units {srm['counts']} (p = {srm['p_value']:.2g}).</p>"
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>A/B readout {html.escape(result["experiment_id"])}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}} .warn{{background:#fff4d6;padding:8px}}</style>
</head><body>
<h1>Cold-start experiment {html.escape(result["experiment_id"])}</h1>
<p>Dataset {html.escape(result["dataset"])}, {result["start"]} to {result["end"]}, design
<b>{html.escape(result["design"])}</b>; α = {result["config"]["alpha"]}; intervals by the delta method,
bootstrap (unit resampling) as a check where shown.</p>
<p class="warn">{html.escape(result["warning"])}</p>
{srm_text}
<table><tr><th>side</th><th>metric</th><th>control</th><th>treatment</th><th>difference [CI]</th>
<th>relative [CI]</th><th>p</th><th></th><th>bootstrap CI of difference</th></tr>{"".join(rows)}</table>
<h2>Daily lift</h2>
<img alt="daily lift per metric" src="data:image/png;base64,{base64.b64encode(png).decode()}">
</body></html>"""
    paths["html"].write_text(page)
    return paths
