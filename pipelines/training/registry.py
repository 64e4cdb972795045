"""MLflow packaging of a trained ranker: a pyfunc that takes raw feature rows and returns pCTR, pCVR, pCTCVR.

The weights, the resolved model config and the feature encoder travel as artifacts, so the registered version
loads back anywhere the package is installed; everything downstream resolves it by alias
(``models:/<name>@candidate``, ``@champion``, ``@staging``), never by run id.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

from pipelines.models import RANKERS
from pipelines.training.dataset import FeatureEncoder


def build_ranker(name: str, encoder: FeatureEncoder, config: dict):
    cls = RANKERS[name]
    return cls(encoder.spec(), cls.config_class(**config))


class RankerModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: DataFrame of feature rows -> DataFrame (p_ctr, p_cvr, p_ctcvr)."""

    def load_context(self, context) -> None:
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.encoder = FeatureEncoder.load(Path(context.artifacts["encoder"]))
        self.model = build_ranker(meta["model"], self.encoder, meta["config"])
        self.model.load_state_dict(torch.load(context.artifacts["weights"], weights_only=True))
        self.model.eval()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        with torch.no_grad():
            out = self.model(self.encoder.transform(model_input))
        return pd.DataFrame({k: out[k].numpy() for k in ("p_ctr", "p_cvr", "p_ctcvr")})


def log_and_register(
    model: torch.nn.Module, name: str, config: dict, encoder: FeatureEncoder, example: pd.DataFrame, registered: str
) -> str:
    """Log the model in the active run, register a new version and point the alias ``candidate`` at it."""
    from mlflow.models import infer_signature

    example = plain_lists(example)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.save(model.state_dict(), folder / "weights.pt")
        encoder.save(folder / "encoder.json")
        (folder / "meta.json").write_text(json.dumps({"model": name, "config": config}))
        wrapper = RankerModel()
        model.eval()
        with torch.no_grad():
            out = model(encoder.transform(example))
        output = pd.DataFrame({k: out[k].numpy() for k in ("p_ctr", "p_cvr", "p_ctcvr")})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=wrapper,
            artifacts={k: str(folder / f) for k, f in (("weights", "weights.pt"), ("encoder", "encoder.json"),
                                                         ("meta", "meta.json"))},
            input_example=example,
            signature=infer_signature(example, output),
            registered_model_name=registered,
            pip_requirements=pip_requirements(),
        )  # fmt: skip
    version = str(info.registered_model_version)
    mlflow.MlflowClient().set_registered_model_alias(registered, "candidate", version)
    return version


# What loading the pyfunc imports. Named, not inferred: MLflow's inference loads the model in a subprocess
# (about 10 s a registration) and missed torch.
RUNTIME_PACKAGES = ("coldstart-platform", "mlflow", "torch", "numpy", "pandas", "pyarrow", "scipy", "cloudpickle")


def pip_requirements() -> list[str]:
    """The installed versions of :data:`RUNTIME_PACKAGES`, pinned."""
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in RUNTIME_PACKAGES]


def plain_lists(frame: pd.DataFrame) -> pd.DataFrame:
    """Array cells as plain Python lists of float / int, so the example survives MLflow's JSON round trip."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].map(lambda v: isinstance(v, list | np.ndarray)).any():
            frame[column] = frame[column].map(
                lambda v: (
                    [x.item() if hasattr(x, "item") else x for x in v] if isinstance(v, list | np.ndarray) else None
                )
            )
    return frame
