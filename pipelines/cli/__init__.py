"""``coldstart``: the command-line twin of every pipeline stage.

Each command is a thin wrapper around a function in ``pipelines``; expected failures (bad settings, a missing
partition, a schema violation, a missing dataset) end with a one-line message and exit code 2, not a traceback.

One module per stage defines its commands on the shared ``app`` (``_common``); importing the modules here registers
them, and ``coldstart --help`` lists the commands in this import order.
"""

# isort: off
from pipelines.cli import (  # noqa: F401
    data,
    validate,
    features,
    train,
    evaluate,
    serving,
    ab,
    experiment,
    feature_store,
    ops,
    platform,
    demo,
)

# isort: on
from pipelines.cli._common import app

__all__ = ["app"]
