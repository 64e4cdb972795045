#!/usr/bin/env bash
# One-shot initialisation of the prod stack (the compose service `airflow-init`); every step is idempotent,
# so it runs on each `docker compose up`. It reads the same variables as the services: COLDSTART_* and AIRFLOW__*.
set -euo pipefail

# COLDSTART_HOME is writable and PostgreSQL and Redis answer: the check the native prod-profile test runs.
coldstart doctor

# Airflow keeps its metadata in a database of its own. MLflow's tables live in the platform's database
# (COLDSTART_POSTGRES_URL), and both record their schema revision in a table named `alembic_version`.
python -c 'import os; from pipelines.services import ensure_postgres_database as ensure; ensure(os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])'
airflow db migrate

# The simple auth manager reads its users' passwords from this file (and would otherwise generate and print one):
# the first user's password comes from AIRFLOW_ADMIN_PASSWORD.
python - <<'EOF'
import json
import os
from pathlib import Path

path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
user = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(",")[0].split(":")[0].strip()
passwords = json.loads(path.read_text() or "{}") if path.is_file() else {}
passwords[user] = os.environ["AIRFLOW_ADMIN_PASSWORD"]
path.parent.mkdir(parents=True, exist_ok=True)
path.touch(mode=0o600)
path.write_text(json.dumps(passwords) + "\n")
print(f"Airflow user {user!r}: password set from AIRFLOW_ADMIN_PASSWORD")
EOF
