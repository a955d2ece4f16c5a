"""The local-folder result store: atomic writes, create-if-absent, listing and checks."""

import os
import subprocess
import sys
import threading

import pytest

from cubicfit.errors import StorageError
from cubicfit.storage import open_store
from cubicfit.storage.local import LocalStore


def test_open_store_local(tmp_path):
    store = open_store(str(tmp_path / "out"))

    assert isinstance(store, LocalStore)
    assert store.describe() == str(tmp_path / "out")
    assert store.describe("runs/x/result.json") == str(tmp_path / "out" / "runs" / "x" /
                                                        "result.json")


def test_write_bytes_replaces(tmp_path):
    store = LocalStore(str(tmp_path))
    store.write_bytes("runs/a/losses.csv", b"old", "text/csv")
    store.write_bytes("runs/a/losses.csv", b"new", "text/csv")

    assert store.read_bytes("runs/a/losses.csv") == b"new"
    assert os.listdir(tmp_path / "runs" / "a") == ["losses.csv"]


def test_read_missing_key(tmp_path):
    assert LocalStore(str(tmp_path)).read_bytes("runs/none/result.json") is None


def test_create_bytes_only_once(tmp_path):
    store = LocalStore(str(tmp_path))

    assert store.create_bytes("runs/a/result.json", b"first", "application/json") is True
    assert store.create_bytes("runs/a/result.json", b"second", "application/json") is False
    assert store.read_bytes("runs/a/result.json") == b"first"
    assert os.listdir(tmp_path / "runs" / "a") == ["result.json"]


def test_create_bytes_thread_race(tmp_path):
    store = LocalStore(str(tmp_path))
    barrier = threading.Barrier(8)
    outcomes = []

    def create(index: int) -> None:
        barrier.wait()
        outcomes.append((store.create_bytes("result.json", f"writer {index}".encode(),
                                            "application/json"), index))

    threads = [threading.Thread(target=create, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [index for created, index in outcomes if created]
    assert len(winners) == 1
    assert store.read_bytes("result.json") == f"writer {winners[0]}".encode()


def test_failed_write_keeps_old(tmp_path):
    store = LocalStore(str(tmp_path))
    store.write_bytes("runs/a/fit.png", b"old", "image/png")
    # A folder in place of the target makes the final rename fail.
    os.makedirs(tmp_path / "runs" / "a" / "result.json")

    with pytest.raises(StorageError) as caught:
        store.write_bytes("runs/a/result.json", b"new", "application/json")

    assert caught.value.exit_code == 4
    assert store.read_bytes("runs/a/fit.png") == b"old"
    assert sorted(os.listdir(tmp_path / "runs" / "a")) == ["fit.png", "result.json"]


def test_delete_missing_key(tmp_path):
    store = LocalStore(str(tmp_path))
    store.write_bytes("x.txt", b"1", "text/plain")
    store.delete("x.txt")
    store.delete("x.txt")

    assert store.read_bytes("x.txt") is None


def test_list_keys_folder_prefix(tmp_path):
    store = LocalStore(str(tmp_path))
    for key in ("runs/ab/x.json", "runs/abc/y.json", "sweeps/s/summary.csv"):
        store.write_bytes(key, b"1", "text/plain")
    (tmp_path / "runs" / ".write-check-1").write_bytes(b"")
    (tmp_path / "runs" / ".tmp-2.part").write_bytes(b"")

    assert store.list_keys("runs/ab") == ["runs/ab/x.json"]
    assert store.list_keys("runs/") == ["runs/ab/x.json", "runs/abc/y.json"]
    assert store.list_keys("") == ["runs/ab/x.json", "runs/abc/y.json", "sweeps/s/summary.csv"]
    assert store.list_keys("missing") == []


def test_check_creates_folder(tmp_path):
    store = LocalStore(str(tmp_path / "new" / "out"))
    store.check()

    assert (tmp_path / "new" / "out").is_dir()
    assert os.listdir(tmp_path / "new" / "out") == []


def test_check_file_in_the_way(tmp_path):
    (tmp_path / "out").write_text("not a folder")

    with pytest.raises(StorageError) as caught:
        LocalStore(str(tmp_path / "out")).check()
    assert caught.value.exit_code == 4
    assert str(tmp_path / "out") in str(caught.value)

    with pytest.raises(StorageError, match="not a folder"):
        LocalStore(str(tmp_path / "out")).check(read_only=True)


def test_local_run_imports_no_boto3(tmp_path):
    # A numpy fit to a local folder must not pay for importing boto3 or torch.
    code = (
        "import sys\n"
        "from cubicfit.cli import main\n"
        f"code = main(['run', '--quiet', '--iterations', '20', '--output', {str(tmp_path)!r}])\n"
        "loaded = sorted(name for name in ('boto3', 'botocore', 'torch') if name in sys.modules)\n"
        "print(code, loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, check=False)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "0 []"
