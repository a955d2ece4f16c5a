"""Process exit codes of the `cubicfit` command; the Kubernetes manifests depend on them."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL_ERROR = 1
    INVALID_CONFIG = 2
    DEVICE_UNAVAILABLE = 3
    STORAGE_ERROR = 4
    DIVERGED = 5
    INTERRUPTED = 130  # SIGINT
    TERMINATED = 143  # SIGTERM
