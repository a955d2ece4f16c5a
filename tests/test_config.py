import math

import pytest

from cubicfit.config import FitConfig, build_config, load_fit_config
from cubicfit.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "fit.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_match_design():
    config = load_fit_config(None, {})

    assert config == FitConfig()
    assert config.learning_rate == 1e-6
    assert config.iterations == 2000
    assert config.x_min == -math.pi
    assert config.dtype == "float64"


def test_torch_defaults_to_float32():
    assert load_fit_config(None, {}, {"backend": "torch"}).dtype == "float32"


def test_flags_beat_environment_beat_file(tmp_path):
    path = write(tmp_path, "learning_rate: 1e-7\niterations: 10\nseed: 4\n")
    environ = {"CUBICFIT_LEARNING_RATE": "2e-7", "CUBICFIT_ITERATIONS": "20"}

    config = load_fit_config(path, environ, {"learning_rate": "3e-7"})

    assert config.learning_rate == 3e-7
    assert config.iterations == 20
    assert config.seed == 4


def test_yaml_exponent_without_dot_is_float(tmp_path):
    assert load_fit_config(write(tmp_path, "learning_rate: 1e-6\n"), {}).learning_rate == 1e-6


def test_init_overrides_seed_in_run_id():
    with_seed_a = build_config({"init": (0.1, 0.2, 0.3, 0.4), "seed": 1})
    with_seed_b = build_config({"init": (0.1, 0.2, 0.3, 0.4), "seed": 2})

    assert with_seed_a.run_id == with_seed_b.run_id


def test_run_id_ignores_output_and_spelling():
    first = build_config({"learning_rate": 1e-6, "output": "/tmp/a"})
    second = build_config({"learning_rate": 0.000001, "output": "s3://bucket/b"})

    assert first.run_id == second.run_id
    assert build_config({"learning_rate": 2e-6}).run_id != first.run_id


def test_run_id_is_stable():
    # The id is part of the storage layout; changing it orphans every stored result.
    assert FitConfig().run_id == "0138756e2673c710"


def test_init_from_flag_text():
    config = load_fit_config(None, {}, {"init": "0.1, -0.2,0.3 0.4"})

    assert config.init == (0.1, -0.2, 0.3, 0.4)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("learnin_rate: 1e-6", "unknown field 'learnin_rate'.*did you mean 'learning_rate'"),
        ("iterations: 2000\niterations: 10", "duplicate key 'iterations'"),
        ("iterations: '2000'", "iterations: expected an integer, got the string"),
        ("iterations: 2000.0", "iterations: 2000.0 .* is a float"),
        ("iterations: true", "iterations: expected an integer, got the boolean"),
        ("iterations: 0", "iterations: must be between 1 and"),
        ("iterations: -5", "iterations: must be between 1 and"),
        ("iterations: 100000000000", "iterations: must be between 1 and"),
        ("seed: 0755", "seed: expected an integer, got the string '0755'"),
        ("learning_rate: fast", "learning_rate: expected a number, got the string 'fast'"),
        ("learning_rate: 0", "learning_rate: must be > 0"),
        ("learning_rate: -1e-6", "learning_rate: must be > 0"),
        ("learning_rate: .nan", "learning_rate: .* is not a finite number"),
        ("learning_rate: .inf", "learning_rate: .* is not a finite number"),
        ("backend: jax", "backend: unknown value 'jax'.*numpy, torch, torch-autograd"),
        ("backend: no", "backend: unknown value 'no'"),
        ("device: gpu", "device: invalid device"),
        ("device: cuda:x", "device: invalid device"),
        ("device: cuda\nbackend: numpy", "numpy runs only on the CPU"),
        ("dtype: float16", "dtype: unknown value 'float16'"),
        ("init: [1, 2, 3]", "init: expected 4 start values"),
        ("init: [1, 2, 3, .nan]", r"init\[3\]: .* is not a finite number"),
        ("init: 5", "init: expected a list of 4 numbers"),
        ("n_points: 3", "n_points: must be between 4 and"),
        ("x_min: 1\nx_max: -1", "x_min: must be less than x_max"),
        ("x_max: 1e300", r"\|x\| must be at most 1e6"),
        ("target: sinh", "target: unknown value 'sinh'"),
        ("log_every: 0", "log_every: must be between 1 and"),
        ("output: ''", "output: expected a local folder or s3://bucket/prefix"),
        ("output: gs://bucket/x", "unsupported URL scheme"),
        ("output: s3://Bad_Bucket/x", "invalid bucket name 'Bad_Bucket'"),
        ("output: s3://bucket/../escape", "'..' path segments are not allowed"),
        ("- 1\n- 2", "expected a mapping"),
        ("learning_rate: !!python/object/apply:os.system ['true']", "not allowed"),
    ],
)
def test_bad_file_values(tmp_path, yaml_text, message):
    with pytest.raises(ConfigError, match=message):
        load_fit_config(write(tmp_path, yaml_text), {})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CUBICFIT_LEARNING_RATE": "1e-6x"}, "environment variable CUBICFIT_LEARNING_RATE"),
        ({"CUBICFIT_ITERATIONS": "010"}, "not an integer.*no leading zeros"),
        ({"CUBICFIT_ITERATIONS": "1e3"}, "not an integer"),
        ({"CUBICFIT_LEARNING_RATE": "nan"}, "not a finite number"),
        ({"CUBICFIT_ITERATION": "10"}, "unknown environment variable CUBICFIT_ITERATION.*"
                                       "CUBICFIT_ITERATIONS"),
    ],
)
def test_bad_environment_values(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_fit_config(None, environ)


def test_missing_file_names_path(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_fit_config(str(tmp_path / "nope.yaml"), {})


def test_empty_file_gives_defaults(tmp_path):
    assert load_fit_config(write(tmp_path, ""), {}) == FitConfig()


def test_kubernetes_service_links_are_ignored():
    environ = {"CUBICFIT_SERVICE_HOST": "10.0.0.1", "CUBICFIT_SERVICE_PORT": "80",
               "CUBICFIT_PORT": "tcp://10.0.0.1:80", "CUBICFIT_PORT_80_TCP_ADDR": "10.0.0.1",
               "CUBICFIT_MINIO_SERVICE_HOST": "10.0.0.2"}

    assert load_fit_config(None, environ) == FitConfig()


@pytest.mark.parametrize(
    ("path_text", "environ", "flags", "message"),
    [
        ("seed: -1", {}, {}, "seed: must be between 0 and .* from .*fit.yaml"),
        ("", {"CUBICFIT_SEED": "-1"}, {}, "from environment variable CUBICFIT_SEED"),
        ("", {}, {"iterations": "0"}, "iterations: must be between 1 .* from flag --iterations"),
        ("x_min: 2", {}, {"x_max": "1"}, "from .*fit.yaml and flag --x-max"),
    ],
)
def test_range_errors_name_their_source(tmp_path, path_text, environ, flags, message):
    with pytest.raises(ConfigError, match=message):
        load_fit_config(write(tmp_path, path_text), environ, flags)
