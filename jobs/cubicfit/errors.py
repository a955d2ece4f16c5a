"""Errors that end the command with a documented exit code and a one-line message."""

from cubicfit.exitcodes import ExitCode


class CubicfitError(Exception):
    exit_code = ExitCode.INTERNAL_ERROR


class ConfigError(CubicfitError):
    """Invalid configuration, sweep spec or command-line usage."""

    exit_code = ExitCode.INVALID_CONFIG


class DeviceError(CubicfitError):
    """The requested device does not exist on this machine."""

    exit_code = ExitCode.DEVICE_UNAVAILABLE


class StorageError(CubicfitError):
    """The output location cannot be read or written, after retries where they apply."""

    exit_code = ExitCode.STORAGE_ERROR


class Interrupted(CubicfitError):
    """SIGINT or SIGTERM arrived; the exit code is 128 plus the signal number."""

    def __init__(self, signal_number: int):
        super().__init__(f"interrupted by signal {signal_number}")
        self.signal_number = signal_number
        self.exit_code = ExitCode(128 + signal_number)
