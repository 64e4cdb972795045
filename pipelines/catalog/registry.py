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


def alias_uri(settings: Settings, model: str, alias: str = "champion") -> str | None:
    """``models:/coldstart_<model>/<version>`` of catalog model ``model``'s version at ``alias``, or None."""
    from pipelines.catalog import model as catalog_model

    name = catalog_model(model).registered_name
    version = version_by_alias(registry_client(settings), name, alias)
    return None if version is None else f"models:/{name}/{version.version}"


def load_by_alias(settings: Settings, model: str, alias: str = "champion") -> tuple[Any, str] | None:
    """The unwrapped pyfunc of ``model``'s version at ``alias`` and that version, or None when the alias is unset."""
    import mlflow

    uri = alias_uri(settings, model, alias)
    if uri is None:
        return None
    return mlflow.pyfunc.load_model(uri).unwrap_python_model(), uri.rsplit("/", 1)[-1]
