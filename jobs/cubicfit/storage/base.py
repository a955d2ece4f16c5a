"""The storage interface the job writes its results through.

Keys are relative, slash-separated paths under the output root, such as
`runs/<run_id>/result.json`. Every write is atomic: a reader sees either the
previous object or the complete new one, never a partial file.
"""

from abc import ABC, abstractmethod


class ResultStore(ABC):
    @abstractmethod
    def check(self, create: bool = False, read_only: bool = False) -> None:
        """Verify that the output can be written (or only read), before any compute.

        Raise StorageError when it cannot. `create` creates a missing bucket or folder.
        """

    @abstractmethod
    def read_bytes(self, key: str) -> bytes | None:
        """Return the object's content, or None when it does not exist."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Create or replace the object atomically."""

    @abstractmethod
    def create_bytes(self, key: str, data: bytes, content_type: str) -> bool:
        """Create the object only if it does not exist; return False when it already existed."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Return the keys under `prefix`, sorted."""

    @abstractmethod
    def describe(self, key: str = "") -> str:
        """Return a human-readable location of `key` for log lines and messages."""

    def flush(self) -> None:  # noqa: B027 - optional hook, a no-op for most stores
        """Make every completed write durable; stores whose writes already are do nothing."""

    def exists(self, key: str) -> bool:
        return self.read_bytes(key) is not None
