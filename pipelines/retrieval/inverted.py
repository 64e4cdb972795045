"""Category and keyword recall: an inverted index from category and keyword to items, newest first.

Posting lists hold only items younger than ``max_age`` (these channels serve *new* items; older ones reach users
through the ANN pools and the ranker). A user's interests are the categories and keywords of the items they
engaged with, each engagement weighted by recency (a half-life: a click yesterday says more about today's feed
than a click a month ago, and a drifting user should not be served last month's topics for weeks), kept to the
top few and normalised to shares. Recall gives each interest a quota of ``k`` in proportion to its share (largest
remainder), takes each interest's newest items one interest per round (so a list cut short still covers the
user's main interests), and tops up from the interests with items left when one runs short.

:class:`Postings` (key -> item ids newest first, near-line inserts in publish order) is shared with
:mod:`~pipelines.retrieval.clusters`, and so are the time and atomic-save helpers below.
"""

from __future__ import annotations

import heapq
import json
from bisect import bisect_left, insort
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.retrieval._io import duration_ns, load_npz, save_npz_atomic, utc_ns, utc_ns1
from pipelines.retrieval.merge import Candidates

CATEGORY, KEYWORD = "category", "keyword"
_FILE = "inverted_index.npz"


class Postings:
    """key -> item ids newest first. Each list is ascending (publish_ns, item_id), so the newest is at the end:
    publishing in time order appends in O(1); a late item is inserted in place; expiry cuts the front."""

    def __init__(self) -> None:
        self.lists: dict[Hashable, list[tuple[int, int]]] = {}

    def add(self, key: Hashable, t: int, item: int) -> None:
        entries = self.lists.setdefault(key, [])
        if not entries or (t, item) > entries[-1]:
            entries.append((t, item))
        else:
            insort(entries, (t, item))

    def remove(self, key: Hashable, t: int, item: int) -> None:
        entries = self.lists.get(key, [])
        i = bisect_left(entries, (t, item))
        if i < len(entries) and entries[i] == (t, item):
            del entries[i]
            if not entries:
                del self.lists[key]

    def expire(self, cutoff_ns: int) -> None:
        """Drop items published before ``cutoff_ns``."""
        for key, entries in list(self.lists.items()):
            i = bisect_left(entries, (cutoff_ns, np.iinfo(np.int64).min))
            if i == len(entries):
                del self.lists[key]
            elif i:
                del entries[:i]

    def newest(self, key: Hashable, n: int) -> list[int]:
        return [item for _, item in reversed(self.lists.get(key, [])[-n:])] if n > 0 else []

    def take(
        self, keys: Sequence[Hashable], limits: Sequence[int], room: int, skip: Iterable[int] = (), top_up: bool = True
    ) -> tuple[list[int], list[int]]:
        """Up to ``room`` distinct ids, newest first per key: one per key per round until key j gave ``limits[j]``;
        then (``top_up``) one per key per round from what is left. Returns the ids and the index of the key that
        gave each. Ids in ``skip`` are passed over."""
        lists = [self.lists.get(key, []) for key in keys]
        cursors = [len(entries) - 1 for entries in lists]
        out: list[int] = []
        src: list[int] = []
        passed = set(skip)
        for phase in (limits, [room] * len(lists)) if top_up else (limits,):
            used = [0] * len(lists)
            active = [j for j in range(len(lists)) if phase[j] > 0 and cursors[j] >= 0]
            while active and len(out) < room:
                still = []
                for j in active:
                    entries, c = lists[j], cursors[j]
                    while c >= 0 and entries[c][1] in passed:
                        c -= 1
                    cursors[j] = c - 1
                    if c < 0 or len(out) >= room:
                        continue
                    out.append(entries[c][1])
                    src.append(j)
                    passed.add(entries[c][1])
                    used[j] += 1
                    if used[j] < phase[j] and cursors[j] >= 0:
                        still.append(j)
                active = still
        return out, src


def largest_remainder(weights: Sequence[float], k: int) -> list[int]:
    """Integer quotas summing to ``k`` in proportion to ``weights`` (largest remainder; ties to the earlier)."""
    w = np.asarray(weights, np.float64)
    if not len(w) or w.sum() <= 0:
        return [0] * len(w)
    exact = w / w.sum() * k
    quotas = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[: k - int(quotas.sum())]] += 1
    return quotas.tolist()


class InvertedIndexConfig(BaseModel):
    """Ages and interest sizes of the category/keyword index. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_age: timedelta = Field(
        timedelta(days=3), gt=timedelta(0), description="Items older than this leave the posting lists: the "
        "channels serve new items (the ANN pools run to 30 days), and a short list keeps a request cheap.",
    )  # fmt: skip
    content_max_age: timedelta = Field(
        timedelta(days=60), gt=timedelta(0), description="How long an item's category and keywords are kept to "
        "read interests from users' histories, which reach further back than the new items served.",
    )  # fmt: skip
    top_categories: int = Field(3, ge=1, description="Interest categories per user: a few, so each gets a quota.")
    top_keywords: int = Field(5, ge=1, description="Interest keywords per user (keywords are finer than categories).")
    recency_half_life: timedelta | None = Field(
        timedelta(days=7), gt=timedelta(0), description="An engagement's weight halves every half-life before the "
        "newest one (interests drift); None counts every engagement the same.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _content_outlives_postings(self) -> InvertedIndexConfig:
        if self.content_max_age < self.max_age:
            raise ValueError("content_max_age must be >= max_age (an item in a posting list needs its content)")
        return self


@dataclass(frozen=True)
class Interests:
    """A user's interests: name -> share of their (recency-weighted) engagements, largest first."""

    categories: dict[str, float]
    keywords: dict[str, float]


def _top(weights: dict[str, float], n: int) -> dict[str, float]:
    total = sum(weights.values())
    ranked = heapq.nsmallest(n, weights.items(), key=lambda kv: (-kv[1], kv[0]))
    return {key: w / total for key, w in ranked} if total > 0 else {}


def interests_from_content(
    categories: Sequence[str | None],
    keywords: Sequence[Sequence[str]],
    weights: Sequence[float] | None = None,
    top_categories: int = 3,
    top_keywords: int = 5,
) -> Interests:
    """Interests from the content of a user's engaged items (one entry per engagement; ``weights`` default 1).

    Each engagement adds its weight to its item's category and to each of its keywords; the top ones are kept
    and normalised to shares of the total weight (so a share says how much of the history the interest covers).
    """
    weights = [1.0] * len(categories) if weights is None else list(weights)
    if not len(categories) == len(keywords) == len(weights):
        raise ValueError(f"got {len(categories)} categories, {len(keywords)} keyword lists, {len(weights)} weights")
    cats: dict[str, float] = {}
    kws: dict[str, float] = {}
    for cat, words, w in zip(categories, keywords, weights, strict=True):
        if cat:
            cats[cat] = cats.get(cat, 0.0) + w
        for word in dict.fromkeys(words or ()):
            kws[word] = kws.get(word, 0.0) + w
    return Interests(_top(cats, top_categories), _top(kws, top_keywords))


def _content(item: int, cat: Any, words: Any) -> tuple[str, tuple[str, ...]]:
    """An item's category ("" for none) and distinct keywords, checked."""
    if cat is None or cat is pd.NA or (isinstance(cat, float) and np.isnan(cat)):
        cat = ""
    if not isinstance(cat, str):
        raise ValueError(f"item {item}: category must be a string or None, got {cat!r}")
    words = [] if words is None else words
    if isinstance(words, str) or not all(isinstance(w, str) for w in words):
        raise ValueError(f"item {item}: keywords must be a list of strings, got {words!r}")
    return cat, tuple(dict.fromkeys(words))


class InvertedIndex:
    """Category -> items and keyword -> items, newest first, over items published in the last ``max_age``."""

    def __init__(self, config: InvertedIndexConfig | None = None) -> None:
        self.config = config or InvertedIndexConfig()
        self._items: dict[int, tuple[int, str, tuple[str, ...]]] = {}  # id -> (publish_ns, category, keywords)
        self._postings = {CATEGORY: Postings(), KEYWORD: Postings()}
        self._cutoff_ns = np.iinfo(np.int64).min  # posting lists hold items published at or after this

    def __len__(self) -> int:
        return len(self._items)

    def publish(
        self,
        item_ids: Sequence[int],
        publish_times: Any,
        categories: Sequence[str | None],
        keywords: Sequence[Sequence[str] | None],
    ) -> None:
        """Add items (near-line, at publish time). Re-publishing an id replaces it, so a replay is harmless.

        ``categories`` may hold None (or NaN, from a frame) for none; ``keywords`` lists (or arrays) of strings.
        A bad row is a ValueError and then nothing is added."""
        ids = np.asarray(item_ids, np.int64).ravel()
        times = utc_ns(publish_times) if len(ids) else np.zeros(0, np.int64)
        categories, keywords = list(categories), list(keywords)
        if not len(ids) == len(times) == len(categories) == len(keywords):
            raise ValueError(f"got {len(ids)} ids, {len(times)} times, {len(categories)} categories and "
                             f"{len(keywords)} keyword lists")  # fmt: skip
        rows = [(int(ids[i]), int(times[i]), *_content(ids[i], categories[i], keywords[i])) for i in range(len(ids))]
        for i in np.lexsort((ids, times)).tolist():
            self._add(*rows[i])

    def _add(self, item: int, t: int, cat: str, words: tuple[str, ...]) -> None:
        if item in self._items:
            old_t, old_cat, old_words = self._items[item]
            self._postings[CATEGORY].remove(old_cat, old_t, item)
            for word in old_words:
                self._postings[KEYWORD].remove(word, old_t, item)
        self._items[item] = (t, cat, words)
        if t < self._cutoff_ns:
            return
        if cat:
            self._postings[CATEGORY].add(cat, t, item)
        for word in words:
            self._postings[KEYWORD].add(word, t, item)

    def expire(self, now: Any) -> None:
        """Drop items older than ``max_age`` from the posting lists and older than ``content_max_age`` entirely."""
        now_ns = utc_ns1(now)
        self._cutoff_ns = max(self._cutoff_ns, now_ns - duration_ns(self.config.max_age))
        for postings in self._postings.values():
            postings.expire(self._cutoff_ns)
        forget = now_ns - duration_ns(self.config.content_max_age)
        self._items = {item: v for item, v in self._items.items() if v[0] >= forget}

    def newest(self, field: str, key: str, n: int) -> list[int]:
        """The ``n`` newest item ids of one category (``field="category"``) or keyword (``"keyword"``)."""
        return self._postings[field].newest(key, n)

    def user_interests(
        self,
        history_items: Sequence[int],
        times: Any = None,
        now: Any = None,
        top_categories: int | None = None,
        top_keywords: int | None = None,
    ) -> Interests:
        """A user's interests from the items they engaged with (``times``: when; ``now``: default the newest).

        Items the index no longer knows (older than ``content_max_age``) are left out. Weights decay from ``now``
        with ``recency_half_life``, which the caller passes from the request, never the clock, so a replay
        gives the same interests."""
        ids = np.asarray(history_items, np.int64).ravel()
        weights = np.ones(len(ids))
        half_life = self.config.recency_half_life
        if times is not None and half_life is not None and len(ids):
            t = utc_ns(times)
            if len(t) != len(ids):
                raise ValueError(f"got {len(ids)} history items but {len(t)} times")
            ref = t.max() if now is None else utc_ns1(now)
            weights = np.exp2(-np.maximum(ref - t, 0) / duration_ns(half_life))
        known = [(self._items[i], w) for i, w in zip(ids.tolist(), weights.tolist(), strict=True) if i in self._items]
        return interests_from_content(
            [v[1] for v, _ in known],
            [v[2] for v, _ in known],
            [w for _, w in known],
            top_categories or self.config.top_categories,
            top_keywords or self.config.top_keywords,
        )

    def recall(self, interests: Interests, k: int, exclude: Iterable[int] = ()) -> dict[str, Candidates]:
        """Up to ``k`` items per channel (``"category"``, ``"keyword"``), each interest's newest first, quotas in
        proportion to its share. A score is the share of the interest that found the item. ``exclude`` (the
        user's seen items) is passed over here so that it does not use up a quota."""
        skip = exclude if isinstance(exclude, set | frozenset) else set(np.asarray(list(exclude), np.int64).tolist())
        out = {}
        for field, weights in ((CATEGORY, interests.categories), (KEYWORD, interests.keywords)):
            keys, shares = list(weights), list(weights.values())
            ids, src = self._postings[field].take(keys, largest_remainder(shares, k), k, skip)
            out[field] = Candidates(np.asarray(ids, np.int64), np.asarray([shares[j] for j in src], np.float32))
        return out

    def save(self, folder: str | Path) -> Path:
        """Write the index to ``folder/inverted_index.npz`` (atomically)."""
        ids = np.fromiter(self._items, np.int64, count=len(self._items))
        values = list(self._items.values())
        words = [w for v in values for w in v[2]]
        return save_npz_atomic(
            folder,
            _FILE,
            item_id=ids,
            publish_ns=np.asarray([v[0] for v in values], np.int64),
            category=np.asarray([v[1] for v in values], dtype=str),
            n_keywords=np.asarray([len(v[2]) for v in values], np.int64),
            keywords=np.asarray(words, dtype=str),
            cutoff_ns=np.asarray(self._cutoff_ns, np.int64),
            config=np.asarray(self.config.model_dump_json()),
        )

    @classmethod
    def load(cls, folder: str | Path) -> InvertedIndex:
        """The index :meth:`save` wrote to ``folder``."""
        data = load_npz(folder, _FILE)
        index = cls(InvertedIndexConfig(**json.loads(str(data["config"]))))
        index._cutoff_ns = int(data["cutoff_ns"])
        bounds = np.concatenate([[0], np.cumsum(data["n_keywords"])]).tolist()
        words = data["keywords"].tolist()
        for j in np.lexsort((data["item_id"], data["publish_ns"])).tolist():
            item, t = int(data["item_id"][j]), int(data["publish_ns"][j])
            index._add(item, t, str(data["category"][j]), tuple(words[bounds[j] : bounds[j + 1]]))
        return index
