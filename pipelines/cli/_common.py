"""What every ``coldstart`` command shares: the Typer apps, the consoles, the expected-errors decorator, printing.

The command modules import the underscored helpers from here; they keep their old names so that a command body
reads the same as it did in the single-file CLI. Only light imports at the top: ``coldstart --help`` imports this
module, so each stage's modules load inside the command that needs them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError as PydanticValidationError
from rich.console import Console
from rich.table import Table

from pipelines.settings import Settings, SettingsError, get_settings

app = typer.Typer(
    help="Cold-start recommendation platform: simulate, ingest, validate, featurize, train, evaluate, serve.",
    no_args_is_help=True,
    add_completion=False,
)
# The sub-apps are attached here, not in their modules, so `coldstart --help` lists them in this order.
ingest_app = typer.Typer(help="Bring real datasets into the event-log contract.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
platform_app = typer.Typer(help="Run the platform as a service on 127.0.0.1: Airflow and MLflow.", no_args_is_help=True)
app.add_typer(platform_app, name="platform")
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def _expected_errors() -> tuple[type[BaseException], ...]:
    from airflow_client.client.exceptions import ApiException  # Airflow refused a call (unknown DAG, bad conf)

    from pipelines.catalog import CatalogError
    from pipelines.data.contract import ContractError, MissingPartitionError
    from pipelines.data.movielens import MovieLensMissingError
    from pipelines.evaluation.api import EvaluationError
    from pipelines.evaluation.slices import SliceError
    from pipelines.experiments.closed_loop import ExperimentError
    from pipelines.platform.client import ChainError
    from pipelines.platform.launcher import PlatformError
    from pipelines.serving.promote import PromotionError
    from pipelines.validation.validate import ValidationError

    return (SettingsError, ContractError, MissingPartitionError, MovieLensMissingError, ValidationError,
            EvaluationError, SliceError, PydanticValidationError, PromotionError, PlatformError,
            ChainError, ApiException, CatalogError, ExperimentError)  # fmt: skip


def _message(exc: BaseException) -> str:
    """One line: an Airflow refusal as its status and body (its ``str`` carries every response header)."""
    status, body = getattr(exc, "status", None), getattr(exc, "body", None)
    return f"Airflow answered {status}: {body}" if status is not None and body is not None else str(exc)


def _clear_errors(func: F) -> F:
    """Turn the platform's expected errors into a red one-line message and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _expected_errors() as exc:
            err_console.print(f"[bold red]error:[/] {_message(exc)}")
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def _settings() -> Settings:
    """The resolved settings, with COLDSTART_HOME created (a clear error if it cannot be)."""
    settings = get_settings()
    settings.ensure_home()
    return settings


def _print_summary(title: str, rows: dict[str, Any]) -> None:
    """Print ``rows`` as a two-column key/value table under ``title``."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(key, str(value))
    console.print(table)
