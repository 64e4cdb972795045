"""The evaluation report: ``evaluation.json`` and ``report.html`` with embedded plots (reads offline).

Plots: the primary metric by slice for candidate and champion with intervals; the candidate − champion
difference by slice with its interval and the gate's tolerances; calibration curves (overall and cold slices).
A table of the cold slices says whether the gate could judge each, which checks ran and which were skipped (why),
and how the slice's rows were scored (new items on content-kNN or default rows, rows on the new-user path).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _err(entry: dict) -> tuple[float, list[float]]:
    value, (low, high) = entry["value"], entry["ci"]
    if value is None:
        return float("nan"), [0.0, 0.0]
    return value, [value - low if low is not None else 0.0, high - value if high is not None else 0.0]


def metric_by_slice(result: dict, task: str, metric: str) -> str:
    """Horizontal bars: ``metric`` of ``task`` per slice, candidate and champion, with intervals."""
    plt = _plt()
    names = [n for n in result["slices"] if task in result["slices"][n]["tasks"]]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    for offset, who, color in ((-0.18, "candidate", "C0"), (0.18, "champion", "C1")):
        points = [_err(result["slices"][n]["tasks"][task][who][metric])
                  for n in names if who in result["slices"][n]["tasks"][task]]  # fmt: skip
        if not points:
            continue
        ys = [i + offset for i in range(len(points))]
        ax.errorbar([p[0] for p in points], ys, xerr=list(zip(*[p[1] for p in points], strict=True)), fmt="o",
                    ms=4, capsize=2, color=color, label=who)  # fmt: skip
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{task} {metric}")
    ax.legend(fontsize=8)
    return _png(fig)


def delta_by_slice(result: dict, task: str, metric: str, tolerances: tuple[float, float]) -> str | None:
    """Candidate − champion per slice with its paired-bootstrap interval and the gate's tolerances."""
    names = [n for n in result["slices"] if "delta" in result["slices"][n]["tasks"].get(task, {})]
    if not names:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    points = [_err(result["slices"][n]["tasks"][task]["delta"][metric]) for n in names]
    ax.errorbar([p[0] for p in points], range(len(names)), xerr=list(zip(*[p[1] for p in points], strict=True)),
                fmt="o", ms=4, capsize=2)  # fmt: skip
    ax.axvline(0, color="grey", lw=0.8)
    sign = -1 if metric in ("auc", "gauc", "ndcg@1", "ndcg@3") else 1
    for tolerance, style in zip(tolerances, ("--", ":"), strict=True):
        ax.axvline(sign * tolerance, color="C3", ls=style, lw=0.8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{task} {metric}: candidate − champion (red: overall / cold tolerance)")
    return _png(fig)


def calibration_plot(result: dict) -> str | None:
    curves = result.get("calibration") or {}
    if not curves:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.8), squeeze=False)
    for ax, (task, by_slice) in zip(axes[0], curves.items(), strict=True):
        for index, (name, who_curves) in enumerate(by_slice.items()):
            for who, (predicted, observed) in who_curves.items():
                ax.plot(predicted, observed, marker="o" if who == "candidate" else "x", ms=3, color=f"C{index}",
                        ls="-" if who == "candidate" else ":", label=f"{name} ({who})")  # fmt: skip
        top = max([max(p + o) for w in by_slice.values() for p, o in w.values() if p] + [0.01])
        ax.plot([0, top], [0, top], color="grey", lw=0.8)
        ax.set_title(f"{task} calibration", fontsize=9)
        ax.set_xlabel("mean predicted", fontsize=8)
        ax.set_ylabel("observed rate", fontsize=8)
        ax.legend(fontsize=6)
    return _png(fig)


def _cell(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "–"
    low, high = entry["ci"]
    ci = f" <small>[{low:.4f}, {high:.4f}]</small>" if low is not None and high is not None else ""
    return f"{entry['value']:.4f}{ci}"


def _table(result: dict) -> str:
    rows = []
    for name, entry in result["slices"].items():
        for task, report in entry["tasks"].items():
            metrics = [m for m in report.get("candidate", {}) if isinstance(report["candidate"][m], dict)]
            for metric in metrics:
                oracle = (report.get("oracle") or {}).get(f"{metric}_gap")
                rows.append(
                    f"<tr><td>{html.escape(name)}</td><td>{task}</td><td>{metric}</td>"
                    f"<td>{report.get('count', entry.get('count'))}</td><td>{report.get('positives', '–')}</td>"
                    f"<td>{_cell(report['candidate'][metric])}</td>"
                    f"<td>{_cell(report.get('champion', {}).get(metric))}</td>"
                    f"<td>{_cell(report.get('delta', {}).get(metric))}</td>"
                    f"<td>{'–' if oracle is None else f'{oracle:.4f}'}</td></tr>"
                )
    head = ("<tr><th>slice</th><th>task</th><th>metric</th><th>rows</th><th>positives</th><th>candidate [95% CI]</th>"
            "<th>champion</th><th>candidate − champion</th><th>gap to oracle</th></tr>")  # fmt: skip
    return f"<table>{head}{''.join(rows)}</table>"


def _gate(gate: dict) -> str:
    verdict = "PASSED" if gate["passed"] else "BLOCKED"
    rows = "".join(
        f"<tr class='{c['outcome']}'><td>{html.escape(c['slice'])}</td><td>{c['check']}</td><td>{c['outcome']}</td>"
        f"<td>{html.escape(c['reason'])}</td></tr>"
        for c in gate["checks"]
    )
    champion = gate.get("champion_version")
    who = "No champion yet: absolute floors apply, on cold slices too."
    if gate["has_champion"]:
        who = f"Champion: version {champion}."
    return (f"<h2>Gate: {verdict}</h2><p>{who}</p>"
            f"<table><tr><th>slice</th><th>check</th><th>outcome</th><th>reason</th></tr>{rows}</table>")  # fmt: skip


def _paths(scoring: dict | None) -> str:
    """How a slice's rows were scored, per scorer (rankers): new items on content-kNN vs default rows, new users."""
    cells = []
    for who, p in (scoring or {}).items():
        if p is None:
            cells.append(f"{who}: its pyfunc's predict")
            continue
        share = "–" if p["content_knn_share"] is None else f"{p['content_knn_share']:.0%}"
        cells.append(f"{who}: {p['item_oov_rows']} of {p['rows']} rows on unseen items ({p['content_knn_rows']} "
                     f"content-kNN, {p['default_row_rows']} default row; kNN share {share}); "
                     f"{p['new_user_rows']} on the new-user path")  # fmt: skip
    return "<br>".join(html.escape(c) for c in cells) or "–"


def _cold(result: dict) -> str:
    """Per cold slice: whether the gate judged it, the checks that ran and those skipped (why), how it was scored."""
    rows = []
    for name in result.get("cold_slices", []):
        entry = result["slices"].get(name, {})
        checks = entry.get("checks", {"ran": [], "skipped": [], "judged": False})
        skipped = "<br>".join(html.escape(f"{s['check']}: {s['reason']}") for s in checks["skipped"]) or "–"
        rows.append(f"<tr class='{'pass' if checks['judged'] else 'fail'}'><td>{html.escape(name)}</td>"
                    f"<td>{entry.get('count', 0)}</td><td>{'yes' if checks['judged'] else 'NO'}</td>"
                    f"<td>{html.escape(', '.join(checks['ran'])) or '–'}</td><td>{skipped}</td>"
                    f"<td>{_paths(entry.get('scoring'))}</td></tr>")  # fmt: skip
    gate = result["gate"]
    allowed = "A cold slice no check could judge blocks the gate."
    if gate.get("allow_skipped_cold_checks"):
        allowed = "Cold slices no check could judge are allowed (allow_skipped_cold_checks)."
    scoring, policy = result.get("scoring") or {}, ""
    if "policy" in scoring:
        policies, versions = json.dumps(scoring["policy"]), json.dumps(scoring.get("versions", {}))
        policy = (f"<p>Scored as the ranker bento serves: policies <code>{html.escape(policies)}</code>; per version "
                  f"<code>{html.escape(versions)}</code></p>")  # fmt: skip
    head = ("<tr><th>cold slice</th><th>rows</th><th>judged</th><th>checks that ran</th><th>skipped (why)</th>"
            "<th>how its rows were scored</th></tr>")  # fmt: skip
    return f"<h2>Cold slices</h2><p>{allowed}</p>{policy}<table>{head}{''.join(rows)}</table>"


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}tr.fail{background:#fdd}tr.pass{background:#dfd}
tr.skipped{color:#888}img{max-width:100%}"""


def write_report(result: dict, out_dir: Path, primary: tuple[str, str], tolerances: tuple[float, float]) -> dict:
    """Write ``evaluation.json`` and ``report.html`` into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "evaluation.json", "html": out_dir / "report.html"}
    paths["json"].write_text(json.dumps(result, indent=2, default=str))
    task, metric = primary
    images = [metric_by_slice(result, task, metric), delta_by_slice(result, task, metric, tolerances),
              calibration_plot(result)]  # fmt: skip
    figures = "".join(f"<p><img src='data:image/png;base64,{i}'></p>" for i in images if i)
    title = f"Evaluation of {result['model']} version {result['candidate']['version']}"
    window = result.get("window") or {}
    body = (
        f"<h1>{html.escape(title)}</h1><p>Dataset {html.escape(str(result.get('dataset')))}; held-out window "
        f"{window.get('start', '–')} to {window.get('end', '–')}; {result.get('rows', '–')} rows. Slices: "
        f"<code>{html.escape(json.dumps(result.get('slice_config', {})))}</code></p>"
        f"{_gate(result['gate'])}{_cold(result)}<h2>Plots</h2>{figures}<h2>All metrics</h2>{_table(result)}"
    )
    paths["html"].write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                             f"<style>{STYLE}</style></head><body>{body}</body></html>")  # fmt: skip
    return paths
