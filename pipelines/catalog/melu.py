"""MeLU (Lee et al., KDD 2019): meta-learned on MovieLens-1M's MeLU split (its own dataset, not the window's
impressions), evaluated on MeLU's four scenarios by MAE, served by the melu bento (``/adapt``, ``/evidence``)."""

from pipelines.catalog import Family

FAMILY = Family(
    name="melu",
    models={"melu": {}},
    bento_service="melu",
    gate={
        "checks": ("rating:mae",),
        "overall_tolerance": 0.02,
        "cold_tolerance": 0.03,
        "floors": {"rating:mae": 1.1},
        "min_count": 100,
        "min_positives": 1,
    },  # fmt: skip
    primary=("rating", "mae"),
    trains_on_window=False,
    reads_online_store=False,
    hooks={
        "train": "pipelines.training.melu:train_for_catalog",
        "evaluate": "pipelines.evaluation.melu:score_melu",
        "side_data": "pipelines.serving.melu_bento:side_data",
        "smoke_requests": "pipelines.serving.melu_bento:smoke_requests",
    },
    # A larger meta learning rate than the paper's 5e-5, so that a few epochs reach a useful model.
    demo={"epochs": 8, "model_config": {"meta_lr": 0.0005}},
)
