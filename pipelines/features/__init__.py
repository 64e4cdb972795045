"""Features: computed from the clean logs, declared in Feast, served online and joined point-in-time.

``compute`` (daily feature snapshots with DuckDB), ``store`` (the profile's Feast store: plan/apply,
materialization, online lookups), ``plan_apply`` (``feast plan`` then ``feast apply`` in one process),
``training_set`` (point-in-time training sets), ``api`` (the DAG's and CLI's entry points).
"""
