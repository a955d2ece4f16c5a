"""Run one `cubicfit` command in a child process of the Airflow worker.

The child gets its own environment (see `environment`), writes its log as
JSON lines on stderr, which are passed on to the task log at their level,
and its result on stdout, which is returned. Its exit code decides whether
Airflow may retry: invalid configuration (2) and a missing device (3) fail
the task at once, everything else is left to the task's retries.
"""

import json
import logging
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence

from cubicfit.exitcodes import ExitCode

log = logging.getLogger(__name__)

# Seconds the child may take to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 30
NOT_RETRIED = {
    ExitCode.INVALID_CONFIG: "invalid configuration",
    ExitCode.DEVICE_UNAVAILABLE: "requested device not available on this worker",
}
RETRIED = {
    ExitCode.INTERNAL_ERROR: "internal error",
    ExitCode.STORAGE_ERROR: "storage error",
    ExitCode.INTERRUPTED: "interrupted by SIGINT",
    ExitCode.TERMINATED: "terminated by SIGTERM",
}


class CommandFailed(Exception):
    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code = exit_code

    @property
    def retryable(self) -> bool:
        return self.exit_code not in NOT_RETRIED


def run_cubicfit(arguments: Sequence[str], env: Mapping[str, str], action: str) -> str:
    """Run `python -m cubicfit ARGUMENTS`; return its stdout, raise CommandFailed on failure.

    `arguments` start with the command name, and `--log-format json` is added after it.
    `action` names the work in log lines and errors, such as "batch 3 of sweep lr-study".
    """
    command = [sys.executable, "-m", "cubicfit", arguments[0], "--log-format", "json",
               *arguments[1:]]
    log.info("%s: running cubicfit %s", action, arguments[0])
    with tempfile.TemporaryFile() as stdout:
        process = subprocess.Popen(command, env=dict(env), stdin=subprocess.DEVNULL,
                                   stdout=stdout, stderr=subprocess.PIPE, text=True)
        last_error = None
        try:
            for line in process.stderr:
                last_error = _forward(line.rstrip("\n")) or last_error
            exit_code = process.wait()
        finally:
            # Reached early only when the task itself is stopped: stop the child too.
            _stop(process)
        stdout.seek(0)
        output = stdout.read().decode()

    if exit_code != 0:
        meaning = NOT_RETRIED.get(exit_code) or RETRIED.get(exit_code) or "unexpected exit code"
        detail = f": {last_error}" if last_error else "; see the task log"
        raise CommandFailed(exit_code, f"{action} failed with exit code {exit_code} "
                            f"({meaning}){detail}")
    return output


def _forward(line: str) -> str | None:
    """Log one stderr line of the child; return its message when it is an error."""
    if not line.strip():
        return None
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        entry = None
    if not isinstance(entry, dict) or "message" not in entry:
        log.info("%s", line)  # a traceback or a warning printed by a library
        return None
    level = logging.getLevelName(str(entry.get("level", "info")).upper())
    level = level if isinstance(level, int) else logging.INFO
    # Log under the child's logger name, so the task log shows where a line comes from.
    origin = logging.getLogger(str(entry.get("logger") or __name__))
    origin.log(level, "%s", entry["message"])
    if entry.get("traceback"):
        origin.log(level, "%s", entry["traceback"])
    return entry["message"] if level >= logging.ERROR else None


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.warning("cubicfit (pid %d) did not stop within %d s of SIGTERM; killing it",
                    process.pid, STOP_TIMEOUT)
        process.kill()
        process.wait()
