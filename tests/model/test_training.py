"""Trainer determinism and resume, the encoder's cold paths, and MLflow registration by alias."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.models.esmm import ESMM, ESMMConfig
from pipelines.settings import get_settings
from pipelines.training.dataset import COUNTS, RATES, FeatureEncoder
from pipelines.training.trainer import Checkpoint, TrainConfig, Trainer


def synthetic_frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    frame = pd.DataFrame(
        {
            "event_time": start + pd.to_timedelta(rng.integers(0, 3 * 86400, n), unit="s"),
            "user_id": rng.integers(0, 200, n),
            "item_id": rng.integers(0, 300, n),
            "author_id": rng.integers(0, 30, n),
            "gender": rng.choice(["F", "M"], n),
            "age": rng.integers(16, 60, n),
            "occupation": rng.choice(["a", "b"], n),
            "region": rng.choice(["r1", "r2"], n),
            "device": rng.choice(["ios", "web"], n),
            "category": rng.choice(["food", "pets", "tech"], n),
            "content_vector": [rng.normal(size=4).astype(np.float32) for _ in range(n)],
            "recent_item_ids": [rng.integers(0, 300, rng.integers(0, 5)) for _ in range(n)],
        }
    )
    for column in COUNTS:
        frame[column] = rng.poisson(5, n).astype(float)
    for column in RATES:
        frame[column] = rng.random(n)
    frame.loc[rng.random(n) < 0.1, "view_count"] = np.nan  # cold rows without activity features
    score = (frame["category"] == "pets") * 2.5 + 2 * frame["ctr_smoothed_7d"] - 2.5
    frame["click"] = (rng.random(n) < 1 / (1 + np.exp(-score))).astype(np.int8)
    frame["conversion"] = (frame["click"] * (rng.random(n) < 0.3)).astype(np.int8)
    return frame.sort_values("event_time").reset_index(drop=True)


@pytest.fixture(scope="module")
def tensors():
    frame = synthetic_frame()
    encoder = FeatureEncoder.fit(frame)
    return encoder, encoder.transform(frame)


def fresh_trainer(encoder, tmp: Path | None, epochs: int) -> Trainer:
    torch.manual_seed(0)
    model = ESMM(encoder.spec(), ESMMConfig(tower=[8], dropout=0.1))
    callbacks = [Checkpoint(tmp)] if tmp else []
    return Trainer(model, TrainConfig(epochs=epochs, batch_size=256, seed=3, patience=5), callbacks)


def test_a_resumed_run_equals_an_uninterrupted_one(tensors, tmp_path: Path) -> None:
    encoder, data = tensors
    straight = fresh_trainer(encoder, None, 3)
    straight.fit(data, data)
    killed = fresh_trainer(encoder, tmp_path, 1)
    killed.fit(data, data)  # "killed" after epoch 1
    resumed = fresh_trainer(encoder, tmp_path, 3)
    resumed.resume(tmp_path / "last.pt")
    assert resumed.state.epoch == 1
    resumed.fit(data, data)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_same_seed_same_weights(tensors) -> None:
    encoder, data = tensors
    a, b = fresh_trainer(encoder, None, 1), fresh_trainer(encoder, None, 1)
    a.fit(data, data)
    b.fit(data, data)
    assert all(
        torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True)
    )


def test_kept_epochs_metrics_equal_a_fresh_pass_with_the_restored_weights(tensors) -> None:
    """Training reports the kept epoch's validation AUCs instead of scoring the validation day again."""
    from pipelines.training.api import output_aucs
    from pipelines.training.trainer import EarlyStopping

    encoder, data = tensors
    train = {k: v[:2000] for k, v in data.items()}
    val = {k: v[2000:] for k, v in data.items()}
    torch.manual_seed(0)
    model = ESMM(encoder.spec(), ESMMConfig(tower=[64]))
    cfg = TrainConfig(epochs=4, batch_size=64, lr=0.05, seed=3, patience=5)
    trainer = Trainer(model, cfg, [EarlyStopping()], output_aucs)
    trainer.fit(train, val)
    # this seed overfits: the best validation loss is not the last epoch's, so the weights are restored
    assert trainer.state.best_epoch < len(trainer.state.history)
    kept = trainer.kept_metrics()
    assert kept["val_loss"] == min(m["val_loss"] for m in trainer.state.history)
    fresh_loss, fresh_outputs = trainer.validate(val)  # a fresh pass with the restored weights
    assert kept["val_loss"] == pytest.approx(fresh_loss, rel=1e-9)
    fresh = output_aucs(fresh_outputs, val)
    assert set(fresh) == {"val_auc_ctr", "val_auc_ctcvr", "val_auc_cvr"}
    assert {k: kept[k] for k in fresh} == pytest.approx(fresh, rel=1e-12)


def test_a_checkpoint_without_best_epoch_resumes_with_the_kept_epoch_replayed(tensors, tmp_path: Path) -> None:
    from pipelines.training.trainer import EarlyStopping

    encoder, data = tensors
    trainer = fresh_trainer(encoder, tmp_path, 3)
    trainer.callbacks.insert(0, EarlyStopping())  # before the checkpoint, as train_model orders them
    trainer.fit(data, data)
    snap = torch.load(tmp_path / "last.pt", weights_only=False)
    kept = snap["state"].pop("best_epoch")
    assert kept >= 1
    torch.save(snap, tmp_path / "old.pt")  # as written before best_epoch was recorded
    resumed = fresh_trainer(encoder, None, 3)
    resumed.resume(tmp_path / "old.pt")
    assert resumed.state.best_epoch == kept
    assert resumed.kept_metrics() == trainer.kept_metrics()


def test_unknown_users_and_items_take_the_default_embedding(tensors) -> None:
    encoder, _ = tensors
    frame = synthetic_frame(5, seed=1)
    frame["user_id"] = 10**9
    frame["item_id"] = 10**9
    frame["view_count"] = np.nan
    batch = encoder.transform(frame)
    assert (batch["sparse"][:, 0] == 0).all() and (batch["sparse"][:, 1] == 0).all()
    model = ESMM(encoder.spec(), ESMMConfig(tower=[8]))
    scores = model(batch)["p_ctr"]
    assert torch.isfinite(scores).all() and len(torch.argsort(scores, descending=True)) == 5


def test_ids_as_floats_or_strings_map_to_the_same_index() -> None:
    encoder = FeatureEncoder.fit(synthetic_frame(), min_counts={})  # every id in the vocabulary: no id folds to 0
    frame = synthetic_frame(3, seed=3)
    as_float = frame.assign(user_id=frame["user_id"].astype(float), item_id=frame["item_id"].astype(str))
    assert torch.equal(encoder.transform(frame)["sparse"], encoder.transform(as_float)["sparse"])
    assert (encoder.transform(frame)["sparse"][:, 0] > 0).all()


def test_an_illegal_conversion_without_click_is_zeroed(tensors) -> None:
    encoder, _ = tensors
    frame = synthetic_frame(10, seed=2)
    frame["click"], frame["conversion"] = 0, 1
    assert encoder.transform(frame)["conversion"].sum() == 0


def test_registered_version_loads_by_alias_and_predicts_identically(tmp_path: Path) -> None:
    import mlflow

    from pipelines.training.api import train_model

    settings = get_settings(home=tmp_path / "home")
    frame = synthetic_frame()
    result = train_model(settings, "esmm", frame, {"tower": [8]}, {"epochs": 1, "batch_size": 512})
    assert result["version"] == "1" and "val_auc_ctr" in result["metrics"]
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{result['registered_model']}@candidate")
    rows = frame.tail(50).reset_index(drop=True)
    first = loaded.predict(rows)
    again = mlflow.pyfunc.load_model(f"models:/{result['registered_model']}@candidate").predict(rows)
    assert list(first.columns) == ["p_ctr", "p_cvr", "p_ctcvr"] and len(first) == 50
    pd.testing.assert_frame_equal(first, again)
    np.testing.assert_allclose(first["p_ctcvr"], first["p_ctr"] * first["p_cvr"], rtol=1e-6)
    run = mlflow.get_run(result["run_id"])
    assert run.data.params["model"] == "esmm" and "val_loss" in run.data.metrics
    # the learned-default choices are recorded: config as params, their effect as metrics, the cut in the encoder
    defaults = TrainConfig()
    assert run.data.params["train.id_dropout"] == str(defaults.id_dropout)
    assert run.data.params["train.min_count_item"] == str(defaults.min_count_item)
    assert run.data.metrics["train_default_share_item_id"] == 1.0  # ~7 training rows per item: all fold
    assert loaded.unwrap_python_model().encoder.min_counts == defaults.min_counts
    # Unknown config keys are rejected before anything trains.
    with pytest.raises(ValueError, match="extra"):
        train_model(settings, "esmm", frame, {"towr": [8]}, {"epochs": 1})


def test_warm_start_from_a_registered_model(tmp_path: Path) -> None:
    from pipelines.training.api import train_model

    settings = get_settings(home=tmp_path / "home")
    frame = synthetic_frame()
    config = {"expert": [16], "tower": [8], "uie": {"dim": 8, "user_centroids": 8, "item_centroids": 8}}
    first = train_model(settings, "ple", frame, config, {"epochs": 1, "batch_size": 512})
    second = train_model(
        settings, "ple", frame, config, {"epochs": 1, "batch_size": 512},
        warm_start_from=f"models:/{first['registered_model']}/{first['version']}",
    )  # fmt: skip
    import mlflow

    run = mlflow.get_run(second["run_id"])
    assert int(run.data.tags["lineage.warm_started_tensors"]) > 10
    assert second["version"] == "2"


@pytest.mark.parametrize("name", ["base", "shared_bottom", "esmm", "mmoe", "ple"])
def test_every_tiny_config_trains_and_registers(name: str, tmp_path: Path) -> None:
    from pipelines.models import TINY_CONFIGS
    from pipelines.training.api import train_model

    settings = get_settings(home=tmp_path / "home")
    result = train_model(settings, name, synthetic_frame(1500), TINY_CONFIGS[name], {"epochs": 1, "batch_size": 256})
    assert result["version"] == "1" and 0.0 <= result["metrics"]["val_auc_ctr"] <= 1.0


def test_arrow_list_columns_encode_like_numpy_arrays_in_object_columns() -> None:
    """Training sets carry list features as Arrow-backed columns; serving sends lists. Same tensors either way."""
    import pyarrow as pa

    frame = synthetic_frame(500, seed=4)
    for column in ("content_vector", "recent_item_ids"):  # every 7th row has no vector and no history
        frame[column] = [None if i % 7 == 0 else v for i, v in enumerate(frame[column])]
    frame["recent_item_ids"] = [
        np.resize(frame["item_id"].to_numpy(), 40) if i == 1 else v for i, v in enumerate(frame["recent_item_ids"])
    ]
    arrow = frame.copy()
    for column, kind in (("content_vector", pa.float32()), ("recent_item_ids", pa.int64())):
        cells = [None if v is None else list(v) for v in frame[column]]
        arrow[column] = pd.Series(pd.arrays.ArrowExtensionArray(pa.array(cells, pa.list_(kind))), index=frame.index)
    # every item in the vocabulary (no minimum count), so the truncated 40-id history below holds no 0
    fitted, from_arrow = FeatureEncoder.fit(frame, min_counts={}), FeatureEncoder.fit(arrow, min_counts={})
    assert fitted.vocab == from_arrow.vocab and fitted.dense == from_arrow.dense
    np.testing.assert_allclose(fitted.mean, from_arrow.mean, rtol=1e-6)
    expected, got = fitted.transform(frame), fitted.transform(arrow)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
    assert (expected["seq"][1] > 0).all() and (expected["seq"][7] == 0).all()  # 40 ids truncated to seq_len


def test_warm_start_copies_id_rows_by_vocabulary_key() -> None:
    """Item 7 is index 2 in the first window's vocabulary and index 1 in the next (item 3 is gone): its learned
    row follows the id, row 0 is copied, and an id only the new window has keeps its fresh init."""
    from pipelines.models import TINY_CONFIGS
    from pipelines.training.api import _copy_id_rows
    from pipelines.training.dataset import SPARSE
    from pipelines.training.registry import build_ranker

    first = synthetic_frame(400, seed=1)
    first["item_id"] = np.resize([3, 5, 7], len(first))
    second = first.copy()
    second["item_id"] = np.resize([5, 7, 9], len(second))
    old, new = FeatureEncoder.fit(first, min_counts={}), FeatureEncoder.fit(second, min_counts={})
    assert old.vocab["item_id"]["7"] != new.vocab["item_id"]["7"]
    torch.manual_seed(0)
    source = build_ranker("esmm", old, TINY_CONFIGS["esmm"])
    target = build_ranker("esmm", new, TINY_CONFIGS["esmm"])
    fresh = target.state_dict()
    done = _copy_id_rows(target, source.state_dict(), old, new)
    field = SPARSE.index("item_id")
    name = next(n for n in done if n.endswith(f"tables.{field}.weight"))
    before, after = source.state_dict()[name], target.state_dict()[name]
    for key in ("5", "7"):
        torch.testing.assert_close(after[new.vocab["item_id"][key]], before[old.vocab["item_id"][key]])
    torch.testing.assert_close(after[0], before[0])
    torch.testing.assert_close(after[new.vocab["item_id"]["9"]], fresh[name][new.vocab["item_id"]["9"]])
