"""The content tower (MODELS.md §7): item content -> a unit vector and a predicted content quality, trained with
the triplet hinge loss on co-engaged items of a window of the dataset's clean log, registered as
``coldstart_content_tower``. It is not served by a bento of its own: its vectors feed the rankers' similar-item
initialisation, differentiated exposure targets and cluster recall (``bento_service`` names the bento that
reads them)."""

from pipelines.catalog import Family

FAMILY = Family(
    name="content",
    models={"content_tower": {}},
    bento_service="ranker",
    reads_online_store=False,
    hooks={"train": "pipelines.training.content_tower:train_for_catalog"},
)
