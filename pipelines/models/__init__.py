"""Models: shared layers; ESMM, the BASE and shared-bottom baselines, MMoE, PLE (+UIE, +POSO), MeLU."""

from pipelines.models.baselines import BaseCTRCVR, SharedBottom
from pipelines.models.esmm import ESMM
from pipelines.models.mtl import PLE, MMoE

# Ranking models by the name the trainer, CLI and DAG use.
RANKERS = {"base": BaseCTRCVR, "shared_bottom": SharedBottom, "esmm": ESMM, "mmoe": MMoE, "ple": PLE}
