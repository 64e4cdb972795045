"""Merge the recall channels into one candidate list: per-channel quotas, de-duplication, already-seen filter.

Every channel (:mod:`~pipelines.retrieval.inverted`, :mod:`~pipelines.retrieval.clusters`,
:mod:`~pipelines.retrieval.lookalike`, the ANN pools) returns :class:`Candidates`: item ids in the channel's own
order of preference and a score per id. Scores are not comparable across channels (a publish-time rank, a
share of interests, an inner product), so the merge uses only each channel's order, never its scores.

Order [our choice, MODELS.md is silent]: channels are *interleaved*, one item per channel per round in the order
of ``quotas`` (its key order), each channel until its quota of distinct new items is used. Interleaving, rather
than channel A's whole quota then channel B's, keeps the list fair when the quotas add up to more than ``k``:
every channel still gets its first items in. A channel's item already taken by an earlier channel does not use up
the later channel's quota (a quota counts distinct items a channel contributes), but the item lists both channels.
When the quotas leave the list short of ``k`` (a channel found fewer items than its quota), leftovers of every
channel fill it, interleaved the same way. Seen items are dropped before anything counts.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Candidates(NamedTuple):
    """One channel's result: ``ids`` [n] int64 in the channel's order of preference, ``scores`` [n] float32."""

    ids: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> Candidates:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float32))


@dataclass(frozen=True)
class Merged:
    """The merged list: ``ids`` [<= k] int64 in serving order; ``channels[i]`` every channel that found ``ids[i]``
    (in channel order); ``taken_by[i]`` the channel whose quota or top-up put it in the list."""

    ids: np.ndarray
    channels: list[tuple[str, ...]]
    taken_by: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def _unseen(name: str, result: tuple[np.ndarray, np.ndarray], seen: set[int]) -> list[int]:
    """The channel's ids without seen items and without repeats, in the channel's order."""
    ids, scores = result
    if np.ndim(ids) != 1 or np.size(ids) != np.size(scores):
        raise ValueError(f"channel {name!r}: ids and scores must be 1-D and of equal length, got {np.shape(ids)} "
                         f"and {np.shape(scores)}")  # fmt: skip
    return list(dict.fromkeys(i for i in np.asarray(ids, np.int64).tolist() if i not in seen))


def _interleave(lists: list[list[int]], limits: list[int], room: int, taken: dict[int, str], names: list[str]):
    """Take up to ``limits[j]`` new ids from each list, one per list per round, until ``room`` ids are taken.

    Records each taken id in ``taken`` (id -> channel) and returns what each list has not yet consumed."""
    cursors, used = [0] * len(lists), [0] * len(lists)
    active = [j for j in range(len(lists)) if limits[j] > 0 and lists[j]]
    while active and room > 0:
        still = []
        for j in active:
            if room == 0:
                break
            ids, c = lists[j], cursors[j]
            while c < len(ids) and ids[c] in taken:
                c += 1
            cursors[j] = c + 1
            if c >= len(ids):
                continue
            taken[ids[c]] = names[j]
            used[j] += 1
            room -= 1
            if used[j] < limits[j]:
                still.append(j)
        active = still
    return [ids[c:] for ids, c in zip(lists, cursors, strict=True)]


def merge(
    channel_results: Mapping[str, tuple[np.ndarray, np.ndarray]],
    quotas: Mapping[str, int],
    seen: Collection[int] | np.ndarray,
    k: int,
) -> Merged:
    """Merge channel results into at most ``k`` distinct unseen ids (see the module docstring for the order).

    Args:
        channel_results: channel name -> (ids, scores), ids in the channel's order of preference.
        quotas: channel name -> how many distinct items the channel contributes before top-up; the key order is
            the channel order. A channel with no quota (absent, or 0) only tops up. A channel with a quota but no
            result (down, or empty for this user) contributes nothing.
        seen: the user's already-seen item ids (set, list or array).
        k: the most ids returned.

    Returns:
        :class:`Merged` (ids, the channels that found each, the channel that took each).

    Raises:
        ValueError: a negative ``k`` or quota, or a channel whose ids and scores do not line up.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if bad := {c: q for c, q in quotas.items() if q < 0}:
        raise ValueError(f"quotas must be >= 0, got {bad}")
    names = [c for c in quotas if c in channel_results] + [c for c in channel_results if c not in quotas]
    if isinstance(seen, np.ndarray):
        seen = set(seen.ravel().tolist())
    elif not isinstance(seen, set | frozenset):
        seen = {int(i) for i in seen}
    lists = [_unseen(c, channel_results[c], seen) for c in names]
    found: dict[int, list[str]] = {}
    for name, ids in zip(names, lists, strict=True):
        for i in ids:
            found.setdefault(i, []).append(name)
    taken: dict[int, str] = {}
    rest = _interleave(lists, [int(quotas.get(c, 0)) for c in names], k, taken, names)
    _interleave(rest, [k] * len(names), k - len(taken), taken, names)
    ids = np.fromiter(taken, np.int64, count=len(taken))
    return Merged(ids, [tuple(found[i]) for i in taken], list(taken.values()))
