"""The dataset card: YAML metadata, sections, charts, and `datasets` reading the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from huggingface_hub import DatasetCard

from personaloom.publish.card import features_yaml, render_card, sample_json, write_card
from tests.support.dataset import make_dataset, read_manifest

PNG = b"\x89PNG\r\n\x1a\n"


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pa.Table]]:
    out = tmp_path_factory.mktemp("full")
    return out, make_dataset(out)


@pytest.fixture(scope="module")
def personas_only(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pa.Table]]:
    out = tmp_path_factory.mktemp("personas-only")
    return out, make_dataset(out, sessions=0)


def test_card_yaml_has_hub_metadata_and_a_config_per_folder(full) -> None:
    out, _ = full
    meta = front_matter((out / "README.md").read_text())
    assert meta["license"] == "apache-2.0"
    assert meta["language"] == ["en"]
    assert meta["annotations_creators"] == ["machine-generated"]
    assert {"synthetic", "personas"} <= set(meta["tags"])
    assert meta["size_categories"] == ["n<1K"]
    assert "text-generation" in meta["task_categories"]
    assert meta["pretty_name"]
    assert meta["configs"] == [
        {
            "config_name": "personas",
            "data_files": [{"split": "train", "path": "personas/train-*.parquet"}],
            "default": True,
        },
        {
            "config_name": "conversations",
            "data_files": [{"split": "train", "path": "conversations/train-*.parquet"}],
        },
        {
            "config_name": "probes",
            "data_files": [{"split": "train", "path": "probes/train-*.parquet"}],
        },
    ]
    # huggingface_hub parses it back as a dataset card
    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "apache-2.0"


def test_card_has_every_section(full) -> None:
    out, _ = full
    text = (out / "README.md").read_text()
    for heading in (
        "## Dataset summary",
        "## Dataset structure",
        "## How it was generated",
        "## Statistics and quality",
        "## Charts",
        "## Personal and sensitive information",
        "## Bias, risks and limitations",
        "## Using the dataset",
    ):
        assert heading in text, heading
    assert "stereotypes" in text
    assert "PII" in text


def test_structure_shows_one_real_record_per_config(full) -> None:
    out, tables = full
    text = (out / "README.md").read_text()
    for config, table in tables.items():
        assert f"### `{config}`" in text
        first_id = table.column(0)[0].as_py()  # persona_id / conversation_id / probe_id
        assert f'"{first_id}"' in text, config


def test_generation_section_names_model_engine_taxonomy_seed_command_and_version(full) -> None:
    out, _ = full
    text = (out / "README.md").read_text()
    section = text.split("## How it was generated", 1)[1].split("## Statistics", 1)[0]
    assert "`HuggingFaceTB/SmolLM2-135M-Instruct`" in section
    assert "| engine | vllm |" in section
    assert "`human@1.0`" in section
    assert "| seed | 7 |" in section
    assert "| critic rounds | 1 |" in section
    assert "personaloom generate --out corpus --personas 12 --seed 7" in section
    assert "| personaloom version | 0.1.0 |" in section
    assert "dedup_threshold: 0.8" in section  # full settings block


def test_statistics_show_counts_rates_critics_and_metric_definitions(full) -> None:
    out, _ = full
    text = (out / "README.md").read_text()
    section = text.split("## Statistics and quality", 1)[1].split("## Charts", 1)[0]
    assert "| personas_requested | 15 |" in section
    assert "| persona yield | 80.0% | personas_kept / personas_requested |" in section
    assert "| persona duplicate rate | 7.7% |" in section  # 1 / (15 - 2)
    assert "| personas.pii | 100.0% |" in section
    assert (
        "| distinct_2 | 0.6200 | unique word bigrams / all word bigrams over narratives |"
        in section
    )
    assert "48,213 output tokens" in section


def test_charts_are_pngs_referenced_by_the_card(full) -> None:
    out, _ = full
    text = (out / "README.md").read_text()
    for name in ("demographics", "conversations", "critic"):
        png = out / "charts" / f"{name}.png"
        assert png.read_bytes().startswith(PNG)
        assert f"](charts/{name}.png)" in text
    assert "`demographics.age_band`" in text
    assert "`work.occupation`" in text


def test_usage_snippets_cover_datasets_polars_pandas_and_duckdb(full) -> None:
    out, _ = full
    usage = (out / "README.md").read_text().split("## Using the dataset", 1)[1]
    assert 'load_dataset("ORG/NAME", "probes", split="train", revision="v1.0.0")' in usage
    assert "import polars as pl" in usage
    assert "pd.read_parquet" in usage
    assert "duckdb.sql" in usage


def test_datasets_reads_every_config_of_the_folder_offline(full, tmp_path: Path) -> None:
    import datasets

    out, tables = full
    for config, table in tables.items():
        loaded = datasets.load_dataset(str(out), config, split="train", cache_dir=str(tmp_path))
        assert loaded.num_rows == table.num_rows
        assert loaded.column_names == table.column_names
        first = table.column(0).to_pylist()
        assert loaded[table.column_names[0]] == first
    probes = datasets.load_dataset(str(out), "probes", split="train", cache_dir=str(tmp_path))
    assert probes.to_list() == tables["probes"].to_pylist()


def test_map_columns_are_declared_as_json_for_datasets(full) -> None:
    out, tables = full
    features = {f["name"]: f for f in features_yaml(tables["personas"].schema)}
    assert features["scores"] == {"name": "scores", "dtype": "json"}
    assert features["persona_id"] == {"name": "persona_id", "dtype": "string"}
    meta = front_matter((out / "README.md").read_text())
    assert [i["config_name"] for i in meta["dataset_info"]] == [
        "personas",
        "conversations",
        "probes",
    ]


def test_card_without_conversations_or_probes(personas_only, tmp_path: Path) -> None:
    import datasets

    out, tables = personas_only
    text = (out / "README.md").read_text()
    meta = front_matter(text)
    assert [c["config_name"] for c in meta["configs"]] == ["personas"]
    assert "conversations" not in json.dumps(meta)
    assert "read_parquet('{root}/conversations" not in text
    assert not (out / "charts" / "conversations.png").exists()
    assert (out / "charts" / "demographics.png").exists()
    loaded = datasets.load_dataset(str(out), "personas", split="train", cache_dir=str(tmp_path))
    assert loaded["persona_id"] == tables["personas"].column("persona_id").to_pylist()


def test_writing_the_card_twice_gives_identical_files(full) -> None:
    out, _ = full
    before = {p: p.read_bytes() for p in [out / "README.md", *sorted((out / "charts").iterdir())]}
    write_card(out, read_manifest(out))
    after = {p: p.read_bytes() for p in [out / "README.md", *sorted((out / "charts").iterdir())]}
    assert after == before


def test_chart_of_an_earlier_card_is_removed_when_it_no_longer_applies(tmp_path: Path) -> None:
    make_dataset(tmp_path, sessions=0)
    assert (tmp_path / "charts" / "critic.png").exists()
    manifest = read_manifest(tmp_path)
    manifest["critic"] = {}
    write_card(tmp_path, manifest)
    assert not (tmp_path / "charts" / "critic.png").exists()
    assert "charts/critic.png" not in (tmp_path / "README.md").read_text()


def test_license_and_pretty_name_come_from_the_run_config(tmp_path: Path) -> None:
    make_dataset(tmp_path, sessions=0, card=False)
    manifest = read_manifest(tmp_path)
    manifest["config"].update(license="cc-by-4.0", pretty_name="Tiny personas")
    meta = front_matter(render_card(tmp_path, manifest))
    assert meta["license"] == "cc-by-4.0"
    assert meta["pretty_name"] == "Tiny personas"


def test_no_secret_reaches_the_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "hf_CardSecretValue0123456789"
    monkeypatch.setenv("HF_TOKEN", secret)
    make_dataset(tmp_path, sessions=0, card=False)
    manifest = read_manifest(tmp_path)
    manifest["command"] = ["personaloom", "generate", "--note", secret]
    manifest["config"]["base_url"] = "http://user:pa55word@inference.local:8000/v1"
    manifest["config"]["api_key"] = "sk-should-not-show"
    write_card(tmp_path, manifest)
    text = (tmp_path / "README.md").read_text()
    assert secret not in text
    assert "pa55word" not in text
    assert "sk-should-not-show" not in text
    assert "http://***@inference.local:8000/v1" in text


def test_sample_record_cuts_long_strings_and_lists() -> None:
    record = {
        "narrative": "x" * 1000,
        "attributes": [{"path": f"a.{i}", "value": "v"} for i in range(40)],
    }
    text = sample_json(record)
    assert "x" * 240 + "…" in text and "x" * 241 not in text
    assert '"… 34 more"' in text
    assert text.count('"path"') == 6


def test_critic_rates_fall_back_to_the_metrics_acceptance(tmp_path: Path) -> None:
    make_dataset(tmp_path, sessions=0, card=False)
    manifest = read_manifest(tmp_path)
    manifest["critic"] = {}
    manifest["metrics"] = {"acceptance_by_critic": {"persona": {"pii": 0.99}}, "definitions": {}}
    write_card(tmp_path, manifest)
    assert "| persona.pii | 99.0% |" in (tmp_path / "README.md").read_text()
    assert (tmp_path / "charts" / "critic.png").exists()


def test_token_limits_are_settings_and_credentials_are_scrubbed():
    from personaloom.publish.card import _scrub

    settings = {"max_tokens_section": 48, "max_tokens_turn": 40, "hf_token": "x", "api_key": "y"}
    assert _scrub(settings) == {
        "max_tokens_section": 48,
        "max_tokens_turn": 40,
        "hf_token": "***",
        "api_key": "***",
    }
