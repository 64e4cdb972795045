"""The ranker bento under a real ``bentoml serve`` with two API workers, paced from the shared near-line state.

A new item is published and its logged impressions ingested into the state by this test (the near-line writer);
every answer, whichever worker gives it, applies the boost that state implies; answering counts no exposure; the
state is still there after the service restarts, and a later tick reaches the restarted workers at once.
"""

from __future__ import annotations

import datetime as dt
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from pipelines.serving.bento import build, serve, stop
from pipelines.serving.nearline import NearlineState, SharedExposureController
from pipelines.serving.policies import PolicyConfig

NEW, OTHER = 10**9 + 1, 10**9 + 2  # unknown to the model and featureless: the same base score
PUBLISHED = dt.datetime(2026, 5, 1, 8, tzinfo=dt.UTC)
HOUR = 3600.0
# BentoML prefixes each worker's log lines with ``[entry_service:<name>:<worker>]``.
WORKER = re.compile(r"\[entry_service:coldstart_ranker:(\d+)\].*path=/rank")


@pytest.fixture(scope="module")
def ranker_bento(bento_settings, ranker_tag) -> str:
    return build(bento_settings, "ranker", ranker_tag)


def _boosts(url: str, now: dt.datetime, n: int) -> list[float]:
    """The NEW / OTHER score ratio of ``n`` answers, sent 8 at a time on fresh connections."""

    def ask(_: int) -> float:
        body = {"user_id": 5, "candidates": [NEW, OTHER], "now": now.isoformat()}
        response = httpx.post(f"{url}/rank", json=body, timeout=30)
        assert response.status_code == 200, response.text
        items = {i["item_id"]: i for i in response.json()["items"]}
        boost = items[NEW]["score"] / items[OTHER]["score"]
        paced = ["guaranteed_exposure"] if boost > 1 + 1e-9 else []
        assert items[NEW]["policies"] == ["default_item_embedding", *paced]
        assert items[OTHER]["policies"] == ["default_item_embedding"]
        return boost

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(ask, range(n)))


def _workers(log_path) -> set[str]:
    return set(WORKER.findall(log_path.read_text()))


def test_two_workers_share_the_nearline_state_and_it_survives_a_restart(
    ranker_bento, bento_settings, monkeypatch
) -> None:
    monkeypatch.setenv("COLDSTART_RANKER_FEATURES", "none")
    monkeypatch.setenv("COLDSTART_RANKER_NEARLINE", "true")
    # A BentoML >= 1.2 service takes its worker count from its config, not from `--api-workers`: `serve` sets
    # the config override (BENTOML_CONFIG_OPTIONS) that starts two workers.
    cfg = PolicyConfig().exposure
    state = NearlineState.open(bento_settings, "sim", cfg)
    start = PUBLISHED.timestamp()
    state.publish([NEW], [None], start)
    state.record_impressions([NEW] * 20, np.full(20, start + 0.5 * HOUR), np.zeros(20))
    state.tick(start + 2 * HOUR)
    now = PUBLISHED + dt.timedelta(hours=3)
    expected = SharedExposureController(state, cfg).boost([NEW], now)[0]
    before = state.snapshot([NEW])
    assert expected > 1.5

    process, url = serve(bento_settings, ranker_bento, workers=2)
    log = bento_settings.home / "logs" / f"bento-{ranker_bento.replace(':', '-')}-{url.rsplit(':', 1)[1]}.log"
    try:
        for _ in range(10):  # the kernel spreads connections unevenly: ask until both workers have answered
            np.testing.assert_allclose(_boosts(url, now, 24), expected, rtol=1e-6)
            if _workers(log) == {"1", "2"}:
                break
        assert _workers(log) == {"1", "2"}, log.read_text()[-3000:]  # both workers answered, alike
    finally:
        stop(process)
    after = state.snapshot([NEW])
    assert after["exposures"][0] == before["exposures"][0] == 20  # answering counted no exposure

    process, url = serve(bento_settings, ranker_bento, workers=2)
    try:
        np.testing.assert_allclose(_boosts(url, now, 20), expected, rtol=1e-6)  # the state outlived the service
        # The writer catches NEW up with its curve and ticks: the running workers see it at once.
        state.record_impressions([NEW] * 100, np.full(100, start + 2.5 * HOUR), np.zeros(100))
        state.tick(start + 3 * HOUR)
        later = PUBLISHED + dt.timedelta(hours=3, minutes=30)
        assert SharedExposureController(state, cfg).boost([NEW], later)[0] == 1.0  # ahead of its curve now
        np.testing.assert_allclose(_boosts(url, later, 20), 1.0, rtol=1e-6)
    finally:
        stop(process)
        state.close()
