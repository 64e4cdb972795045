import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.settings import SettingsError, get_settings


def test_local_profile_is_the_embedded_default(_isolated_home: Path) -> None:
    settings = get_settings()
    assert settings.profile == "local"
    assert settings.home == _isolated_home.resolve()
    assert settings.airflow_db_url == f"sqlite:///{_isolated_home / 'airflow' / 'airflow.db'}"
    assert settings.mlflow_tracking_uri.startswith("sqlite:///")
    feast = settings.feast_store_config()
    assert feast["online_store"]["type"] == "sqlite"
    assert feast["offline_store"]["type"] == "file"
    assert feast["registry"]["registry_type"] == "file"


def test_prod_profile_reads_addresses_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLDSTART_PROFILE", "PROD")
    monkeypatch.setenv("COLDSTART_POSTGRES_URL", "postgresql+psycopg2://me@db.internal:5433/cs")
    monkeypatch.setenv("COLDSTART_REDIS_URL", "redis://cache.internal:6380/2")
    settings = get_settings()
    assert settings.profile == "prod"
    assert settings.airflow_db_url == "postgresql+psycopg2://me@db.internal:5433/cs_airflow"
    assert settings.mlflow_tracking_uri == settings.postgres_url
    feast = settings.feast_store_config()
    assert feast["online_store"] == {"type": "redis", "connection_string": "cache.internal:6380,db=2"}
    assert feast["registry"]["registry_type"] == "sql"


def test_unknown_profile_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLDSTART_PROFILE", "staging")
    with pytest.raises(SettingsError, match=r"COLDSTART_PROFILE.*'local' or 'prod'.*'staging'"):
        get_settings()


def test_unwritable_home_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("COLDSTART_HOME", str(blocker / "home"))
    with pytest.raises(SettingsError, match="is not writable"):
        get_settings().ensure_home()
    assert blocker.read_text() == "not a folder"


def test_importing_the_package_has_no_side_effects(tmp_path: Path) -> None:
    home = tmp_path / "never_created"
    code = "import pipelines.cli, pipelines.settings, pipelines.data.contract, pipelines.data.simulator"
    subprocess.run([sys.executable, "-c", code], check=True, env={"COLDSTART_HOME": str(home), "PATH": ""})
    assert not home.exists()


def test_checked_in_feature_store_yaml_matches_the_local_profile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import os

    import yaml

    monkeypatch.setenv("COLDSTART_HOME", str(tmp_path))
    checked_in = Path(__file__).resolve().parents[2] / "feature_repo" / "feature_store.yaml"
    expanded = yaml.safe_load(os.path.expandvars(checked_in.read_text()))
    assert expanded == get_settings().feast_store_config()
