"""Cold-start experiments: the A/B readout of author-, consumer- and content-side metrics.

``metrics`` (per-unit metric sums with DuckDB), ``stats`` (delta-method intervals, bootstrap check, SRM),
``readout`` (metrics per bucket and day with statistics), ``report`` (JSON and an offline HTML page),
``api`` (read out, report and log to MLflow: the DAG's and CLI's entry point).
"""
