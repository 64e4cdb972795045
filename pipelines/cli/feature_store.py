"""``coldstart lookup`` and ``coldstart feast``: the feature store as other teams reach it."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pipelines.cli._common import _clear_errors, _settings, app, console


@app.command()
@_clear_errors
def lookup(
    user: Annotated[int | None, typer.Option(help="User id.")] = None,
    item: Annotated[list[int] | None, typer.Option(help="Item id (repeat for several).")] = None,
    service: Annotated[str, typer.Option(help="Feature service.")] = "esmm_v1",
    dataset: Annotated[str, typer.Option()] = "sim",
) -> None:
    """Online feature lookup by id, as another team would do it through the SDK (prints JSON)."""
    from pipelines.features.store import get_store, online_features

    if user is None and not item:
        raise typer.BadParameter("give --user, --item or both")
    store = get_store(_settings(), dataset)
    console.print_json(json.dumps(online_features(store, service, user, item), default=str))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_clear_errors
def feast(ctx: typer.Context) -> None:
    """Run the `feast` CLI on feature_repo/ with this profile's store, e.g. `coldstart feast serve -p 6566`."""
    import subprocess

    from pipelines.features.store import feast_invocation

    prefix, env = feast_invocation(_settings())
    raise typer.Exit(subprocess.run([*prefix, *ctx.args], env=env).returncode)
