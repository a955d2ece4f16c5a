"""Sweep cubic fits of y = sin(x) over a parameter grid, in Kubernetes pods or in the worker.

Trigger it from the form: list the grid values, pick the execution mode and
the output, and every combination runs once. `plan` checks the parameters,
expands the grid, drops runs that already have a result and splits the rest
into batches. `fit` runs each batch as one mapped task: a pod in kubernetes
mode (CUDA batches get a GPU and count against the GPU pool), a child
process of the worker in local mode. `report` writes summary.csv, report.md
and report.png under sweeps/<sweep_id>/ and returns the best run.
The logic lives in the cubicfit.pipeline package; docs/airflow.md explains
the settings.
"""

from datetime import datetime, timedelta

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import DAG, TaskGroup, TriggerRule, conf, task

from cubicfit.pipeline import planning, pods, tasks
from cubicfit.pipeline.form import trigger_params
from cubicfit.pipeline.settings import read_settings

settings = read_settings(conf)

with DAG(
    dag_id="cubic_fit_sweep",
    description="Sweep cubic fits of sin(x) over a grid of learning rates, iterations, seeds, "
    "backends and devices",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["cubicfit", "sweep"],
    params=trigger_params(settings),
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
) as dag:

    @task(multiple_outputs=False)
    def plan(params=None) -> dict:
        return tasks.plan(params)

    @task
    def list_worker_batches(planned: dict) -> list[dict]:
        return planning.worker_batches(planned)

    @task
    def list_cpu_pods(planned: dict) -> list[dict]:
        return [pods.batch_arguments(planned, batch)
                for batch in planning.pod_batches(planned, "cpu")]

    @task
    def list_gpu_pods(planned: dict) -> list[dict]:
        return [pods.batch_arguments(planned, batch)
                for batch in planning.pod_batches(planned, "cuda")]

    @task(multiple_outputs=False,
          map_index_template="batch {{ task.op_kwargs['batch']['index'] }}")
    def run_in_worker(batch: dict) -> dict:
        return tasks.fit_in_worker(batch)

    # multiple_outputs: each field of the summary shows on its own in the XCom tab.
    @task(trigger_rule=TriggerRule.NONE_FAILED, multiple_outputs=True)
    def report(planned: dict) -> dict:
        return tasks.report(planned)

    planned = plan()
    with TaskGroup("fit", tooltip="One mapped task per batch; the other two are skipped") as fit:
        run_in_worker.expand(batch=list_worker_batches(planned))
        KubernetesPodOperator.partial(
            task_id="run_in_cpu_pod",
            map_index_template="batch {{ task.labels['cubicfit/batch'] }}",
            **pods.operator_settings(settings, "cpu"),
        ).expand_kwargs(list_cpu_pods(planned))
        KubernetesPodOperator.partial(
            task_id="run_in_gpu_pod",
            map_index_template="batch {{ task.labels['cubicfit/batch'] }}",
            **pods.operator_settings(settings, "cuda"),
        ).expand_kwargs(list_gpu_pods(planned))
    fit >> report(planned)
