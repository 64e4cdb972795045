"""The model catalog: every kind of model the platform trains, evaluates, gates and serves, in one place.

A :class:`Family` is a kind of model (the multi-task rankers; MeLU; the content tower; later the retrieval model,
embedding generators): its models and the Feast feature service each reads, the bento service that serves it,
its gate's defaults, and the hooks that train it, score it for evaluation, pack the side data its bento needs and
write its smoke test. DAGs, the CLI, evaluation, the gate and promotion look a model up here; none of them asks
which family a model is.

Hooks are ``"module:function"`` strings, imported when called: the DAG files read the catalog at parse time,
which must not import torch, pandas or MLflow. A test may register a family whose hooks are plain callables.

Hook signatures:
    train(settings, model, request: TrainRequest) -> dict: the training summary (``version`` among it).
    evaluate(contest: Contest) -> dict: the slices of the evaluation (see ``pipelines.evaluation.api``).
    side_data(settings, model, folder) -> None: files the bento reads offline, written into ``folder``.
    smoke_requests(settings, model) -> list[dict]: golden requests (path, body, status, check).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

REGISTERED_PREFIX = "coldstart_"
TRAINING_EXPERIMENT = "coldstart_training"
EVALUATION_EXPERIMENT = "coldstart_evaluation"

Hook = str | Callable[..., Any]


class CatalogError(ValueError):
    """An unknown model, a family registered twice, or a hook the family does not have."""


@dataclass(frozen=True)
class Family:
    """One kind of model and everything the platform needs to know to run it through the chain.

    Attributes:
        name: the family's name (``rankers``, ``melu``).
        models: model name -> that model's options (``feature_service`` and any family-specific flags).
        bento_service: the folder under ``bentos/`` whose service serves the family.
        gate: defaults of ``GateConfig`` for the family (a trigger's overrides go on top).
        primary: the (task, metric) a report puts first, e.g. ``("ctr", "auc")``.
        trains_on_window: whether training reads a window of the dataset's clean impressions (so a run must
            name a day); a family with its own dataset (MeLU on MovieLens-1M) does not.
        reads_online_store: whether its service reads Feast's online store (promotion then waits for it).
        hooks: hook name -> ``"module:function"`` or a callable.
        train_first: whether other families read its outputs (the content tower's vectors feed the rankers'
            new-item embeddings), so ``train_models`` trains it before the others of the same run. Such a
            family sets its own serving alias in its ``train`` hook and has no ``evaluate`` hook or bento chain.
        retrieval: whether the family serves through recall indexes the rankers' bentos pack (the two-tower):
            ``train_models`` trains it after the ``train_first`` families and builds its indexes before the
            rankers train, so the rankers' candidates, evaluated and promoted from their own events, find its
            champion and indexes in place. Like ``train_first``, it sets its own alias in its ``train`` hook.
        demo: how ``coldstart demo`` trains a family that does not train on the simulated window, in a chapter
            of its own: ``train_models`` Params (``model_config`` applies to each of its models). Empty: the
            demo leaves it out.
    """

    name: str
    models: Mapping[str, Mapping[str, Any]]
    bento_service: str
    gate: Mapping[str, Any] = field(default_factory=dict)
    primary: tuple[str, str] = ("ctr", "auc")
    trains_on_window: bool = True
    reads_online_store: bool = True
    hooks: Mapping[str, Hook] = field(default_factory=dict)
    train_first: bool = False
    retrieval: bool = False
    demo: Mapping[str, Any] = field(default_factory=dict)

    def hook(self, name: str) -> Callable[..., Any]:
        """The hook ``name``, imported."""
        target = self.hooks.get(name)
        if target is None:
            raise CatalogError(f"family {self.name!r} has no {name!r} hook")
        if callable(target):
            return target
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Model:
    """One model of a family, as the platform names it."""

    name: str
    family: Family

    @property
    def registered_name(self) -> str:
        """Its name in the MLflow registry and in the BentoML model store."""
        return f"{REGISTERED_PREFIX}{self.name}"

    @property
    def options(self) -> Mapping[str, Any]:
        return self.family.models[self.name]

    @property
    def feature_service(self) -> str | None:
        """The versioned Feast feature service it reads (None: it reads no Feast features)."""
        return self.options.get("feature_service")

    def call(self, hook: str, *args: Any, **kwargs: Any) -> Any:
        """Run the family's ``hook``."""
        return self.family.hook(hook)(*args, **kwargs)


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family`` to the catalog; its model names must be new."""
    if family.name in _FAMILIES:
        raise CatalogError(f"family {family.name!r} is already registered")
    taken = set(family.models) & set(models())
    if taken:
        raise CatalogError(f"family {family.name!r}: models {sorted(taken)} belong to another family")
    _FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    """Remove a family (tests that registered one clean up with it)."""
    _FAMILIES.pop(name, None)


def families() -> Mapping[str, Family]:
    _load_builtin()
    return MappingProxyType(_FAMILIES)


def models(hook: str | None = None) -> list[str]:
    """Every model name, in catalog order (the choices of the DAGs' `models` Param and the CLI).

    Args:
        hook: only the models whose family has this hook (``evaluate``: the models the evaluation and
            promotion DAGs can take).
    """
    _load_builtin()
    return [name for family in _FAMILIES.values() if hook is None or hook in family.hooks for name in family.models]


def model(name: str) -> Model:
    """The model called ``name``.

    Raises:
        CatalogError: no family has it (the message lists the known models).
    """
    _load_builtin()
    for family in _FAMILIES.values():
        if name in family.models:
            return Model(name, family)
    raise CatalogError(f"unknown model {name!r}; choose from {', '.join(models())}")


_loaded = False


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from pipelines.catalog import content, melu, rankers, retrieval

        register(rankers.FAMILY)
        register(melu.FAMILY)
        register(content.FAMILY)
        register(retrieval.FAMILY)
