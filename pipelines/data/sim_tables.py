"""The Arrow tables the simulator writes: dimension and event tables per day, impressions per hour, and truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.data.contract import ASSIGNMENTS, BUCKETS, RECALL_CHANNELS, write_file
from pipelines.data.sim_config import AUTHOR_DESIGNS, CATEGORIES, DEVICES, OCCUPATIONS
from pipelines.data.sim_feed import Requests, Slates
from pipelines.data.sim_world import Responses, World


def impression_tables(
    world: World, request_id: np.ndarray, requests: Requests, slates: Slates, responses: Responses
) -> tuple[pa.Table, pa.Table]:
    """One hour's ``impressions`` (as logged, with each slot's experiment bucket) and ``impression_truth``."""
    cfg = world.cfg
    slate = cfg.slate_size
    items = slates.items.ravel()
    slot_user = np.repeat(requests.user, slate)
    if cfg.design == "user_split":
        bucket = world.u_bucket.view[slot_user]
    elif cfg.design in AUTHOR_DESIGNS:
        bucket = world.a_bucket.view[world.i_author.view[items]]
    else:
        bucket = np.zeros(len(items), dtype=np.int8)
    event_time = np.repeat(requests.time_us, slate)
    request_ids = np.repeat(request_id, slate)
    position = slates.position
    impressions = pa.table(
        {
            "request_id": request_ids,
            "user_id": slot_user,
            "item_id": items,
            "event_time": pa.array(event_time, pa.timestamp("us", tz="UTC")),
            "position": position,
            "recall_channel": pa.DictionaryArray.from_arrays(
                slates.channel.ravel().astype(np.int32), pa.array(RECALL_CHANNELS)
            ).cast(pa.string()),
            "experiment_bucket": pa.DictionaryArray.from_arrays(bucket.astype(np.int32), pa.array(BUCKETS)).cast(
                pa.string()
            ),
            "click": responses.click.astype(np.int8),
            "conversion": responses.conversion.astype(np.int8),
            "dwell_seconds": responses.dwell.astype(np.float32),
        }
    )
    truth = pa.table(
        {
            "request_id": request_ids,
            "position": position,
            "item_id": items,
            "event_time": pa.array(event_time, pa.timestamp("us", tz="UTC")),
            "is_new_user": np.repeat(requests.is_new_user, slate),
            "p_click": responses.p_click.astype(np.float32),
            "p_conversion_given_click": responses.p_conversion.astype(np.float32),
        }
    )
    return impressions, truth


def users_table(world: World, users: np.ndarray) -> pa.Table:
    """The ``users`` rows of ``users``, with their observable (random) profile."""
    rng, n = world.rng, len(users)
    gender = np.array(["F", "M"], dtype=object)[rng.integers(0, 2, n)]
    gender[rng.random(n) < 0.05] = None
    return pa.table(
        {
            "user_id": users,
            "signup_time": pa.array(world.u_signup.view[users], pa.timestamp("us", tz="UTC")),
            "gender": pa.array(gender, pa.string()),
            "age": rng.integers(16, 65, n).astype(np.int16),
            "occupation": pa.array(np.array(OCCUPATIONS, dtype=object)[rng.integers(0, len(OCCUPATIONS), n)]),
            "region": pa.array([f"r{r:02d}" for r in rng.integers(0, 30, n)]),
            "device": pa.array(np.array(DEVICES, dtype=object)[rng.integers(0, len(DEVICES), n)]),
            "is_author": world.u_author.view[users] >= 0,
        }
    )


def items_table(world: World, items: np.ndarray) -> pa.Table:
    """The ``items`` rows of ``items``: what the author filed (category, keywords) and the content embedding.

    None of these is the hidden topic or quality (see :mod:`~pipelines.data.sim_content`); those stay in
    ``item_truth``.
    """
    cfg = world.cfg
    content = world.content(items)
    return pa.table(
        {
            "item_id": items,
            "author_id": world.a_user.view[world.i_author.view[items]],
            "category": pa.array(np.array(CATEGORIES, dtype=object)[content.category], pa.string()),
            "keywords": pa.array(content.keywords, pa.list_(pa.string())),
            "content_vector": pa.ListArray.from_arrays(
                np.arange(0, (len(items) + 1) * cfg.content_dim, cfg.content_dim, dtype=np.int32),
                pa.array(content.vectors.ravel(), pa.float32()),
            ),
            "publish_time": pa.array(world.i_publish.view[items], pa.timestamp("us", tz="UTC")),
        }
    )


def publishes_table(world: World, items: np.ndarray) -> pa.Table:
    """The ``publishes`` events of ``items``."""
    return pa.table(
        {
            "item_id": items,
            "author_id": world.a_user.view[world.i_author.view[items]],
            "publish_time": pa.array(world.i_publish.view[items], pa.timestamp("us", tz="UTC")),
        }
    )


def assignments_table(world: World, users: np.ndarray, day_us: int, first_day: bool) -> pa.Table:
    """Units enter the experiment when first seen: everyone existing on day one, then at signup."""
    cfg = world.cfg
    if cfg.design == "none":
        return ASSIGNMENTS.schema.empty_table()
    assigned = np.maximum(world.u_signup.view[users], day_us) if first_day else world.u_signup.view[users]
    if cfg.design == "user_split":
        unit_type, units, bucket = "user", users, world.u_bucket.view[users]
    else:
        authors = world.u_author.view[users]
        keep = authors >= 0
        unit_type, units, bucket = "author", users[keep], world.a_bucket.view[authors[keep]]
        assigned = assigned[keep]
    n = len(units)
    return pa.table(
        {
            "experiment_id": pa.array([cfg.experiment_id] * n, pa.string()),
            "unit_type": pa.array([unit_type] * n, pa.string()),
            "unit_id": units,
            "bucket": pa.array(np.array(BUCKETS, dtype=object)[bucket], pa.string()),
            "design": pa.array([cfg.design] * n, pa.string()),
            "assigned_at": pa.array(assigned, pa.timestamp("us", tz="UTC")),
        }
    )


def write_entity_truth(world: World, truth_dir: Path) -> None:
    """Every user's and item's hidden truth (and final counters), for evaluation."""
    cfg = world.cfg
    interest = world.u_interest.astype(np.float32)
    write_file(
        truth_dir / "user_truth.parquet",
        pa.table(
            {
                "user_id": np.arange(world.u_signup.n),
                "activity": world.u_activity.view,
                "click_bias": world.u_bias.view,
                "treatment": world.u_bucket.view.astype(bool),
                "interest": pa.ListArray.from_arrays(
                    np.arange(0, (world.u_signup.n + 1) * cfg.n_topics, cfg.n_topics, dtype=np.int32),
                    pa.array(interest.ravel()),
                ),
            }
        ),
    )
    write_file(
        truth_dir / "item_truth.parquet",
        pa.table(
            {
                "item_id": np.arange(world.i_author.n),
                "topic": world.i_topic.view,
                "quality": world.i_quality.view,
                "cvr_quality": world.i_cvr_quality.view,
                "exposures": world.i_exposures.view,
                "clicks": world.i_clicks.view,
                "early_exposures": world.i_early.view,
                "author_treatment": world.a_bucket.view[world.i_author.view] == 1,
            }
        ),
    )
