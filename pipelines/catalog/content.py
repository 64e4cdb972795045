"""The content tower (MODELS.md §7): item content -> a unit vector and a predicted content quality, trained with
the triplet hinge loss on co-engaged items of a window of the dataset's clean log, registered as
``coldstart_content_tower``.

It has no bento of its own and no ranker-style evaluation: its vectors feed the rankers' similar-item
initialisation (the ranker bento's content-kNN policy), so ``train_models`` trains it first (``train_first``).
Its ``train`` hook gates it itself: a version whose held-out triplet accuracy (share of validation-anchor triplets
with cos(a, b+) > cos(a, b-); 0.5 is chance) clears ``triplet_accuracy_floor`` becomes ``champion``, with the
reason as a version tag, and its vectors of every item are written to Feast's ``item_content_tower_fv``.
"""

from pipelines.catalog import Family

FAMILY = Family(
    name="content",
    # Held-out triplet accuracy a version needs to serve: chance is 0.5, so 0.6 refuses a tower that learned
    # little (too few co-engaged pairs in the window) while any working one clears it.
    models={"content_tower": {"triplet_accuracy_floor": 0.6}},
    bento_service="ranker",
    reads_online_store=False,
    hooks={"train": "pipelines.training.content_tower:train_for_catalog"},
    train_first=True,
)
