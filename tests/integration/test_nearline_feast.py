"""The near-line writer on a simulated platform's validated logs, with author scores from the Feast online store."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.serving.exposure import HOUR, author_percentiles
from pipelines.serving.nearline import NearlineState
from pipelines.serving.nearline_ingest import feast_author_scores, ingest_day

from .conftest import Platform


def test_ingest_day_counts_the_logs_and_scores_authors_from_feast(platform: Platform, feast_store) -> None:
    day = platform.days[-1]
    with NearlineState.open(platform.settings) as state:
        counts = ingest_day(state, platform.data, day, author_scores=feast_author_scores(feast_store))
        snap = state.snapshot()
    assert counts["hours"] == 24 and counts["active"] == len(snap["item_id"]) > 0
    frame = pd.DataFrame(snap)

    # Items published today entered the state before their first impression: each one counted all of them.
    impressions = platform.data.read("impressions", day, "clean", columns=["item_id", "click"]).to_pandas()
    logged = impressions.groupby("item_id")["click"].agg(["size", "sum"])
    today = frame[frame["published"] >= pd.Timestamp(day, tz="UTC").timestamp()].set_index("item_id")
    assert len(today) > 0
    seen = logged.reindex(today.index, fill_value=0)
    np.testing.assert_array_equal(today["exposures"], seen["size"])
    np.testing.assert_array_equal(today["clicks"], seen["sum"])

    # Items still on their ramp at the last tick got their author's percentile among the active items' authors.
    stats = pd.read_parquet(platform.layout.path("author_stats", day), columns=["author_id", "author_ctr_smoothed"])
    ctr = dict(zip(stats["author_id"], stats["author_ctr_smoothed"], strict=True))
    active = sorted({int(a) for a in frame["author_id"].dropna()})
    expected = author_percentiles({a: ctr.get(a) for a in active})
    end = pd.Timestamp(day, tz="UTC").timestamp() + 24 * HOUR
    ramp = frame[(end - frame["published"]) / HOUR < state.cfg.ramp_hours]
    want = [expected.get(int(a), 0.5) if a == a else 0.5 for a in ramp["author_id"]]
    np.testing.assert_allclose(ramp["author_score"], want)
    assert ramp["author_score"].nunique() > 3  # no longer every author at 0.5
