"""Validation of the raw event logs: every row of a day ends in ``clean/`` or ``quarantine/``.

``quarantine_rules`` (the Great Expectations suites, one per table, each rule named), ``validate`` (a day's
partitions through the rules, clean and quarantine outputs, the JSON summary), ``docs`` (GX Data Docs that read
offline), ``corrupt`` (known defects injected at known rows, for tests), ``api`` (the DAG's and CLI's entry points).
"""
