"""``coldstart experiment``: a closed-loop cold-start experiment (the twin of the ``coldstart_experiment`` DAG)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pipelines.cli._common import _clear_errors, _print_summary, _settings, app
from pipelines.experiments.closed_loop import ClosedLoopConfig
from pipelines.orchestration import default


@app.command()
@_clear_errors
def experiment(
    experiment_id: Annotated[str, typer.Option()] = default(ClosedLoopConfig, "experiment_id"),
    design: Annotated[
        str,
        typer.Option(help="user_split, author_split or balanced_author_split (with --treatment-share 0.25: 25/50/25)."),
    ] = default(ClosedLoopConfig, "design"),
    treatment_share: Annotated[float, typer.Option(min=0, max=1)] = default(ClosedLoopConfig, "treatment_share"),
    pre_days: Annotated[int, typer.Option(min=3)] = default(ClosedLoopConfig, "pre_days"),
    days: Annotated[int, typer.Option(min=1)] = default(ClosedLoopConfig, "days"),
    users: Annotated[int, typer.Option(min=100)] = default(ClosedLoopConfig, "users"),
    seed: Annotated[int, typer.Option()] = default(ClosedLoopConfig, "seed"),
    config: Annotated[str, typer.Option(help="JSON overrides of any other field (treatment, control, ...).")] = "{}",
) -> None:
    """Simulate a pre-period, stage a model through the chain's steps, serve the experiment period with the
    platform's own ranker and policies (control vs treatment), and read it out."""
    from pipelines.experiments.closed_loop import run_closed_loop

    cfg = ClosedLoopConfig(**{"experiment_id": experiment_id, "design": design, "treatment_share": treatment_share,
                              "pre_days": pre_days, "days": days, "users": users, "seed": seed,
                              **json.loads(config)})  # fmt: skip
    out = run_closed_loop(_settings(), cfg)
    rows = {"impressions": out["impressions"], "staged": f"{out['staged']['model']} v{out['staged']['version']}",
            "window": " .. ".join(out["window"])}  # fmt: skip
    if "two_tower" in out["staged"]:
        two = out["staged"]["two_tower"]
        rows["retrieval"] = f"platform: two_tower v{two['version']}, {two['indexed']} items indexed ({two['gate']})"
    if "content_tower" in out["staged"]:
        tower = out["staged"]["content_tower"]
        rows["content tower"] = f"v{tower['version']} ({tower['gate']})"
    for name, metric in out["headline"].items():
        rows[name] = (f"control {metric['control']:.4f}  treatment {metric['treatment']:.4f}  "
                      f"lift {metric['rel_diff']:+.2%}  p {metric['p_value']:.3f}")  # fmt: skip
    channels = out.get("channels", {})
    if channels.get("new_items"):
        rows["new-item CTR by channel"] = "  ".join(f"{c} {v['ctr']:.4f} (n={v['impressions']})"
                                                    for c, v in channels["new_items"].items())  # fmt: skip
    rows |= {k: f"{v:.1f}" for k, v in out["timings"].items()} | {"report": out["report"]}
    _print_summary(f"Closed-loop experiment {cfg.experiment_id} ({cfg.design})", rows)
