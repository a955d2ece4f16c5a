"""A local Airflow for the sweep DAG: `make airflow` for people, the browser test for CI.

It runs the four Airflow 3 components as separate processes (api-server,
scheduler, dag-processor and triggerer) on SQLite with the LocalExecutor,
in a temporary AIRFLOW_HOME, configured only through environment variables.
The api-server listens on 127.0.0.1, and the scheduler and triggerer run
with --skip-serve-logs, so nothing listens on any other address: the
api-server reads task logs from the shared log folder. The login is the
SimpleAuthManager user `admin` with a random password. The DAG runs in local
mode against an S3 endpoint given by the caller, through the Airflow
connection cubicfit_s3 (an AIRFLOW_CONN_ variable, so it is never stored in
the database).

Run `python tests/e2e/airflow_stack.py` (what `make airflow` does) to start
an S3 endpoint as the test suite does (tests/s3_endpoint.py) and the stack,
and to print the URL and login; Ctrl-C stops everything.
"""

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DAG_FOLDER = ROOT / "dags"
DAG_ID = "cubic_fit_sweep"
USERNAME = "admin"
CONNECTION_ID = "cubicfit_s3"
START_TIMEOUT = 180.0  # seconds until the api-server responds and the DAG is parsed
COMPONENTS = {
    "api-server": ["api-server", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}


class StackError(RuntimeError):
    """A component did not start, or stopped on its own."""


class AirflowStack:
    def __init__(self, endpoint, bucket: str, port: int, home: Path | None = None,
                 output_prefix: str = "results"):
        self.endpoint = endpoint  # an s3_endpoint.S3Endpoint
        self.bucket = bucket
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.home = home or Path(tempfile.mkdtemp(prefix="cubicfit-airflow-"))
        self.output = f"s3://{bucket}/{output_prefix}"
        self.password = secrets.token_urlsafe(12)
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = self._environment()

    def _environment(self) -> dict[str, str]:
        from cryptography.fernet import Fernet

        env = {name: value for name, value in os.environ.items()
               if not name.startswith(("AIRFLOW", "AWS_", "S3_", "CUBICFIT_"))}
        connection = {"conn_type": "aws", "login": self.endpoint.access_key,
                      "password": self.endpoint.secret_key,
                      "extra": {"endpoint_url": self.endpoint.url,
                                "region_name": self.endpoint.region}}
        env.update({
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FOLDER),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home}/airflow.db",
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple."
                                           "simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__CUBICFIT__EXECUTION_MODE": "local",
            "AIRFLOW__CUBICFIT__OUTPUT": self.output,
            f"AIRFLOW_CONN_{CONNECTION_ID.upper()}": json.dumps(connection),
            # The worker's own AWS settings must not leak into the fits.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        })
        return env

    # Start and stop

    def start(self) -> None:
        """Migrate the database, start every component and wait until the DAG is listed."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "passwords.json").write_text(json.dumps({USERNAME: self.password}))
        migrated = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"],
                                  env=self.env, capture_output=True, text=True, timeout=300,
                                  check=False)
        if migrated.returncode != 0:
            raise StackError(f"airflow db migrate failed: {migrated.stderr[-2000:]}")
        try:
            for name, arguments in COMPONENTS.items():
                self._spawn(name, [part.format(port=self.port) for part in arguments])
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, arguments: list[str]) -> None:
        log = open(self.log_path(name), "wb")  # noqa: SIM115 - closed when the child exits
        # A session of its own, so stop() can end the component with all its children.
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "airflow", *arguments], env=self.env, cwd=self.home,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()

    def log_path(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def stop(self) -> None:
        """Stop every component: SIGTERM to its process group, SIGKILL after 20 seconds."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self.processes.clear()

    def check_running(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise StackError(f"airflow {name} exited with code {process.returncode}; its "
                                 f"log ends with:\n{self.log_tail(name)}")

    def log_tail(self, name: str, length: int = 3000) -> str:
        try:
            return self.log_path(name).read_text(errors="replace")[-length:]
        except OSError:
            return "(no log)"

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self.check_running()
            try:
                errors = self.api("GET", "/api/v2/importErrors")["import_errors"]
            except (urllib.error.URLError, OSError, StackError):
                errors = None  # the api-server is still starting
            if errors:
                raise StackError(f"the DAG folder has import errors: {errors}")
            if errors is not None and self._dag_listed():
                return
            time.sleep(1)
        raise StackError(f"Airflow did not list the DAG {DAG_ID} within {START_TIMEOUT:.0f} s; "
                         f"logs in {self.home}")

    def _dag_listed(self) -> bool:
        try:
            self.api("GET", f"/api/v2/dags/{DAG_ID}")
        except StackError:  # HTTP 404 until the dag-processor has parsed the file
            return False
        return True

    # The REST API, for tests and readiness checks

    def token(self) -> str:
        request = urllib.request.Request(
            f"{self.url}/auth/token", method="POST",
            data=json.dumps({"username": USERNAME, "password": self.password}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - 127.0.0.1
            return json.loads(response.read())["access_token"]

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        """Call the Airflow REST API as the admin user; raise StackError on an HTTP error."""
        request = urllib.request.Request(
            f"{self.url}{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token()}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            raise StackError(f"{method} {path} returned HTTP {error.code}: "
                             f"{error.read()[:1000]!r}") from None

    def wait_for_run(self, run_id: str, timeout: float = 300.0) -> dict:
        """Poll a DAG run until it succeeds or fails; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_running()
            run = self.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(2)
        raise StackError(f"DAG run {run_id} did not finish within {timeout:.0f} s")


def main() -> int:
    """Start an S3 endpoint and the stack; print the URL and login; stop both on Ctrl-C."""
    sys.path.insert(0, str(ROOT / "tests"))
    from s3_endpoint import EndpointError, free_port, start_endpoint

    try:
        running = start_endpoint()
    except EndpointError as error:
        print(f"cannot start an S3 endpoint: {error}", file=sys.stderr)
        return 1
    stack = None
    # Stop on Ctrl-C and on SIGTERM, also when a shell started this in the background
    # (which makes the process ignore SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        bucket = "cubicfit"
        if not running.endpoint.bucket_exists(bucket):
            running.endpoint.client().create_bucket(Bucket=bucket)
        home = Path(os.environ["AIRFLOW_STACK_HOME"]) if os.environ.get(
            "AIRFLOW_STACK_HOME") else None
        stack = AirflowStack(running.endpoint, bucket, free_port(), home=home)
        print(f"Starting Airflow in {stack.home} (logs: *.log there) ...", flush=True)
        stack.start()
        print(f"""
Airflow is running with the DAG {DAG_ID} in local mode.
  URL:      {stack.url}/dags/{DAG_ID}
  Login:    {USERNAME} / {stack.password}
  S3:       {running.endpoint.description}
            results go to {stack.output}; the connection {CONNECTION_ID} holds the keys
  Try it:   Trigger -> keep or change the grid -> Trigger; then open the run.
Press Ctrl-C to stop Airflow and the S3 endpoint.""", flush=True)
        while True:
            stack.check_running()
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        print("Stopping Airflow and the S3 endpoint ...", flush=True)
        if stack is not None:
            stack.stop()
            if not os.environ.get("AIRFLOW_STACK_HOME"):
                shutil.rmtree(stack.home, ignore_errors=True)
        running.stop()
    return 0


def _raise_keyboard_interrupt(number, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
