import os
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


def test_process_knobs_are_typed_settings_with_todays_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    assert settings.bento_model is None and settings.torch_threads == 1 and settings.ranker_features == "feast"
    assert settings.ranker_policies == {} and settings.api_token.get_secret_value() == ""
    assert settings.feature_dataset == "sim" and settings.reports_dir == settings.home / "reports"
    monkeypatch.setenv("COLDSTART_RANKER_POLICIES", '{"boost_strength": 1.5}')
    monkeypatch.setenv("COLDSTART_API_TOKEN", "s3cret")
    monkeypatch.setenv("COLDSTART_TORCH_THREADS", "2")
    settings = get_settings()
    assert settings.ranker_policies == {"boost_strength": 1.5} and settings.torch_threads == 2
    assert settings.api_token.get_secret_value() == "s3cret" and "s3cret" not in repr(settings)
    monkeypatch.setenv("COLDSTART_RANKER_FEATURES", "redis")
    with pytest.raises(SettingsError, match="COLDSTART_RANKER_FEATURES"):
        get_settings()


def test_environ_hands_on_the_platform_settings_and_only_the_knobs_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLDSTART_RANKER_FEATURES", "none")  # a knob left in the shell
    settings = get_settings(retry_delay_s=2)
    env = settings.environ()
    assert env["COLDSTART_RETRY_DELAY_S"] == "2" and "COLDSTART_RANKER_FEATURES" not in env
    env = settings.environ(bento_model="coldstart_melu:3", ranker_policies={"boost_strength": 1.5}, api_token="t")
    assert env["COLDSTART_BENTO_MODEL"] == "coldstart_melu:3" and env["COLDSTART_API_TOKEN"] == "t"
    for key in list(os.environ):
        if key.startswith("COLDSTART_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    child = get_settings()
    assert child.ranker_policies == {"boost_strength": 1.5} and child.home == settings.home
    assert child.ranker_features == "feast"
    with pytest.raises(ValueError, match="not process knobs"):
        settings.environ(home="/elsewhere")
