"""The simulator's knobs (:class:`SimulatorConfig`), its fixed vocabularies and what a run reports."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.data.schemas import SIM_RECALL_CHANNELS

CATEGORIES = (
    "food", "travel", "fashion", "beauty", "fitness", "tech", "gaming", "pets",
    "music", "movies", "books", "home", "parenting", "finance", "cars", "art",
)  # fmt: skip
OCCUPATIONS = ("student", "engineer", "teacher", "artist", "doctor", "sales", "retired", "other")
DEVICES = ("ios", "android", "web")
HOURS = 24
US_PER_SECOND = 1_000_000
HOUR_US = 3600 * US_PER_SECOND
DAY_US = 86_400 * US_PER_SECOND

Policy = Literal["popularity", "random", "boost"]
Design = Literal["none", "user_split", "author_split", "balanced_author_split"]
AUTHOR_DESIGNS = ("author_split", "balanced_author_split")


class SimulatorConfig(BaseModel):
    """Every knob of the simulator; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 7
    days: int = Field(14, ge=1)
    start_date: dt.date = dt.date(2026, 1, 1)
    users: int = Field(20_000, ge=10, description="Users who exist before the log starts.")
    new_users_per_day: float = Field(0.01, ge=0, description="Daily signups as a share of `users`.")
    new_user_days: int = Field(7, ge=1, description="A user is new for this many days after signup.")
    new_user_activity: float = Field(0.5, gt=0, description="Activity of a new user relative to an old one.")
    n_topics: int = Field(16, ge=2, le=len(CATEGORIES))
    interest_concentration: float = Field(0.3, gt=0, description="Dirichlet alpha of user interests.")
    # Published content: what the author files and an off-the-shelf encoder gives (see sim_content).
    content_dim: int = Field(16, ge=2, description="Dimension of the content embedding in the items table.")
    content_latent_dim: int = Field(32, ge=2, description="Width of the latent the content encoder reads.")
    content_hidden_dim: int = Field(64, ge=2, description="Hidden width of the fixed random content encoder.")
    content_topic_weight: float = Field(1.0, ge=0, description="Weight of the hidden topic in the content latent.")
    content_quality_weight: float = Field(
        0.15, ge=0, description="Weight of the hidden click quality in the content latent (a weak signal)."
    )
    content_author_weight: float = Field(0.8, ge=0, description="Weight of the author's style in the content latent.")
    content_formats: int = Field(6, ge=1, description="Formats (photo, video, text...) a nuisance style comes from.")
    content_format_weight: float = Field(0.8, ge=0, description="Weight of the item's format in the content latent.")
    content_noise: float = Field(1.0, ge=0, description="Weight of per-item nuisance style in the content latent.")
    category_topic_share: float = Field(
        0.8, ge=0, le=1, description="Share of items filed under their topic's category (the rest: the author's "
        "usual category, or a random other one).",
    )  # fmt: skip
    keywords_per_item: int = Field(4, ge=1, description="Keyword draws per item (duplicates dropped).")
    keyword_topic_share: float = Field(0.5, ge=0, le=1, description="Share of keyword draws from the topic's words.")
    keyword_author_share: float = Field(
        0.25, ge=0, le=1, description="Share of keyword draws from the author's habitual tags (the rest: generic)."
    )
    author_share: float = Field(0.05, gt=0, le=1)
    initial_items_per_author: float = Field(6.0, ge=1)
    publish_rate: float = Field(0.25, gt=0, description="Base items per author per day.")
    publish_exposure_gain: float = Field(
        1.5, ge=0, description="Publishing rate multiplier at full early exposure is 1 + gain."
    )
    early_exposure_target: int = Field(60, ge=1, description="Exposures in an item's first 24 h that count as full.")
    item_lifetime_days: int = Field(30, ge=1)
    new_item_hours: int = Field(48, ge=1, description="Age under which the new_item channel may show an item.")
    popularity_half_life_days: float = Field(2.0, gt=0)
    requests_per_user_per_day: float = Field(1.0, gt=0, description="Feed requests per user per day, on average.")
    impressions_per_day: int | None = Field(None, ge=1, description="Overrides the traffic volume if set.")
    slate_size: int = Field(10, ge=1, le=100)
    candidates_per_request: int | None = Field(
        None, ge=1, le=1000, description="Recall candidates per request the feed picks the slate from (None: the "
        "slate size, today's legacy feed, which only orders).",
    )  # fmt: skip
    # Click model (logits).
    ctr_bias: float = -3.8
    match_weight: float = 1.2
    quality_weight: float = 0.7
    position_decay: float = Field(0.6, ge=0)
    warm_popularity_weight: float = 0.1
    new_user_logit_shift: float = 0.5
    new_user_match_weight: float = 0.3
    new_user_popularity_weight: float = 0.8
    # Conversion model given a click (logits).
    cvr_bias: float = -3.4
    cvr_match_weight: float = 0.6
    cvr_quality_weight: float = 1.0
    new_user_cvr_shift: float = 0.3
    # Exposure policy: channel mix (popular, interest, new_item, random) per policy.
    policy: Policy = "popularity"
    channel_mix: dict[str, tuple[float, float, float, float]] = Field(
        default_factory=lambda: {
            "popularity": (0.40, 0.45, 0.05, 0.10),
            "random": (0.0, 0.0, 0.0, 1.0),
            "boost": (0.35, 0.40, 0.20, 0.05),
        }
    )
    design: Design = "user_split"
    experiment_id: str = "exp_new_item_boost"
    treatment_policy: Policy = "boost"
    treatment_share: float = Field(0.5, gt=0, lt=1)

    @model_validator(mode="after")
    def _check_mixes(self) -> SimulatorConfig:
        for name in ("popularity", "random", "boost"):
            mix = self.channel_mix.get(name)
            if mix is None or len(mix) != len(SIM_RECALL_CHANNELS) or min(mix) < 0 or abs(sum(mix) - 1) > 1e-6:
                raise ValueError(f"channel_mix[{name!r}] must be {len(SIM_RECALL_CHANNELS)} shares summing to 1")
        return self

    @model_validator(mode="after")
    def _check_balanced(self) -> SimulatorConfig:
        if self.design == "balanced_author_split":
            if self.treatment_share > 0.5:
                raise ValueError("a balanced author split has control and treatment groups of treatment_share "
                                 "each (the rest held out): treatment_share must be at most 0.5")  # fmt: skip
            if self.policy != self.treatment_policy:
                raise ValueError("a balanced author split fixes each group's new-item share, which a channel-mix "
                                 "treatment changes: run it as a closed-loop experiment (`coldstart experiment`), "
                                 "where the platform feed holds the shares")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _check_keywords(self) -> SimulatorConfig:
        if self.keyword_topic_share + self.keyword_author_share > 1:
            raise ValueError("keyword_topic_share + keyword_author_share must be at most 1")
        return self

    @model_validator(mode="after")
    def _check_candidates(self) -> SimulatorConfig:
        if self.candidates_per_request is not None and self.candidates_per_request < self.slate_size:
            raise ValueError("candidates_per_request must be at least slate_size")
        return self

    @property
    def n_candidates(self) -> int:
        """Candidates recalled per request."""
        return self.candidates_per_request or self.slate_size

    @property
    def end_date(self) -> dt.date:
        return self.start_date + dt.timedelta(days=self.days - 1)


@dataclass
class SimulationSummary:
    """What a run wrote."""

    days: list[dt.date]
    users: int = 0
    items: int = 0
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    publishes: int = 0
    new_user_impressions: int = 0
    seconds: float = 0.0
    per_day: list[dict] = field(default_factory=list)

    def add_day(self, day: dt.date, traffic: dict[str, int], signups: int, publishes: int) -> None:
        """Fold one day's traffic counts (see ``Simulator._traffic``), signups and publishes into the totals."""
        self.impressions += traffic["impressions"]
        self.clicks += traffic["clicks"]
        self.conversions += traffic["conversions"]
        self.new_user_impressions += traffic["new_user_impressions"]
        self.publishes += publishes
        self.per_day.append(
            {"date": day.isoformat(), "impressions": traffic["impressions"], "clicks": traffic["clicks"],
             "signups": signups, "publishes": publishes}
        )  # fmt: skip
