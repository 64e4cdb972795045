"""Typed platform settings: one env prefix (``COLDSTART_``), two profiles, all state under ``COLDSTART_HOME``.

Nothing here touches the filesystem or a network at import. ``get_settings()`` reads the environment each
time it is called; ``Settings.ensure_home()`` is the one place that creates the state folder, and it fails
with a clear message when the folder cannot be written.

Profiles:
    local: Airflow metadata on SQLite, MLflow on SQLite with local artifacts, Feast with a file offline
        store, SQLite online store and file registry. No server needed.
    prod: Airflow and MLflow on PostgreSQL, Feast online store on Redis and SQL registry on PostgreSQL;
        addresses come from ``COLDSTART_POSTGRES_URL`` and ``COLDSTART_REDIS_URL``.

Besides the platform's settings, a few process knobs (:data:`PROCESS_KNOBS`: the model a BentoML service loads,
its token, the dataset a ``feast apply`` declares, ...) are read the same way by the one process they configure.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "COLDSTART_"

Profile = Literal["local", "prod"]

# Settings of one process rather than of the platform: which model a service loads, its token, which dataset a
# `feast apply` declares. Whoever starts that process sets them (``Settings.environ(**knobs)``); they are not handed
# to every platform process, so a knob left in a shell or a test session cannot change what the platform's tasks do.
PROCESS_KNOBS = frozenset(
    {"bento_model", "torch_threads", "ranker_features", "ranker_policies", "api_token", "feature_dataset"}
)


class SettingsError(RuntimeError):
    """Raised when the settings are invalid or the state folder cannot be used."""


class Settings(BaseSettings):
    """Platform settings, read from ``COLDSTART_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    profile: Profile = Field("local", description="Deployment profile: 'local' (embedded) or 'prod'.")
    home: Path = Field(Path(".coldstart"), description="Folder holding all platform state.")
    # Clearly-marked local-development defaults: the test machines run these services on 127.0.0.1.
    postgres_url: str = Field(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/coldstart",
        description="SQLAlchemy URL of the PostgreSQL database used by the prod profile.",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL of the prod online store.")
    feast_project: str = Field("coldstart", description="Feast project name (also the Redis key prefix).")
    airflow_port: int = Field(8080, ge=1, le=65535, description="Port of the Airflow api-server (UI and REST API).")
    mlflow_port: int = Field(5000, ge=1, le=65535, description="Port of the MLflow server (UI and tracking API).")
    retry_delay_s: int = Field(
        30, ge=0, description="Seconds before a failed platform task is retried (each task has two retries)."
    )
    dags_folder: Path = Field(
        Path(__file__).resolve().parents[1] / "dags", description="Folder of the platform's Airflow DAG files."
    )
    # A platform setting, not a process knob: the near-line writer and every ranker process must agree on it.
    ranker_nearline: bool = Field(
        True,
        description="The ranker service paces new items (guaranteed exposure) from the near-line state every worker "
        "shares and that survives restarts (SQLite ``<home>/nearline/<dataset>.db`` locally, Redis on prod), fed "
        "from logged impressions by the near-line writer; its own answers are not counted. False: an in-process "
        "controller per worker that registers items from requests and counts its own answers as exposures.",
    )
    # ---- process knobs (PROCESS_KNOBS) -------------------------------------------------------------------
    bento_model: str | None = Field(
        None,
        description="BentoML model tag a service loads (read when its module is imported, at build and serve "
        "time); unset: the service's own model at ``latest`` (``coldstart_esmm:latest``, ``coldstart_melu:latest``).",
    )
    torch_threads: int = Field(1, ge=1, description="Torch intra-op threads of the ranker service.")
    ranker_features: Literal["feast", "none"] = Field(
        "feast",
        description="Where the ranker service looks features up: 'feast' (the profile's online store) or 'none' "
        "(only the features given in the request).",
    )
    ranker_policies: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the ranker service's cold-start policies (PolicyConfig fields), as a JSON object.",
    )
    api_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token the staging services require of every API call; empty: no check (local dev).",
    )
    feature_dataset: str = Field(
        "sim", description="Dataset whose feature tables the Feast repo's data sources point at (``feast apply``)."
    )

    @field_validator("profile", mode="before")
    @classmethod
    def _normalise_profile(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    # ---- derived locations -------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        """Root of the partitioned event logs (``<home>/data``)."""
        return self.home / "data"

    @property
    def reports_dir(self) -> Path:
        """Root of the validation, evaluation and A/B reports (``<home>/reports``)."""
        return self.home / "reports"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def airflow_db_url(self) -> str:
        """SQLAlchemy URL of Airflow's metadata database.

        In prod: the database ``<name>_airflow`` on the platform's server, not the platform's own database: MLflow's
        tables live there, and Airflow's and MLflow's migrations both record their revision in ``alembic_version``.
        """
        if self.profile == "prod":
            from sqlalchemy.engine import make_url

            url = make_url(self.postgres_url)
            return url.set(database=f"{url.database}_airflow").render_as_string(hide_password=False)
        return f"sqlite:///{self.airflow_home / 'airflow.db'}"

    def environ(self, **knobs: Any) -> dict[str, str]:
        """These settings as ``COLDSTART_*`` variables: a child process given them reads the same settings.

        Process knobs (:data:`PROCESS_KNOBS`) are left out, but those named in ``knobs`` are put in, e.g.
        ``settings.environ(bento_model=tag)`` for the one service that loads ``tag``.

        Raises:
            ValueError: a name in ``knobs`` is not a process knob.
        """
        if unknown := sorted(set(knobs) - PROCESS_KNOBS):
            raise ValueError(f"not process knobs: {unknown} (known: {sorted(PROCESS_KNOBS)})")
        names = [name for name in type(self).model_fields if name not in PROCESS_KNOBS]
        values = {name: getattr(self, name) for name in names} | knobs
        return {f"{ENV_PREFIX}{name.upper()}": _env_value(value) for name, value in values.items() if value is not None}

    def airflow_environ(self) -> dict[str, str]:
        """Environment variables that point an Airflow process at this profile (merge into ``os.environ``)."""
        return {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.airflow_db_url,
            f"{ENV_PREFIX}PROFILE": self.profile,
            f"{ENV_PREFIX}HOME": str(self.home),
        }

    @property
    def mlflow_tracking_uri(self) -> str:
        """MLflow tracking and registry store."""
        if self.profile == "prod":
            return self.postgres_url
        return f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.home / "mlflow" / "artifacts"

    @property
    def feast_repo_dir(self) -> Path:
        return self.home / "feast"

    def feast_store_config(self) -> dict[str, Any]:
        """The ``feature_store.yaml`` content for this profile, as a dict."""
        offline = {"type": "file"}
        if self.profile == "prod":
            online: dict[str, Any] = {
                "type": "redis",
                "connection_string": _redis_connection_string(self.redis_url),
            }
            registry: dict[str, Any] = {
                "registry_type": "sql",
                "path": self.postgres_url,
                "cache_ttl_seconds": 60,
            }
        else:
            online = {"type": "sqlite", "path": str(self.feast_repo_dir / "online_store.db")}
            registry = {"registry_type": "file", "path": str(self.feast_repo_dir / "registry.db")}
        return {
            "project": self.feast_project,
            "provider": "local",
            "registry": registry,
            "online_store": online,
            "offline_store": offline,
            "entity_key_serialization_version": 3,
        }

    def ensure_home(self) -> Path:
        """Create ``home`` if needed and check that it is writable.

        Returns:
            The absolute state folder.

        Raises:
            SettingsError: when the folder cannot be created or written.
        """
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.home, prefix=".write-check-"):
                pass
        except OSError as exc:
            raise SettingsError(
                f"COLDSTART_HOME={self.home} is not writable ({exc.strerror or exc}). "
                f"Point {ENV_PREFIX}HOME at a folder you can write to."
            ) from exc
        return self.home


def _env_value(value: Any) -> str:
    """A setting as the environment variable pydantic-settings reads back (JSON for dicts, the secret itself)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _redis_connection_string(url: str) -> str:
    """Feast's Redis store wants ``host:port[,db=N]`` rather than a URL."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    conn = f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}"
    db = (parsed.path or "/0").lstrip("/") or "0"
    extra = f",db={db}"
    if parsed.password:
        extra += f",password={parsed.password}"
    return conn + extra


def get_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment (and explicit overrides).

    Raises:
        SettingsError: with the offending variable named, e.g. for an unknown profile.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        )
        raise SettingsError(f"Invalid settings: {problems}") from None


def use_mlflow_experiment(settings: Settings, name: str) -> None:
    """Point MLflow at this profile's tracking store and make ``name`` the active experiment (created with the
    profile's artifact root the first time)."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    if mlflow.get_experiment_by_name(name) is None:
        settings.mlflow_artifact_root.mkdir(parents=True, exist_ok=True)
        mlflow.create_experiment(name, artifact_location=settings.mlflow_artifact_root.as_uri())
    mlflow.set_experiment(name)
