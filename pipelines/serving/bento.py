"""From an MLflow version to a built, served and smoke-tested bento.

* :func:`import_model` copies a registered MLflow version into the BentoML model store (under
  ``COLDSTART_HOME/bentoml``) as ``coldstart_<model>``, labelled with its MLflow name, version and run, together
  with the side data its service needs offline: MeLU's item catalog and evidence candidates; the ranker's
  item content and exposures (for content-similar new-item embeddings).
* :func:`build` runs ``bentoml build`` on ``bentos/<service>/`` offline (``uv`` on PATH, no package locking).
* :func:`serve` starts ``bentoml serve`` on 127.0.0.1 and waits for ``/readyz``; :func:`stop` ends it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from pipelines.catalog import model as catalog_model
from pipelines.catalog.registry import registry_client
from pipelines.settings import Settings

BENTOS = Path(__file__).resolve().parents[2] / "bentos"


class BentoError(RuntimeError):
    """A step of packaging or serving failed (the message names the step and carries its output)."""


def bentoml_environ(settings: Settings) -> dict[str, str]:
    """Environment of every BentoML call: the store under COLDSTART_HOME, no telemetry, the venv's uv."""
    return {
        "BENTOML_HOME": str(settings.home / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "COLDSTART_HOME": str(settings.home),
        "COLDSTART_PROFILE": settings.profile,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _run(args: list[str], settings: Settings, step: str, timeout: int = 600, **extra_env: str) -> str:
    env = {**os.environ, **bentoml_environ(settings), **extra_env}
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=BENTOS.parent)
    if out.returncode != 0:
        raise BentoError(f"{step} failed ({' '.join(args[:4])} ...): {(out.stdout + out.stderr)[-3000:]}")
    return out.stdout


def import_model(settings: Settings, model: str, version: str) -> str:
    """Copy ``models:/coldstart_<model>/<version>`` and its side data into the BentoML store; returns the tag.

    Runs in a subprocess so the BentoML store location (read when bentoml is imported) is this profile's.
    """
    args = [sys.executable, "-m", "pipelines.serving.bento", "import", model, str(version)]
    return _run(args, settings, "import into the BentoML store").strip().splitlines()[-1]


def _import_in_process(settings: Settings, model: str, version: str) -> str:
    import bentoml
    import mlflow

    entry = catalog_model(model)
    name = entry.registered_name
    mv = registry_client(settings).get_model_version(name, version)
    labels = {"mlflow_model": name, "mlflow_version": str(version), "mlflow_run": mv.run_id,
              "kind": entry.family.bento_service}  # fmt: skip
    with bentoml.models.create(name, labels=labels, metadata={"model": model}) as bento_model:
        target = Path(bento_model.path)
        mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(target / "mlflow"))
        entry.call("side_data", settings, entry, target)
    return str(bento_model.tag)


def build(settings: Settings, service: str, model_tag: str) -> str:
    """``bentoml build bentos/<service>`` pinned to ``model_tag``; returns the bento tag."""
    env = {"COLDSTART_BENTO_MODEL": model_tag}
    out = _run([str(Path(sys.executable).parent / "bentoml"), "build", str(BENTOS / service), "--output", "tag"],
               settings, f"bentoml build of {service}", **env)  # fmt: skip
    tag = out.strip().splitlines()[-1].removeprefix("__tag__:")
    if ":" not in tag:
        raise BentoError(f"bentoml build of {service} printed no tag: {out[-2000:]}")
    return tag


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_environ(settings: Settings, bento: str) -> dict[str, str]:
    """Environment of ``bentoml serve <bento>``: the service module reads its model tag from
    ``COLDSTART_BENTO_MODEL`` when it is imported, at build time and again when served, so serving pins it to the
    model the bento was built with (an inherited value would load another model)."""
    tags = [m["tag"] for svc in _services(settings, bento) for m in svc.get("models") or []]
    env = {**os.environ, **bentoml_environ(settings)}
    if tags:
        env["COLDSTART_BENTO_MODEL"] = tags[0]
    return env


def serve(settings: Settings, bento: str, port: int | None = None, token: str | None = None, workers: int = 1,
          timeout: float = 120) -> tuple[subprocess.Popen, str]:  # fmt: skip
    """Start ``bentoml serve <bento>`` on 127.0.0.1; returns the process and its base URL once ready."""
    import httpx

    port = port or free_port()
    env = {**serve_environ(settings, bento), "COLDSTART_API_TOKEN": token or ""}
    if workers > 1:  # BentoML 1.4's new-style services ignore --api-workers: workers are a service setting
        names = [svc["name"] for svc in _services(settings, bento) if svc.get("name")]
        env["BENTOML_CONFIG_OPTIONS"] = " ".join(f"services.{name}.workers={workers}" for name in names)
    log = settings.home / "logs" / f"bento-{bento.replace(':', '-')}-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "bentoml"), "serve", bento, "--host", "127.0.0.1", "--port", str(port),
             "--api-workers", str(workers)],
            env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=BENTOS.parent, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BentoError(f"bentoml serve {bento} exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(process)
    raise BentoError(f"bentoml serve {bento} not ready after {timeout} s: {log.read_text()[-3000:]}")


def _services(settings: Settings, bento: str) -> list[dict]:
    """The services of a built bento as its ``bento.yaml`` lists them (name, models); none if it is not built."""
    import yaml

    name, _, version = bento.partition(":")
    path = settings.home / "bentoml" / "bentos" / name / version / "bento.yaml"
    info = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return info.get("services") or []


def stop(process: subprocess.Popen) -> None:
    """End a server started by :func:`serve` (its whole process group: BentoML forks workers)."""
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


if __name__ == "__main__":  # python -m pipelines.serving.bento import <model> <version>
    from pipelines.settings import get_settings

    command, model_name, model_version = sys.argv[1:4]
    if command != "import":
        raise SystemExit(f"unknown command {command!r}")
    print(_import_in_process(get_settings(), model_name, model_version))
