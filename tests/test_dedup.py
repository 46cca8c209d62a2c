"""Dedup: datasketch-exact signatures, exact + near-duplicate clusters, keep policy, CLI.

The datasketch reference (`datasketch_reference`) uses datasketch for the MinHash, xxhash
for the shingle hash and this file's restatement of normalization and shingling
(`python_normalize`, `reference_shingles`): no personaloom code.
"""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash
from datasketch import MinHash

from personaloom.cli import main
from personaloom.dedup import (
    SignatureSet,
    datasketch_minhash,
    dedup_table,
    dedup_texts,
    hashes,
    load_signatures,
    lsh_params,
    minhash_signatures,
    normalize_texts,
    permutations,
    shingles,
)
from personaloom.errors import UserError

EMPTY = np.uint32(0xFFFFFFFF)


def random_doc(rng: np.random.Generator, words: int) -> list[str]:
    """Words of 2-9 random letters: 5-word shingles of two such docs never collide."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(words)]


def substitute(rng: np.random.Generator, words: list[str], count: int) -> list[str]:
    out = list(words)
    for pos in rng.choice(len(out), count, replace=False):
        out[pos] = "zz" + out[pos]
    return out


def jaccard(a: str, b: str, ngram: int = 5) -> float:
    """True Jaccard of two texts' shingle sets (`reference_shingles`, not ours)."""
    sa, sb = set(reference_shingles(a, ngram)), set(reference_shingles(b, ngram))
    return len(sa & sb) / len(sa | sb)


UNICODE_AND_EDGE_TEXTS = [
    "",
    None,
    "   \t\n ",
    "!!! ... ???",
    "one",
    "two words",
    "exactly five words here now",
    "Hello,  WORLD! This is a   test of the emergency broadcast system.",
    "Ｆｕｌｌ ｗｉｄｔｈ ﬁne Straße ΣΊΣΥΦΟΣ naïve café — dash… «quotes»",
    "zero\u200bwidth joiner\u200d and soft\u00adhyphen and\u00a0nbsp",
    "日本語のテキスト、句読点。もっと長い文章がここにあります。",
    "emoji 🙂 keep 👍🏽 symbols $5 + 3 = €8 ok",
    "combining e\u0301 vs é and Å vs A\u030a",
    "Ελληνικά κείμενα με τόνους και σημεία στίξης; όπως αυτό.",
    "Русский текст: с пунктуацией, и ЗАГЛАВНЫМИ буквами!",
    "mixed ascii then ünïcödé then ascii again and again and again",
    "tabs\tand\nnewlines\r\nand\x0bvertical\x0cfeeds",
    "İstanbul ŉ ΐ Straße ½ ﬃ: foldings that grow, next to NFKC forms",
    "İstanbul ŉ ΐ and STRASSE without any compatibility form",
]


def reference_shingles(text: str | None, ngram: int = 5) -> list[bytes]:
    """Shingles by their documented definition, restated here (not personaloom's `shingles`).

    `python_normalize` (plain-Python NFKC, casefold, word breaks), then the UTF-8 bytes of
    every `ngram` consecutive words joined by one space; fewer words than `ngram` make one
    shingle, the whole normalized text; an empty normalized text has none.
    """
    norm = python_normalize(text or "")
    if not norm:
        return []
    words = norm.split(" ")
    if len(words) < ngram:
        return [norm.encode("utf-8")]
    return [" ".join(words[i : i + ngram]).encode("utf-8") for i in range(len(words) - ngram + 1)]


def datasketch_reference(text: str | None, num_perm: int, seed: int, ngram: int) -> MinHash:
    """The reference signature, with no personaloom code in it.

    datasketch's: the MinHash itself (`scheme="affine32"`: its permutations, its hashing of
    each shingle hash and its minimum). xxhash's: the shingle hash (XXH32, seed 0, the
    function `personaloom.dedup.shingle_hash32` documents). This test's: the shingles
    (`reference_shingles`), since datasketch does no shingling.
    """
    m = MinHash(num_perm=num_perm, seed=seed, hashfunc=xxhash.xxh32_intdigest, scheme="affine32")
    m.update_batch(reference_shingles(text, ngram))
    return m


@pytest.mark.parametrize(("num_perm", "seed", "ngram"), [(128, 1, 5), (64, 7, 3), (32, 42, 1)])
def test_signatures_are_bit_identical_to_datasketch(num_perm: int, seed: int, ngram: int) -> None:
    rng = np.random.default_rng(seed)
    texts = list(UNICODE_AND_EDGE_TEXTS)
    texts += [" ".join(random_doc(rng, int(rng.integers(1, 300)))) for _ in range(60)]
    texts += [t.upper() + " ünï 🙂" for t in texts[-20:]]
    ours = minhash_signatures(texts, num_perm=num_perm, seed=seed, ngram=ngram)
    assert ours.dtype == np.uint32 and ours.shape == (len(texts), num_perm)
    for i, text in enumerate(texts):
        ref = datasketch_reference(text, num_perm, seed, ngram)
        assert ref.scheme == "affine32" and ref.hashvalues.dtype == np.uint32
        assert np.array_equal(ours[i], ref.hashvalues), f"text {i}: {text!r}"
        # the library's own datasketch helper (used by callers as their reference) agrees
        helper = datasketch_minhash(text, num_perm=num_perm, seed=seed, ngram=ngram)
        assert np.array_equal(helper.hashvalues, ref.hashvalues), f"text {i}: {text!r}"


def test_permutations_are_datasketch_affine32_permutations() -> None:
    a, b = permutations(128, 1)
    ref = MinHash(num_perm=128, seed=1, scheme="affine32").permutations
    assert np.array_equal(a, ref[0]) and np.array_equal(b, ref[1])


def test_kernel_hashes_equal_xxhash() -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, 200 + hashes.PADDING, dtype=np.uint8)
    for length in range(100):
        for start in (0, 3):
            chunk = raw[start : start + length].tobytes()
            expected = xxhash.xxh32_intdigest(chunk)
            assert hashes.xxh32(raw, start, start + length, 0) == expected
            assert hashes.xxh32_padded(raw, start, start + length, 0) == expected
            assert hashes.xxh64(raw, start, start + length, 0) == xxhash.xxh64_intdigest(chunk)


def test_normalization_folds_case_width_punctuation_and_spacing() -> None:
    assert normalize_texts(
        [
            "Hello,  WORLD!",
            "ｈｅｌｌｏ　ｗｏｒｌｄ",
            "hello\u200b world\n",
            "the cat—a tabby—sat",
            "",
            None,
            "?!",
            "$5 + 3",
        ]
    ) == ["hello world", "hello world", "hello world", "the cat a tabby sat", "", "", "", "$5 + 3"]


def python_normalize(text: str) -> str:
    """The documented definition, in plain Python: NFKC, casefold, P/Z/Cc -> space, Cf dropped."""
    out = []
    for ch in unicodedata.normalize("NFKC", text).casefold():
        cat = unicodedata.category(ch)
        if cat[0] in "PZ" or cat == "Cc":
            out.append(" ")
        elif cat != "Cf":
            out.append(ch)
    return " ".join("".join(out).split())


def test_normalization_is_nfkc_casefold_then_word_breaks() -> None:
    texts = [
        *[t for t in UNICODE_AND_EDGE_TEXTS if t is not None],
        "Straße STRASSE ẞ İstanbul ΣΊΣΥΦΟΣ ς ŉ ΐ ﬃ ½ ²",
        "한국어 \u1100\u1161\u11a8 composed from jamo",
        "caf\u00e9 vs cafe\u0301 and a\u0308\u0301 reordered a\u0301\u0308",
        "\u0b47\u0b3e oriya vowel sign composes; \u09c7\u09be bengali",
        "ｶﾀｶﾅ half-width katakana ﾊﾟ and ℌ𝔢𝔩𝔩𝔬 math letters",
    ]
    assert normalize_texts(texts) == [python_normalize(t) for t in texts]


def test_short_text_is_one_shingle_and_empty_text_has_none() -> None:
    assert shingles("Two  words!", ngram=5) == [b"two words"]
    assert shingles("a b c d e f", ngram=5) == [b"a b c d e", b"b c d e f"]
    assert shingles("  ...  ", ngram=5) == []
    sigs = minhash_signatures(["", None, "...", "two words", "two words"])
    assert (sigs[:3] == EMPTY).all()
    assert not (sigs[3] == EMPTY).any() and np.array_equal(sigs[3], sigs[4])


def test_empty_and_short_texts_dedup_without_crashing() -> None:
    texts = ["", None, " !! ", "ok", "OK.", "ok then", "yes"]
    result = dedup_texts(texts)
    assert result.keep.tolist() == [True, False, False, True, False, True, True]
    assert result.reasons[1] == "exact_duplicate_of:0"
    assert result.reasons[4] == "exact_duplicate_of:3"
    assert dedup_texts([]).counts.input == 0


def test_planted_near_duplicates_are_found_and_distinct_texts_kept() -> None:
    rng = np.random.default_rng(5)
    originals = [random_doc(rng, 200) for _ in range(300)]
    texts = [" ".join(w) for w in originals]
    planted = {}
    for i in range(0, 60, 2):  # 30 near copies, 1-3 substituted words: Jaccard >= 0.85
        planted[len(texts)] = i
        texts.append(" ".join(substitute(rng, originals[i], int(rng.integers(1, 4)))))
    far = {}
    for i in range(1, 41, 2):  # 20 loose copies, 15 substituted words: Jaccard < 0.6
        far[len(texts)] = i
        texts.append(" ".join(substitute(rng, originals[i], 15)))
    assert all(jaccard(texts[c], texts[o]) >= 0.85 for c, o in planted.items())
    assert all(jaccard(texts[c], texts[o]) < 0.6 for c, o in far.items())

    result = dedup_texts(texts)
    assert result.keep[:300].all()  # originals come first, so they are kept
    for copy, original in planted.items():
        assert not result.keep[copy]
        assert result.reasons[copy] == f"near_duplicate_of:{original}"
    assert all(result.keep[c] for c in far)
    assert result.counts.as_dict() == {
        "input": 350,
        "exact_duplicates": 0,
        "near_duplicates": 30,
        "in_previous_release": 0,
        "kept": 320,
    }


def test_chain_removes_only_rows_that_match_a_kept_row() -> None:
    rng = np.random.default_rng(11)
    a = random_doc(rng, 300)
    b = list(a)
    for pos in range(2, 300, 21):
        b[pos] = "bb" + a[pos]
    c = list(b)
    for pos in range(12, 300, 21):
        c[pos] = "cc" + a[pos]
    texts = [" ".join(a), " ".join(b), " ".join(c)]
    assert jaccard(texts[0], texts[1]) > 0.6 and jaccard(texts[1], texts[2]) > 0.6
    assert jaccard(texts[0], texts[2]) < 0.4  # a chain: a ~ b ~ c at threshold 0.5
    result = dedup_texts(texts, threshold=0.5, num_perm=256)
    assert result.keep.tolist() == [True, False, True]
    assert result.reasons[1] == "near_duplicate_of:0"
    # with c preferred, b goes as c's duplicate and a, unlike c, stays
    result = dedup_texts(texts, scores=[0.0, 0.0, 1.0], threshold=0.5, num_perm=256)
    assert result.keep.tolist() == [True, False, True]
    assert result.reasons[1] == "near_duplicate_of:2"


def test_exact_copy_flood_leaves_one_with_linear_work() -> None:
    rng = np.random.default_rng(1)
    words = random_doc(rng, 150)
    flood = [" ".join(words)] * 5000
    # plus 2000 near copies, each with one word changed somewhere
    near = [" ".join(substitute(rng, words, 1)) for _ in range(2000)]
    result = dedup_texts(flood + near + ["something else entirely"])
    assert result.counts.kept == 2
    assert result.keep[0] and result.keep[-1]
    assert result.counts.exact_duplicates >= 4999
    assert result.counts.exact_duplicates + result.counts.near_duplicates == 6999
    # near copies verify against one representative per bucket, not against each other
    bands = result.bands[0]
    assert result.verifications <= bands * 2 * 2001


def test_keep_policy_highest_score_then_lowest_id_then_first_row() -> None:
    text = "the same persona description repeated across several rows of the batch"
    texts = [text, text.upper(), text + "!", "unrelated", text]
    result = dedup_texts(texts, ids=[7, 5, 9, 1, 3], scores=[0.2, 0.9, 0.9, 0.0, None])
    assert result.keep.tolist() == [False, True, False, True, False]  # 0.9 tie -> id 5
    assert result.reasons[0] == "exact_duplicate_of:5"
    assert result.cluster.tolist() == [1, 1, 1, 3, 1]

    by_id = dedup_texts(texts, ids=[7, 5, 9, 1, 3])
    assert by_id.keep.tolist() == [False, False, False, True, True]  # lowest id: 3
    by_row = dedup_texts(texts)
    assert by_row.keep.tolist() == [True, False, False, True, False]
    nan_lowest = dedup_texts(texts, scores=[float("nan"), None, -5.0, 0.0, None])
    assert nan_lowest.keep.tolist() == [False, False, True, True, False]


def test_near_duplicate_reason_names_the_kept_row() -> None:
    rng = np.random.default_rng(2)
    words = random_doc(rng, 120)
    texts = [" ".join(words), " ".join(substitute(rng, words, 1))]
    result = dedup_texts(texts, ids=["a", "b"], scores=[0.1, 0.5])
    assert result.keep.tolist() == [False, True]
    assert result.reasons == ["near_duplicate_of:b", None]


def test_dedup_against_previous_release_signatures(tmp_path) -> None:
    rng = np.random.default_rng(3)
    docs = [random_doc(rng, 100) for _ in range(4)]
    release1 = [" ".join(d) for d in docs[:2]]
    first = dedup_texts(release1, ids=["p0", "p1"])
    path = tmp_path / "v1.signatures.parquet"
    first.kept_signatures().save(path)

    previous = load_signatures(path)
    assert previous.ids == ["p0", "p1"] and previous.params.num_perm == 128
    release2 = [
        release1[0].upper(),  # exact copy after normalization
        " ".join(substitute(rng, docs[1], 1)),  # near copy
        " ".join(docs[2]),
        " ".join(docs[2]) + ".",  # duplicate within the new batch
        " ".join(docs[3]),
    ]
    result = dedup_texts(release2, previous=previous)
    assert result.keep.tolist() == [False, False, True, False, True]
    assert result.reasons[:2] == ["in_previous_release", "in_previous_release"]
    assert result.reasons[3] == "exact_duplicate_of:2"
    assert result.counts.in_previous_release == 2


def test_previous_signatures_with_other_parameters_are_refused(tmp_path) -> None:
    path = tmp_path / "v1.parquet"
    dedup_texts(["some released text of a few words"], num_perm=64).kept_signatures().save(path)
    with pytest.raises(UserError, match=r"v1\.parquet.*num_perm=64 \(this run: 128\)"):
        dedup_texts(["new text"], previous=load_signatures(path))
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"id": ["x"]}), plain)
    with pytest.raises(UserError, match=r"plain\.parquet: no personaloom\.dedup metadata"):
        load_signatures(plain)


def test_signatures_of_several_releases_combine(tmp_path) -> None:
    rng = np.random.default_rng(8)
    docs = [" ".join(random_doc(rng, 80)) for _ in range(3)]
    dedup_texts(docs[:1], ids=["v1-0"]).kept_signatures().save(tmp_path / "v1.parquet")
    dedup_texts(docs[1:2], ids=["v2-0"]).kept_signatures().save(tmp_path / "v2.parquet")
    previous = load_signatures(tmp_path / "v1.parquet", tmp_path / "v2.parquet")
    assert previous.ids == ["v1-0", "v2-0"]
    assert dedup_texts(docs, previous=previous).keep.tolist() == [False, False, True]
    dedup_texts(docs[2:], seed=2).kept_signatures().save(tmp_path / "other.parquet")
    with pytest.raises(UserError, match=r"other\.parquet.*seed=2 \(this run: 1\)"):
        load_signatures(tmp_path / "v1.parquet", tmp_path / "other.parquet")


def test_signature_file_round_trips_with_parameters(tmp_path) -> None:
    result = dedup_texts(["alpha beta gamma delta epsilon zeta", ""], ngram=3, seed=9)
    path = tmp_path / "sig.parquet"
    result.kept_signatures().save(path)
    loaded = SignatureSet.load(path)
    assert np.array_equal(loaded.signatures, result.signatures)
    assert np.array_equal(loaded.exact_hashes, result.exact_hashes)
    meta = json.loads(pq.read_schema(path).metadata[b"personaloom.dedup"])
    assert (meta["num_perm"], meta["seed"], meta["ngram"], meta["scheme"]) == (
        128,
        9,
        3,
        "affine32",
    )


def test_band_choice_catches_pairs_at_the_threshold() -> None:
    for threshold in (0.5, 0.7, 0.8, 0.9):
        b, r = lsh_params(threshold, 128)
        assert b * r <= 128
        assert 1 - (1 - threshold**r) ** b >= 0.99
    assert lsh_params(0.8, 128) != (9, 13)  # datasketch's balanced choice: 40% at 0.8


def test_dedup_table_keeps_columns_and_reports_reasons() -> None:
    table = pa.table(
        {
            "id": [10, 11, 12],
            "text": [
                "a persona who loves hiking and maps",
                "A persona who loves hiking, and maps!",
                "x",
            ],
            "score": [0.1, 0.7, 0.3],
        }
    )
    kept, removed, result = dedup_table(table, "text", score_column="score", id_column="id")
    assert kept.column_names == ["id", "text", "score"]
    assert kept.column("id").to_pylist() == [11, 12]
    assert removed.column("dedup_reason").to_pylist() == ["exact_duplicate_of:11"]
    assert result.counts.kept == 2


@pytest.fixture
def corpus(tmp_path):
    rng = np.random.default_rng(4)
    docs = [" ".join(random_doc(rng, 60)) for _ in range(20)]
    texts = [*docs, docs[0].upper(), docs[1] + " extra"]
    path = tmp_path / "in.parquet"
    pq.write_table(
        pa.table({"id": list(range(22)), "text": texts, "score": [float(i) for i in range(22)]}),
        path,
    )
    return path


def test_cli_writes_kept_rows_and_prints_counts(corpus, tmp_path, capsys) -> None:
    out, sigs, removed = (tmp_path / n for n in ("out.parquet", "sigs.parquet", "rm.parquet"))
    args = ["--save-signatures", str(sigs), "--removed", str(removed), "--id-column", "id"]
    code = main(["dedup", str(corpus), "--column", "text", "--out", str(out), *args])
    assert code == 0
    kept = pq.read_table(out)
    assert kept.column_names == ["id", "text", "score"]
    assert kept.num_rows == 20
    assert 20 not in kept.column("id").to_pylist() and 21 not in kept.column("id").to_pylist()
    printed = capsys.readouterr().out
    assert "in 22, exact duplicates 1, near duplicates 1, in previous release 0, kept 20" in printed
    assert len(load_signatures(sigs)) == 20
    gone = pq.read_table(removed)
    assert gone.column("id").to_pylist() == [20, 21]
    assert gone.column("dedup_reason").to_pylist() == [
        "exact_duplicate_of:0",
        "near_duplicate_of:1",
    ]

    again = tmp_path / "again.parquet"
    assert (
        main(
            ["dedup", str(corpus), "--column", "text", "--out", str(again), "--against", str(sigs)]
        )
        == 0
    )
    assert pq.read_table(again).num_rows == 0
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_empty_input_writes_an_empty_file_with_the_schema(tmp_path, capsys) -> None:
    source, out = tmp_path / "empty.parquet", tmp_path / "out.parquet"
    pq.write_table(
        pa.table({"id": pa.array([], pa.int64()), "text": pa.array([], pa.string())}), source
    )
    assert main(["dedup", str(source), "--column", "text", "--out", str(out)]) == 0
    written = pq.read_table(out)
    assert written.num_rows == 0 and written.schema.names == ["id", "text"]
    assert "in 0, exact duplicates 0, near duplicates 0" in capsys.readouterr().out


def test_cli_score_column_picks_the_kept_row(corpus, tmp_path) -> None:
    out = tmp_path / "out.parquet"
    args = ["dedup", str(corpus), "--column", "text", "--out", str(out), "--score-column", "score"]
    assert main(args) == 0
    ids = pq.read_table(out).column("id").to_pylist()
    assert 20 in ids and 21 in ids and 0 not in ids and 1 not in ids


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--column", "body"], "--column body: no such column; available: id, text, score"),
        (["--column", "text", "--threshold", "0"], "--threshold 0.0: must be in (0, 1]"),
        (["--column", "text", "--threshold", "1.5"], "--threshold 1.5: must be in (0, 1]"),
        (["--column", "text", "--num-perm", "1"], "--num-perm 1: must be >= 2"),
        (["--column", "text", "--ngram", "0"], "--ngram 0: must be >= 1"),
        (["--column", "id"], "--column id: must hold strings"),
        (["--column", "text", "--score-column", "nope"], "--score-column nope: no such column"),
        (
            ["--column", "text", "--against", "missing.parquet"],
            "missing.parquet: no such signatures file",
        ),
    ],
)
def test_cli_bad_options_exit_2_and_write_nothing(corpus, tmp_path, capsys, extra, message) -> None:
    out = tmp_path / "out.parquet"
    assert main(["dedup", str(corpus), "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_cli_missing_or_non_parquet_input_exits_2(tmp_path, capsys) -> None:
    out = tmp_path / "out.parquet"
    assert (
        main(["dedup", str(tmp_path / "none.parquet"), "--column", "text", "--out", str(out)]) == 2
    )
    assert "none.parquet: no such file" in capsys.readouterr().err
    bogus = tmp_path / "notes.parquet"
    bogus.write_text("not parquet at all")
    assert main(["dedup", str(bogus), "--column", "text", "--out", str(out)]) == 2
    assert "notes.parquet: not a readable Parquet file" in capsys.readouterr().err
    assert not out.exists()


def test_cli_refuses_signatures_with_other_parameters(corpus, tmp_path, capsys) -> None:
    sigs = tmp_path / "sigs.parquet"
    dedup_texts(["released text"], num_perm=64).kept_signatures().save(sigs)
    out = tmp_path / "out.parquet"
    assert (
        main(["dedup", str(corpus), "--column", "text", "--out", str(out), "--against", str(sigs)])
        == 2
    )
    assert "num_perm=64 (this run: 128)" in capsys.readouterr().err
    assert not out.exists()
