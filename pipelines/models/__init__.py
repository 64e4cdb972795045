"""Models: shared layers; ESMM, the BASE and shared-bottom baselines, MMoE, PLE (+UIE, +POSO), MeLU."""

from pipelines.models.baselines import BaseCTRCVR, SharedBottom
from pipelines.models.esmm import ESMM
from pipelines.models.mtl import PLE, MMoE

# Ranking models by the name the trainer, CLI and DAG use.
RANKERS = {"base": BaseCTRCVR, "shared_bottom": SharedBottom, "esmm": ESMM, "mmoe": MMoE, "ple": PLE}

# The tiny configs CI trains for real (few parameters, one epoch): one per ranker.
TINY_CONFIGS: dict[str, dict] = {
    "base": {"embed_dim": 4, "tower": [8]},
    "shared_bottom": {"embed_dim": 4, "bottom": [16], "tower": [8]},
    "esmm": {"embed_dim": 4, "tower": [8]},
    "mmoe": {"embed_dim": 4, "n_experts": 2, "expert": [8], "tower": [8]},
    "ple": {"embed_dim": 4, "levels": 2, "expert": [8], "tower": [8], "uie": {"dim": 4, "user_centroids": 8,
                                                                             "item_centroids": 8}},
}  # fmt: skip
