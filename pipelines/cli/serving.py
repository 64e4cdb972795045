"""``coldstart promote``, ``rollback`` and ``serve``: the staging bento of a model."""

from __future__ import annotations

from typing import Annotated

import typer

from pipelines.cli._common import _clear_errors, _print_summary, _settings, app


@app.command()
@_clear_errors
def promote(
    model: Annotated[str, typer.Argument(help="esmm, ple, ..., melu.")],
    version: Annotated[str | None, typer.Option(help="Version to promote (default: the `approved` one).")] = None,
) -> None:
    """Import an approved version into BentoML, build, serve and smoke-test it; then alias it `staging`."""
    from pipelines.serving.promote import promote as promote_model

    record = promote_model(_settings(), model, version)
    _print_summary(f"Promoted {model} to staging", {k: v for k, v in record.items() if k != "history"})


@app.command()
@_clear_errors
def rollback(model: Annotated[str, typer.Argument(help="esmm, ple, ..., melu.")]) -> None:
    """Put the previous staging version of a model back (aliases `staging` and `champion`)."""
    from pipelines.serving.promote import rollback as rollback_model

    record = rollback_model(_settings(), model)
    _print_summary(f"Rolled {model} back", {k: v for k, v in record.items() if k != "history"})


@app.command()
@_clear_errors
def serve(
    model: Annotated[str, typer.Argument(help="esmm, ple, ..., melu: serves its staging bento.")],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 3000,
    workers: Annotated[int, typer.Option(min=1)] = 1,
) -> None:
    """Serve the staging bento of a model on 127.0.0.1 (foreground; token from COLDSTART_API_TOKEN)."""
    import subprocess

    from pipelines.serving.bento import serve_environ
    from pipelines.serving.promote import PromotionError, staging_record

    settings = _settings()
    record = staging_record(settings, model)
    if record is None:
        raise PromotionError(f"{model} has no staging bento: promote a version first (coldstart promote {model})")
    args = ["bentoml", "serve", record["bento"], "--host", "127.0.0.1", "--port", str(port), "--api-workers",
            str(workers)]  # fmt: skip
    raise typer.Exit(subprocess.run(args, env=serve_environ(settings, record["bento"])).returncode)
