"""postprocess_predictions on synthetic logits: span choice across windows, limits, v2 null decision."""

import math

import numpy as np
import pytest
from datasets import Dataset

from distill.postprocess import postprocess_predictions

# Windows of 8 tokens: [CLS] q q [SEP] c c c [SEP]; three context tokens per window, one-word tokens.
CONTEXT = "zero one two three four five"
WORDS = [(0, 4), (5, 8), (9, 12), (13, 18), (19, 23), (24, 28)]
SEQ = 8


def _window(first_word: int):
    return [None] * 4 + [list(WORDS[first_word + k]) for k in range(3)] + [None]


def _data(windows_per_example: dict[str, list[int]]):
    examples = Dataset.from_dict({"id": list(windows_per_example), "context": [CONTEXT] * len(windows_per_example)})
    rows = [(qid, _window(w)) for qid, ws in windows_per_example.items() for w in ws]
    features = Dataset.from_dict({"example_id": [r[0] for r in rows], "offset_mapping": [r[1] for r in rows]})
    return examples, features


def _logits(n: int, spans: dict[int, tuple[int, int, float]], null: dict[int, float] | None = None):
    start, end = np.zeros((n, SEQ)), np.zeros((n, SEQ))
    for f, (s, e, score) in spans.items():
        start[f, s] += score / 2
        end[f, e] += score / 2
    for f, score in (null or {}).items():
        start[f, 0] = end[f, 0] = score / 2
    return start, end


def test_best_scoring_span_over_all_windows_of_a_question_wins():
    examples, features = _data({"q": [0, 3]})  # window 0 covers words 0-2, window 1 words 3-5
    start, end = _logits(2, {0: (4, 5, 4.0), 1: (5, 6, 6.0)})
    preds, na = postprocess_predictions(examples, features, start, end)
    assert preds == {"q": "four five"} and na == {}
    start, end = _logits(2, {0: (4, 5, 7.0), 1: (5, 6, 6.0)})
    assert postprocess_predictions(examples, features, start, end)[0] == {"q": "zero one"}


def test_max_answer_length_limits_the_span():
    examples, features = _data({"q": [0]})
    start, end = _logits(1, {0: (4, 6, 10.0)})
    start[0, 5] = 1.0
    preds, _ = postprocess_predictions(examples, features, start, end, max_answer_length=2)
    assert preds == {"q": "one two"}
    assert postprocess_predictions(examples, features, start, end, max_answer_length=3)[0] == {"q": "zero one two"}


def test_question_and_special_tokens_are_never_chosen_and_end_precedes_no_start():
    examples, features = _data({"q": [0]})
    start, end = _logits(1, {0: (1, 2, 100.0)})  # span over question tokens
    start[0, 7], end[0, 3] = 50.0, 50.0  # final [SEP] and middle [SEP]
    start[0, 6], end[0, 4] = 20.0, 20.0  # end before start
    start[0, 5], end[0, 5] = 1.0, 1.0
    preds, _ = postprocess_predictions(examples, features, start, end, n_best_size=2)
    assert preds == {"q": "one"}


def test_v1_returns_the_best_span_even_when_cls_scores_higher():
    examples, features = _data({"q": [0]})
    start, end = _logits(1, {0: (4, 4, 1.0)}, null={0: 50.0})
    preds, na = postprocess_predictions(examples, features, start, end)
    assert preds == {"q": "zero"} and na == {}


def test_v2_predicts_no_answer_when_null_beats_span_by_more_than_threshold():
    examples, features = _data({"q": [0, 3]})
    # Null score is the minimum over windows: 3.0 (window 1), best span 2.0 -> difference 1.0.
    start, end = _logits(2, {0: (5, 5, 2.0)}, null={0: 9.0, 1: 3.0})
    preds, na = postprocess_predictions(examples, features, start, end, version_2=True)
    assert preds == {"q": ""} and na["q"] == pytest.approx(1 / (1 + math.exp(-1.0)))
    preds, na2 = postprocess_predictions(examples, features, start, end, version_2=True, null_threshold=1.5)
    assert preds == {"q": "one"} and na2 == na
    start, end = _logits(2, {0: (5, 5, 8.0)}, null={0: 9.0, 1: 3.0})
    preds, na3 = postprocess_predictions(examples, features, start, end, version_2=True)
    assert preds == {"q": "one"} and na3["q"] < 0.5


def test_window_without_context_tokens_gives_empty_answer():
    examples = Dataset.from_dict({"id": ["q"], "context": [CONTEXT]})
    features = Dataset.from_dict({"example_id": ["q"], "offset_mapping": [[None] * SEQ]})
    start, end = np.ones((1, SEQ)), np.ones((1, SEQ))
    assert postprocess_predictions(examples, features, start, end)[0] == {"q": ""}
    preds, na = postprocess_predictions(examples, features, start, end, version_2=True)
    assert preds == {"q": ""} and na == {"q": 1.0}


def _brute_force(examples, features, start, end, n_best, max_len):
    best = {}
    for f, row in enumerate(features):
        offsets = row["offset_mapping"]
        ok = [i for i in range(len(offsets)) if offsets[i] is not None]
        top_s = sorted(ok, key=lambda i: -start[f, i])[:n_best]
        top_e = sorted(ok, key=lambda i: -end[f, i])[:n_best]
        for s in top_s:
            for e in top_e:
                if s <= e < s + max_len:
                    score = start[f, s] + end[f, e]
                    if score > best.get(row["example_id"], (-np.inf,))[0]:
                        best[row["example_id"]] = (score, offsets[s][0], offsets[e][1])
    contexts = dict(zip(examples["id"], examples["context"]))
    return {q: contexts[q][best[q][1] : best[q][2]] if q in best else "" for q in examples["id"]}


def test_vectorised_search_matches_a_brute_force_search_on_random_logits():
    rng = np.random.default_rng(0)
    layout = {f"q{i}": sorted(rng.choice(4, size=rng.integers(1, 4), replace=False).tolist()) for i in range(40)}
    examples, features = _data(layout)
    # A non-contiguous selection exercises the Arrow path through an indices mapping.
    order = rng.permutation(len(features)).tolist()
    features = features.select(order)
    start, end = rng.normal(size=(len(features), SEQ)), rng.normal(size=(len(features), SEQ))
    for n_best, max_len in ((20, 30), (2, 2), (1, 1)):
        preds, _ = postprocess_predictions(examples, features, start, end, n_best_size=n_best, max_answer_length=max_len)
        assert preds == _brute_force(examples, features, start, end, n_best, max_len)


def test_mismatched_logits_are_refused():
    examples, features = _data({"q": [0]})
    with pytest.raises(ValueError):
        postprocess_predictions(examples, features, np.zeros((2, SEQ)), np.zeros((2, SEQ)))


def test_no_answer_probability_is_the_unit_and_rule_of_best_f1_thresh(dev_v2_slice, tiny_bert_dir, minilm_tokenizer):
    """Predicting "" where na_prob > best_f1_thresh scores exactly the official best_f1."""
    from distill.data.features import WindowConfig, prepare_features
    from distill.data.squad import load_squad
    from distill.metrics import score_examples
    from distill.models import load_qa_model
    from distill.predict import compute_logits

    examples = load_squad(dev_v2_slice)
    features = prepare_features(examples, minilm_tokenizer, WindowConfig(max_seq_length=96, doc_stride=32,
                                                                          max_query_length=24))
    start, end = compute_logits(load_qa_model(tiny_bert_dir), features, precision="fp32", progress=False)
    raw, na_probs = postprocess_predictions(examples, features, start, end, version_2=True,
                                            null_threshold=math.inf)  # never declines: the spans themselves
    official = score_examples(examples, raw, na_probs=na_probs, version="2.0")
    p = official["best_f1_thresh"]
    declined, _ = postprocess_predictions(examples, features, start, end, version_2=True, no_answer_probability=p)
    assert score_examples(examples, declined, version="2.0")["f1"] == pytest.approx(official["best_f1"], abs=1e-9)
    assert {q for q, t in declined.items() if t == ""} >= {q for q, pr in na_probs.items() if pr > p}
