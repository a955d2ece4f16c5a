import json
import subprocess
import sys

import pytest

from cubicfit.errors import ConfigError
from cubicfit.sweep.spec import MAX_GRID_POINTS, parse_sweep_spec

SPEC = {
    "name": "lr-study",
    "base": {"iterations": 100},
    "grid": {"learning_rate": [1e-7, 1e-6, 0.000001, 3e-6], "seed": [0, 1, 2],
             "backend": ["numpy", "torch"]},
}


def test_duplicates_collapse_in_first_position():
    points = parse_sweep_spec(SPEC, "spec").expand()

    assert len(points) == 3 * 3 * 2
    assert [point.index for point in points] == list(range(18))
    assert [point.values["learning_rate"] for point in points[:6]] == [1e-7] * 6
    assert len({point.config.run_id for point in points}) == 18


def test_expansion_order_follows_spec():
    points = parse_sweep_spec(SPEC, "spec").expand()

    assert points[0].values == {"learning_rate": 1e-7, "seed": 0, "backend": "numpy"}
    assert points[1].values == {"learning_rate": 1e-7, "seed": 0, "backend": "torch"}
    assert points[2].values == {"learning_rate": 1e-7, "seed": 1, "backend": "numpy"}


def test_expansion_is_identical_across_processes(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    script = (
        "import json, sys\n"
        "from cubicfit.sweep.spec import load_sweep_spec\n"
        "spec = load_sweep_spec(sys.argv[1])\n"
        "print(json.dumps([p.config.run_id for p in spec.expand()] + [spec.sweep_id]))\n"
    )
    outputs = [
        subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                       check=True, env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout
        for seed in (1, 2)
    ]
    in_process = parse_sweep_spec(SPEC, "spec")

    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0]) == [p.config.run_id for p in in_process.expand()] + ["lr-study"]


def test_unnamed_sweep_id_is_hash_of_spec():
    unnamed = {key: value for key, value in SPEC.items() if key != "name"}
    first = parse_sweep_spec(unnamed, "spec").sweep_id
    changed = parse_sweep_spec({**unnamed, "base": {"iterations": 200}}, "spec").sweep_id

    assert first.startswith("sweep-")
    assert first == parse_sweep_spec(unnamed, "spec").sweep_id
    assert first != changed


def test_points_equal_single_run_configs():
    from cubicfit.config import load_fit_config

    point = parse_sweep_spec(SPEC, "spec").expand()[5]
    solo = load_fit_config(None, {}, {"iterations": "100", "learning_rate": "1e-7",
                                      "seed": "2", "backend": "torch"})

    assert point.config.run_id == solo.run_id


def test_environment_and_flags_layer_over_base():
    spec = parse_sweep_spec(SPEC, "spec", {"CUBICFIT_ITERATIONS": "50"}, {"output": "/tmp/x"})

    assert spec.base["iterations"] == 50
    assert spec.output == "/tmp/x"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"grid": {}}, "grid is missing or empty"),
        ({"base": {}}, "grid is missing or empty"),
        ({"grid": {"learning_rate": []}}, "'learning_rate' needs a non-empty list"),
        ({"grid": {"learning_rate": 1e-6}}, "'learning_rate' needs a non-empty list"),
        ({"grid": {"learnig_rate": [1e-6]}}, "unknown field 'learnig_rate'"),
        ({"grid": {"output": ["/a", "/b"]}}, "'output' cannot vary"),
        ({"grid": {"learning_rate": [-1e-6]}}, "learning_rate: must be > 0"),
        ({"grid": {"learning_rate": ["fast"]}}, "expected a number"),
        ({"grid": {"device": ["auto"], "backend": ["torch"]}}, "device auto is not allowed"),
        ({"grid": {"device": ["cuda"]}}, "numpy runs only on the CPU"),
        ({"base": {"colour": 1}, "grid": {"seed": [1]}}, "unknown field 'colour'"),
        ({"grids": {"seed": [1]}}, "unknown key 'grids'"),
        ({"name": "bad name!", "grid": {"seed": [1]}}, "name 'bad name!' is invalid"),
        ([1, 2], "a sweep spec is a mapping"),
        ({"grid": {"seed": list(range(MAX_GRID_POINTS)), "iterations": [1, 2]}},
         "more than the limit"),
    ],
)
def test_invalid_specs(document, message):
    with pytest.raises(ConfigError, match=message):
        parse_sweep_spec(document, "spec.yaml").expand()


def test_auto_device_from_environment_is_rejected():
    with pytest.raises(ConfigError, match="device auto is not allowed"):
        parse_sweep_spec({"base": {"backend": "torch"}, "grid": {"seed": [1]}}, "spec",
                         {"CUBICFIT_DEVICE": "auto"})


def test_field_in_base_and_grid_is_rejected():
    with pytest.raises(ConfigError, match="'seed' is set in base and varies in grid"):
        parse_sweep_spec({"base": {"seed": 3}, "grid": {"seed": [1, 2]}}, "spec")


def test_grid_field_also_in_environment_is_rejected():
    with pytest.raises(ConfigError, match="varies in the grid"):
        parse_sweep_spec(SPEC, "spec", {"CUBICFIT_SEED": "3"})
