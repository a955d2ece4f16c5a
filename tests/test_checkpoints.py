import json
import logging
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cubicfit.cli import main
from cubicfit.exitcodes import ExitCode

FIT = ["--iterations", "20000", "--log-every", "200", "--learning-rate", "3e-6"]


def run_folder(root: Path) -> Path:
    (folder,) = (root / "runs").iterdir()
    return folder


def outputs(folder: Path) -> dict:
    result = json.loads((folder / "result.json").read_text())
    return {"coefficients": result["coefficients"], "final_loss": result["final_loss"],
            "steps": result["steps_completed"], "losses": (folder / "losses.csv").read_bytes()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    assert main(["run", "--output", str(root), "--quiet", *FIT]) == ExitCode.OK
    return outputs(run_folder(root))


class SignalAfterProgress(logging.Handler):
    """Send a real SIGTERM to this process when the n-th progress line is logged."""

    def __init__(self, lines: int):
        super().__init__()
        self.remaining = lines

    def emit(self, record):
        if record.getMessage().startswith("step "):
            self.remaining -= 1
            if self.remaining == 0:
                os.kill(os.getpid(), signal.SIGTERM)


def interrupted_run(root: Path, lines: int, extra=(), command="run") -> int:
    """Run the command in this process and send SIGTERM after `lines` progress lines."""
    import cubicfit.logs

    handler = SignalAfterProgress(lines)
    original = cubicfit.logs.setup_logging

    def setup_and_watch(*args, **kwargs):
        original(*args, **kwargs)
        logging.getLogger("cubicfit").addHandler(handler)

    cubicfit.logs.setup_logging = setup_and_watch
    try:
        if command == "run":
            return main(["run", "--output", str(root), *FIT, *extra])
        return main([command, *extra])
    finally:
        cubicfit.logs.setup_logging = original
        logging.getLogger("cubicfit").removeHandler(handler)


def test_randomised_sigterm_resumes_exactly(tmp_path, reference, capsys):
    generator = random.Random(20261204)
    for trial in range(50):
        root = tmp_path / f"trial-{trial}"
        lines = generator.randint(1, 99)

        code = interrupted_run(root, lines)
        folder = run_folder(root)
        assert code == ExitCode.TERMINATED, f"trial {trial}: stop after {lines} lines"
        assert not (folder / "result.json").exists()
        checkpoint = json.loads((folder / "checkpoint.json").read_text())
        assert checkpoint["step"] == lines * 200 - 1

        assert main(["run", "--output", str(root), *FIT]) == ExitCode.OK
        assert outputs(folder) == reference, f"trial {trial}: stop after {lines} lines"
        assert not list(folder.glob("checkpoint*"))
        assert f"resumes from its checkpoint at step {lines * 200 - 1}" in capsys.readouterr().err


def test_periodic_checkpoint_without_signal(tmp_path, reference):
    root = tmp_path / "out"
    code = interrupted_run(root, 31, ["--checkpoint-every", "2500"])
    folder = run_folder(root)
    assert code == ExitCode.TERMINATED
    segments = sorted(path.name for path in folder.glob("checkpoint-losses-*.csv"))
    assert segments[0] == "checkpoint-losses-0-2599.csv"
    assert segments[-1].endswith("-6199.csv")
    assert len(segments) == 3

    assert main(["run", "--output", str(root), *FIT, "--checkpoint-every", "2500"]) == 0
    assert outputs(folder) == reference


def test_sigkill_rerun_recovers_from_periodic_checkpoint(tmp_path, reference):
    root = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "cubicfit", "run", "--output", str(root), *FIT,
         "--checkpoint-every", "1000", "--log-every", "1"], stderr=subprocess.PIPE, text=True)
    # One progress line per step slows the run down enough to kill it halfway.
    for line in process.stderr:
        if "checkpointed 1 run(s) at step 2999" in line:
            break
    process.kill()
    process.wait(timeout=30)
    folder = run_folder(root)
    assert process.returncode == -signal.SIGKILL
    assert not (folder / "result.json").exists()
    assert (folder / "checkpoint.json").exists()

    assert main(["run", "--output", str(root), *FIT, "--checkpoint-every", "1000"]) == 0
    assert outputs(folder) == reference


def test_force_discards_checkpoint(tmp_path, reference, capsys):
    root = tmp_path / "out"
    interrupted_run(root, 5)
    capsys.readouterr()

    assert main(["run", "--output", str(root), *FIT, "--force"]) == ExitCode.OK
    assert "resumes from" not in capsys.readouterr().err
    assert outputs(run_folder(root)) == reference


def test_broken_checkpoint_is_ignored(tmp_path, reference, capsys):
    root = tmp_path / "out"
    interrupted_run(root, 5)
    folder = run_folder(root)
    for segment in folder.glob("checkpoint-losses-*.csv"):
        segment.unlink()
    capsys.readouterr()

    assert main(["run", "--output", str(root), *FIT]) == ExitCode.OK
    assert "ignoring the unusable checkpoint" in capsys.readouterr().err
    assert outputs(folder) == reference


def test_interrupted_sweep_resumes_every_member(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "s", "base": {"output": str(tmp_path / "out"),
                                                      "iterations": 20000, "log_every": 200},
                                "grid": {"learning_rate": [1e-6, 3e-6, 1e-5],
                                         "seed": [0, 1]}}))
    reference_spec = tmp_path / "reference.json"
    document = json.loads(spec.read_text())
    document["base"]["output"] = str(tmp_path / "reference")
    reference_spec.write_text(json.dumps(document))
    assert main(["sweep", str(reference_spec), "--no-report"]) == 0

    code = interrupted_run(tmp_path, 20, [str(spec), "--no-report"], command="sweep")
    assert code == ExitCode.TERMINATED
    root = tmp_path / "out/runs"
    assert len(list(root.glob("*/result.json"))) == 2  # the diverged learning rate
    assert len(list(root.glob("*/checkpoint.json"))) == 4

    assert main(["sweep", str(spec), "--no-report"]) == 0
    for folder in (tmp_path / "reference/runs").iterdir():
        assert outputs(root / folder.name) == outputs(folder)
