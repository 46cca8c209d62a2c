"""vLLM engine arguments from the run configuration (`--engine-option KEY=VALUE`,
`engine_options:` in a run config or the flow's `config`): checked against vLLM's own
EngineArgs (unknown keys and wrong types exit 2 naming the option), handed to the engine,
and fingerprinted only where they can change the rows."""

from __future__ import annotations

import pytest
import yaml

from personaloom.cli import main
from personaloom.engine.options import SPEED_ONLY, parse_option
from personaloom.errors import UserError
from personaloom.run.config import RunConfig
from personaloom.run.pipeline import engine_spec


def test_values_are_read_as_yaml_scalars():
    assert parse_option("tensor_parallel_size=4") == ("tensor_parallel_size", 4)
    assert parse_option("gpu_memory_utilization=0.9") == ("gpu_memory_utilization", 0.9)
    assert parse_option("enable_prefix_caching=false") == ("enable_prefix_caching", False)
    assert parse_option("quantization=fp8") == ("quantization", "fp8")
    with pytest.raises(UserError, match=r"--engine-option tp4: expected KEY=VALUE"):
        parse_option("tp4")


def test_options_reach_the_resolved_config_over_the_config_file(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("engine_options:\n  max_num_seqs: 8\n  dtype: float32\n")
    args = ["generate", "--out", str(tmp_path / "c"), "--dry-run", "--config", str(config)]
    args += ["--engine-option", "max_num_seqs=32", "--engine-option", "enable_prefix_caching=true"]
    assert main(args) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["engine_options"] == {
        "max_num_seqs": 32,
        "dtype": "float32",
        "enable_prefix_caching": True,
    }
    assert RunConfig.from_yaml(RunConfig.from_dict(resolved).to_yaml()) == RunConfig.from_dict(
        resolved
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            "tensor_paralel_size=2",
            "--engine-option tensor_paralel_size: not a vLLM engine argument (did you mean "
            "tensor_parallel_size",
        ),
        ("gpu_memory_utilization=lots", "--engine-option gpu_memory_utilization='lots': "),
        ("max_num_seqs=[1, 2]", "--engine-option max_num_seqs=[1, 2]: "),
        ("seed=3", "--engine-option seed: set by personaloom"),
        ("model=other", "--engine-option model: set by personaloom (use --model)"),
    ],
)
def test_a_bad_option_exits_2_naming_it_and_writes_nothing(tmp_path, capsys, option, message):
    out = tmp_path / "corpus"
    assert main(["generate", "--out", str(out), "--engine-option", option]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_options_are_for_the_vllm_engine_only(tmp_path, capsys):
    out = tmp_path / "corpus"
    args = ["--engine", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]
    assert main(["generate", "--out", str(out), *args, "--engine-option", "max_num_seqs=4"]) == 2
    assert "--engine-option max_num_seqs: engine options are vLLM engine arguments" in (
        capsys.readouterr().err
    )


def test_the_engine_gets_the_options_and_max_model_len_its_own_field():
    config = RunConfig(engine_options={"max_model_len": 8192, "tensor_parallel_size": 4})
    spec = engine_spec(config)
    assert spec.max_model_len == 8192
    assert spec.extra == {"tensor_parallel_size": 4}
    assert engine_spec(RunConfig()).extra == {}


def test_speed_options_may_change_on_resume_and_output_options_may_not():
    hashes = {"taxonomy": "t"}
    plain = RunConfig().fingerprint(hashes)
    fast = RunConfig(engine_options={k: 1 for k in ("max_num_seqs", "tensor_parallel_size")})
    assert {"max_num_seqs", "tensor_parallel_size"} <= SPEED_ONLY
    assert fast.fingerprint(hashes) == plain
    for option in ({"dtype": "float16"}, {"quantization": "fp8"}, {"max_model_len": 2048}):
        assert RunConfig(engine_options=option).fingerprint(hashes) != plain
