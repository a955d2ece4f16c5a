"""Results in a local folder, written through a temporary file and an atomic rename.

The rename makes each write atomic for readers and against a crashed process.
Durability against power loss comes from `flush`, which the runner calls
between a run's data files and its result.json, instead of one fsync per file
(a sweep writes four files per run, and fsync dominated its write time).
"""

import errno
import os
import tempfile

from cubicfit.errors import StorageError
from cubicfit.storage.base import ResultStore


class LocalStore(ResultStore):
    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def describe(self, key: str = "") -> str:
        return self._path(key) if key else self.root

    def check(self, create: bool = False, read_only: bool = False) -> None:
        if read_only:
            if os.path.exists(self.root) and not os.path.isdir(self.root):
                raise StorageError(f"{self.root} exists but is not a folder; choose another output")
            return
        try:
            os.makedirs(self.root, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-check-"):
                pass
        except OSError as error:
            raise StorageError(_explain(error, self.root)) from None

    def flush(self) -> None:
        os.sync()

    def read_bytes(self, key: str) -> bytes | None:
        try:
            with open(self._path(key), "rb") as stream:
                return stream.read()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StorageError(_explain(error, self._path(key))) from None

    def _write_temporary(self, path: str, data: bytes) -> str:
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(data)
            os.chmod(temporary, 0o644)
        except BaseException:
            _remove_quietly(temporary)
            raise
        return temporary

    def write_bytes(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        try:
            temporary = self._write_temporary(path, data)
            try:
                os.replace(temporary, path)
            except BaseException:
                _remove_quietly(temporary)
                raise
        except OSError as error:
            raise StorageError(_explain(error, path)) from None

    def create_bytes(self, key: str, data: bytes, content_type: str) -> bool:
        path = self._path(key)
        try:
            temporary = self._write_temporary(path, data)
            try:
                # link() fails if the target exists, so the complete file appears only once.
                os.link(temporary, path)
                return True
            except FileExistsError:
                return False
            finally:
                _remove_quietly(temporary)
        except OSError as error:
            raise StorageError(_explain(error, path)) from None

    def delete(self, key: str) -> None:
        try:
            os.remove(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as error:
            raise StorageError(_explain(error, self._path(key))) from None

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        keys = []
        for folder, _, files in os.walk(base):
            for name in files:
                if name.startswith(".tmp-") or name.startswith(".write-check-"):
                    continue
                full = os.path.join(folder, name)
                keys.append(os.path.relpath(full, self.root).replace(os.sep, "/"))
        return sorted(keys)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _explain(error: OSError, path: str) -> str:
    if error.errno == errno.ENOSPC:
        return (f"no space left on the device while writing {path}; "
                "free disk space or choose another output")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied writing {path}; choose a writable output folder"
    return f"cannot write {path}: {error.strerror or error}; choose a writable output folder"
