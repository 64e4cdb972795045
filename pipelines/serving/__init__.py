"""Serving: the ranking core behind the BentoML services, its cold-start policies, and getting a model to staging.

``ranker`` (features → multi-task scores → policies), ``features`` (online features with an item cache),
``policies``, ``embeddings`` and ``exposure`` (boost, unseen-item embeddings, guaranteed exposure), ``nearline``,
``nearline_backends`` and ``nearline_ingest`` (the item state every worker shares, fed from logged impressions:
SQLite locally, Redis in prod), ``auth`` (the API token), ``bento`` (import, build, serve), ``ranker_bento`` /
``melu_bento`` (each family's side data and smoke requests), ``smoke`` (the served bento's smoke test),
``promote`` (promotion to staging and rollback).
"""
