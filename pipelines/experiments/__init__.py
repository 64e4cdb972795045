"""Cold-start experiments: closed-loop runs of the platform's own policies, and their A/B readout.

Running one: ``closed_loop`` (pre-period, staging, the experiment period served by the platform, readout) and
``feed`` (the platform feed: the staged ranker and each arm's policies decide what the simulated users see).
Reading one out: ``config`` (``ReadoutConfig``), ``definitions`` (the metrics and their roles), ``metrics`` and
``aggregates`` (per-unit sums with DuckDB), ``stats`` (delta-method intervals, bootstrap check, SRM on assigned
units), ``correction`` (Holm / Benjamini-Hochberg over the metric family), ``cuped`` (pre-period covariates),
``survival`` (time to first exposure with never-exposed items censored), ``design`` (the four interference
questions per design), ``aa`` (A/A checks), ``readout``, ``report`` (JSON and an offline HTML page), ``api``
(read out, report and log to MLflow: the DAG's and CLI's entry point).
"""
