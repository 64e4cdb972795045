"""Feature services: one versioned set of features per model. Changing a set means a new version."""

from feast import FeatureService

from feature_views import (
    author_stats_fv,
    item_content_fv,
    item_stats_fv,
    user_activity_fv,
    user_profile_fv,
    user_recent_fv,
)

# What models read from item content (author_id is a join key for author_stats, looked up separately).
CONTENT = ["category", "keywords", "content_vector"]

# ESMM (CTR and CVR over the whole impression space): profile, activity, item stats and content, author.
esmm_v1 = FeatureService(
    name="esmm_v1",
    features=[user_profile_fv, user_activity_fv, item_stats_fv, item_content_fv[CONTENT], author_stats_fv],
    description="Features of the ESMM ranker, version 1.",
)

# PLE + UIE (+ POSO): everything ESMM sees plus the recent-click sequence for UIE's sequence enhancement.
ple_uie_v1 = FeatureService(
    name="ple_uie_v1",
    features=[
        user_profile_fv,
        user_activity_fv,
        user_recent_fv,
        item_stats_fv,
        item_content_fv[CONTENT],
        author_stats_fv,
    ],
    description="Features of PLE with UIE and POSO, version 1.",
)

# MeLU: user profile and item content only (its decision layers adapt from a few ratings per user).
melu_v1 = FeatureService(
    name="melu_v1",
    features=[user_profile_fv, item_content_fv[CONTENT]],
    description="Features of MeLU, version 1.",
)
