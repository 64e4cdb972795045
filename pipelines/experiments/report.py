"""The A/B readout report: JSON, and an HTML page with plots that reads offline (images are embedded).

The page shows the design's four questions answered, the SRM check on assigned units, every window metric with
its role (primary, guardrail, secondary) and its p-value adjusted over the family, the new items followed up
per group (matured counts, target reach, time to first exposure with never-exposed items kept, hot share) and
the daily lifts, marked descriptive unless they were corrected.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

_ROLE_ORDER = {"primary": 0, "guardrail": 1, "secondary": 2}


def lift_figure(result: dict) -> bytes:
    """PNG: daily relative lift (treatment / control - 1) with its CI, per metric, and the window's lift."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = sorted(result["daily"])
    names = list(result["metrics"])
    cols = 3
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        daily = [result["daily"][d][name] for d in days]
        lift = [100 * r["rel_diff"] for r in daily]
        low = [100 * (r["rel_diff"] - r["rel_ci"][0]) for r in daily]
        high = [100 * (r["rel_ci"][1] - r["rel_diff"]) for r in daily]
        ax.errorbar(range(len(days)), lift, yerr=[low, high], fmt="o", ms=3, capsize=2, label="daily")
        overall = result["metrics"][name]
        if math.isfinite(overall["rel_diff"]):
            ax.axhline(100 * overall["rel_diff"], color="C1", label="window")
            ax.axhspan(100 * overall["rel_ci"][0], 100 * overall["rel_ci"][1], color="C1", alpha=0.15)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"{name} ({overall['side']}, {overall['role']})", fontsize=9)
        ax.set_ylabel("lift %", fontsize=8)
        ax.set_xticks(range(len(days)), [d[5:] for d in days], fontsize=6, rotation=90)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{100 * value:+.2f}%" if pct else f"{value:.4g}"


def _share(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _metric_rows(result: dict) -> str:
    rows = []
    ordered = sorted(result["metrics"].items(), key=lambda kv: _ROLE_ORDER[kv[1]["role"]])
    for name, r in ordered:
        verdict = "significant" if r["significant"] else "" if r["in_family"] else "not tested"
        boot = r.get("bootstrap_diff_ci")
        cuped = r.get("cuped")
        n = r["denominators"]
        rows.append(
            f"<tr class='{r['role']}'><td>{r['role']}</td><td>{r['side']}</td>"
            f"<td title='{html.escape(r['description'])}'>{name}</td>"
            f"<td>{_fmt(r['control'])}</td><td>{_fmt(r['treatment'])}</td>"
            f"<td>{_fmt(r['diff'])} [{_fmt(r['diff_ci'][0])}, {_fmt(r['diff_ci'][1])}]</td>"
            f"<td>{_fmt(r['rel_diff'], True)} [{_fmt(r['rel_ci'][0], True)}, {_fmt(r['rel_ci'][1], True)}]</td>"
            f"<td>{_fmt(r['p_value'])}</td><td>{_fmt(r['p_adjusted'])}</td><td>{verdict}</td>"
            f"<td>{_fmt(n['control'])} / {_fmt(n['treatment'])}</td>"
            f"<td>{'' if not cuped else _fmt(cuped['variance_ratio'])}</td>"
            f"<td>{'' if not boot else f'[{_fmt(boot[0])}, {_fmt(boot[1])}]'}</td></tr>"
        )
    return "".join(rows)


def _item_rows(result: dict) -> str:
    rows = []
    for bucket, it in result["items"].items():
        fe = it["first_exposure"]
        rows.append(
            f"<tr><td>{bucket}</td><td>{it.get('new_items', 0)}</td><td>{it.get('matured_24h', 0)}</td>"
            f"<td>{it['target_reached']}</td><td><b>{_share(it['target_reach_24h'])}</b></td>"
            f"<td>{it.get('matured_first', 0)}</td><td>{it.get('never_exposed_matured', 0)}</td>"
            f"<td>{_fmt(it['restricted_mean_hours'])}</td><td>{_fmt(fe['median_hours'])}</td><td>{_fmt(fe['restricted_mean_hours'])}</td>"
            f"<td>{_share(fe['share_unexposed_at_cap'])}</td><td>{fe['never_exposed']}</td>"
            f"<td>{it.get('matured_hot', 0)}</td><td>{it['hot_items']}</td><td>{_share(it['hot_share'])}</td>"
            f"<td>{it.get('matured_new', 0)}</td></tr>"
        )
    return "".join(rows)


def _srm_text(srm: dict) -> str:
    counts = f"assigned units {srm['counts']} (active in the window: {srm['active_units']})"
    if srm["mismatch"]:
        return (
            f"<p style='color:#b00'><b>Sample-ratio mismatch</b>: {counts} vs expected shares "
            f"{srm['expected_share']} (p = {srm['p_value']:.2g}). Do not trust the results below.</p>"
        )
    return f"<p>No sample-ratio mismatch: {counts} (p = {srm['p_value']:.2g}).</p>"


def _questions(result: dict) -> str:
    items = "".join(
        f"<dt>{html.escape(q['question'])}</dt><dd>{html.escape(q['answer'])}</dd>" for q in result["design_questions"]
    )
    return f"<div class='warn'><b>Design: {html.escape(result['design'])}</b><dl>{items}</dl></div>"


def _paced(result: dict) -> str:
    """A closed-loop run's per-group reach of each item's own (differentiated) target, when the run gives one."""
    groups = result.get("paced_targets")
    if not groups:
        return ""
    rows = "".join(f"<tr><td>{html.escape(g)}</td><td>{r['judged']}</td><td><b>{_share(r['reached'])}</b></td>"
                   f"<td>{_fmt(r['over_exposure'])}</td><td>{r['without_target']}</td></tr>"
                   for g, r in groups.items())  # fmt: skip
    return f"""<h2>Differentiated 24 h targets per group (closed loop)</h2>
<p>Each new item's target as the near-line state set it (quality and author percentiles); judged: items of the
window whose 24 h the logs cover; reached: exposures in the first 24 h at or above the target; over-exposure:
mean of max(0, exposures − target) / target.</p>
<table><tr><th>group</th><th>judged</th><th>reached</th><th>over-exposure</th><th>without a target</th></tr>
{rows}</table>"""


def write_report(result: dict, out_dir: Path) -> dict[str, Path]:
    """Write ``readout.json``, ``lift.png`` and ``report.html`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "readout.json", "png": out_dir / "lift.png", "html": out_dir / "report.html"}
    paths["json"].write_text(json.dumps(result, indent=2, default=str))
    png = lift_figure(result)
    paths["png"].write_bytes(png)
    cfg, corr = result["config"], result["correction"]
    method = {"holm": "Holm", "bh": "Benjamini-Hochberg"}[corr["method"]]
    cuped = f"CUPED on the {cfg['cuped_pre_days']} days before the window" if cfg["cuped_pre_days"] else "no CUPED"
    daily = "descriptive (unadjusted intervals, not tested)" if corr["daily"] == "descriptive" else f"{method}"
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>A/B readout {html.escape(result["experiment_id"])}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}} .warn{{background:#fff4d6;padding:8px}}
tr.primary td{{background:#eef6ff}} dt{{font-weight:bold;margin-top:6px}}</style>
</head><body>
<h1>Cold-start experiment {html.escape(result["experiment_id"])}</h1>
<p>Dataset {html.escape(result["dataset"])}, {result["start"]} to {result["end"]} (items followed up to
{result["observed_until"]}), design <b>{html.escape(result["design"])}</b>, unit: {result["unit_type"]};
α = {corr["alpha"]}; p-values adjusted by <b>{method}</b> over {len(corr["family"])} window-level tests
({cfg["family"]}); {cuped}. Intervals by the delta method (unadjusted), bootstrap (unit resampling) as a check
where shown.</p>
{_questions(result)}
{_srm_text(result["srm"])}
<h2>Metrics</h2>
<table><tr><th>role</th><th>side</th><th>metric</th><th>control</th><th>treatment</th><th>difference [CI]</th>
<th>relative [CI]</th><th>p</th><th>p adjusted ({method})</th><th></th><th>denominator control / treatment</th>
<th>CUPED variance ratio</th><th>bootstrap CI of difference</th></tr>{_metric_rows(result)}</table>
<h2>New items per group</h2>
<p>Only matured items count: items whose 24 h, first-exposure cap ({cfg["first_exposure_cap_hours"]} h), hot window
({cfg["hot_days"]} days, ≥ {cfg["hot_clicks"]} clicks) or new-item window ({cfg["new_item_hours"]} h) ended by
{result["observed_until"]}. Time to first exposure keeps never-exposed items: at the cap in the tested restricted
mean, censored in the Kaplan-Meier figures (all items, descriptive).</p>
<table><tr><th>group</th><th>published</th><th>matured 24 h</th><th>reached target</th><th>target reach 24 h</th>
<th>matured (cap)</th><th>never exposed (matured)</th><th>restricted mean h</th><th>KM median h</th>
<th>KM restricted mean h</th><th>KM unexposed at cap</th><th>never exposed (censored)</th><th>matured (hot)</th>
<th>hot</th><th>hot share</th><th>matured (new window)</th></tr>{_item_rows(result)}</table>
{_paced(result)}
<h2>Daily lift: {daily}</h2>
<img alt="daily lift per metric" src="data:image/png;base64,{base64.b64encode(png).decode()}">
</body></html>"""
    paths["html"].write_text(page)
    return paths
