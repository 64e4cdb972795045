"""``feast plan``, then ``feast apply`` unless the plan deletes registered objects: one process, one Feast import.

Run by :func:`pipelines.features.store.plan_and_apply` as
``python -m pipelines.features.plan_apply [--allow-destructive] -c REPO -f STORE_YAML``. Both steps are Feast's own
CLI commands, invoked through its click group in this process: the same code and output as ``feast plan`` and
``feast apply`` run one after the other, with Feast (and typeguard's checks of the repository's definitions)
imported once instead of twice, about 10 s.

Exit status: 0 when applied; :data:`REFUSED` when the plan deletes objects and ``--allow-destructive`` was not
given (nothing applied); otherwise Feast's failure. The last line on stdout is the JSON of the planned changes.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys

REFUSED = 3
ALLOW = "--allow-destructive"


def planned_changes(plan: str) -> dict[str, list[str]]:
    """The changes ``feast plan`` printed, by kind: ``created``, ``updated``, ``deleted``."""
    changes: dict[str, list[str]] = {"created": [], "updated": [], "deleted": []}
    for line in plan.splitlines():
        match = re.match(r"^(Created|Updated|Deleted|Removed) (.+)$", line.strip())
        if match:
            kind = {"Removed": "deleted"}.get(match.group(1), match.group(1).lower())
            changes[kind].append(match.group(2))
    return changes


def main(argv: list[str]) -> int:
    from feast.cli.cli import cli

    allow = ALLOW in argv
    options = [a for a in argv if a != ALLOW]
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            status = cli.main([*options, "plan"], prog_name="feast", standalone_mode=False)
    finally:  # Feast prints why it failed, then exits: keep what it printed
        print(captured.getvalue(), end="")
    if status:  # click returns (not raises) the code of an Exit outside standalone mode
        return int(status)
    changes = planned_changes(captured.getvalue())
    if changes["deleted"] and not allow:
        print(json.dumps(changes))
        return REFUSED
    status = cli.main([*options, "apply"], prog_name="feast", standalone_mode=False)
    if status:
        return int(status)
    print(json.dumps(changes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
