"""The MLflow registry as the catalog's models live in it: a client on the profile's store, versions by alias."""

from __future__ import annotations

from typing import Any

from pipelines.settings import Settings


def registry_client(settings: Settings) -> Any:
    """An MLflow client on this profile's tracking and registry store."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return mlflow.MlflowClient()


def version_by_alias(client: Any, name: str, alias: str) -> Any | None:
    """The model version ``name@alias``, or None when the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
