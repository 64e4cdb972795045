"""What the platform has when an item is published: a category, keywords and a pretrained-style content embedding.

A real platform never sees an item's topic or quality; it sees what the author filed and what an off-the-shelf
encoder makes of the upload. So nothing here is hidden truth handed out directly:

* **category**: the author files the item under its topic's category with probability ``category_topic_share``;
  otherwise under the author's usual category (their home topic's) when that differs, else a random other one;
* **keywords**: ``keywords_per_item`` draws, each a topic word (share ``keyword_topic_share``), one of the
  author's habitual tags (share ``keyword_author_share``) or a generic word. Each topic shares half its words with
  each of its two neighbours on a ring and every word is an opaque token, so no single word names a topic;
* **content vector**: a fixed random encoder of a latent that mixes the topic, a weak quality signal, the author's
  style, the item's format and per-item nuisance::

      z = w_t T[topic] + w_q quality u + w_a A[author] + w_f F[format] + w_n eps    (all N(0, I) in R^L)
      x = normalise(W2 tanh(W1 z / s + b1)),   s = sqrt(w_t^2 + w_q^2 + w_a^2 + w_f^2 + w_n^2)

  so the vector predicts the topic only partly, the quality weakly, and groups items of one author or one format
  together as much as items of one topic, as a real image or text encoder does.

The model draws from its own generator (seeded from the run's seed), so content knobs change the ``items`` table's
content columns and nothing the world does: the same traffic, the same bytes of every other table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.data.sim_config import SimulatorConfig

TOPIC_WORDS = 12  # words in one topic's vocabulary
TOPIC_SHARED_WORDS = 6  # of which the next topic also uses: every topic word belongs to two topics
GENERIC_WORDS = 40  # words any item may carry ("new", "today", ...)
HABIT_WORDS = 300  # the pool authors draw their habitual tags from
HABITS_PER_AUTHOR = 3
_STREAM = 0xC0  # the content generator's key beside the run's seed


def _zipf(k: int) -> np.ndarray:
    """Cumulative probabilities of a Zipf(1) law over ``k`` ranks: a few words are used far more than the rest."""
    p = 1.0 / np.arange(1, k + 1)
    return np.cumsum(p / p.sum())


def _draw(rng: np.random.Generator, cdf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.searchsorted(cdf, rng.random(shape), side="right").clip(0, len(cdf) - 1)


@dataclass(frozen=True)
class PublishedContent:
    """What the platform reads about a batch of items when they are published (one row per item)."""

    category: np.ndarray  # int64 index into CATEGORIES
    keywords: list[list[str]]
    vectors: np.ndarray  # float32 [n, content_dim], unit L2 norm


class ContentModel:
    """Turns items' hidden topic and quality (and their author) into the content a platform has at publish time."""

    def __init__(self, cfg: SimulatorConfig) -> None:
        self.cfg = cfg
        rng = self.rng = np.random.default_rng([cfg.seed, _STREAM])
        latent, hidden = cfg.content_latent_dim, cfg.content_hidden_dim
        self.topic_latent = rng.normal(size=(cfg.n_topics, latent))
        self.quality_axis = rng.normal(size=latent)
        self.format_latent = rng.normal(size=(cfg.content_formats, latent))
        weights = (cfg.content_topic_weight, cfg.content_quality_weight, cfg.content_author_weight,
                   cfg.content_format_weight, cfg.content_noise)  # fmt: skip
        scale = max(float(np.sqrt(np.sum(np.square(weights)))), 1e-9)  # keeps tanh off saturation for any weights
        self.w1 = rng.normal(0.0, 1.0 / np.sqrt(latent), (latent, hidden)) / scale
        self.b1 = rng.normal(0.0, 0.5, hidden)
        self.w2 = rng.normal(0.0, 1.0 / np.sqrt(hidden), (hidden, cfg.content_dim))
        # Topic k uses words [step*k, step*k + TOPIC_WORDS) of a ring, sharing TOPIC_SHARED_WORDS with topic k+1.
        step = TOPIC_WORDS - TOPIC_SHARED_WORDS
        n_topic_words = step * cfg.n_topics
        self.topic_words = (step * np.arange(cfg.n_topics)[:, None] + np.arange(TOPIC_WORDS)) % n_topic_words
        self.generic_offset = n_topic_words
        self.habit_offset = n_topic_words + GENERIC_WORDS
        n_words = self.habit_offset + HABIT_WORDS
        self.words = np.array([f"kw{j:04d}" for j in rng.permutation(n_words)], dtype=object)
        self.a_style = np.zeros((0, latent))
        self.a_habits = np.zeros((0, HABITS_PER_AUTHOR), dtype=np.int64)

    def describe(
        self, topic: np.ndarray, quality: np.ndarray, author: np.ndarray, author_topic: np.ndarray
    ) -> PublishedContent:
        """Category, keywords and content vector of each item.

        Args:
            topic: [n] hidden topic of each item.
            quality: [n] hidden click quality of each item.
            author: [n] author index of each item.
            author_topic: [n_authors] every author's home topic (their usual category); its length is the number
                of authors so far, whose style and habits are drawn on first sight.
        """
        self._grow_authors(len(author_topic))
        category = self._categories(topic, author_topic[author])
        keywords = self._keywords(topic, author)
        vectors = self._vectors(topic, quality, author)
        return PublishedContent(category=category, keywords=keywords, vectors=vectors)

    def _grow_authors(self, n_authors: int) -> None:
        """Draw the style and habitual tags of authors not seen before (authors only ever get appended)."""
        new = n_authors - len(self.a_style)
        if new <= 0:
            return
        style = self.rng.normal(size=(new, self.cfg.content_latent_dim))
        habits = self.rng.integers(0, HABIT_WORDS, (new, HABITS_PER_AUTHOR))
        self.a_style = np.vstack([self.a_style, style])
        self.a_habits = np.vstack([self.a_habits, habits])

    def _categories(self, topic: np.ndarray, home: np.ndarray) -> np.ndarray:
        """The category each author files an item under: its topic's for a ``category_topic_share`` of items."""
        n, n_topics = len(topic), self.cfg.n_topics
        right = self.rng.random(n) < self.cfg.category_topic_share
        other = (topic + self.rng.integers(1, n_topics, n)) % n_topics
        # A mis-filed item goes where the author usually posts; a home-topic item can only go somewhere random.
        wrong = np.where(home != topic, home, other)
        return np.where(right, topic, wrong).astype(np.int64)

    def _keywords(self, topic: np.ndarray, author: np.ndarray) -> list[list[str]]:
        """A bag of topic words, the author's habitual tags and generic words per item (duplicates dropped)."""
        cfg, rng = self.cfg, self.rng
        shape = (len(topic), cfg.keywords_per_item)
        kind = rng.random(shape)
        topical = self.topic_words[topic[:, None], _draw(rng, _zipf(TOPIC_WORDS), shape)]
        habit = self.habit_offset + self.a_habits[author[:, None], rng.integers(0, HABITS_PER_AUTHOR, shape)]
        generic = self.generic_offset + _draw(rng, _zipf(GENERIC_WORDS), shape)
        cut = cfg.keyword_topic_share + cfg.keyword_author_share
        index = np.where(kind < cfg.keyword_topic_share, topical, np.where(kind < cut, habit, generic))
        return [sorted(set(row)) for row in self.words[index].tolist()]

    def _vectors(self, topic: np.ndarray, quality: np.ndarray, author: np.ndarray) -> np.ndarray:
        """The encoder's unit-norm output for each item's latent (see the module docstring)."""
        cfg, rng, n = self.cfg, self.rng, len(topic)
        fmt = rng.integers(0, cfg.content_formats, n)
        nuisance = rng.normal(size=(n, cfg.content_latent_dim))
        z = (
            cfg.content_topic_weight * self.topic_latent[topic]
            + cfg.content_quality_weight * quality[:, None] * self.quality_axis
            + cfg.content_author_weight * self.a_style[author]
            + cfg.content_format_weight * self.format_latent[fmt]
            + cfg.content_noise * nuisance
        )  # [n, latent]
        x = np.tanh(z @ self.w1 + self.b1) @ self.w2  # [n, content_dim]
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return (x / np.maximum(norm, 1e-12)).astype(np.float32)
