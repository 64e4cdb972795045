"""``coldstart demo``: the platform end to end on the local profile, one function per chapter of the demo."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated

import typer

from pipelines.cli._common import _clear_errors, _print_summary, _settings, app, console
from pipelines.cli.data import ingest_movielens, simulate
from pipelines.cli.platform import _airflow_client, _print_chain, platform_up
from pipelines.settings import Settings

if TYPE_CHECKING:
    from pipelines.platform.client import AirflowClient

# Demo-sized Params for the evaluations both chains set off, handed on through the Asset events.
# The demo's small held-out day leaves the new-user x new-item cross too small to judge: skipped cold checks are
# allowed, and each evaluation report lists which cold checks ran.
_DEMO_EVALUATE = {"n_bootstrap": 100, "max_users": 300, "allow_skipped_cold_checks": True}
# The content tower on demo data: a capped triplet set and 6 epochs of its own trainer (on the demo's 5,000 users:
# ~5k triplets, 26 s of fitting, held-out triplet accuracy 0.94, well over its 0.6 floor). The chain's `epochs: 2`
# and `lr` are the rankers'; these win for the tower.
_DEMO_TOWER = {"triplets": {"max_triplets": 20_000}, "train": {"epochs": 6, "batch_size": 128, "lr": 0.003}}
# The two-tower retrieval model on demo data: its own trainer's batch (in-batch negatives) and a few epochs.
_DEMO_TWO_TOWER = {"train": {"epochs": 6, "batch_size": 512, "lr": 0.003}}


@app.command()
@_clear_errors
def demo(
    days: Annotated[int, typer.Option(min=3)] = 7,
    users: Annotated[int, typer.Option(min=10)] = 5_000,
    seed: Annotated[int, typer.Option()] = 7,
    down: Annotated[bool, typer.Option("--down", help="Stop the platform at the end.")] = False,
) -> None:
    """Run the platform end to end on the local profile, through the real Airflow scheduler.

    Simulates the logs, starts the platform (`coldstart platform up`), triggers `validate_logs` over every
    simulated day through the REST API and follows the Asset chain (validate -> materialize -> train ->
    evaluate -> promote), runs a small closed-loop experiment beside MeLU's chain, reads out the A/B experiment,
    asks the staging ranker, and prints where to look. The platform keeps running unless `--down`.
    """
    from pipelines.platform.launcher import down as platform_down
    from pipelines.serving.promote import staging_record

    settings, client, first, last = _start_platform(days, users, seed)
    _run_ranker_chain(client, first, last)
    experiment = _start_experiment(client)  # beside MeLU's single-threaded training: the other core is free
    _run_own_data_chains(client)
    _read_out_ab(client, first, last)
    _finish_experiment(client, experiment)
    if staging_record(settings, "esmm"):
        _ask_staging_ranker()
    _print_where_to_look(settings, client, first, last)
    if down:
        platform_down(settings)


def _start_platform(days: int, users: int, seed: int) -> tuple[Settings, AirflowClient, str, str]:
    """Simulate the logs, ingest MovieLens, start the platform and wait until Airflow has parsed every DAG.

    Returns:
        The settings, a REST client for Airflow, and the first and last simulated day as ISO dates.
    """
    from pipelines.data.contract import Store
    from pipelines.platform.client import CHAIN

    simulate(days=days, users=users, seed=seed, start_date=dt.datetime(2026, 1, 1), impressions_per_day=None,
             policy="popularity", design="user_split", dataset="sim")  # fmt: skip
    ingest_movielens()
    settings = _settings()
    platform_up(workers=1, timeout=300)
    client = _airflow_client(settings)
    client.wait_for_dags((*CHAIN, "coldstart_ab_metrics", "coldstart_experiment"))
    sim_days = Store(settings.data_dir, "sim").partitions("impressions")
    return settings, client, sim_days[0].isoformat(), sim_days[-1].isoformat()


def _run_ranker_chain(client: AirflowClient, first: str, last: str) -> None:
    """Validate every simulated day and follow the Asset chain: materialize, train the content tower, then ESMM and
    PLE (whose new items borrow the tower's content neighbours) and the two-tower retrieval model (gated on its own
    held-out recall), evaluate, promote."""
    from pipelines.platform.client import CHAIN, now

    console.rule("validate -> materialize -> train (content tower, ESMM, PLE+UIE, two-tower) -> evaluate -> promote")
    chain = {"train_models": {"models": ["content_tower", "esmm", "ple", "two_tower"], "epochs": 2, "lr": 0.003,
                              "model_config": {"content_tower": _DEMO_TOWER, "two_tower": _DEMO_TWO_TOWER}},
             "evaluate_models": _DEMO_EVALUATE}  # fmt: skip
    since = now()
    client.trigger("validate_logs", {"date": first, "end": last, "chain": chain}, note="coldstart demo")
    _print_chain(client, client.follow(CHAIN, since, expect=CHAIN, timeout=3600))


def _run_own_data_chains(client: AirflowClient) -> None:
    """Each family trained on a dataset of its own (MeLU on MovieLens-1M): `train_models` with the family's demo
    Params, then its chain: evaluate, promote."""
    from pipelines.catalog import families
    from pipelines.platform.client import CHAIN, now

    for family in families().values():
        if family.trains_on_window or not family.demo:
            continue
        console.rule(f"{family.name}: train_models -> evaluate -> promote")
        since = now()
        params = {**family.demo, "models": list(family.models), "chain": {"evaluate_models": _DEMO_EVALUATE}}
        params["model_config"] = {name: dict(family.demo.get("model_config", {})) for name in family.models}
        client.trigger("train_models", params, note=f"coldstart demo: {family.name} with the catalog's demo Params")
        _print_chain(client, client.follow(CHAIN[2:], since, expect=CHAIN[2:4], timeout=3600))


def _read_out_ab(client: AirflowClient, first: str, last: str) -> None:
    """Run `coldstart_ab_metrics` over the simulated days and wait for it."""
    console.rule("Cold-start A/B readout (coldstart_ab_metrics)")
    run = client.trigger("coldstart_ab_metrics", {"start": first, "end": last, "high_exposure_threshold": 100})
    _print_chain(client, {"coldstart_ab_metrics": [client.wait_run("coldstart_ab_metrics", run["dag_run_id"])]})


# A small closed-loop experiment: guaranteed exposure for treatment authors' new items, served by the platform.
_DEMO_EXPERIMENT = {"experiment_id": "demo_guaranteed_exposure", "design": "author_split", "users": 3000,
                    "pre_days": 4, "days": 2}  # fmt: skip


def _start_experiment(client: AirflowClient) -> dict:
    """Trigger `coldstart_experiment` (a small closed loop); it runs while the next chapters do."""
    console.rule("Closed-loop experiment (coldstart_experiment): the platform serves the simulated feed")
    return client.trigger("coldstart_experiment", _DEMO_EXPERIMENT, note="coldstart demo: closed loop")


def _finish_experiment(client: AirflowClient, run: dict) -> None:
    """Wait for the experiment's run and print it."""
    _print_chain(client, {"coldstart_experiment": [client.wait_run("coldstart_experiment", run["dag_run_id"])]})


def _print_where_to_look(settings: Settings, client: AirflowClient, first: str, last: str) -> None:
    """The UIs, the login and the reports the demo wrote."""
    from pipelines.experiments.closed_loop import ClosedLoopConfig, report_path
    from pipelines.platform.launcher import admin_password

    reports = settings.reports_dir
    _print_summary(
        "Where to look",
        {
            "Airflow UI": f"{client.base_url}  (user admin, password {admin_password(settings)})",
            "MLflow UI": f"http://127.0.0.1:{settings.mlflow_port}",
            "evaluation reports": str(reports / "evaluation" / "sim"),
            "A/B report": str(reports / "ab" / "sim" / "exp_new_item_boost" / f"{first}_{last}" / "report.html"),
            "Data Docs": str(reports / "validation" / "sim" / f"{last}" / "index.html"),
            "closed-loop experiment report": str(report_path(settings, ClosedLoopConfig(**_DEMO_EXPERIMENT))),
            "staging bentos": str(settings.home / "serving"),
            "stop the platform": "coldstart platform down",
        },
    )


def _ask_staging_ranker() -> None:
    """Serve the staging ranker on 127.0.0.1, send it one request (a known user, a new one), ask it to recommend
    for the known user (recall from every channel, then rank), print, stop."""
    import secrets

    import httpx

    from pipelines.data.contract import Store
    from pipelines.serving.bento import serve as serve_bento
    from pipelines.serving.bento import stop
    from pipelines.serving.promote import staging_record

    settings = _settings()
    data = Store(settings.data_dir, "sim")
    day = data.partitions("impressions", layer="clean")[-1]
    rows = data.read("impressions", day, layer="clean", columns=["user_id", "item_id"]).to_pandas()
    token = secrets.token_urlsafe(16)
    process, url = serve_bento(settings, staging_record(settings, "esmm")["bento"], token=token)
    candidates = [int(i) for i in rows["item_id"].drop_duplicates().head(200)]
    try:
        for user in (int(rows["user_id"].iloc[0]), 10**12):
            # "now" = the end of the simulated log, so the last day's new items are hours old, as in production.
            now = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC).isoformat()
            body = {"user_id": user, "candidates": candidates, "k": 5, "now": now}
            answer = httpx.post(f"{url}/rank", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            answer.raise_for_status()
            console.print(f"[bold]POST {url}/rank[/] user {user} (200 candidates, top 5):")
            console.print_json(data=answer.json())
        _recommend(url, token, int(rows["user_id"].iloc[0]), now)
    finally:
        stop(process)


def _recommend(url: str, token: str, user: int, now: str) -> None:
    """``/recommend`` for ``user``: the top 5 with the recall channels that found each, and what each channel
    handed the ranker (a bento built without a champion two-tower answers 503)."""
    import httpx

    body = {"user_id": user, "k": 5, "now": now}
    answer = httpx.post(f"{url}/recommend", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    if answer.status_code == 503:
        console.print(f"[bold]POST {url}/recommend[/]: 503, this bento packs no retrieval model")
        return
    answer.raise_for_status()
    out = answer.json()
    console.print(f"[bold]POST {url}/recommend[/] user {user} (top 5 of {out['recalled']} recalled; candidates by "
                  f"channel {out['recalled_by']}):")  # fmt: skip
    shown = ("item_id", "score", "channels", "policies")
    console.print_json(data=[{k: item[k] for k in shown} for item in out["items"]])
