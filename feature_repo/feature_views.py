"""Feast feature views. TTLs say how long a snapshot stays valid when no newer one exists."""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Array, Float32, Float64, Int32, Int64, String

from data_sources import (
    author_stats_source,
    item_content_source,
    item_content_tower_source,
    item_stats_push_source,
    user_activity_source,
    user_profile_source,
    user_recent_source,
)
from entities import author, item, user

# Who the user is; days_since_signup and is_new_user drive new-user handling (POSO's personalization code).
user_profile_fv = FeatureView(
    name="user_profile_fv",
    entities=[user],
    ttl=timedelta(days=2),
    schema=[
        Field(name="gender", dtype=String),
        Field(name="age", dtype=Int32),
        Field(name="occupation", dtype=String),
        Field(name="region", dtype=String),
        Field(name="device", dtype=String),
        Field(name="is_author", dtype=Int32),
        Field(name="days_since_signup", dtype=Float64),
        Field(name="is_new_user", dtype=Int32),
    ],
    source=user_profile_source,
)

# How active the user is; view_count is the raw lifetime impression count POSO gates on.
user_activity_fv = FeatureView(
    name="user_activity_fv",
    entities=[user],
    ttl=timedelta(days=2),
    schema=[
        Field(name="impressions_1d", dtype=Int64),
        Field(name="impressions_7d", dtype=Int64),
        Field(name="impressions_30d", dtype=Int64),
        Field(name="clicks_1d", dtype=Int64),
        Field(name="clicks_7d", dtype=Int64),
        Field(name="clicks_30d", dtype=Int64),
        Field(name="conversions_7d", dtype=Int64),
        Field(name="conversions_30d", dtype=Int64),
        Field(name="view_count", dtype=Int64),
    ],
    source=user_activity_source,
)

# The user's recent clicks, newest first (UIE's sequence features); absent for users who never clicked.
user_recent_fv = FeatureView(
    name="user_recent_fv",
    entities=[user],
    ttl=timedelta(days=30),
    schema=[
        Field(name="recent_item_ids", dtype=Array(Int64)),
        Field(name="recent_categories", dtype=Array(String)),
        Field(name="recent_clicks", dtype=Int32),
    ],
    source=user_recent_source,
)

# Exposure and engagement of live items; fed daily from the batch source and hourly through the push source.
item_stats_fv = FeatureView(
    name="item_stats_fv",
    entities=[item],
    ttl=timedelta(days=2),
    schema=[
        Field(name="age_hours", dtype=Float64),
        Field(name="exposures_1d", dtype=Int64),
        Field(name="exposures_7d", dtype=Int64),
        Field(name="exposures_total", dtype=Int64),
        Field(name="item_clicks_1d", dtype=Int64),
        Field(name="item_clicks_7d", dtype=Int64),
        Field(name="item_clicks_total", dtype=Int64),
        Field(name="ctr_smoothed_7d", dtype=Float64),
        Field(name="cvr_smoothed_7d", dtype=Float64),
    ],
    source=item_stats_push_source,
)

# What the item is about: known from the moment it is published, so it serves brand-new items.
item_content_fv = FeatureView(
    name="item_content_fv",
    entities=[item],
    ttl=timedelta(0),
    schema=[
        Field(name="author_id", dtype=Int64),
        Field(name="category", dtype=String),
        Field(name="keywords", dtype=Array(String)),
        Field(name="content_vector", dtype=Array(Float32)),
    ],
    source=item_content_source,
)

# The content tower's view of an item (MODELS.md §7): a unit vector comparable across items and a predicted
# content quality, from the champion tower; a new item's row is written online at its publish time.
item_content_tower_fv = FeatureView(
    name="item_content_tower_fv",
    entities=[item],
    ttl=timedelta(0),
    schema=[
        Field(name="content_tower_vector", dtype=Array(Float32)),
        Field(name="content_quality", dtype=Float32),
        Field(name="content_tower_version", dtype=String),
    ],
    source=item_content_tower_source,
)

# Author productivity and the historical quality of their items (a prior for their new items).
author_stats_fv = FeatureView(
    name="author_stats_fv",
    entities=[author],
    ttl=timedelta(days=2),
    schema=[
        Field(name="items_published", dtype=Int64),
        Field(name="items_published_30d", dtype=Int64),
        Field(name="author_ctr_smoothed", dtype=Float64),
        Field(name="author_cvr_smoothed", dtype=Float64),
    ],
    source=author_stats_source,
)
