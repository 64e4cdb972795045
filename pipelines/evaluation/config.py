"""What an evaluation can be told: how slices are cut, the gate's tolerances, and the run's own knobs.

Pydantic only (no numpy or pandas): the evaluate DAG takes its Params' defaults from here at parse time.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SliceConfig(BaseModel):
    """How users and items are called new, the exposure buckets, and extra named slices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_new_by: Literal["days_since_signup", "interactions"] = "days_since_signup"
    user_new_below: float = Field(7, gt=0, description="Days since signup (or interactions) below which a user is new.")
    item_new_by: Literal["age_hours", "exposures"] = "age_hours"
    item_new_below: float = Field(48, gt=0, description="Hours since publishing (or exposures): new below it.")
    exposure_edges: tuple[float, ...] = Field((100,), min_length=1, description="Cuts of item exposures into buckets.")
    custom: dict[str, str] = Field(
        default_factory=lambda: {"sparse_user": "user_interactions < 20"},
        description="name -> boolean expression over columns (a custom slice is reported, not gated).",
    )
    cross: bool = Field(True, description="Also the user × item cross product.")

    @field_validator("exposure_edges")
    @classmethod
    def _increasing(cls, edges: tuple[float, ...]) -> tuple[float, ...]:
        if any(b <= a for a, b in zip(edges, edges[1:], strict=False)) or edges[0] <= 0:
            raise ValueError("exposure_edges must be positive and strictly increasing")
        return edges

    @field_validator("custom")
    @classmethod
    def _names(cls, custom: dict[str, str]) -> dict[str, str]:
        for name, expr in custom.items():
            if not name or not expr.strip():
                raise ValueError("a custom slice needs a name and an expression")
        return custom

    def bucket_names(self) -> list[str]:
        if len(self.exposure_edges) == 1:
            return ["exposure=low", "exposure=high"]
        bounds = [0, *self.exposure_edges, float("inf")]
        return [f"exposure=[{a:g},{b:g})" for a, b in zip(bounds, bounds[1:], strict=False)]


RANKER_CHECKS = ("ctr:auc", "ctcvr:auc")


class GateConfig(BaseModel):
    """Tolerances and floors of the gate; ``checks`` are ``task:metric`` pairs (see ``pipelines.evaluation.gate``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checks: tuple[str, ...] = RANKER_CHECKS
    overall_tolerance: float = Field(0.005, ge=0)
    cold_tolerance: float = Field(0.01, ge=0)
    floors: dict[str, float] = Field(default_factory=lambda: {"ctr:auc": 0.55, "ctcvr:auc": 0.55})
    cold_floors: dict[str, float] | None = Field(
        None, description="Floors every cold slice must clear when there is no champion; None: the same as "
        "`floors`, {}: none (a first model's cold checks are then skipped).",
    )  # fmt: skip
    min_count: int = Field(500, ge=1)
    min_positives: int = Field(10, ge=1)
    allow_skipped_cold_checks: bool = Field(
        False, description="Pass a candidate even when some cold slice had no check that could run (too small, "
        "not computable, or nothing to compare with); by default such a slice blocks the gate.",
    )  # fmt: skip

    def floors_for(self, slice_name: str) -> dict[str, float]:
        """The absolute floors of ``slice_name`` when there is no champion: ``floors`` overall, else cold ones."""
        if slice_name == "overall" or self.cold_floors is None:
            return self.floors
        return self.cold_floors

    @field_validator("checks")
    @classmethod
    def _known(cls, checks: tuple[str, ...]) -> tuple[str, ...]:
        for check in checks:
            task, _, metric = check.partition(":")
            from pipelines.evaluation.metrics import HIGHER_IS_BETTER  # numpy: not at DAG parse time

            if not task or HIGHER_IS_BETTER.get(metric) is None:
                raise ValueError(f"check {check!r}: expected task:metric with a metric in "
                                 f"{sorted(k for k, v in HIGHER_IS_BETTER.items() if v is not None)}")  # fmt: skip
        return checks

    @classmethod
    def for_model(cls, model: str, **overrides: Any) -> GateConfig:
        """The model's family's gate defaults (see ``pipelines.catalog``), with ``overrides`` on top."""
        from pipelines.catalog import model as catalog_model

        return cls(**{**catalog_model(model).family.gate, **overrides})


class EvaluationConfig(BaseModel):
    """Everything an evaluation can be told; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    slices: SliceConfig = Field(default_factory=SliceConfig)
    gate: dict = Field(default_factory=dict, description="Overrides of the model's default GateConfig.")
    n_bootstrap: int = Field(200, ge=0, description="Bootstrap resamples for the intervals.")
    seed: int = 0
    eval_days: int = Field(1, ge=1, description="Held-out days after the training window, when no window is given.")
    calibration_bins: int = Field(10, ge=2)
    max_users: int | None = Field(None, ge=1, description="MeLU: users per scenario (all by default).")
    tasks: tuple[str, ...] = ("ctr", "cvr", "ctcvr")
    policies: dict[str, Any] = Field(
        default_factory=dict, description="Rankers: PolicyConfig overrides on top of what the ranker bento serves "
        "(the `ranker_policies` setting), e.g. {\"new_item_embedding\": \"default\"}.",
    )  # fmt: skip

    @field_validator("policies")
    @classmethod
    def _policies(cls, policies: dict[str, Any]) -> dict[str, Any]:
        from pipelines.serving.policies import PolicyConfig  # numpy: not at DAG parse time

        PolicyConfig(**policies)  # unknown keys and bad values fail here
        return policies
