import pytest

from personaloom.errors import UserError
from personaloom.run.config import RunConfig, ShardSpec


def test_run_config_round_trips_through_yaml():
    config = RunConfig(
        personas=12, sessions=3, seed=7, shard=ShardSpec(index=1, count=3), quotas=["a.b=uniform"]
    )
    assert RunConfig.from_yaml(config.to_yaml()) == config


def test_fingerprint_changes_with_output_relevant_settings_only():
    base = RunConfig()
    hashes = {"taxonomy": "x"}
    assert base.fingerprint(hashes) == RunConfig().fingerprint(hashes)
    assert base.fingerprint(hashes) != RunConfig(seed=1).fingerprint(hashes)
    assert base.fingerprint(hashes) != RunConfig(model="other/model").fingerprint(hashes)
    assert base.fingerprint(hashes) != base.fingerprint({"taxonomy": "y"})


@pytest.mark.parametrize("text", ["1", "3/3", "-1/2", "a/b", "1/0", "0/1/2"])
def test_bad_shard_names_the_option(text):
    with pytest.raises(UserError, match="--shard"):
        ShardSpec.parse(text)


@pytest.mark.parametrize(
    ("field", "value", "option"),
    [
        ("personas", 0, "--personas"),
        ("sessions", 61, "--sessions"),
        ("engine", "tgi", "--engine"),
        ("turns", -1, "--turns"),
    ],
)
def test_bad_option_values_name_the_option(field, value, option):
    with pytest.raises(UserError, match=option):
        RunConfig.from_dict({field: value})


def test_unknown_key_in_config_file_names_file_and_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("personas: 3\npersonaz: 4\n")
    with pytest.raises(UserError, match=r"run.yaml: personaz"):
        RunConfig.load(path)


def test_config_file_yaml_error_names_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("personas: 3\nseed: [1,\n")
    with pytest.raises(UserError, match=r"run.yaml:\d+: invalid YAML"):
        RunConfig.load(path)


def test_options_added_since_fingerprint_version_2_leave_older_runs_resumable():
    """Computed with the RunConfig of a780fa5 (before engine options, judge model, turn
    tokens, concurrency and critic-bias settings): unset, the new options keep the hash.
    The batch size is fingerprinted resolved (`pipeline.resolve_batch_size`): an older run
    recorded the old default 64, which its resume takes again (tested below)."""
    from personaloom.run.config import RunConfig

    hashes = {"taxonomy": "abc", "prompts": "def"}
    assert RunConfig(batch_size=64).fingerprint(hashes) == "11bfb3724f783c47"
    assert (
        RunConfig(personas=5, sessions=3, batch_size=64).fingerprint(hashes) == "6064c356db027178"
    )
    assert RunConfig(max_tokens_turn=40, batch_size=64).fingerprint(hashes) != "11bfb3724f783c47"


def test_the_batch_size_is_derived_from_the_engine_recorded_and_kept_on_resume(tmp_path):
    from personaloom.run.config import RunConfig
    from personaloom.run.pipeline import VLLM_MAX_NUM_SEQS, resolve_batch_size
    from personaloom.state.run_state import RunState

    out = tmp_path / "run"
    assert resolve_batch_size(RunConfig(), out, False).batch_size == VLLM_MAX_NUM_SEQS == 256
    seqs = RunConfig(engine_options={"max_num_seqs": 48})
    assert resolve_batch_size(seqs, out, False).batch_size == 48
    served = RunConfig(engine="openai", base_url="http://127.0.0.1:1", concurrency=24)
    assert resolve_batch_size(served, out, False).batch_size == 24
    assert resolve_batch_size(RunConfig(batch_size=5), out, False).batch_size == 5
    # a run's folder records the resolved size; its resume keeps it although max_num_seqs
    # (a speed-only option) changed, and --restart derives it again
    state = RunState(out)
    state.root.mkdir(parents=True)
    state.write_manifest({"config": resolve_batch_size(seqs, out, False).model_dump(mode="json")})
    changed = RunConfig(engine_options={"max_num_seqs": 96})
    assert resolve_batch_size(changed, out, False).batch_size == 48
    assert resolve_batch_size(changed, out, True).batch_size == 96
    # an older run recorded the old default 64
    state.write_manifest({"config": {"batch_size": 64}})
    assert resolve_batch_size(RunConfig(), out, False).batch_size == 64
