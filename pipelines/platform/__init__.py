"""The platform as a running service: the launcher (`coldstart platform`) and a client of Airflow's REST API."""
