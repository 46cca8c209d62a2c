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
    tokens, concurrency and critic-bias settings): unset, the new options keep the hash."""
    from personaloom.run.config import RunConfig

    hashes = {"taxonomy": "abc", "prompts": "def"}
    assert RunConfig().fingerprint(hashes) == "11bfb3724f783c47"
    assert RunConfig(personas=5, sessions=3).fingerprint(hashes) == "6064c356db027178"
    assert RunConfig(max_tokens_turn=40).fingerprint(hashes) != "11bfb3724f783c47"
