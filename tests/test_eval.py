"""`personaloom eval`: probes as a benchmark, checked with STAND-IN engines (not models).

- `AlwaysA` is a stand-in that answers "A" to every question: it must score exactly the
  share of probes whose answer is A (checks the scoring).
- `TimelineOracle` is a stand-in that answers from the persona's timeline as known at the
  probe's `after_session` (the truncated timeline: nothing later), by reading the question
  and the choices: it must score 100% (checks that every probe's answer is derivable from
  its history, and that the harness hands the choices and letters through correctly).

The corpora are made with the real timeline and probe generators (shipped topic
catalogue) and written like a release (shards + card); conversations are synthetic turns
that state what the timeline says. The real engine runs in tests/test_eval_engine.py.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from personaloom import schema as S
from personaloom.cli import main
from personaloom.engine import registry
from personaloom.engine.base import Completion, EngineStats, GenerationRequest
from personaloom.errors import RunError, UserError
from personaloom.evaluate.context import ContextPolicy, estimate_tokens, fit_prompt
from personaloom.evaluate.runner import evaluate, parse_choice, read_results
from personaloom.evaluate.scoring import bootstrap_interval, score
from personaloom.generate.probes import PROBE_TYPES, make_probes
from personaloom.publish.shards import write_shards
from tests.support.dataset import manifest, persona_rows
from tests.support.timelines import build_timeline

SEED = 5
LETTERS = "ABCD"


# -- a corpus made by the real generators ------------------------------------------------
def _conversation(timeline, session) -> dict[str, Any]:
    state = timeline.state_at(session.index)
    said = [
        f"Since we last talked, my {timeline.label(u.path)} changed from {u.old} to {u.new}: "
        f"{u.reason}."
        for u in session.updates
    ]
    said += [f"My {timeline.label(p)} is {state[p]}." for p in session.stated]
    return {
        "conversation_id": f"{timeline.persona_id}-s{session.index:02d}",
        "persona_id": timeline.persona_id,
        "session": session.index,
        "timestamp": session.timestamp,
        "topic": session.topic,
        "turns": [
            {"role": "user", "content": " ".join([*said, session.task])},
            {"role": "assistant", "content": "Noted. Here is a suggestion that fits you."},
            {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": "You are welcome."},
        ],
        "profile_updates": [u.record() for u in session.updates],
        "model": "stand-in",
        "scores": [],
    }


def build_corpus(
    out: Path, *, personas: int = 8, sessions: int = 5, probability: float = 0.6
) -> dict[str, Any]:
    """A corpus folder like a release (shards + card); returns its timelines and tables."""
    from personaloom.publish.card import write_card

    rows = persona_rows(personas, seed=SEED)
    timelines = {
        p["persona_id"]: build_timeline(
            p, sessions=sessions, seed=SEED, update_probability=probability
        )
        for p in rows
    }
    talk = [_conversation(t, s) for t in timelines.values() for s in t.sessions]
    probes = [x for p in rows for x in make_probes(p, timelines[p["persona_id"]], seed=SEED)]
    tables = {
        "personas": pa.Table.from_pylist(rows, schema=S.PERSONAS),
        "conversations": pa.Table.from_pylist(talk, schema=S.CONVERSATIONS),
        "probes": pa.Table.from_pylist(probes, schema=S.PROBES),
    }
    for name, table in tables.items():
        write_shards(table, out / name, shards=1)
    counts = {
        "personas_requested": personas,
        "personas_kept": personas,
        "conversations": len(talk),
        "probes": len(probes),
    }
    data = manifest(counts)
    (out / ".personaloom").mkdir(parents=True, exist_ok=True)
    (out / ".personaloom" / "manifest.json").write_text(json.dumps(data, default=str))
    write_card(out, data)
    return {"timelines": timelines, "probes": probes, "conversations": talk}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("eval") / "corpus"
    return {"path": out, **build_corpus(out)}


# -- stand-in engines --------------------------------------------------------------------
class StandIn:
    """A stand-in engine (not a model) with the Engine interface."""

    model_name = "stand-in"

    def __init__(self) -> None:
        self.stats = EngineStats()
        self.requests: list[GenerationRequest] = []

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return estimate_tokens(messages)

    def answer(self, request: GenerationRequest) -> str:
        raise NotImplementedError

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        self.requests += requests
        return [
            Completion(r.request_id, self.answer(r), output_tokens=6, prompt_tokens=0)
            for r in requests
        ]


class AlwaysA(StandIn):
    """Stand-in: answers "A" whatever it is asked."""

    model_name = "stand-in: always A"

    def answer(self, request: GenerationRequest) -> str:
        assert request.json_schema["properties"]["answer"]["enum"][0] == "A"
        return json.dumps({"answer": "A"})


def _labelled(text: str, timeline, paths) -> str:
    """The preference path whose label the text names (the longest label that matches)."""
    found = [p for p in paths if timeline.label(p).lower() in text.lower()]
    assert found, (text, [timeline.label(p) for p in paths])
    return max(found, key=lambda p: len(timeline.label(p)))


def oracle_answer(probe: dict[str, Any], timeline) -> tuple[str, str, int]:
    """(answer text, preference path, session stating the deciding fact) from the
    timeline known at the end of the probe's session, found by reading the question."""
    j = probe["after_session"]
    known = timeline.truncated(j + 1)
    question, choices = probe["question"], list(probe["choices"])
    state = known.state_at(j)
    kind = probe["type"]
    if kind == "recall_fact":
        (session,) = [
            s
            for s in known.sessions
            if s.timestamp.strftime("%Y-%m-%d") in question and s.topic in question
        ]
        path = _labelled(question, known, session.stated)
        return known.state_at(session.index)[path], path, session.index
    if kind == "aligned_recommendation":
        current = {known.kind(p).suggestion.format(value=state[p]): p for p in known.preferences}
        (answer,) = [c for c in choices if c in current]
        path = current[answer]
        return answer, path, _stated_with(known, path, state[path], j)
    path = _labelled(question, known, known.preferences)
    changes = [u for u in known.updates if u.path == path]
    if kind == "current_preference":
        return state[path], path, _stated_with(known, path, state[path], j)
    if kind == "previous_preference":
        return changes[-1].old, path, changes[-1].session
    if kind == "preference_evolution":
        values = [known.initial[path], *(u.new for u in changes)]
        return ", then ".join(values), path, changes[0].session
    assert kind == "change_reason", kind
    (update,) = [
        u
        for u in changes
        if f"from {u.old} to {u.new}" in question
        and known.sessions[u.session].timestamp.strftime("%Y-%m-%d") in question
    ]
    return update.reason, path, update.session


def _stated_with(known, path: str, value: str, j: int) -> int:
    """The latest session up to j where the user stated `path` while it held `value`."""
    return max(
        s.index
        for s in known.sessions[: j + 1]
        if path in s.stated and known.state_at(s.index)[path] == value
    )


class TimelineOracle(StandIn):
    """Stand-in: answers from the persona's timeline known at the probe's session."""

    model_name = "stand-in: timeline oracle"

    def __init__(self, probes: list[dict[str, Any]], timelines: dict[str, Any]) -> None:
        super().__init__()
        # The probes without their answers: the oracle must find them.
        self.probes = {p["probe_id"]: {k: v for k, v in p.items() if k != "answer"} for p in probes}
        self.timelines = timelines

    def answer(self, request: GenerationRequest) -> str:
        probe = self.probes[request.request_id]
        # The question the model sees carries the same choices, lettered.
        asked = request.messages[-1]["content"]
        for letter, choice in zip(LETTERS, probe["choices"], strict=True):
            assert f"{letter}. {choice}" in asked
        text, _, _ = oracle_answer(probe, self.timelines[probe["persona_id"]])
        assert list(probe["choices"]).count(text) == 1, (probe, text)
        return json.dumps({"answer": LETTERS[list(probe["choices"]).index(text)]})


class Scripted(StandIn):
    """Stand-in: answers with `reply(request)`; may fail on chosen calls."""

    def __init__(self, reply, fail_on_call: int | None = None) -> None:
        super().__init__()
        self.reply = reply
        self.calls = 0
        self.fail_on_call = fail_on_call

    def generate(self, requests):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RunError("stand-in engine went away")
        self.requests += requests
        return [self.reply(r) for r in requests]


def quiet(_: str) -> None:
    pass


# -- answer positions and evidence -------------------------------------------------------
def test_answer_positions_are_uniform_within_5_percent_over_10k_probes():
    probes: list[dict[str, Any]] = []
    i = 0
    while len(probes) < 10_000:
        (p,) = persona_rows(1, seed=i + 1000)
        p = {**p, "persona_id": f"p9-{i:08d}", "index": i}
        timeline = build_timeline(p, sessions=8, seed=9, update_probability=0.5)
        probes += make_probes(p, timeline, seed=9)
        i += 1
    positions = Counter(p["answer"] for p in probes[:10_000])
    assert set(positions) == {0, 1, 2, 3}
    assert all(abs(n / 2500 - 1) <= 0.05 for n in positions.values()), positions
    for kind in PROBE_TYPES:  # and per type, looser (fewer probes)
        of_type = Counter(p["answer"] for p in probes[:10_000] if p["type"] == kind)
        total = sum(of_type.values())
        assert all(abs(of_type[k] / (total / 4) - 1) <= 0.15 for k in range(4)), (kind, of_type)


def test_evidence_session_is_where_the_deciding_fact_was_stated(corpus):
    checked = Counter()
    for probe in corpus["probes"]:
        timeline = corpus["timelines"][probe["persona_id"]]
        _, path, evidence = oracle_answer(probe, timeline)
        assert 0 <= probe["evidence_session"] <= probe["after_session"]
        assert probe["evidence_session"] == evidence, probe
        assert path in timeline.sessions[evidence].stated  # said in that session
        checked[probe["type"]] += 1
    assert set(checked) == set(PROBE_TYPES)
    distances = {p["after_session"] - p["evidence_session"] for p in corpus["probes"]}
    assert len(distances) >= 3


# -- scoring with stand-ins --------------------------------------------------------------
def test_a_stand_in_answering_always_a_scores_the_share_of_answers_a(corpus, tmp_path):
    report = evaluate(str(corpus["path"]), tmp_path / "a", engine_instance=AlwaysA(), log=quiet)
    probes = corpus["probes"]
    share = sum(1 for p in probes if p["answer"] == 0) / len(probes)
    assert report["overall"]["n"] == len(probes)
    assert report["overall"]["accuracy"] == pytest.approx(share, abs=1e-12)
    for entry in report["by_type"]:
        of_type = [p for p in probes if p["type"] == entry["type"]]
        assert entry["accuracy"] == pytest.approx(
            sum(p["answer"] == 0 for p in of_type) / len(of_type), abs=1e-12
        )
        assert entry["chance"] == 0.25
        assert entry["ci_low"] <= entry["accuracy"] <= entry["ci_high"]
    for entry in report["by_distance"]:
        of_distance = [
            p for p in probes if p["after_session"] - p["evidence_session"] == entry["distance"]
        ]
        assert entry["n"] == len(of_distance)
    rows = read_results(tmp_path / "a")
    assert len(rows) == len(probes)
    assert {r["status"] for r in rows} == {"answered"}
    assert all(r["choice"] == "A" and r["correct"] == (r["answer"] == 0) for r in rows)
    assert all(r["context_tokens"] > 0 and r["latency_s"] >= 0 for r in rows)
    assert all(r["context_sessions"] == r["after_session"] + 1 for r in rows)  # full context
    for name in ("report.md", "report.json", "accuracy_by_distance.png", "eval.json"):
        assert (tmp_path / "a" / name).is_file(), name
    md = (tmp_path / "a" / "report.md").read_text()
    assert "## Accuracy per probe type" in md and "## Accuracy per distance" in md


def test_a_stand_in_answering_from_the_timeline_scores_100_percent(corpus, tmp_path):
    oracle = TimelineOracle(corpus["probes"], corpus["timelines"])
    report = evaluate(str(corpus["path"]), tmp_path / "o", engine_instance=oracle, log=quiet)
    assert len(oracle.requests) == len(corpus["probes"])
    assert report["overall"]["accuracy"] == 1.0
    assert {t["type"] for t in report["by_type"]} == set(PROBE_TYPES)
    assert all(t["accuracy"] == 1.0 for t in report["by_type"])


def test_history_follows_the_context_policy(corpus, tmp_path):
    seen: dict[str, dict[str, list[dict[str, str]]]] = {}
    for policy in ("full", "recent:2", "none"):
        engine = AlwaysA()
        evaluate(
            str(corpus["path"]),
            tmp_path / policy.replace(":", "-"),
            context=policy,
            limit=30,
            engine_instance=engine,
            log=quiet,
        )
        seen[policy] = {r.request_id: r.messages for r in engine.requests}
    probes = {p["probe_id"]: p for p in corpus["probes"]}
    timelines = corpus["timelines"]
    for pid, messages in seen["full"].items():
        probe = probes[pid]
        timeline = timelines[probe["persona_id"]]
        text = "\n".join(m["content"] for m in messages[1:-1])
        headers = re.findall(r"\[Conversation on (\d{4}-\d{2}-\d{2}) about ([^\]]+)\]", text)
        expected = [
            (s.timestamp.strftime("%Y-%m-%d"), s.topic)
            for s in timeline.sessions[: probe["after_session"] + 1]
        ]
        assert headers == expected
        assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
        roles = [m["role"] for m in messages[1:]]
        assert all(a != b for a, b in itertools.pairwise(roles))  # alternating
        recent = "\n".join(m["content"] for m in seen["recent:2"][pid][1:-1])
        assert len(re.findall(r"\[Conversation on", recent)) == min(2, probe["after_session"] + 1)
        assert expected[-1][0] in recent
        assert [m["role"] for m in seen["none"][pid]] == ["system", "user"]
        assert seen["none"][pid][-1] == messages[-1]  # the same question


def test_history_beyond_the_token_budget_drops_the_oldest_sessions(corpus):
    probe = max(corpus["probes"], key=lambda p: p["after_session"])
    sessions = {
        c["session"]: c for c in corpus["conversations"] if c["persona_id"] == probe["persona_id"]
    }
    policy = ContextPolicy.parse("full")
    whole = fit_prompt(probe, sessions, policy, budget=100_000, count=estimate_tokens)
    assert whole.dropped == 0 and whole.sessions == probe["after_session"] + 1
    budget = whole.tokens - 10
    cut = fit_prompt(probe, sessions, policy, budget=budget, count=estimate_tokens)
    assert cut.dropped >= 1 and cut.tokens <= budget
    assert cut.sessions + cut.dropped == whole.sessions
    assert "[Conversation on" in cut.messages[1]["content"]
    last_day = sessions[probe["after_session"]]["timestamp"].strftime("%Y-%m-%d")
    assert last_day in "\n".join(m["content"] for m in cut.messages)  # the newest is kept


def test_a_resumed_run_asks_only_the_probes_not_answered(corpus, tmp_path):
    out = tmp_path / "resume"
    first = AlwaysA()
    evaluate(str(corpus["path"]), out, limit=10, engine_instance=first, log=quiet)
    assert len(first.requests) == 10
    second = AlwaysA()
    report = evaluate(str(corpus["path"]), out, limit=25, engine_instance=second, log=quiet)
    asked_first = {r.request_id for r in first.requests}
    assert len(second.requests) == 15
    assert not asked_first & {r.request_id for r in second.requests}  # K=25 extends K=10
    assert report["overall"]["n"] == 25
    idle = Scripted(lambda r: pytest.fail("nothing is left to ask"))
    again = evaluate(str(corpus["path"]), out, limit=25, engine_instance=idle, log=quiet)
    assert again["overall"] == report["overall"]
    assert len(read_results(out)) == 25


def test_a_run_stopped_by_the_engine_keeps_its_batches_and_resumes(corpus, tmp_path):
    out = tmp_path / "stopped"
    reply = lambda r: Completion(r.request_id, '{"answer": "B"}')  # noqa: E731
    failing = Scripted(reply, fail_on_call=2)
    with pytest.raises(RunError, match="went away"):
        evaluate(str(corpus["path"]), out, batch_size=8, engine_instance=failing, log=quiet)
    assert len(read_results(out)) == 8
    resumed = Scripted(reply)
    report = evaluate(str(corpus["path"]), out, batch_size=8, engine_instance=resumed, log=quiet)
    assert len(resumed.requests) == len(corpus["probes"]) - 8
    assert report["overall"]["n"] == len(corpus["probes"])


def test_whatever_the_model_does_is_recorded(corpus, tmp_path):
    out = tmp_path / "odd"
    replies = ['{"answer": "C"}', "I am not sure, maybe the second one", "", '"B"']

    def reply(request: GenerationRequest) -> Completion:
        k = int(request.seed) % 5
        if k == 4:
            return Completion(request.request_id, "", error="HTTP 500")
        return Completion(
            request.request_id, replies[k], finish_reason="length" if k == 1 else "stop"
        )

    report = evaluate(
        str(corpus["path"]), out, limit=40, engine_instance=Scripted(reply), log=quiet
    )
    rows = read_results(out)
    assert len(rows) == 40
    by_status = Counter(r["status"] for r in rows)
    assert set(by_status) == {"answered", "unparseable", "error"}
    for row in rows:
        if row["status"] == "unparseable":
            assert row["choice"] is None and row["correct"] is False
        if row["status"] == "error":
            assert row["raw"] == "HTTP 500"
    assert report["overall"]["n"] == by_status["answered"] + by_status["unparseable"]
    assert report["probes"]["error"] == by_status["error"]
    # A re-run asks the failed requests again, and only those.
    retry = AlwaysA()
    evaluate(str(corpus["path"]), out, limit=40, engine_instance=retry, log=quiet)
    assert len(retry.requests) == by_status["error"]
    assert "error" not in Counter(r["status"] for r in read_results(out))


def test_parse_choice():
    assert parse_choice('{"answer": "B"}', 4) == "B"
    assert parse_choice(' {"answer":"d"} ', 4) == "D"
    assert parse_choice('"C"', 4) == "C"
    assert parse_choice("A", 4) == "A"
    assert parse_choice('{"answer": "E"}', 4) is None
    assert parse_choice("The answer is B because", 4) is None
    assert parse_choice("", 4) is None


def test_bootstrap_intervals_match_resampling_and_are_reproducible():
    rng = np.random.default_rng(3)
    outcomes = rng.random(400) < 0.62
    low, high = bootstrap_interval(int(outcomes.sum()), 400, key="x")
    assert (low, high) == bootstrap_interval(int(outcomes.sum()), 400, key="x")
    means = outcomes[rng.integers(0, 400, (4000, 400))].mean(axis=1)
    assert low == pytest.approx(np.percentile(means, 2.5), abs=0.01)
    assert high == pytest.approx(np.percentile(means, 97.5), abs=0.01)
    wide = bootstrap_interval(int(outcomes[:40].sum()), 40, key="x")
    assert wide[1] - wide[0] > high - low


def _rows(kind: str, correct: int, n: int, distance: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "type": kind,
            "distance": distance,
            "choices": 4,
            "correct": i < correct,
            "status": "answered",
        }
        for i in range(n)
    ]


def test_a_type_answered_well_above_chance_without_context_is_flagged_as_leaking():
    rows = _rows("change_reason", 90, 100) + _rows("recall_fact", 30, 100) + _rows("x", 5, 8)
    none = score(rows, context="none")
    assert none["leaks"] == ["change_reason"]
    flags = {t["type"]: t["leak"] for t in none["by_type"]}
    assert flags == {"change_reason": True, "recall_fact": False, "x": False}
    assert score(rows, context="full")["leaks"] == []  # with context, accuracy is the point


# -- the command line ------------------------------------------------------------------
@pytest.fixture
def stand_ins(monkeypatch):
    """Stand-in engines registered under model names, in a registry of this test only."""
    monkeypatch.setattr(registry, "_engines", {})

    def register(model: str, engine) -> None:
        registry._engines[registry.EngineSpec(model=model).key()] = engine

    return register


def test_cli_evaluates_no_context_baseline_and_compares(corpus, tmp_path, stand_ins, capsys):
    stand_ins("stand-in-oracle", TimelineOracle(corpus["probes"], corpus["timelines"]))
    full, none = tmp_path / "full", tmp_path / "none"
    assert (
        main(["eval", str(corpus["path"]), "--model", "stand-in-oracle", "--out", str(full)]) == 0
    )
    stand_ins("stand-in-a", AlwaysA())
    args = ["eval", str(corpus["path"]), "--model", "stand-in-a", "--context", "none"]
    assert main([*args, "--out", str(none)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "results written to" in out
    assert json.loads((none / "report.json").read_text())["context"] == "none"
    board = tmp_path / "board"
    assert main(["eval", "--compare", str(none), str(full), "--out", str(board)]) == 0
    table = capsys.readouterr().out
    lines = [
        line for line in table.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")
    ]
    assert "timeline oracle" in lines[0] and "100.0%" in lines[0]
    assert "always A" in lines[1]
    entries = json.loads((board / "leaderboard.json").read_text())
    assert [e["context"] for e in entries] == ["full", "none"]
    assert entries[0]["gain_over_no_context"] is None  # another model's baseline is not its own


def test_cli_pairs_a_run_with_its_own_no_context_baseline(corpus, tmp_path, stand_ins, capsys):
    stand_ins("stand-in-a", AlwaysA())
    for context in ("full", "none"):
        args = ["eval", str(corpus["path"]), "--model", "stand-in-a", "--context", context]
        assert main([*args, "--limit", "20", "--out", str(tmp_path / context)]) == 0
    capsys.readouterr()
    assert main(["eval", "--compare", str(tmp_path / "full"), str(tmp_path / "none")]) == 0
    assert "+0.0 pts" in capsys.readouterr().out  # always A: no gain from the history


def _bad(args: list[str], capsys) -> str:
    assert main(args) == 2
    return capsys.readouterr().err


def test_bad_inputs_exit_2_naming_the_problem(corpus, tmp_path, capsys, stand_ins):
    from tests.support.dataset import make_dataset

    no_probes = tmp_path / "no-probes"
    make_dataset(no_probes, personas=3, probes=False)
    out = tmp_path / "out"
    err = _bad(["eval", str(no_probes), "--out", str(out)], capsys)
    assert "no probes" in err and str(no_probes) in err
    err = _bad(["eval", str(corpus["path"]), "--context", "last:3", "--out", str(out)], capsys)
    assert "--context last:3" in err and "unknown context policy" in err
    assert "recent:N" in _bad(["eval", str(corpus["path"]), "--context", "recent:0"], capsys)
    assert "no such folder" in _bad(["eval", str(tmp_path / "missing"), "--out", str(out)], capsys)
    assert "hf://datasets/ORG/NAME@TAG" in _bad(
        ["eval", "hf://models/x", "--out", str(out)], capsys
    )
    assert "--limit 0" in _bad(
        ["eval", str(corpus["path"]), "--limit", "0", "--out", str(out)], capsys
    )
    assert "DATASET is required" in _bad(["eval"], capsys)
    assert "no report.json" in _bad(["eval", "--compare", str(tmp_path)], capsys)
    assert not out.exists()  # nothing written
    # Another evaluation in a result folder is refused.
    stand_ins("stand-in-a", AlwaysA())
    taken = tmp_path / "taken"
    assert (
        main(
            [
                "eval",
                str(corpus["path"]),
                "--model",
                "stand-in-a",
                "--limit",
                "3",
                "--out",
                str(taken),
            ]
        )
        == 0
    )
    err = _bad(["eval", str(corpus["path"]), "--model", "other", "--out", str(taken)], capsys)
    assert "holds another evaluation" in err


def test_results_and_report_are_written_atomically_and_reproducibly(corpus, tmp_path):
    out = tmp_path / "twice"
    evaluate(str(corpus["path"]), out, limit=12, engine_instance=AlwaysA(), log=quiet)
    first = {
        n: (out / n).read_bytes() for n in ("report.md", "report.json", "accuracy_by_distance.png")
    }
    evaluate(str(corpus["path"]), out, limit=12, engine_instance=AlwaysA(), log=quiet)
    assert {n: (out / n).read_bytes() for n in first} == first
    assert not list(out.glob(".*.tmp"))
    schema = pq.read_schema(out / "results.parquet")
    for column in ("probe_id", "model", "choice", "correct", "context_tokens", "latency_s"):
        assert column in schema.names


# -- a release through a Hub-protocol server ---------------------------------------------
CLI_WITH_STAND_IN = """
import sys
from personaloom.engine.registry import EngineSpec, set_engine
from tests.test_eval import AlwaysA
set_engine(EngineSpec(model="stand-in-a"), AlwaysA())
from personaloom.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.server
def test_a_released_tag_is_evaluated_through_the_hub_api(corpus, tmp_path, repo_root):
    from tests.support import olah

    mirrors = tmp_path / "mirrors"
    repo = mirrors / "datasets" / "acme" / "memory"
    assert main(["release", str(corpus["path"]), "--to", str(repo), "--tag", "v1.0.0"]) == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", CLI_WITH_STAND_IN, "eval", *args, "--model", "stand-in-a"],
            env=env,
            cwd=repo_root,
            capture_output=True,
            text=True,
            timeout=300,
        )

    with olah.serve(mirrors, tmp_path, "acme/memory") as url:
        env["HF_ENDPOINT"] = url
        done = cli("hf://datasets/acme/memory@v1.0.0", "--out", str(tmp_path / "hub"))
        missing = cli("hf://datasets/acme/memory@v9.9.9", "--out", str(tmp_path / "nope"))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "hub" / "report.json").read_text())
    probes = corpus["probes"]
    assert report["dataset_label"] == "acme/memory@v1.0.0" and report["dataset_commit"]
    assert report["overall"]["n"] == len(probes)
    share = sum(p["answer"] == 0 for p in probes) / len(probes)
    assert report["overall"]["accuracy"] == pytest.approx(share, abs=1e-12)
    assert missing.returncode == 2, missing.stderr[-3000:]
    assert "tag v9.9.9 does not exist" in missing.stderr and "v1.0.0" in missing.stderr
    assert not (tmp_path / "nope").exists()


def test_user_errors_are_raised_by_the_library_too(corpus, tmp_path):
    with pytest.raises(UserError, match="unknown context policy"):
        evaluate(str(corpus["path"]), tmp_path / "x", context="everything", log=quiet)


def test_a_corpus_made_before_evidence_session_is_scored_without_distances(tmp_path):
    from tests.support.dataset import make_dataset

    make_dataset(tmp_path / "old", personas=4)  # probes with no evidence_session
    report = evaluate(str(tmp_path / "old"), tmp_path / "o", engine_instance=AlwaysA(), log=quiet)
    assert report["overall"]["n"] == 4 and report["by_distance"] == []
    assert "carry no evidence_session" in (tmp_path / "o" / "report.md").read_text()
