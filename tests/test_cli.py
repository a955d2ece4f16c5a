import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cubicfit.cli import main
from cubicfit.exitcodes import ExitCode


def result_files(root: Path) -> list[Path]:
    return sorted(root.rglob("result.json")) if root.exists() else []


def run_cli(args, tmp_path, capsys):
    code = main(["run", "--output", str(tmp_path / "out"), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_writes_layout_and_result_line(tmp_path, capsys):
    code, out, err = run_cli(["--iterations", "300"], tmp_path, capsys)

    assert code == ExitCode.OK
    assert out.startswith("y = ")
    assert " x^3" in out
    assert "step 99 loss" in err
    (result_path,) = result_files(tmp_path / "out")
    folder = result_path.parent
    assert sorted(path.name for path in folder.iterdir()) == [
        "config.json", "fit.png", "losses.csv", "result.json"]
    result = json.loads(result_path.read_text())
    assert result["status"] == "succeeded"
    assert result["run_id"] == folder.name
    assert result["steps_completed"] == 300
    assert result["optimal_loss"] == pytest.approx(8.8172, abs=1e-4)
    assert result["stability_bound"] == pytest.approx(3.558e-6, rel=1e-3)
    assert result["optimality_gap"] == pytest.approx(result["final_loss"] - result["optimal_loss"])
    assert len((folder / "losses.csv").read_text().splitlines()) == 1 + 301
    assert json.loads((folder / "config.json").read_text())["run_id"] == folder.name


def test_rerun_skips_finished_run(tmp_path, capsys):
    run_cli(["--iterations", "50"], tmp_path, capsys)
    (result_path,) = result_files(tmp_path / "out")
    before = result_path.read_bytes()

    code, out, err = run_cli(["--iterations", "50"], tmp_path, capsys)

    assert code == ExitCode.OK
    assert "already finished" in err
    assert "step 50" not in err
    assert out.startswith("y = ")
    assert result_path.read_bytes() == before


def test_force_reruns_finished_run(tmp_path, capsys):
    run_cli(["--iterations", "50"], tmp_path, capsys)
    code, _, err = run_cli(["--iterations", "50", "--force"], tmp_path, capsys)

    assert code == ExitCode.OK
    assert "already finished" not in err
    assert "step 50 loss" in err


def test_divergence_exits_5_and_records_step(tmp_path, capsys):
    code, _, err = run_cli(["--learning-rate", "1e-5"], tmp_path, capsys)

    assert code == ExitCode.DIVERGED
    assert "diverged at step 230" in err
    (result_path,) = result_files(tmp_path / "out")
    result = json.loads(result_path.read_text())
    assert result["status"] == "diverged"
    assert result["diverged_at_step"] == 230
    assert result["steps_completed"] == 230
    assert all(isinstance(value, float) for value in result["coefficients"].values())
    losses = (result_path.parent / "losses.csv").read_text().splitlines()
    assert losses[-1] in ("230,inf", "230,nan")


@pytest.mark.parametrize(
    ("args", "environ", "code", "message"),
    [
        (["--learning-rate", "abc"], {}, 2, "learning_rate: 'abc' from flag --learning-rate"),
        (["--learning-rate", "-1"], {}, 2, "learning_rate: must be > 0"),
        (["--iterations", "1.5"], {}, 2, "iterations: '1.5' from flag --iterations"),
        (["--backend", "jax"], {}, 2, "backend: unknown value 'jax'"),
        (["--device", "cuda", "--backend", "numpy"], {}, 2, "numpy runs only on the CPU"),
        (["--dtype", "half"], {}, 2, "dtype: unknown value 'half'"),
        (["--init", "1,2"], {}, 2, "init: expected 4 start values"),
        (["--x-min", "2", "--x-max", "1"], {}, 2, "x_min: must be less than x_max"),
        (["--n-points", "2"], {}, 2, "n_points: must be between 4"),
        ([], {"CUBICFIT_SEED": "-1"}, 2, "seed: must be between 0"),
        ([], {"CUBICFIT_BACKEND": "tensorflow"}, 2, "environment variable CUBICFIT_BACKEND"),
        ([], {"CUBICFIT_LERNING_RATE": "1e-6"}, 2, "unknown environment variable"),
        (["missing.yaml"], {}, 2, "missing.yaml: file not found"),
    ],
)
def test_bad_input_exit_code_and_message(tmp_path, capsys, monkeypatch, args, environ, code,
                                         message):
    monkeypatch.chdir(tmp_path)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)

    actual, _, err = run_cli(args, tmp_path, capsys)

    assert actual == code
    assert message in err
    assert not (tmp_path / "out").exists()


def test_bad_config_file_exit_2(tmp_path, capsys):
    config = tmp_path / "fit.yaml"
    config.write_text("learning_rate: 1e-6\nlearning_rate: 1e-5\n")

    code, _, err = run_cli([str(config)], tmp_path, capsys)

    assert code == ExitCode.INVALID_CONFIG
    assert "duplicate key 'learning_rate'" in err
    assert not (tmp_path / "out").exists()


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as error:
        main(["run", "--no-such-flag"])
    assert error.value.code == ExitCode.INVALID_CONFIG


def test_missing_cuda_exits_3(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")

    code, _, err = run_cli(["--backend", "torch", "--device", "cuda:1"], tmp_path, capsys)

    assert code == ExitCode.DEVICE_UNAVAILABLE
    assert "device 'cuda:1' requested" in err
    assert not (tmp_path / "out").exists()


def test_auto_device_falls_back_to_cpu(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")

    code, _, err = run_cli(["--backend", "torch", "--device", "auto", "--iterations", "20"],
                           tmp_path, capsys)

    assert code == ExitCode.OK
    assert "device auto resolved to cpu" in err
    (result_path,) = result_files(tmp_path / "out")
    assert json.loads(result_path.read_text())["device"] == "cpu"


def test_json_log_format(tmp_path, capsys):
    code = main(["run", "--output", str(tmp_path / "out"), "--iterations", "200",
                 "--log-format", "json"])
    lines = capsys.readouterr().err.strip().splitlines()

    assert code == ExitCode.OK
    records = [json.loads(line) for line in lines]
    assert any(record["message"].startswith("step 199 loss") for record in records)
    assert all(record["level"] in ("info", "warning") for record in records)


def test_quiet_hides_progress(tmp_path, capsys):
    code, out, err = run_cli(["--iterations", "200", "--quiet"], tmp_path, capsys)

    assert code == ExitCode.OK
    assert out.startswith("y = ")
    assert err == ""


def test_dry_run_writes_nothing(tmp_path, capsys):
    code, out, _ = run_cli(["--dry-run", "--learning-rate", "2e-6"], tmp_path, capsys)

    assert code == ExitCode.OK
    printed = json.loads(out)
    assert printed["learning_rate"] == 2e-6
    assert len(printed["run_id"]) == 16
    assert not (tmp_path / "out").exists()


def test_exit_codes_match_design():
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0, "INTERNAL_ERROR": 1, "INVALID_CONFIG": 2, "DEVICE_UNAVAILABLE": 3,
        "STORAGE_ERROR": 4, "DIVERGED": 5, "INTERRUPTED": 130, "TERMINATED": 143}


def test_internal_error_exits_1(tmp_path, capsys, monkeypatch):
    import cubicfit.runner

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cubicfit.runner, "fit_batch", explode)
    code, _, err = run_cli(["--iterations", "10"], tmp_path, capsys)

    assert code == ExitCode.INTERNAL_ERROR
    assert "internal error" in err
    assert "RuntimeError: boom" in err
    assert result_files(tmp_path / "out") == []


def command(*args):
    return [sys.executable, "-m", "cubicfit", *args]


def test_fresh_folder_default_output(tmp_path):
    process = subprocess.run(command("run", "--iterations", "100"), cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)

    assert process.returncode == 0, process.stderr
    assert process.stdout.startswith("y = ")
    assert len(result_files(tmp_path / "results")) == 1


@pytest.mark.parametrize("name", ["torch.py", "numpy.py"])
def test_shadowing_file_is_reported(tmp_path, name):
    shadow = tmp_path / name
    shadow.write_text("import torch\nx = torch.rand(5, 3)\n")

    process = subprocess.run(command("run"), cwd=tmp_path, capture_output=True, text=True,
                             timeout=60)

    assert process.returncode == ExitCode.INVALID_CONFIG
    assert str(shadow) in process.stderr
    assert "rename or remove it" in process.stderr
    assert "circular import" not in process.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(("signal_number", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_within_chunk(tmp_path, signal_number, code):
    process = subprocess.Popen(
        command("run", "--iterations", "5000000", "--log-every", "1000", "--output",
                str(tmp_path / "out")),
        stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if " loss " in line:
            break
    process.send_signal(signal_number)
    started = time.monotonic()
    process.wait(timeout=30)

    assert process.returncode == code
    assert time.monotonic() - started < 5
    assert result_files(tmp_path / "out") == []
    assert not list((tmp_path / "out").rglob("*.part"))


def test_environment_is_untouched_by_tests():
    assert "CUBICFIT_LEARNING_RATE" not in os.environ


def test_huge_integer_flag_exits_2(tmp_path, capsys):
    code, _, err = run_cli(["--iterations", "9" * 5000], tmp_path, capsys)

    assert code == ExitCode.INVALID_CONFIG
    assert "5000-character value from flag --iterations" in err
    assert len(err) < 500


def test_damaged_result_exits_4(tmp_path, capsys):
    run_cli(["--iterations", "20"], tmp_path, capsys)
    (result_path,) = result_files(tmp_path / "out")
    result_path.write_text("[]")

    code, _, err = run_cli(["--iterations", "20"], tmp_path, capsys)

    assert code == ExitCode.STORAGE_ERROR
    assert "is not a valid result" in err
    assert "--force" in err
    assert run_cli(["--iterations", "20", "--force"], tmp_path, capsys)[0] == ExitCode.OK


def test_invalid_log_format_variable_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CUBICFIT_LOG_FORMAT", "xml")

    code, _, err = run_cli([], tmp_path, capsys)

    assert code == ExitCode.INVALID_CONFIG
    assert "CUBICFIT_LOG_FORMAT 'xml' is invalid" in err
