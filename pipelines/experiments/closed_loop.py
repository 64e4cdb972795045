"""A closed-loop cold-start experiment: the simulated world, fed by the platform's own model and policies.

One run, in an experiment home of its own (``<home>/experiments/<experiment_id>``: its data, Feast store and
MLflow registry, so an experiment never overwrites the platform's own datasets or aliases):

1. **Pre-period** (``pre_days``) under the legacy feed; each day is validated and its features computed, as the
   platform's DAGs do.
2. **Staging**: ``feast plan`` + ``apply``, the online store loaded, the ranker trained on the pre-period but its
   last day (``train_for_run``), evaluated on that held-out day through the gate (``evaluate_model``); the version
   the gate approves is the one the experiment serves. A blocked gate stops the experiment.
3. **Experiment period** (``days``) under :class:`~pipelines.experiments.feed.PlatformFeed`: units split by the
   design, each arm's policies applied to the staged model's scores; each day is validated, its features computed
   and materialized, so the next day is scored on fresh features.
4. **Readout** of the experiment period (``coldstart_ab_metrics``' readout), report under the experiment home.

Recall is the same for both arms; only what the platform does with the candidates differs. By default it is the
platform's own retrieval (``retrieval="platform"``, :mod:`~pipelines.experiments.platform_recall`): at staging the
two-tower model is trained and gated on the pre-period and every item is indexed; in the experiment period each
request's ``recall_k`` candidates come from the recall channels ``/recommend`` serves, and each impression logs
the channel that took its item. ``retrieval="simulator"``: the simulator's channel mix ``recall``, ``candidates``
per request (the pre-period's recall either way).
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time

from pipelines.experiments.closed_loop_config import ClosedLoopConfig
from pipelines.settings import Settings, get_settings

log = logging.getLogger(__name__)


__all__ = ["ClosedLoopConfig", "ExperimentError", "experiment_settings", "experiment_window", "report_path",
           "run_closed_loop"]  # fmt: skip


class ExperimentError(RuntimeError):
    """The experiment cannot go on as configured (the gate blocked the model it would serve)."""


def experiment_settings(settings: Settings, cfg: ClosedLoopConfig) -> Settings:
    """The experiment's own home under the platform's (local profile: embedded stores)."""
    if settings.profile != "local":
        raise ValueError("closed-loop experiments run on the local profile (their stores are embedded)")
    return get_settings(home=settings.home / "experiments" / cfg.experiment_id, profile="local")


def experiment_window(cfg: ClosedLoopConfig) -> tuple[dt.date, dt.date]:
    """The experiment period's first and last day (the simulation starts on the simulator's default date)."""
    from pipelines.data.sim_config import SimulatorConfig

    first = SimulatorConfig.model_fields["start_date"].default + dt.timedelta(days=cfg.pre_days)
    return first, first + dt.timedelta(days=cfg.days - 1)


def report_path(settings: Settings, cfg: ClosedLoopConfig):
    """Where the experiment's HTML readout is written (under its own home)."""
    start, end = experiment_window(cfg)
    home = experiment_settings(settings, cfg)
    return home.reports_dir / "ab" / cfg.dataset / cfg.experiment_id / f"{start}_{end}" / "report.html"


def run_closed_loop(settings: Settings, cfg: ClosedLoopConfig) -> dict:
    """Run the experiment end to end; returns its summary (arms, readout headline, report path, timings)."""
    from pipelines.data.contract import Store
    from pipelines.data.sim_config import SimulatorConfig
    from pipelines.data.simulator import Simulator

    home = experiment_settings(settings, cfg)
    home.ensure_home()
    shutil.rmtree(home.home / "nearline", ignore_errors=True)  # a re-run starts the near-line state afresh
    sim_cfg = SimulatorConfig(
        days=cfg.pre_days + cfg.days, users=cfg.users, seed=cfg.seed, design=cfg.design, policy=cfg.recall,
        treatment_policy=cfg.recall, treatment_share=cfg.treatment_share, experiment_id=cfg.experiment_id,
        impressions_per_day=cfg.impressions_per_day, candidates_per_request=cfg.candidates,
    )  # fmt: skip
    store = Store(home.data_dir, cfg.dataset)
    simulator = Simulator(sim_cfg, store)
    loop = _Loop(home, cfg, store, simulator)
    started = time.perf_counter()
    summary = simulator.run(after_day=loop.after_day)
    loop.timings["simulate_and_serve_s"] = time.perf_counter() - started - sum(loop.timings.values())
    result = loop.read_out()
    return {"experiment_id": cfg.experiment_id, "home": str(home.home), "impressions": summary.impressions,
            "staged": loop.staged, "timings": loop.timings, "experiment_days_s": loop.experiment_days_s,
            **result}  # fmt: skip


class _Loop:
    """What the platform does at each simulated day's end."""

    def __init__(self, settings: Settings, cfg: ClosedLoopConfig, store, simulator) -> None:
        from pipelines.features.compute import FeatureLayout

        self.settings, self.cfg, self.store, self.simulator = settings, cfg, store, simulator
        self.layout = FeatureLayout.for_dataset(settings.home, cfg.dataset)
        self.days: list[dt.date] = []
        self.feast = None
        self.staged: dict = {}
        self.timings: dict[str, float] = {"platform_s": 0.0, "stage_s": 0.0}
        # Wall seconds of each experiment day: its traffic served by the platform feed, then validate, featurize
        # and materialize (what a closed-loop day costs; staging is not part of any day).
        self.experiment_days_s: list[float] = []
        self._day_started = time.perf_counter()

    def after_day(self, day: dt.date) -> None:
        from pipelines.features.compute import compute_features
        from pipelines.features.store import materialize_day
        from pipelines.validation.validate import validate_day

        started = time.perf_counter()
        self.days.append(day)
        validate_day(self.store, day, self.settings.reports_dir, docs=False)
        compute_features(self.store, self.layout, day)
        if self.feast is not None:
            materialize_day(self.feast, self.layout, day)
        self.timings["platform_s"] += time.perf_counter() - started
        if len(self.days) > self.cfg.pre_days:
            self.experiment_days_s.append(time.perf_counter() - self._day_started)
        if len(self.days) == self.cfg.pre_days:
            started = time.perf_counter()
            self.stage()
            self.timings["stage_s"] += time.perf_counter() - started
        self._day_started = time.perf_counter()

    def stage(self) -> None:
        """Apply and load the feature store, train and gate the ranker, and put the platform feed in place."""
        from pipelines.evaluation.api import EvaluationConfig, evaluate_model
        from pipelines.features.store import get_store, materialize_day, plan_and_apply
        from pipelines.training.api import train_for_run

        plan_and_apply(self.settings, self.cfg.dataset)
        self.feast = get_store(self.settings, self.cfg.dataset)
        for day in self.days:
            materialize_day(self.feast, self.layout, day)
        if self.cfg.content_tower is not None:
            self.staged["content_tower"] = self.train_tower()
        trained = train_for_run(self.cfg.model, self.cfg.dataset, self.days[0], self.days[-2], {}, dict(self.cfg.train),
                                settings=self.settings)  # fmt: skip
        quick = EvaluationConfig(n_bootstrap=0, gate=dict(self.cfg.gate))
        gate = evaluate_model(self.settings, self.cfg.model, self.cfg.dataset, config=quick)
        if not gate["gate"]["passed"]:
            raise ExperimentError(f"the gate blocked {self.cfg.model} v{trained['version']}: "
                               + "; ".join(gate["gate"]["reasons"]))  # fmt: skip
        overall = gate["slices"]["overall"]["tasks"]["ctr"]["candidate"]["auc"]["value"] if "slices" in gate else None
        self.staged |= {"model": self.cfg.model, "version": trained["version"], "held_out_ctr_auc": overall,
                        "evaluation": gate["report"]["html"]}  # fmt: skip
        recall = self.stage_retrieval() if self.cfg.retrieval == "platform" else None
        self.simulator.feed = self.platform_feed(trained["version"], recall)

    def stage_retrieval(self):
        """The two-tower trained and gated on the pre-period (last day held out), every item indexed."""
        from pipelines.experiments.platform_recall import stage_retrieval

        try:
            cfg = self.cfg
            recall, staged = stage_retrieval(self.settings, cfg.dataset, self.days[0], self.days[-1], cfg.two_tower,
                                             cfg.platform_recall, cfg.recall_k, cfg.two_tower_margin)  # fmt: skip
        except RuntimeError as error:
            raise ExperimentError(str(error)) from error
        self.staged["two_tower"] = staged
        return recall

    def train_tower(self) -> dict:
        """The content family's own train hook on the ranker's window: it gates itself (``champion`` when its
        held-out triplet accuracy clears the floor) and writes every item's row to Feast."""
        from pipelines.catalog import model as catalog_model
        from pipelines.training.config import TrainRequest

        entry = catalog_model("content_tower")
        request = TrainRequest(dataset=self.cfg.dataset, start=self.days[0], end=self.days[-2],
                               overrides=dict(self.cfg.content_tower))  # fmt: skip
        result = entry.call("train", self.settings, entry, request)
        return {"version": result["version"], "gate": result["gate"]["reason"]}

    def platform_feed(self, version: str, recall=None):
        import mlflow

        from pipelines.catalog import model as catalog_model
        from pipelines.experiments.feed import PlatformFeed
        from pipelines.features.content_tower import publish_tower_rows
        from pipelines.serving.content_vectors import load_tower
        from pipelines.serving.features import FeastFeatures
        from pipelines.serving.nearline import NearlineState
        from pipelines.serving.nearline_ingest import feast_author_scores, feast_content_quality
        from pipelines.serving.ranker import RankerCore
        from pipelines.serving.ranker_bento import known_items

        mlflow.set_tracking_uri(self.settings.mlflow_tracking_uri)
        name = catalog_model(self.cfg.model).registered_name
        wrapper = mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()
        arms = self.cfg.policies()
        # The bento's known-items table as of the training window's end: new items take content-kNN rows.
        items = known_items(self.settings.home, self.cfg.dataset, self.days[-2])
        # As the bento: the champion content tower (if any) puts known and new items in its space.
        tower = load_tower(self.settings)  # the core uses it only for knn_vectors="tower"
        core = RankerCore(wrapper, items=items, config=arms[0], version=version, tower=tower)
        features = FeastFeatures(self.settings, self.cfg.dataset)
        nearline = NearlineState.open(self.settings, self.cfg.dataset, self.cfg.judge())
        world = self.simulator.world
        if self.cfg.design == "user_split":
            buckets = world.u_bucket

            def slot_arm(requests, candidates):
                return buckets.view[requests.user][:, None].repeat(candidates.items.shape[1], axis=1)
        else:

            def slot_arm(requests, candidates):
                return world.a_bucket.view[world.i_author.view[candidates.items]]

        balanced = self.cfg.new_item_hours if self.cfg.design == "balanced_author_split" else None
        # As the near-line writer does: a new item's tower row (vector and predicted quality) goes online when
        # it is published, and the tick reads the predicted quality as the item's prior.
        publish = None if tower is None else (lambda items: publish_tower_rows(self.feast, tower, items))
        quality = None if tower is None else feast_content_quality(self.feast)
        return PlatformFeed(core, features, arms, slot_arm, self.simulator.cfg.slate_size, nearline,
                            feast_author_scores(self.feast), balanced_new_item_hours=balanced,
                            on_publish=publish, content_quality=quality, recall=recall)  # fmt: skip

    def read_out(self) -> dict:
        """The experiment period's readout and report under the experiment home."""
        from pipelines.experiments.config import ReadoutConfig
        from pipelines.experiments.readout import readout
        from pipelines.experiments.report import write_report

        start, end = self.days[self.cfg.pre_days], self.days[-1]
        exposure = self.cfg.policies()[1].exposure
        readout_cfg = ReadoutConfig(experiment_id=self.cfg.experiment_id, exposure_target=int(exposure.min_target),
                                    high_exposure_threshold=int(exposure.max_target),
                                    cuped_pre_days=self.cfg.pre_days if self.cfg.cuped else 0)  # fmt: skip
        result = readout(self.store, start, end, readout_cfg, self.cfg.treatment_share)
        result["paced_targets"] = self.target_reach()
        out_dir = self.settings.reports_dir / "ab" / self.cfg.dataset / self.cfg.experiment_id / f"{start}_{end}"
        paths = write_report(result, out_dir)
        keys = ("control", "treatment", "rel_diff", "rel_ci", "p_value")
        names = ("ctr", "target_reach_24h", "publish_penetration")
        headline = {name: {k: result["metrics"][name][k] for k in keys} for name in names if name in result["metrics"]}
        from pipelines.experiments.platform_recall import channel_ctr

        recall = getattr(self.simulator.feed, "recall", None)
        counts = recall.counts if recall is not None else {}
        return {"window": [str(start), str(end)], "report": str(paths["html"]), "headline": headline,
                "target_reach": result["paced_targets"], "new_item_share": result["new_item_impression_share"],
                "channels": channel_ctr(self.store, start, end, self.cfg.judge().window_hours),
                "retrieval": {"source": self.cfg.retrieval, **counts}}  # fmt: skip

    def target_reach(self) -> dict:
        """Per author group: new items of the experiment period whose 24 h window the logs cover (judged), the
        share that reached the target the near-line state set them, and their mean over-exposure beyond it
        (``max(0, exposures - target) / target``). Groups: the authors' buckets in an author design, else all."""
        import numpy as np
        import pandas as pd

        feed = self.simulator.feed
        targets = pd.DataFrame([(i, t, e) for i, (t, e) in getattr(feed, "targets", {}).items()],
                               columns=["item_id", "target", "exposures"])  # fmt: skip
        start, end = self.days[self.cfg.pre_days], self.days[-1]
        published = self.store.read_range("publishes", start, end).to_pandas()
        window = pd.Timedelta(hours=self.cfg.judge().window_hours)
        log_end = pd.Timestamp(end + dt.timedelta(days=1), tz="UTC")
        judged = published[published["publish_time"] + window <= log_end].merge(targets, on="item_id", how="left")
        judged["group"] = "all"
        if self.cfg.design != "user_split":
            units = self.store.read_range("assignments", end=end).to_pandas()
            bucket = units[units["unit_type"] == "author"].drop_duplicates("unit_id").set_index("unit_id")["bucket"]
            judged["group"] = judged["author_id"].map(bucket).fillna("unassigned")
        judged.to_parquet(self.settings.home / "judged_items.parquet")
        out = {}
        for group, rows in judged.groupby("group"):
            known = rows.dropna(subset=["target"])
            over = np.maximum(known["exposures"] - known["target"], 0) / known["target"]
            reached = float((known["exposures"] >= known["target"]).mean())
            out[str(group)] = {"judged": len(rows), "reached": reached, "over_exposure": float(over.mean()),
                               "without_target": int(len(rows) - len(known))}  # fmt: skip
        return out
