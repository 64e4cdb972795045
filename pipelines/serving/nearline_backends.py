"""Storage of the near-line item state: SQLite (local profile) and Redis (prod), behind one small interface.

:class:`~pipelines.serving.nearline.NearlineState` holds the logic; a backend only stores one row of float
columns (:data:`COLUMNS`) per item id, a few named numbers (``meta``) and a log of engagements (item, user,
time; numbered in the order they were added, so each reader keeps its own cursor), with these guarantees:

* ``insert`` adds only ids it does not know (a known id keeps its state);
* ``add`` and ``update`` touch only known ids (an id forgotten meanwhile is not brought back half-filled);
* ``add`` is an atomic increment, so counts from concurrent writers are never lost;
* every call is one short transaction (SQLite) or one pipelined round trip (Redis).

SQLite runs in WAL mode: readers (the serving workers) never block the writer nor each other, and a writer
waits up to ``busy_timeout`` for another. Redis keeps each item in a hash and an index of ids by publish time in
a sorted set; the conditional writes are Lua scripts, and all keys of a dataset share one hash tag
(``{<dataset>}``) so those scripts stay inside one cluster slot.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

COLUMNS = ("author_id", "published", "exposures", "clicks", "quality", "author_score", "target", "log_gain",
           "error", "updated")  # fmt: skip
COUNTS = ("exposures", "clicks")


class Backend(Protocol):
    """What :class:`~pipelines.serving.nearline.NearlineState` needs of a store (ids are int64, values float)."""

    def insert(self, item_ids: np.ndarray, columns: dict[str, np.ndarray]) -> int: ...
    def add(self, item_ids: np.ndarray, exposures: np.ndarray, clicks: np.ndarray) -> None: ...
    def read(self, item_ids: np.ndarray | None) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...
    def update(self, item_ids: np.ndarray, columns: dict[str, np.ndarray]) -> None: ...
    def delete(self, item_ids: np.ndarray) -> None: ...
    def get_meta(self, key: str) -> float | None: ...
    def set_meta(self, key: str, value: float) -> None: ...
    def add_engagements(self, item_ids: np.ndarray, user_ids: np.ndarray, times: np.ndarray) -> None: ...
    def engagements(self, after: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...
    def trim_engagements(self, before: float) -> None: ...
    def close(self) -> None: ...


def _rows(item_ids: np.ndarray, columns: dict[str, np.ndarray], names: tuple[str, ...]) -> list[tuple]:
    """Parameter rows ``(*values, item_id)`` with NaN as NULL (sqlite3 wants Python scalars)."""
    values = [np.asarray(columns[n], float).tolist() for n in names]
    return [(*(None if v != v else v for v in row), int(i))
            for i, row in zip(np.asarray(item_ids).tolist(), zip(*values, strict=True), strict=True)]  # fmt: skip


class SqliteBackend:
    """One SQLite file (WAL) shared by every process on the machine; one connection per instance, behind a lock."""

    def __init__(self, path: Path | str, busy_timeout_s: float = 30.0) -> None:
        """Args: path: the database file (its folder is created), or ``":memory:"`` for a private store."""
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across a process crash
        columns = ", ".join(f"{c} REAL" for c in COLUMNS)
        with self._write() as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS items (item_id INTEGER PRIMARY KEY, {columns})")
            conn.execute("CREATE INDEX IF NOT EXISTS items_published ON items (published)")
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL)")
            conn.execute("CREATE TABLE IF NOT EXISTS engagements (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "item_id INTEGER, user_id INTEGER, t REAL)")  # fmt: skip
            conn.execute("CREATE INDEX IF NOT EXISTS engagements_t ON engagements (t)")

    def _write(self) -> _Transaction:
        return _Transaction(self._conn, self._lock)

    def insert(self, item_ids: np.ndarray, columns: dict[str, np.ndarray]) -> int:
        names = tuple(columns)
        sql = f"INSERT OR IGNORE INTO items ({', '.join(names)}, item_id) VALUES ({', '.join('?' * (len(names) + 1))})"
        with self._write() as conn:
            before = conn.total_changes
            conn.executemany(sql, _rows(item_ids, columns, names))
            return conn.total_changes - before

    def add(self, item_ids: np.ndarray, exposures: np.ndarray, clicks: np.ndarray) -> None:
        sql = "UPDATE items SET exposures = exposures + ?, clicks = clicks + ? WHERE item_id = ?"
        with self._write() as conn:
            conn.executemany(sql, _rows(item_ids, {"exposures": exposures, "clicks": clicks}, COUNTS))

    def read(self, item_ids: np.ndarray | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        sql = f"SELECT item_id, {', '.join(COLUMNS)} FROM items"
        with self._lock:
            if item_ids is None:
                rows = self._conn.execute(sql).fetchall()
            else:
                ids = json.dumps(np.asarray(item_ids, np.int64).tolist())
                rows = self._conn.execute(f"{sql} WHERE item_id IN (SELECT value FROM json_each(?))", (ids,)).fetchall()
        table = np.array(rows, dtype=float).reshape(len(rows), len(COLUMNS) + 1)  # NULL -> NaN
        found = np.array([r[0] for r in rows], dtype=np.int64)
        return found, {name: table[:, j + 1] for j, name in enumerate(COLUMNS)}

    def update(self, item_ids: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        names = tuple(columns)
        sql = f"UPDATE items SET {', '.join(f'{n} = ?' for n in names)} WHERE item_id = ?"
        with self._write() as conn:
            conn.executemany(sql, _rows(item_ids, columns, names))

    def delete(self, item_ids: np.ndarray) -> None:
        ids = json.dumps(np.asarray(item_ids, np.int64).tolist())
        with self._write() as conn:
            conn.execute("DELETE FROM items WHERE item_id IN (SELECT value FROM json_each(?))", (ids,))

    def get_meta(self, key: str) -> float | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: float) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, float(value)))

    def add_engagements(self, item_ids: np.ndarray, user_ids: np.ndarray, times: np.ndarray) -> None:
        rows = zip(np.asarray(item_ids, np.int64).tolist(), np.asarray(user_ids, np.int64).tolist(),
                   np.asarray(times, float).tolist(), strict=True)  # fmt: skip
        with self._write() as conn:
            conn.executemany("INSERT INTO engagements (item_id, user_id, t) VALUES (?, ?, ?)", rows)

    def engagements(self, after: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sequence numbers, items, users and times of the engagements added after sequence ``after``, in order."""
        with self._lock:
            rows = self._conn.execute("SELECT seq, item_id, user_id, t FROM engagements WHERE seq > ? ORDER BY seq",
                                      (int(after),)).fetchall()  # fmt: skip
        return _engagement_columns(rows)

    def trim_engagements(self, before: float) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM engagements WHERE t < ?", (float(before),))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _engagement_columns(rows: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(seq, item, user, time) rows as four arrays."""
    table = np.array(rows, dtype=float).reshape(len(rows), 4)
    return (table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 2].astype(np.int64), table[:, 3])


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) under the instance's lock: one short write."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self._conn, self._lock = conn, lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._conn

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._lock.release()


# Insert an item unless known: KEYS = item hash, index; ARGV = item id, published, then field/value pairs.
_INSERT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""
# Increment the counts of a known item: KEYS = item hash; ARGV = exposures, clicks.
_ADD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBYFLOAT', KEYS[1], 'exposures', ARGV[1])
redis.call('HINCRBYFLOAT', KEYS[1], 'clicks', ARGV[2])
return 1
"""
# Set fields of a known item: KEYS = item hash; ARGV = field/value pairs.
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSET', KEYS[1], unpack(ARGV))
"""


class RedisBackend:
    """Item hashes ``<prefix>:item:<id>``, the index ``<prefix>:index`` (id by publish time), ``<prefix>:meta``,
    and the engagement log ``<prefix>:eng``: a sorted set scored by sequence number (``INCRBY <prefix>:eng_seq``),
    members ``<seq>:<item>:<user>:<time>``."""

    def __init__(self, url: str, prefix: str) -> None:
        """Args: url: Redis URL; prefix: key prefix, e.g. ``coldstart:nearline:{sim}`` (see the module docstring)."""
        import redis

        self.prefix = prefix
        self._client = redis.Redis.from_url(url)
        self._insert = self._client.register_script(_INSERT)
        self._add = self._client.register_script(_ADD)
        self._update = self._client.register_script(_UPDATE)

    def _key(self, item_id: int) -> str:
        return f"{self.prefix}:item:{item_id}"

    def _each(self, script, item_ids: np.ndarray, args: list[list], extra_keys: tuple[str, ...] = ()) -> list:
        pipe = self._client.pipeline(transaction=False)
        for item_id, argv in zip(np.asarray(item_ids, np.int64).tolist(), args, strict=True):
            script(keys=[self._key(item_id), *extra_keys], args=argv, client=pipe)
        return pipe.execute()

    def insert(self, item_ids: np.ndarray, columns: dict[str, np.ndarray]) -> int:
        names = tuple(columns)
        args = [[item_id, row[names.index("published")], *_pairs(names, row)]
                for *row, item_id in _rows(item_ids, columns, names)]  # fmt: skip
        return int(sum(self._each(self._insert, item_ids, args, (f"{self.prefix}:index",))))

    def add(self, item_ids: np.ndarray, exposures: np.ndarray, clicks: np.ndarray) -> None:
        args = [[e, c] for e, c in zip(np.asarray(exposures, float).tolist(), np.asarray(clicks, float).tolist(),
                                       strict=True)]  # fmt: skip
        self._each(self._add, item_ids, args)

    def read(self, item_ids: np.ndarray | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if item_ids is None:
            item_ids = np.array([int(m) for m in self._client.zrange(f"{self.prefix}:index", 0, -1)], np.int64)
        ids = np.asarray(item_ids, np.int64).tolist()
        pipe = self._client.pipeline(transaction=False)
        for item_id in ids:
            pipe.hmget(self._key(item_id), COLUMNS)
        found, rows = [], []
        for item_id, values in zip(ids, pipe.execute(), strict=True):
            if values[1] is not None:  # every stored item has its publish time
                found.append(item_id)
                rows.append([np.nan if v is None or v == b"" else float(v) for v in values])
        table = np.array(rows, dtype=float).reshape(len(rows), len(COLUMNS))
        return np.array(found, np.int64), {name: table[:, j] for j, name in enumerate(COLUMNS)}

    def update(self, item_ids: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        names = tuple(columns)
        self._each(self._update, item_ids, [_pairs(names, row[:-1]) for row in _rows(item_ids, columns, names)])

    def delete(self, item_ids: np.ndarray) -> None:
        ids = np.asarray(item_ids, np.int64).tolist()
        if not ids:
            return
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(*(self._key(i) for i in ids))
        pipe.zrem(f"{self.prefix}:index", *ids)
        pipe.execute()

    def get_meta(self, key: str) -> float | None:
        value = self._client.hget(f"{self.prefix}:meta", key)
        return None if value is None else float(value)

    def set_meta(self, key: str, value: float) -> None:
        self._client.hset(f"{self.prefix}:meta", key, float(value))

    def add_engagements(self, item_ids: np.ndarray, user_ids: np.ndarray, times: np.ndarray) -> None:
        items = np.asarray(item_ids, np.int64).tolist()
        if not items:
            return
        last = int(self._client.incrby(f"{self.prefix}:eng_seq", len(items)))
        rows = zip(range(last - len(items) + 1, last + 1), items, np.asarray(user_ids, np.int64).tolist(),
                   np.asarray(times, float).tolist(), strict=True)  # fmt: skip
        self._client.zadd(f"{self.prefix}:eng", {f"{q}:{i}:{u}:{t!r}": q for q, i, u, t in rows})

    def engagements(self, after: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        members = self._client.zrangebyscore(f"{self.prefix}:eng", f"({int(after)}", "+inf")
        return _engagement_columns([[float(x) for x in m.decode().split(":")] for m in members])

    def trim_engagements(self, before: float) -> None:
        members = self._client.zrange(f"{self.prefix}:eng", 0, -1)
        old = [m for m in members if float(m.decode().rsplit(":", 1)[1]) < before]
        if old:
            self._client.zrem(f"{self.prefix}:eng", *old)

    def close(self) -> None:
        self._client.close()


def _pairs(names: tuple[str, ...], values: list) -> list:
    """Field/value pairs for HSET; NULL (NaN) is stored as an empty string, read back as NaN."""
    return [x for name, v in zip(names, values, strict=True) for x in (name, "" if v is None else v)]
