"""The content tower (MODELS.md §7) against the raw content vector, on items published after training, over seeds.

    .venv/bin/python benchmarks/content_tower.py [--seeds 101 102 103] [--days 7] [--holdout-days 2]
        [--users 6000] [--k 10] [--epochs N] [--content-noise X] [--out benchmarks/results/content_tower.json]

Data: per seed, a fresh simulated log (``design=none``, the simulator's seed = the seed) in
``benchmarks/.work/content_tower/seed-<seed>``, raw layer. The tower trains on the first ``days - holdout_days``
days (items published up to the window's end, their impressions; ``pipelines.training.content_tower.fit_tower``
with its defaults, the same seed; ``--epochs`` overrides its 30); the items published in the last ``holdout_days`` days
are held out: none of them is seen in training, each gets its vector from content alone.

Representations compared, each as unit vectors: the raw ``content_vector``; the tower reading the content vector
only (the apples-to-apples comparison); the tower reading category, keywords and the content vector (what the
platform will run). The simulator's content (``pipelines.data.sim_content``) files 80 % of items under their
topic's category, mixes topic, author, format and ring-shared words into the keywords, and encodes topic, a weak
quality signal, author style, format and nuisance into the vector; ``--content-noise`` scales the nuisance.

Metrics, on the held-out items, from the hidden truth (evaluation only; training never reads it):

* same-topic recall@k: among the k catalog items (published before the holdout) nearest by cosine, the share
  with the query's hidden topic, over min(k, same-topic catalog items); ``chance`` is the expected value for a
  random k;
* Spearman with the hidden quality of: a ridge probe (``RidgeCV``, the same for every representation, sample
  weights = evidence) fitted on the catalog items' *observed* quality (log COEC of the training window, what the
  platform has); a ridge probe fitted on the catalog items' *hidden* quality (how much quality the vector holds
  linearly: a ceiling, not deployable); and the tower's own quality head.

Intervals: mean ± 95 % Student-t half-width over seeds; the last rows are per-seed paired differences from the
raw vector (topic recall; the quality head against the raw vector's probe on observed quality).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
from pathlib import Path

import _paper as paper
import numpy as np
import pandas as pd

log = logging.getLogger("benchmarks.content_tower")

WORK = paper.ROOT / ".work" / "content_tower"
VARIANTS = {
    "tower_vector_only": {"inputs": ["content_vector"]},
    "tower": {},
}
LABELS = {
    "raw": "raw content vector",
    "tower_vector_only": "tower (content vector only)",
    "tower": "tower (category, keywords, vector)",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--holdout-days", type=int, default=2)
    parser.add_argument("--users", type=int, default=6000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--epochs", type=int, help="Training epochs (default: the tower's).")
    parser.add_argument("--content-noise", type=float, help="Simulator content_noise (its default 0.6).")
    parser.add_argument("--out", type=Path, default=paper.RESULTS / "content_tower.json")
    return parser.parse_args()


def simulate(seed: int, args: argparse.Namespace):
    """A fresh log for ``seed``: (store, first day, last training day, last day)."""
    extra = {} if args.content_noise is None else {"content_noise": args.content_noise}
    store, cfg = paper.fresh_log(WORK / f"seed-{seed}", seed, args.days, args.users, **extra)
    return store, cfg.start_date, cfg.end_date - dt.timedelta(days=args.holdout_days), cfg.end_date


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def raw_vectors(items: pd.DataFrame) -> np.ndarray:
    return unit(np.stack([np.asarray(v, dtype=np.float64) for v in items["content_vector"]]))


def topic_recall(query: np.ndarray, index: np.ndarray, q_topic: np.ndarray, i_topic: np.ndarray, k: int) -> float:
    """Mean over queries of |top-k ∩ same topic| / min(k, same-topic items in the index)."""
    from pipelines.training.content_tower import nearest_items

    top = nearest_items(query.astype(np.float32), index.astype(np.float32), k)  # [n, k]
    hits = (i_topic[top] == q_topic[:, None]).sum(axis=1)
    relevant = np.minimum(k, (i_topic[None, :] == q_topic[:, None]).sum(axis=1))
    return float(np.mean(hits / np.maximum(relevant, 1)))


def chance_recall(q_topic: np.ndarray, i_topic: np.ndarray, k: int) -> float:
    """Expected recall@k of k random index items."""
    same = (i_topic[None, :] == q_topic[:, None]).sum(axis=1)
    return float(np.mean(k * same / len(i_topic) / np.maximum(np.minimum(k, same), 1)))


def probe_spearman(train_x, train_y, weight, test_x, test_quality) -> float:
    """Spearman of a ridge probe's predictions on the held-out items with their hidden quality."""
    from scipy.stats import spearmanr
    from sklearn.linear_model import RidgeCV

    probe = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(train_x, train_y, sample_weight=weight)
    return float(spearmanr(probe.predict(test_x), test_quality).statistic)


def score(vectors: dict, heads: dict, catalog: pd.DataFrame, held: pd.DataFrame, truth: pd.DataFrame, k: int) -> dict:
    """The metrics of every representation: ``vectors[name]`` = (catalog vectors, held-out vectors), ``heads[name]``
    = a tower's quality head on the held-out items."""
    from scipy.stats import spearmanr

    topic = truth["topic"]
    quality = truth["quality"]
    c_topic, h_topic = topic.loc[catalog["item_id"]].to_numpy(), topic.loc[held["item_id"]].to_numpy()
    observed = catalog["observed_quality"].to_numpy()
    weight = catalog["observed_weight"].to_numpy()
    seen = weight > 0
    h_quality = quality.loc[held["item_id"]].to_numpy()
    out = {"chance": {"topic_recall": chance_recall(h_topic, c_topic, k)}}
    for name, (c_vec, h_vec) in vectors.items():
        out[name] = {
            "topic_recall": topic_recall(h_vec, c_vec, h_topic, c_topic, k),
            "probe_observed": probe_spearman(c_vec[seen], observed[seen], weight[seen], h_vec, h_quality),
            "probe_hidden": probe_spearman(c_vec, quality.loc[catalog["item_id"]].to_numpy(), None, h_vec, h_quality),
        }
        if name in heads:
            out[name]["head"] = float(spearmanr(heads[name], h_quality).statistic)
    return out


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    """Simulate, train every variant on the window, score the held-out items."""
    from pipelines.training.content_data import TripletConfig, observed_quality, read_window
    from pipelines.training.content_tower import ContentTowerTraining, embed_items, fit_tower

    t0 = time.perf_counter()
    store, first, train_end, last = simulate(seed, args)
    catalog, impressions = read_window(store, first, train_end, layer="raw")
    everything, _ = read_window(store, first, last, layer="raw")
    held = everything[~everything["item_id"].isin(catalog["item_id"])].reset_index(drop=True)
    quality = observed_quality(impressions, TripletConfig().quality_prior).reindex(catalog["item_id"])
    catalog = catalog.assign(observed_quality=quality["quality"].fillna(0).to_numpy(),
                             observed_weight=quality["weight"].fillna(0).to_numpy())  # fmt: skip
    truth = pd.read_parquet(store.root / "truth" / "item_truth.parquet").set_index("item_id")
    vectors = {"raw": (raw_vectors(catalog), raw_vectors(held))}
    heads = {}
    info = {"seed": seed, "catalog_items": len(catalog), "held_out_items": len(held),
            "impressions": len(impressions), "simulate_s": time.perf_counter() - t0}  # fmt: skip
    for name, model in VARIANTS.items():
        t1 = time.perf_counter()
        train = ContentTowerTraining().train.model_dump() | {"seed": seed}
        cfg = ContentTowerTraining(model=model, train=train | ({"epochs": args.epochs} if args.epochs else {}))
        fitted = fit_tower(catalog, impressions, cfg)
        c_emb, h_emb = (
            embed_items(fitted.model, fitted.encoder, catalog),
            embed_items(fitted.model, fitted.encoder, held),
        )
        vectors[name] = (np.stack(c_emb["vector"]), np.stack(h_emb["vector"]))
        heads[name] = h_emb["quality"].to_numpy()
        info[f"{name}_train_s"] = time.perf_counter() - t1
        info[f"{name}_counts"] = fitted.counts
        info[f"{name}_val_triplet_accuracy"] = fitted.history[fitted.counts["best_epoch"] - 1]["val_triplet_accuracy"]
    metrics = score(vectors, heads, catalog, held, truth, args.k)
    log.info("seed %d: %s", seed, {n: {m: round(v, 3) for m, v in ms.items()} for n, ms in metrics.items()})
    return {"info": info, "metrics": metrics}


def summarise(runs: list[dict]) -> dict:
    """Each metric over seeds, and the paired per-seed differences of each tower from the raw vector: topic recall
    against topic recall, the quality head against the raw vector's probe on observed quality."""
    summary = {
        name: {metric: paper.t_interval([r["metrics"][name][metric] for r in runs]) for metric in metrics}
        for name, metrics in runs[0]["metrics"].items()
    }
    for name in VARIANTS:
        summary[f"{name}_minus_raw"] = {
            "topic_recall": paper.t_interval([r["metrics"][name]["topic_recall"] - r["metrics"]["raw"]["topic_recall"]
                                              for r in runs]),
            "head": paper.t_interval([r["metrics"][name]["head"] - r["metrics"]["raw"]["probe_observed"]
                                      for r in runs]),
        }  # fmt: skip
    return summary


def table(summary: dict, k: int) -> str:
    head = (f"| representation | same-topic recall@{k} | Spearman, probe on observed quality | Spearman, probe on "
            "hidden quality (ceiling) | Spearman, quality head |\n|---|---:|---:|---:|---:|")  # fmt: skip
    rows = [f"| chance | {paper.fmt_mean(summary['chance']['topic_recall'])} | – | – | – |"]
    for name, label in LABELS.items():
        s = summary[name]
        rows.append(f"| {label} | {paper.fmt_mean(s['topic_recall'])} | {paper.fmt_mean(s['probe_observed'])} | "
                    f"{paper.fmt_mean(s['probe_hidden'])} | {paper.fmt_mean(s.get('head'))} |")  # fmt: skip
    for name in VARIANTS:
        s = summary[f"{name}_minus_raw"]
        rows.append(f"| {LABELS[name]} − raw (paired) | {paper.fmt_mean(s['topic_recall'])} | – | – | "
                    f"{paper.fmt_mean(s['head'])} (head − raw probe) |")  # fmt: skip
    return "\n".join([head, *rows])


def main() -> None:
    args = parse_args()
    paper.setup_logging()
    logging.getLogger("pipelines.training.trainer").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(1)  # the machine is shared; the tower is small
    runs = [run_seed(seed, args) for seed in args.seeds]
    summary = summarise(runs)
    print(table(summary, args.k))
    print()
    for run in runs:
        info = run["info"]
        print(f"seed {info['seed']}: {info['catalog_items']} catalog items, {info['held_out_items']} held out, "
              f"{info['impressions']:,} training impressions, {info['tower_counts']['train_triplets']:,} triplets; "
              f"tower trained in {info['tower_train_s']:.0f} s, validation triplet accuracy "
              f"{info['tower_val_triplet_accuracy']:.3f}")  # fmt: skip
    paper.write_json(args.out, {"args": vars(args), "machine": paper.machine(), "runs": runs, "summary": summary})


if __name__ == "__main__":
    main()
