"""How MeLU is scored for evaluation: on MovieLens-1M in MeLU's four scenarios (its split is chronological: new
users joined after the warm ones, new items were released later); each user's model is adapted on the user's
support set and scored on the query set (MAE, RMSE, nDCG with bootstrap intervals). MeLU family's ``evaluate``
hook.

Each version is scored with its own pyfunc's encoder (``tasks_of(rows, wrapper.encoder)``): a version trained
with the content tower embeds every item, new ones included, from the rows' content through the tower it carries,
the same call its pyfunc and the melu bento make; a version without it ignores the extra columns."""

from __future__ import annotations

from pipelines.data.movielens import SCENARIOS as MELU_SCENARIOS
from pipelines.evaluation.api import Contest
from pipelines.evaluation.metrics import rating_report


def _scenario_scores(contest: Contest, rows) -> dict[str, list]:
    """scenario -> [(query ratings, {who: predicted ratings})] per user, for candidate and champion."""
    import mlflow

    from pipelines.training.melu import tasks_of

    name, cfg = contest.model.registered_name, contest.config
    models = {who: mlflow.pyfunc.load_model(f"models:/{name}/{version.version}").unwrap_python_model()
              for who, version in contest.versions()}  # fmt: skip
    by_model = {who: tasks_of(rows, m.encoder) for who, m in models.items()}
    per_scenario: dict[str, list] = {}
    for scenario in MELU_SCENARIOS:
        tasks = {who: t.get(scenario, [])[: cfg.max_users] for who, t in by_model.items()}
        per_scenario[scenario] = [
            (query["rating"].numpy(), {who: models[who].model.predict(*tasks[who][i]).numpy() for who in models})
            for i, (_, query) in enumerate(tasks["candidate"])
        ]
    return per_scenario


def score_melu(contest: Contest) -> dict:
    """MeLU's candidate (and champion) on MovieLens-1M: adapt on each user's support set, score the query set."""
    from pipelines.data.movielens import DATASET, load_rows

    cfg = contest.config
    per_scenario = _scenario_scores(contest, load_rows(contest.settings.data_dir))
    slices = {"overall": [t for s in MELU_SCENARIOS for t in per_scenario[s]], **per_scenario}
    results = {}
    for slice_name, tasks in slices.items():
        if not tasks:
            continue
        report = rating_report(tasks, (1, 3), cfg.n_bootstrap, cfg.seed)
        report["count"] = report["ratings"]
        results[slice_name] = {"count": report["ratings"], "users": report["users"], "tasks": {"rating": report}}
    return {
        "dataset": DATASET,
        "window": {"split": "melu", "scenarios": ",".join(MELU_SCENARIOS)},
        "rows": int(sum(r["count"] for n, r in results.items() if n != "overall")),
        "slice_config": {"scenarios": list(MELU_SCENARIOS), "max_users": cfg.max_users},
        # Every unseen scenario is a cold slice, an empty one too: the gate then says it could not judge it.
        "cold_slices": list(MELU_SCENARIOS[1:]),
        "has_truth": False,
        "slices": results,
        "note": "warm = MeLU's meta-training users (adapted on their support sets); the other scenarios are unseen.",
    }
