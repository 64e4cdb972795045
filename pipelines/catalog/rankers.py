"""The multi-task rankers (ESMM, PLE with UIE, MMoE, shared-bottom, BASE): trained on a window of the dataset's
clean impressions joined point-in-time to their Feast feature service, evaluated on the days after it per
cold-start slice, served by the ranker bento (``/rank``)."""

from pipelines.catalog import Family

FAMILY = Family(
    name="rankers",
    models={
        "esmm": {"feature_service": "esmm_v1"},
        # `uie`: the UIE enhancement is on by default for this model (the `uie` Param / option switches it).
        "ple": {"feature_service": "ple_uie_v1", "uie": True},
        "mmoe": {"feature_service": "esmm_v1"},
        "shared_bottom": {"feature_service": "esmm_v1"},
        "base": {"feature_service": "esmm_v1"},
    },
    bento_service="ranker",
    primary=("ctr", "auc"),
    # A first model (no champion) must clear 0.55 overall; on the cold slices it must be clearly better than random.
    # New items' AUC on realistic content sits at 0.54-0.59 (benchmarks/README.md, "New items: the served cold
    # path"): a 0.55 floor there would refuse about half of all first models for what no ranker here can fix.
    gate={"cold_floors": {"ctr:auc": 0.52, "ctcvr:auc": 0.52}},
    hooks={
        "train": "pipelines.training.api:train_ranker",
        "evaluate": "pipelines.evaluation.rankers:score_ranker",
        "side_data": "pipelines.serving.ranker_bento:side_data",
        "smoke_requests": "pipelines.serving.ranker_bento:smoke_requests",
    },
)
