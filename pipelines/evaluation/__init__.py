"""Evaluation: a ``candidate`` against the ``champion`` on held-out data, per cold-start slice, and the gate.

``rankers`` and ``melu`` (how each family is scored), ``slices`` (new/warm users and items, exposure buckets),
``metrics`` (offline metrics with bootstrap intervals), ``gate`` (the promotion rules), ``report`` (JSON and an
offline HTML report), ``config`` (slices, gate and run knobs), ``api`` (evaluate, report, gate).
"""
