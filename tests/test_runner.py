import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cubicfit.cli import main
from cubicfit.exitcodes import ExitCode
from cubicfit.results import parse_losses_csv


def command(output, *args):
    return [sys.executable, "-m", "cubicfit", "run", "--output", str(output), *args]


def test_concurrent_identical_runs_record_one_result(tmp_path):
    args = ("--iterations", "400000", "--log-every", "50000", "--checkpoint-every", "0")
    processes = [subprocess.Popen(command(tmp_path / "out", *args), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in processes]

    assert [process.returncode for process in processes] == [0, 0]
    logs = [err for _, err in outputs]
    recorded = [log for log in logs if " succeeded: final loss" in log]
    yielded = [log for log in logs if "finished by another process" in log
               or "already finished" in log]
    assert len(recorded) == 1
    assert len(yielded) == 1
    (folder,) = (tmp_path / "out/runs").iterdir()
    result = json.loads((folder / "result.json").read_text())
    losses = parse_losses_csv((folder / "losses.csv").read_bytes())
    assert result["final_loss"] == losses[-1]
    assert len(losses) == 400001
    assert not list(folder.glob(".tmp-*"))


def mount_tmpfs(mount_point: Path, options: str) -> None:
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root")


@pytest.fixture
def tiny_filesystem(tmp_path):
    mount_point = tmp_path / "tiny"
    mount_tmpfs(mount_point, "size=96k")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


@pytest.fixture
def read_only_filesystem(tmp_path):
    mount_point = tmp_path / "read-only"
    mount_tmpfs(mount_point, "ro,size=64k")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_disk_full_exits_4_without_result(tiny_filesystem, capsys):
    # 20,000 loss rows need about 500 KB, five times what the filesystem holds.
    code = main(["run", "--output", str(tiny_filesystem), "--iterations", "20000"])
    err = capsys.readouterr().err

    assert code == ExitCode.STORAGE_ERROR
    assert "no space left on the device" in err
    assert not list(tiny_filesystem.rglob("result.json"))
    assert not list(tiny_filesystem.rglob(".tmp-*"))


def test_read_only_output_exits_4_before_fitting(read_only_filesystem, capsys):
    code = main(["run", "--output", str(read_only_filesystem / "results"), "--iterations", "10"])
    err = capsys.readouterr().err

    assert code == ExitCode.STORAGE_ERROR
    assert str(read_only_filesystem / "results") in err
    assert "step 9" not in err


def test_no_shell_in_product_code():
    package = Path(__file__).resolve().parents[1] / "jobs" / "cubicfit"
    for path in package.rglob("*.py"):
        text = path.read_text()
        assert "shell=True" not in text, path
        assert "os.system(" not in text, path
        assert "os.popen(" not in text, path
        assert "yaml.load(" not in text or "StrictLoader" in text, path
        assert "eval(" not in text.replace("_eval(", ""), path


def test_output_path_is_used_literally(tmp_path, capsys):
    odd = tmp_path / f"odd name; $(touch {uuid.uuid4().hex}) 'quoted'"
    code = main(["run", "--output", str(odd), "--iterations", "10"])

    assert code == ExitCode.OK
    assert len(list(odd.rglob("result.json"))) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == [odd.name]


def sweep_spec(tmp_path, output, seeds=70):
    path = tmp_path / f"spec-{output.name}.json"
    path.write_text(json.dumps({"name": "many", "base": {"output": str(output), "iterations": 200},
                                "grid": {"seed": list(range(seeds))}}))
    return str(path)


def test_forked_writer_matches_single_process(tmp_path, capsys, monkeypatch):
    import cubicfit.runner

    forked, single = tmp_path / "forked", tmp_path / "single"
    assert main(["sweep", sweep_spec(tmp_path, forked), "--no-report"]) == ExitCode.OK
    monkeypatch.setattr(cubicfit.runner, "PARALLEL_WRITE_MIN_RUNS", 10**9)
    assert main(["sweep", sweep_spec(tmp_path, single), "--no-report"]) == ExitCode.OK

    names = sorted(path.relative_to(forked) for path in forked.rglob("runs/*/*"))
    assert len(names) == 70 * 4
    assert names == sorted(path.relative_to(single) for path in single.rglob("runs/*/*"))
    for name in names:
        if name.name in ("losses.csv", "fit.png", "config.json"):
            assert (forked / name).read_bytes() == (single / name).read_bytes(), name


def test_forked_writer_storage_error_exits_4(tiny_filesystem, tmp_path, capsys):
    code = main(["sweep", sweep_spec(tmp_path, tiny_filesystem), "--no-report"])
    err = capsys.readouterr().err

    assert code == ExitCode.STORAGE_ERROR
    assert "no space left on the device" in err
    assert not list(tiny_filesystem.rglob("result.json"))
