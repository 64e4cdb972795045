"""The readout's own configuration (DAG Params and CLI options start from its defaults); imports stay light."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.experiments.definitions import METRIC_NAMES


class ReadoutConfig(BaseModel):
    """Thresholds, metric roles and statistical choices of the A/B readout; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment_id: str = "exp_new_item_boost"
    new_item_hours: int = Field(
        48, ge=1, description="An item is new this long after publishing; high/low exposure is decided over it."
    )
    high_exposure_threshold: int = Field(
        1000, ge=1, description="New items with at least this many exposures while new are high-exposure."
    )
    exposure_target: int = Field(60, ge=1, description="Exposures a new item should reach in its first 24 h.")
    hot_clicks: int = Field(
        30,
        ge=1,
        description="Clicks within hot_days of publishing that make a new item hot. 30 suits the simulator's "
        "volume; about 1000 at production volume.",
    )
    hot_days: int = Field(30, ge=1, description="Days after publishing in which a hot item's clicks count.")
    first_exposure_cap_hours: int = Field(
        24,
        ge=1,
        description="Time to first exposure is a restricted mean at this cap: an item never exposed within it "
        "counts as the cap; only items whose cap is observed count.",
    )
    follow_up_days: int = Field(
        0,
        ge=0,
        description="Days of impression logs after `end` that item follow-ups (first exposure, 24 h target, "
        "high/low exposure, hot window) may read, as far as they exist. 0: an item counts only if its window "
        "ends by the end of `end`. Raise it only when both arms kept running unchanged after `end`.",
    )
    primary: tuple[str, ...] = Field(
        ("target_reach_24h", "publish_penetration", "posts_per_dau"),
        description="Primary metrics: what the cold-start treatment exists to move.",
    )
    guardrails: tuple[str, ...] = Field(
        ("ctr", "dwell_per_dau", "impressions_per_dau", "dau_rate", "dwell_per_impression"),
        description="Guardrails: what must not get worse. Names absent from the design's family are ignored.",
    )
    correction: Literal["holm", "bh"] = Field(
        "holm", description="Multiple-testing correction: Holm (family-wise error) or Benjamini-Hochberg (FDR)."
    )
    family: Literal["all", "roles"] = Field(
        "all",
        description="The corrected family of window-level tests: every metric of the design, or only the "
        "primary and guardrail metrics (the others are then descriptive).",
    )
    correct_daily: bool = Field(
        False,
        description="Daily lifts are descriptive (no significance) unless True: then every day x metric test is "
        "one more family, corrected with the same method.",
    )
    alpha: float = Field(0.05, gt=0, lt=1)
    srm_threshold: float = Field(0.001, gt=0, lt=1, description="Sample-ratio mismatch when p is below this.")
    cuped_pre_days: int = Field(
        0,
        ge=0,
        description="CUPED: the days before `start` whose per-unit metric is the covariate (0: off). The "
        "pre-period must be before any treatment.",
    )
    permutation_below_units: int = Field(
        1000,
        ge=0,
        description="A metric with fewer units (with a denominator) than this in either bucket is tested by "
        "permuting units between buckets instead of the delta method's normal approximation, which is "
        "optimistic on few skewed units (the new-item metrics of a few hundred authors). 0: never.",
    )
    permutation_resamples: int = Field(2000, ge=100, description="Resamples of each permutation test.")
    layer: str = Field("clean", pattern="^(raw|clean)$")
    memory_limit: str = Field("3GB", description="DuckDB memory limit; it spills to disk above it.")

    @model_validator(mode="after")
    def _check_roles(self) -> ReadoutConfig:
        if unknown := sorted(set(self.primary + self.guardrails) - METRIC_NAMES):
            raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRIC_NAMES)}")
        if both := sorted(set(self.primary) & set(self.guardrails)):
            raise ValueError(f"metrics {both} cannot be primary and guardrail at once")
        return self
