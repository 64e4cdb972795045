"""Shared fixtures: every test runs against its own COLDSTART_HOME; expensive data is built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.data.contract import Store
from pipelines.data.simulator import Simulator, SimulatorConfig

# Small enough for CI, large enough for the statistical assertions on the cold-start phenomena.
SMALL_SIM = {"days": 10, "users": 12_000, "seed": 11}


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point COLDSTART_HOME at a fresh folder and clear other COLDSTART_ settings."""
    import os

    for key in list(os.environ):
        if key.startswith("COLDSTART_"):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("COLDSTART_HOME", str(home))
    return home


def run_sim(root: Path, **overrides) -> tuple[Store, SimulatorConfig, object]:
    cfg = SimulatorConfig(**{**SMALL_SIM, **overrides})
    store = Store(root, "sim")
    return store, cfg, Simulator(cfg, store).run()


@pytest.fixture(scope="session")
def user_split_sim(tmp_path_factory: pytest.TempPathFactory):
    """A user-split experiment: treatment users see the new-item boost."""
    return run_sim(tmp_path_factory.mktemp("sim_user_split"), design="user_split")


@pytest.fixture(scope="session")
def author_split_sim(tmp_path_factory: pytest.TempPathFactory):
    """An author-split experiment: treatment authors' new items get the boosted slots."""
    return run_sim(tmp_path_factory.mktemp("sim_author_split"), design="author_split", days=14)
