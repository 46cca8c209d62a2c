"""`personaloom critique`: the rule critics over a file, and the labelled set they must decide.

tests/data/critique/ holds hand-written personas and sessions (`build_cases.py` writes
them): planted contradictions of name, pronoun, age, numbers and place, role confusion and
repetition (digit-varied and word for word), and consistent controls of the same length.
Every case is run through the command line and must be decided as its label says.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from personaloom import schema as S
from personaloom.cli import main
from personaloom.critic.rule_critics import words

DATA = Path(__file__).resolve().parent / "data" / "critique"
PERSONAS = DATA / "personas.jsonl"
CONVERSATIONS = DATA / "conversations.jsonl"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


LABELS = read_jsonl(DATA / "labels.jsonl")


def critique(tmp_path: Path, *args: str) -> list[dict]:
    out = tmp_path / "verdicts.parquet"
    assert main(["critique", *args, "--out", str(out)]) == 0
    return pq.read_table(out).to_pylist()


def failures(rows: list[dict]) -> dict[str, dict[str, str]]:
    """record id -> {critic: reason code} of the critics that failed it."""
    out: dict[str, dict[str, str]] = {r["record_id"]: {} for r in rows}
    for row in rows:
        if not row["passed"]:
            out[row["record_id"]][row["critic"]] = row["reason"]
    return out


# -- the labelled set ------------------------------------------------------------------------
def test_labelled_set_plants_every_kind_of_contradiction_with_controls():
    planted = Counter(label["critic"] for label in LABELS if label["critic"])
    reasons = Counter(label["reason"] for label in LABELS if label["critic"])
    controls = [label for label in LABELS if not label["critic"]]
    assert len(LABELS) >= 60
    assert planted["name_consistency"] >= 6 and planted["pronoun_consistency"] >= 6
    assert planted["role_consistency"] >= 6 and planted["gopher_repetition"] >= 8
    for code in ("age_mismatch", "birth_year_mismatch", "children_mismatch", "income_mismatch"):
        assert reasons[code] >= 1, code
    for code in ("location_mismatch", "settlement_mismatch", "years_in_job_mismatch"):
        assert reasons[code] >= 2, code
    assert {label["kind"] for label in controls} == {"persona", "conversation"}
    assert len(controls) >= 20
    # the two sessions of the issue: the digit-varied loop and the user playing the assistant
    by_id = {label["record_id"]: label for label in LABELS}
    assert by_id["repeat-match-made-lines"]["critic"] == "gopher_repetition"
    assert by_id["role-user-is-assistant"]["critic"] == "role_consistency"


def test_planted_cases_are_as_long_as_their_controls():
    def mean_words(records: list[dict], key: str, controls: bool) -> float:
        labels = {label["record_id"]: label for label in LABELS}
        lengths = [
            len(words(json.dumps(r.get("sections") or r.get("turns"))))
            for r in records
            if (labels[r[key]]["critic"] is None) == controls
        ]
        return sum(lengths) / len(lengths)

    for path, key in ((PERSONAS, "persona_id"), (CONVERSATIONS, "conversation_id")):
        records = read_jsonl(path)
        planted, control = mean_words(records, key, False), mean_words(records, key, True)
        assert 0.8 <= planted / control <= 1.25, (path.name, planted, control)


def test_every_labelled_case_is_decided_right_through_critique(tmp_path):
    persona_rows = critique(tmp_path / "p", str(PERSONAS), "--kind", "persona")
    conversation_rows = critique(
        tmp_path / "c", str(CONVERSATIONS), "--kind", "conversation", "--personas", str(PERSONAS)
    )
    got = {
        "persona": failures(persona_rows),
        "conversation": failures(conversation_rows),
    }
    wrong = []
    for label in LABELS:
        failed = got[label["kind"]][label["record_id"]]
        expected = dict(label["also"])
        if label["critic"]:
            expected[label["critic"]] = label["reason"]
        must = {label["critic"]: label["reason"]} if label["critic"] else {}
        ok = all(failed.get(c) == r for c, r in must.items()) and all(
            expected.get(c) == r for c, r in failed.items()
        )
        if not ok:
            wrong.append(f"{label['record_id']}: expected {expected or 'pass'}, got {failed}")
    assert not wrong, "\n".join(wrong)
    assert len(got["persona"]) + len(got["conversation"]) == len(LABELS)


def test_verdicts_hold_one_row_per_record_and_critic_with_the_evidence(tmp_path):
    rows = critique(tmp_path, str(PERSONAS), "--kind", "persona")
    per_record = Counter(r["record_id"] for r in rows)
    assert set(per_record.values()) == {len(rows) // len(per_record)}  # every critic, once
    (row,) = [r for r in rows if r["record_id"] == "name-meet" and not r["passed"]]
    assert row["critic"] == "name_consistency" and row["reason"] == "other_name"
    assert row["evidence"].startswith("the persona is called 'Jordan'; name is 'Alex Rivera'")
    assert "(in sections.daily_life: 'Meet Jordan, a graphic designer" in row["evidence"]
    assert row["mode"] == "auto" and row["score"] == 1.0  # validators/critics.yaml
    passed = [r for r in rows if r["passed"]]
    assert all(r["reason"] == "" and r["evidence"] == "" for r in passed)


def test_critique_prints_acceptance_per_critic(tmp_path, capsys):
    critique(tmp_path, str(PERSONAS), "--kind", "persona")
    out = capsys.readouterr().out
    n = len(read_jsonl(PERSONAS))
    assert f"{n} persona records" in out
    for critic in ("pronoun_consistency", "name_consistency", "gopher_repetition"):
        line = next(line for line in out.splitlines() if critic in line)
        assert f"{n}" in line and "%" in line


# -- Parquet and dataset folders -------------------------------------------------------------
def to_parquet(records: list[dict], schema: pa.Schema, path: Path) -> None:
    from datetime import datetime

    rows = []
    for record in records:
        row = {name: record.get(name) for name in schema.names}
        if isinstance(row.get("sections"), dict):
            row["sections"] = list(row["sections"].items())
        if isinstance(row.get("scores"), dict):
            row["scores"] = list(row["scores"].items())
        if isinstance(row.get("timestamp"), str):
            row["timestamp"] = datetime.fromisoformat(row["timestamp"])
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def test_critique_reads_a_released_dataset_folder(tmp_path):
    folder = tmp_path / "corpus"
    personas = folder / "personas" / "train-00000-of-00001.parquet"
    conversations = folder / "conversations" / "train-00000-of-00001.parquet"
    to_parquet(read_jsonl(PERSONAS), S.PERSONAS, personas)
    to_parquet(read_jsonl(CONVERSATIONS), S.CONVERSATIONS, conversations)
    from_parquet = failures(critique(tmp_path / "p", str(personas), "--kind", "persona"))
    from_jsonl = failures(critique(tmp_path / "j", str(PERSONAS), "--kind", "persona"))
    assert from_parquet == from_jsonl
    # no --personas: the conversations' personas come from ../personas/ of the folder
    rows = failures(critique(tmp_path / "c", str(conversations), "--kind", "conversation"))
    assert rows["user-age"] == {"attribute_consistency": "age_mismatch"}
    assert rows["user-other-name"] == {"name_consistency": "other_name"}


def test_without_personas_the_conversations_are_only_compared_with_themselves(tmp_path, capsys):
    rows = failures(critique(tmp_path, str(CONVERSATIONS), "--kind", "conversation"))
    assert rows["user-age"] == {}  # nothing to compare the user's age with
    assert rows["role-user-is-assistant"] == {"role_consistency": "user_speaks_as_assistant"}
    assert "no personas given" in capsys.readouterr().out


# -- bad input -------------------------------------------------------------------------------
def test_a_jsonl_record_without_a_needed_column_exits_2_naming_it(tmp_path, capsys):
    records = read_jsonl(CONVERSATIONS)[:3]
    del records[1]["turns"]
    path = tmp_path / "sessions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "verdicts.parquet"
    code = main(["critique", str(path), "--kind", "conversation", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{path}:2: no column 'turns', needed for --kind conversation" in err
    assert not out.exists()


def test_a_parquet_file_without_a_needed_column_exits_2_naming_it(tmp_path, capsys):
    path = tmp_path / "personas.parquet"
    records = read_jsonl(PERSONAS)[:2]
    table = pa.Table.from_pylist(
        [{"persona_id": r["persona_id"], "narrative": r["narrative"]} for r in records]
    )
    pq.write_table(table, path)
    out = tmp_path / "verdicts.parquet"
    code = main(["critique", str(path), "--kind", "persona", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{path}: no column 'attributes', needed for --kind persona" in err
    assert "the file has: persona_id, narrative" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text('{"persona_id": "x"\n'), ":1: not a JSON object"),
        (lambda p: p.write_text("[1, 2]\n"), ":1: expected a JSON object, got list"),
    ],
)
def test_an_unreadable_file_exits_2(tmp_path, capsys, make, message):
    path = tmp_path / "records.jsonl"
    make(path)
    out = tmp_path / "verdicts.parquet"
    assert main(["critique", str(path), "--kind", "persona", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


# -- the share of personas called only by their own name -------------------------------------
def test_stats_and_card_report_the_share_of_personas_called_by_their_own_name(tmp_path, capsys):
    from personaloom.publish.card import render_card
    from personaloom.publish.metrics import compute_metrics

    folder = tmp_path / "corpus"
    by_id = {r["persona_id"]: r for r in read_jsonl(PERSONAS)}
    chosen = [by_id[i] for i in ("control-A", "control-B", "control-C", "name-meet")]
    to_parquet(chosen, S.PERSONAS, folder / "personas" / "train-00000-of-00001.parquet")
    metrics = compute_metrics(folder, embeddings=False, fidelity=False)
    assert metrics["identity"] == {"personas_with_name": 4, "own_name_only": 0.75}
    assert main(["stats", str(folder), "--no-embeddings", "--no-fidelity"]) == 0
    assert "Own name only: 0.75 of the 4 kept personas with a name" in capsys.readouterr().out
    card = render_card(folder, {"metrics": metrics}, [])
    assert "Kept personas whose text calls them only by their own name: 0.7500" in card


def test_an_unknown_taxonomy_exits_2_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "verdicts.parquet"
    args = [str(PERSONAS), "--kind", "persona", "--taxonomy", "no_such_taxonomy"]
    assert main(["critique", *args, "--out", str(out)]) == 2
    assert "--taxonomy no_such_taxonomy: unknown taxonomy" in capsys.readouterr().err
    assert not out.exists()
