"""prepare_features on real SQuAD paragraphs with the MiniLM tokenizer and small windows."""

import logging
from pathlib import Path

import datasets
import pytest
from pydantic import ValidationError

from distill.data.features import WindowConfig, prepare_features
from distill.data.squad import load_squad, take_questions

SMALL = WindowConfig(max_seq_length=128, doc_stride=32, max_query_length=24)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "hf-cache"


@pytest.fixture
def v1(dev_v1_slice, cache):
    return load_squad(dev_v1_slice, cache_dir=cache)


@pytest.fixture
def v1_features(v1, minilm_tokenizer):
    return prepare_features(v1, minilm_tokenizer, SMALL)


def _context_span(offsets):
    inside = [o for o in offsets if o is not None]
    return inside[0][0], inside[-1][1]


@pytest.mark.parametrize("kwargs", [
    {"max_seq_length": 0}, {"doc_stride": -1}, {"doc_stride": 384}, {"max_query_length": 381},
    {"max_seq_length": 128, "doc_stride": 32, "unknown": 1},
])
def test_window_config_rejects_impossible_windows(kwargs):
    with pytest.raises(ValidationError):
        WindowConfig(**kwargs)


def test_columns_and_masks_follow_the_contract(v1_features, minilm_tokenizer):
    assert set(v1_features.column_names) == {
        "input_ids", "attention_mask", "token_type_ids", "offset_mapping", "context_mask",
        "start_positions", "end_positions", "example_id", "feature_index"}
    for row in v1_features.select(range(5)):
        assert len(row["input_ids"]) == SMALL.max_seq_length
        assert row["input_ids"][0] == minilm_tokenizer.cls_token_id and row["context_mask"][0] == 0
        assert row["context_mask"] == [int(o is not None) for o in row["offset_mapping"]]
        assert all(t == 1 for t, c in zip(row["token_type_ids"], row["context_mask"]) if c)
        assert not any(c for c, a in zip(row["context_mask"], row["attention_mask"]) if a == 0)


def test_long_contexts_give_several_overlapping_windows(v1, v1_features):
    assert len(v1_features) > len(v1)
    assert v1_features["feature_index"] == list(range(len(v1_features)))
    ids = v1_features["example_id"]
    pairs = [(i, i + 1) for i in range(len(ids) - 1) if ids[i] == ids[i + 1]]
    assert pairs
    for a, b in pairs:
        first, second = v1_features[a]["offset_mapping"], v1_features[b]["offset_mapping"]
        assert _context_span(second)[0] < _context_span(first)[1]  # stride tokens are shared


def test_gold_positions_are_the_tokens_covering_the_first_answer(v1, v1_features):
    by_id = {r["id"]: r for r in v1}
    covered = set()
    for f in v1_features:
        ex = by_id[f["example_id"]]
        start_char = ex["answers"]["answer_start"][0]
        gold = ex["answers"]["text"][0]
        lo, hi = _context_span(f["offset_mapping"])
        if lo <= start_char and start_char + len(gold) <= hi:
            covered.add(ex["id"])
            s, e = f["start_positions"], f["end_positions"]
            assert 0 < s <= e
            # The gold tokens are the smallest token span covering the answer characters; real answers
            # can end inside a word piece ("gold" in "golden"), so the span text can be longer.
            (s0, s1), (e0, e1) = f["offset_mapping"][s], f["offset_mapping"][e]
            assert s0 <= start_char < s1 and e0 < start_char + len(gold) <= e1
            assert gold in ex["context"][s0:e1]
        else:
            assert (f["start_positions"], f["end_positions"]) == (0, 0)
    assert covered == set(by_id)


def test_impossible_questions_point_at_cls(dev_v2_slice, cache, minilm_tokenizer):
    ds = load_squad(dev_v2_slice, cache_dir=cache)
    feats = prepare_features(ds, minilm_tokenizer, SMALL)
    impossible = {r["id"] for r in ds if r["is_impossible"]}
    rows = [f for f in feats if f["example_id"] in impossible]
    assert rows and all((f["start_positions"], f["end_positions"]) == (0, 0) for f in rows)
    assert any(f["start_positions"] for f in feats if f["example_id"] not in impossible)


def test_question_is_cut_at_max_query_length_tokens_and_leading_space_stripped(v1, minilm_tokenizer, cache):
    long_question = "   " + " ".join(["Which unaffable Normans ruled Normandy"] * 10) + "?"
    ds = take_questions(v1, 2).map(lambda r, i: {"question": long_question if i == 0 else "  " + r["question"]},
                                   with_indices=True)
    feats = prepare_features(ds, minilm_tokenizer, SMALL)
    sep = minilm_tokenizer.sep_token_id
    full = minilm_tokenizer(long_question.strip(), add_special_tokens=False)["input_ids"]
    first = feats[0]["input_ids"]
    assert first[1 : first.index(sep)] == full[: SMALL.max_query_length]
    second = next(f for f in feats if f["example_id"] == ds[1]["id"])["input_ids"]
    plain = minilm_tokenizer(ds[1]["question"].strip(), add_special_tokens=False)["input_ids"]
    assert second[1 : second.index(sep)] == plain


def test_rerun_loads_the_cached_file_instead_of_tokenising(v1, minilm_tokenizer):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("datasets")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        first = prepare_features(v1, minilm_tokenizer, SMALL)
        again = prepare_features(v1, minilm_tokenizer, SMALL)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    messages = [r.getMessage() for r in records]
    assert not [m for m in messages if "couldn't be hashed" in m]
    assert any("Loading cached processed dataset" in m for m in messages)
    assert again._fingerprint == first._fingerprint
    assert [c["filename"] for c in again.cache_files] == [c["filename"] for c in first.cache_files]
    other = prepare_features(v1, minilm_tokenizer, SMALL.model_copy(update={"doc_stride": 48}))
    assert other._fingerprint != first._fingerprint


def test_two_processes_give_the_same_features(dev_v1_slice, minilm_tokenizer, tmp_path):
    # Separate datasets caches: with one shared cache the 2-process map would just load the 1-process file
    # (datasets reuses an existing cache file whatever num_proc asks for), comparing that file with itself.
    one = prepare_features(load_squad(dev_v1_slice, cache_dir=tmp_path / "one"), minilm_tokenizer, SMALL)
    two = prepare_features(load_squad(dev_v1_slice, cache_dir=tmp_path / "two"), minilm_tokenizer, SMALL,
                           num_proc=2)
    one_files = [Path(c["filename"]) for c in one.cache_files]
    two_files = [Path(c["filename"]) for c in two.cache_files]
    # proof that both were computed: one file under one/, and under two/ one shard file written by each process
    assert len(one_files) == 1 and one_files[0].is_relative_to(tmp_path / "one") and "_of_" not in one_files[0].name
    assert sorted(f.stem[-15:] for f in two_files) == ["_00000_of_00002", "_00001_of_00002"]
    assert all(f.is_relative_to(tmp_path / "two") for f in two_files)
    assert all(len(datasets.Dataset.from_file(str(f))) for f in two_files)  # both processes windowed questions
    assert len(two) > len(load_squad(dev_v1_slice, cache_dir=tmp_path / "two"))
    assert two.to_dict() == one.to_dict()


def test_windows_keep_their_fingerprint_online_and_offline(dev_v1_slice, minilm_dir, tmp_path):
    # the teacher and logit caches are keyed on this fingerprint: a run without HF_HUB_OFFLINE must find what a
    # run with it cached, and the other way round
    import os
    import subprocess
    import sys

    # a tokenizer as transformers loads it, so any caller of prepare_features is covered, not only distill's loader
    code = ("import sys; from transformers import AutoTokenizer; from distill.data.features import prepare_features; "
            "from distill.data.squad import load_squad; print(prepare_features(load_squad(sys.argv[1], "
            "cache_dir=sys.argv[3]), AutoTokenizer.from_pretrained(sys.argv[2]))._fingerprint)")
    prints = []
    for offline in ("1", None):
        env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
        if offline:
            env.update(HF_HUB_OFFLINE=offline, HF_DATASETS_OFFLINE=offline, TRANSFORMERS_OFFLINE=offline)
        out = subprocess.run([sys.executable, "-c", code, str(dev_v1_slice), str(minilm_dir), str(tmp_path / "hf")],
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        prints.append(out.stdout.split()[-1])
    assert prints[0] == prints[1]


def test_left_padding_tokenizer_is_refused(v1, minilm_tokenizer):
    tok = minilm_tokenizer.__class__.from_pretrained(minilm_tokenizer.name_or_path, padding_side="left")
    with pytest.raises(AssertionError, match="padding_side"):
        prepare_features(v1, tok, SMALL)
