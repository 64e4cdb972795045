"""The two-tower retrieval model (MODELS.md §8): user and item towers trained with the logQ-corrected in-batch
softmax on the clicks of a window of the dataset's clean log, registered as ``coldstart_two_tower``.

Its item vectors feed the recall channels (age pools by ANN, look-alike vectors); it has no ranker-style
evaluation of its own. Its ``train`` hook gates it itself: a version whose recall@k on the window's held-out last
day beats the popularity baseline's (same users, same pool, same k) by more than ``recall_margin`` becomes
``champion``, with the reason and both recalls as version tags. It reads the champion content tower's vectors
when there is one, so it trains after the content tower (``train_first`` families go first); ``train_models``
builds its recall indexes before the rankers train (``retrieval``), so a ranker's bento packs them.
"""

from pipelines.catalog import Family

FAMILY = Family(
    name="retrieval",
    # Margin over popularity's recall@k: 0, any real improvement. Popularity is what a feed has without a model;
    # a margin would refuse first models on windows too small to separate them by more than noise.
    models={"two_tower": {"recall_margin": 0.0}},
    bento_service="ranker",
    reads_online_store=False,
    hooks={"train": "pipelines.training.two_tower:train_for_catalog"},
    retrieval=True,
)
