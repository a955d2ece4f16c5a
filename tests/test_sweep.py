import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from cubicfit.cli import main
from cubicfit.exitcodes import ExitCode
from cubicfit.results import parse_losses_csv


def write_spec(tmp_path, grid, base=None, name="study"):
    spec = {"name": name, "base": {"output": str(tmp_path / "out"), **(base or {})}, "grid": grid}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return str(path)


def finished_ids(root: Path) -> set[str]:
    return {path.parent.name for path in (root / "runs").glob("*/result.json")}


MIXED_GRID = {"learning_rate": [1e-7, 1e-6, 3e-6, 5e-6, 1e-5],
              "iterations": [300, 700], "seed": [0, 1]}


def test_batched_members_equal_solo_runs(tmp_path, capsys):
    spec = write_spec(tmp_path, MIXED_GRID)
    assert main(["sweep", spec]) == ExitCode.OK
    err = capsys.readouterr().err
    assert "fitting 20 run(s)" in err

    sweep = json.loads((tmp_path / "out/sweeps/study/sweep.json").read_text())
    assert sweep["point_count"] == 20
    statuses = set()
    for point in sweep["points"]:
        values = point["values"]
        solo_root = tmp_path / "solo"
        code = main(["run", "--output", str(solo_root), "--learning-rate",
                     repr(values["learning_rate"]), "--iterations", str(values["iterations"]),
                     "--seed", str(values["seed"])])
        capsys.readouterr()
        batched = tmp_path / "out/runs" / point["run_id"]
        solo = solo_root / "runs" / point["run_id"]
        batched_result = json.loads((batched / "result.json").read_text())
        solo_result = json.loads((solo / "result.json").read_text())
        statuses.add(batched_result["status"])

        expected_code = ExitCode.DIVERGED if solo_result["status"] == "diverged" else ExitCode.OK
        assert code == expected_code
        assert batched_result["status"] == solo_result["status"]
        assert batched_result["diverged_at_step"] == solo_result["diverged_at_step"]
        assert batched_result["batch_size"] == 20
        np.testing.assert_allclose(
            list(batched_result["coefficients"].values()),
            list(solo_result["coefficients"].values()), rtol=1e-9)
        np.testing.assert_allclose(parse_losses_csv((batched / "losses.csv").read_bytes()),
                                   parse_losses_csv((solo / "losses.csv").read_bytes()),
                                   rtol=1e-9)
    assert statuses == {"succeeded", "diverged"}


def test_diverged_only_above_stability_bound(tmp_path, capsys):
    spec = write_spec(tmp_path, MIXED_GRID)
    main(["sweep", spec])
    capsys.readouterr()

    for path in (tmp_path / "out/runs").glob("*/result.json"):
        result = json.loads(path.read_text())
        if result["iterations"] < 700:
            continue  # too few steps for 5e-6 (1.4x the bound) to overflow
        above = result["learning_rate"] > result["stability_bound"]
        assert (result["status"] == "diverged") == above, result["learning_rate"]


def test_shards_run_each_point_once(tmp_path, capsys):
    spec = write_spec(tmp_path, {"learning_rate": [1e-6, 2e-6, 3e-6], "seed": [0, 1, 2, 3]},
                      base={"iterations": 50})
    root = tmp_path / "out"
    seen: set[str] = set()
    for index in range(3):
        assert main(["sweep", spec, "--shard-index", str(index), "--shard-count", "3"]) == 0
        now = finished_ids(root)
        added = now - seen
        assert len(added) == 4
        assert seen <= now
        seen = now
    err = capsys.readouterr().err

    assert len(seen) == 12
    assert err.count("have no result yet (other shards)") == 2
    assert (root / "sweeps/study/report.md").exists()


def test_indexed_job_variables_select_shard(tmp_path, capsys, monkeypatch):
    spec = write_spec(tmp_path, {"seed": [0, 1, 2, 3, 4]}, base={"iterations": 20})
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.setenv("CUBICFIT_SHARD_COUNT", "2")

    assert main(["sweep", spec]) == ExitCode.OK
    assert len(finished_ids(tmp_path / "out")) == 2

    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    assert main(["sweep", spec]) == ExitCode.INVALID_CONFIG
    assert "out of range" in capsys.readouterr().err


def test_rerun_runs_nothing_and_says_so(tmp_path, capsys):
    spec = write_spec(tmp_path, {"seed": [0, 1, 2]}, base={"iterations": 50})
    main(["sweep", spec])
    capsys.readouterr()
    stamps = {path: path.stat().st_mtime_ns for path in (tmp_path / "out/runs").rglob("*")}

    assert main(["sweep", spec]) == ExitCode.OK
    err = capsys.readouterr().err

    assert "all 3 runs already finished; nothing to run" in err
    assert "fitting" not in err
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps


def test_report_matches_result_files(tmp_path, capsys):
    spec = write_spec(tmp_path, MIXED_GRID)
    main(["sweep", spec])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    folder = tmp_path / "out/sweeps/study"

    rows = list(csv.DictReader(io.StringIO((folder / "summary.csv").read_text())))
    assert len(rows) == 20
    for row in rows:
        result = json.loads((tmp_path / "out/runs" / row["run_id"] / "result.json").read_text())
        assert row["status"] == result["status"]
        if result["status"] == "succeeded":
            assert float(row["final_loss"]) == result["final_loss"]
            assert float(row["optimality_gap"]) == result["optimality_gap"]
        else:
            assert int(row["diverged_at_step"]) == result["diverged_at_step"]

    succeeded = [row for row in rows if row["status"] == "succeeded"]
    best = min(succeeded, key=lambda row: float(row["final_loss"]))
    report = (folder / "report.md").read_text()
    assert summary["best_run_id"] == best["run_id"]
    assert f"| 1 | `{best['run_id']}` |" in report
    assert "Stability bound" in report
    assert "- 1e-05, 2.81x the stability bound" in report
    assert (folder / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_command_rebuilds_from_storage(tmp_path, capsys):
    spec = write_spec(tmp_path, {"seed": [0, 1]}, base={"iterations": 30})
    main(["sweep", spec, "--no-report"])
    folder = tmp_path / "out/sweeps/study"
    assert not (folder / "report.md").exists()

    assert main(["report", spec]) == ExitCode.OK
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    assert summary["runs"] == 2
    assert summary["missing"] == 0
    assert (folder / "summary.csv").exists()


def test_report_marks_missing_runs(tmp_path, capsys):
    spec = write_spec(tmp_path, {"seed": [0, 1, 2, 3]}, base={"iterations": 30})
    main(["sweep", spec, "--shard-index", "0", "--shard-count", "2"])

    assert main(["report", spec]) == ExitCode.OK
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["missing"] == 2
    assert "## Runs without a result" in (tmp_path / "out/sweeps/study/report.md").read_text()


def test_plan_writes_nothing(tmp_path, capsys):
    spec = write_spec(tmp_path, {"learning_rate": [1e-6, 0.000001, 2e-6]})

    assert main(["plan", spec]) == ExitCode.OK
    out = capsys.readouterr().out

    assert not (tmp_path / "out").exists()
    lines = out.strip().splitlines()
    assert lines[0].split() == ["run_id", "learning_rate", "batch", "finished"]
    assert len(lines) == 1 + 2 + 2
    assert "2 points, 0 finished, 2 to run in 1 batch(es)" in out


def test_plan_shows_finished_points(tmp_path, capsys):
    spec = write_spec(tmp_path, {"seed": [0, 1]}, base={"iterations": 20})
    main(["sweep", spec, "--shard-index", "0", "--shard-count", "2"])
    capsys.readouterr()

    main(["plan", spec, "--format", "json"])
    plan = json.loads(capsys.readouterr().out)

    assert [point["finished"] for point in plan["points"]] == [True, False]


def test_run_ids_select_batch(tmp_path, capsys):
    spec = write_spec(tmp_path, {"seed": [0, 1, 2]}, base={"iterations": 20})
    main(["plan", spec, "--format", "json"])
    ids = [point["run_id"] for point in json.loads(capsys.readouterr().out)["points"]]

    assert main(["sweep", spec, "--run-ids", ",".join(ids[1:])]) == ExitCode.OK
    assert finished_ids(tmp_path / "out") == set(ids[1:])
    assert main(["sweep", spec, "--run-ids", "0123456789abcdef"]) == ExitCode.INVALID_CONFIG
    assert "'0123456789abcdef' is not a point of sweep study" in capsys.readouterr().err


def test_unknown_run_id_writes_nothing(tmp_path, capsys):
    spec = write_spec(tmp_path, {"seed": [0, 1]}, base={"iterations": 20})

    assert main(["sweep", spec, "--run-ids", "0123456789abcdef"]) == ExitCode.INVALID_CONFIG
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give either a spec file or --spec-text"),
        (["--spec-text", "{grid: {}}"], "grid is missing or empty"),
        (["--spec-text", "{grid: {seed: [1]}}", "--shard-index", "3", "--shard-count", "2"],
         "out of range"),
    ],
)
def test_sweep_usage_errors_exit_2(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", *args]) == ExitCode.INVALID_CONFIG
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_sweep_stdout_is_only_json(tmp_path, capsys):
    spec = write_spec(tmp_path, {"seed": [0, 1]}, base={"iterations": 20})
    main(["sweep", spec, "--shard-index", "0", "--shard-count", "2", "--no-report"])
    capsys.readouterr()

    assert main(["sweep", spec]) == ExitCode.OK
    lines = capsys.readouterr().out.strip().splitlines()

    assert len(lines) == 1
    assert json.loads(lines[0])["runs"] == 2


def test_same_name_other_spec_exits_2(tmp_path, capsys):
    first = write_spec(tmp_path, {"seed": [0, 1]}, base={"iterations": 20})
    assert main(["sweep", first, "--no-report"]) == ExitCode.OK
    second = write_spec(tmp_path, {"seed": [5]}, base={"iterations": 20})

    assert main(["sweep", second]) == ExitCode.INVALID_CONFIG
    assert "already exists" in capsys.readouterr().err
    sweep = json.loads((tmp_path / "out/sweeps/study/sweep.json").read_text())
    assert sweep["point_count"] == 2


def test_empty_run_ids_exit_2(tmp_path, capsys):
    spec = write_spec(tmp_path, {"seed": [0, 1]}, base={"iterations": 20})

    assert main(["sweep", spec, "--run-ids", " , "]) == ExitCode.INVALID_CONFIG
    assert "--run-ids is empty" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
