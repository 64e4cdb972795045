"""Cold-start recommendation platform: all logic, usable without Airflow (CLI and Python API)."""
