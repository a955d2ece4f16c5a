"""The logic of the Airflow sweep DAG (dags/cubic_fit_sweep.py).

Modules:
- `settings`: deployment defaults from the Airflow configuration.
- `form`: the trigger form's parameters.
- `request` and `planning`: checking the parameters, expanding the grid and
  splitting it into batches.
- `pods`: the KubernetesPodOperator settings.
- `environment` and `command`: running `cubicfit` in a child process of the
  worker, with the S3 settings of an Airflow connection.
- `tasks`: the bodies of the DAG's tasks.

Only `form`, `settings` and `tasks` need Airflow at import time; the others
import it inside the functions that use it, so they can be tested without it.
"""
