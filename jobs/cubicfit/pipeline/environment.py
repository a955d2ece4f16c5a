"""The environment of a `cubicfit` child process of the worker, with the S3 settings it needs.

S3 settings come from the Airflow connection `aws_conn_id` (amazon provider,
type aws: login and password are the access key pair, `endpoint_url` and
`region_name` go in its extra) when it exists, else from the worker's own
environment. They reach only the child's environment: the worker process's
environment, XCom and the logs never hold them, and Airflow masks the secret
key in task logs.
"""

import logging
import os
from collections.abc import Mapping

from cubicfit.errors import StorageError

log = logging.getLogger(__name__)

# Variables of the worker that would change what the child computes or where it writes.
DROPPED_PREFIXES = ("CUBICFIT_",)
DROPPED_NAMES = ("JOB_COMPLETION_INDEX",)
# Replaced by the connection's settings when the connection exists.
S3_PREFIXES = ("AWS_", "S3_")


def child_environment(aws_conn_id: str | None, environ: Mapping[str, str] | None = None,
                      ) -> dict[str, str]:
    """Return the environment for `cubicfit`: the worker's, with the connection's S3 settings."""
    environ = os.environ if environ is None else environ
    env = {name: value for name, value in environ.items()
           if not name.startswith(DROPPED_PREFIXES) and name not in DROPPED_NAMES}
    settings = connection_settings(aws_conn_id) if aws_conn_id else None
    if settings is None:
        return env
    env = {name: value for name, value in env.items() if not name.startswith(S3_PREFIXES)}
    env.update(settings)
    return env


def connection_settings(aws_conn_id: str) -> dict[str, str] | None:
    """Return S3 variables from the Airflow connection, or None when it does not exist."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException
    from airflow.sdk.log import mask_secret

    try:
        BaseHook.get_connection(aws_conn_id)
    except AirflowNotFoundException:
        log.info("no Airflow connection %r; S3 settings come from the worker's environment",
                 aws_conn_id)
        return None

    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3")
    found = hook.get_session().get_credentials()
    if found is None:
        raise StorageError(
            f"Airflow connection {aws_conn_id!r} has no S3 credentials, and the worker has none "
            "either; set the access key ID as the connection's login and the secret key as its "
            "password"
        )
    credentials = found.get_frozen_credentials()
    mask_secret(credentials.secret_key)
    if credentials.token:
        mask_secret(credentials.token)
    settings = {"AWS_ACCESS_KEY_ID": credentials.access_key,
                "AWS_SECRET_ACCESS_KEY": credentials.secret_key}
    if credentials.token:
        settings["AWS_SESSION_TOKEN"] = credentials.token
    endpoint = hook.conn_config.get_service_endpoint_url("s3")
    if endpoint:
        settings["S3_ENDPOINT_URL"] = endpoint
    if hook.conn_config.region_name:
        settings["AWS_DEFAULT_REGION"] = hook.conn_config.region_name
    log.info("S3 settings from Airflow connection %r (endpoint %s)", aws_conn_id,
             endpoint or "AWS S3")
    return settings
