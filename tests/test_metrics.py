"""distill.metrics: official SQuAD v1.1 / v2.0 EM/F1, pinned by hand-derived values and the real dev sets."""

import json
import string
from collections import OrderedDict

import pytest

from distill.errors import InputError
from distill.metrics import (
    exact_v1,
    f1_v1,
    f1_v2,
    load_evaluate_metric,
    normalize_answer,
    score_examples,
    score_files,
    score_v1,
    score_v2,
)

V2_KEYS = ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1",
           "NoAns_total"]
BEST_KEYS = ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


# ---- normalisation -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "pred, gold",
    [
        ("The cat", "cat"),
        ("an apple", "Apple"),
        ("U.S.", "US"),
        ('"Hello"', "hello"),
        ("  the\tcat \n sat ", "cat sat"),
        ("cat\u00a0sat", "cat sat"),  # str.split() treats the no-break space as whitespace
        ("Café", "café"),
        ("A-team", "ateam"),  # punctuation goes before articles, so "a-" becomes part of the word
    ],
)
def test_normalisation_makes_these_answers_exact_matches(pred, gold):
    assert exact_v1(pred, gold) is True
    assert f1_v1(pred, gold) == 1.0


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("café", "cafe"),  # no accent folding
        ("\u201cHello\u201d", "Hello"),  # curly quotes are not in string.punctuation
        ("theater", "ater"),  # articles only as whole words
        ("A-team", "team"),
    ],
)
def test_normalisation_keeps_these_answers_apart(pred, gold):
    assert exact_v1(pred, gold) is False
    assert f1_v1(pred, gold) == 0


def test_normalize_answer_examples():
    assert normalize_answer("The  Denver, Broncos!") == "denver broncos"
    # curly quotes stay, but they are not word characters, so "the" between them is a whole word
    assert normalize_answer("\u201cThe\u201d End") == "\u201c \u201d end"
    assert normalize_answer("Thé cat") == "thé cat"
    assert normalize_answer("a an the . ,") == ""


def test_f1_partial_overlap_is_harmonic_mean_of_token_precision_and_recall():
    # pred 3 tokens, gold 4 tokens, 2 shared: precision 2/3, recall 2/4, F1 = 2pr/(p+r) = 4/7
    assert f1_v1("red dog barked", "big red dog ran") == pytest.approx(4 / 7, rel=1e-15)
    assert f1_v2("big red dog ran", "red dog barked") == pytest.approx(4 / 7, rel=1e-15)


def test_f1_counts_repeated_tokens_at_most_as_often_as_both_sides_have_them():
    # pred [cat, cat, cat] vs gold [cat, cat]: 2 shared, p = 2/3, r = 1, F1 = 0.8
    assert f1_v1("the the cat cat cat", "cat cat") == pytest.approx(0.8, rel=1e-15)


def test_empty_prediction_v1_matches_a_gold_that_normalises_to_empty_but_gets_no_f1():
    assert exact_v1("", ".") is True
    assert f1_v1("", ".") == 0
    assert f1_v1("", "cat") == 0


def test_v2_f1_is_one_only_when_both_sides_are_empty():
    assert f1_v2("", "") == 1
    assert f1_v2("", "the") == 1  # "the" normalises to no tokens
    assert f1_v2("", "cat") == 0
    assert f1_v2("cat", "") == 0


# ---- v1.1 aggregation --------------------------------------------------------------------------------

def test_score_v1_takes_the_best_gold_per_question_and_averages_over_all_questions():
    golds = {"q1": ["big red dog ran", "a red dog"], "q2": ["Paris"], "q3": ["1776"]}
    preds = {"q1": "red dog barked", "q2": "paris.", "q3": "1777"}
    # q1: vs gold 1 F1 4/7; vs gold 2 ([red, dog]) p = 2/3, r = 1, F1 = 0.8 -> 0.8, EM 0
    out = score_v1(golds, preds)
    assert list(out) == ["exact_match", "f1"]
    assert out["exact_match"] == 100.0 * 1 / 3
    f1_q1 = (2 * (2 / 3) * 1.0) / ((2 / 3) + 1.0)
    assert out["f1"] == 100.0 * (0 + f1_q1 + 1.0 + 0) / 3


def test_score_v1_unanswered_question_warns_on_stderr_and_scores_zero(capsys):
    out = score_v1({"q1": ["cat"], "q2": ["dog"]}, {"q1": "cat", "extra": "ignored"})
    assert out == {"exact_match": 50.0, "f1": 50.0}
    assert capsys.readouterr().err == "Unanswered question q2 will receive score 0.\n"


def test_score_v1_rejects_a_question_without_gold_answers():
    with pytest.raises(InputError, match="^d.json: question q2: no gold answers"):
        score_v1({"q1": ["cat"], "q2": []}, {"q1": "cat", "q2": ""}, data_name="d.json")


def test_score_v1_rejects_non_string_predictions_naming_the_id():
    with pytest.raises(InputError, match="question q1: prediction must be a string, got a number"):
        score_v1({"q1": ["cat"]}, {"q1": 3})


# ---- v2.0 --------------------------------------------------------------------------------------------

TOY_GOLDS = {"q1": ["Paris"], "q2": ["blue whale"], "q3": [], "q4": []}
TOY_PREDS = {"q1": "Paris", "q2": "whale", "q3": "London", "q4": ""}
TOY_NA = {"q1": 0.1, "q2": 0.6, "q3": 0.8, "q4": 0.3}


def test_score_v2_toy_set_by_hand():
    # q1 EM 1 F1 1; q2 EM 0 F1 2/3 (p 1, r 1/2); q3 impossible but answered: 0/0; q4 impossible, "": 1/1
    out = score_v2(TOY_GOLDS, TOY_PREDS)
    assert isinstance(out, OrderedDict) and list(out) == V2_KEYS
    assert out == {
        "exact": 50.0, "f1": 100.0 * (1 + 2 / 3 + 0 + 1) / 4, "total": 4,
        "HasAns_exact": 50.0, "HasAns_f1": 100.0 * (1 + 2 / 3) / 2, "HasAns_total": 2,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2,
    }


def test_score_v2_best_thresholds_by_hand():
    # Walk in probability order q1 .1, q4 .3, q2 .6, q3 .8 from 2 (= no-answer questions):
    # exact 2 -> 3 (q1, best at .1) -> 3 -> 3 -> 2; f1 2 -> 3 (.1) -> 3 -> 3+2/3 (best at .6) -> 2+2/3
    out = score_v2(TOY_GOLDS, TOY_PREDS, TOY_NA)
    assert list(out) == V2_KEYS + BEST_KEYS
    assert out["best_exact"] == 75.0 and out["best_exact_thresh"] == 0.1
    assert out["best_f1"] == 100.0 * (3 + 2 / 3) / 4 and out["best_f1_thresh"] == 0.6
    assert out["exact"] == 50.0  # the default threshold 1.0 turns nothing into a no-answer


def test_score_v2_threshold_turns_confident_no_answers_into_abstentions():
    # thresh .5: q2 (.6) and q3 (.8) abstain -> q2 scores 0.0 (it has an answer), q3 scores 1.0
    out = score_v2(TOY_GOLDS, TOY_PREDS, TOY_NA, na_prob_thresh=0.5)
    assert (out["exact"], out["f1"]) == (75.0, 75.0)
    assert (out["HasAns_exact"], out["HasAns_f1"], out["NoAns_exact"], out["NoAns_f1"]) == (50.0, 50.0, 100.0, 100.0)
    assert out["best_exact"] == 75.0 and out["best_f1_thresh"] == 0.6  # best_* use the raw scores


def test_score_v2_without_probabilities_uses_zero_for_every_question():
    out = score_v2(TOY_GOLDS, TOY_PREDS, na_prob_thresh=-1.0)
    assert "best_exact" not in out
    assert (out["exact"], out["HasAns_exact"], out["NoAns_exact"]) == (50.0, 0.0, 100.0)


def test_score_v2_best_threshold_ties_follow_the_probability_file_order():
    golds, preds = {"a": ["x"], "b": []}, {"a": "x", "b": "y"}
    first_a = score_v2(golds, preds, {"a": 0.5, "b": 0.5, "not-in-data": 0.0})
    assert (first_a["best_exact"], first_a["best_exact_thresh"]) == (100.0, 0.5)
    first_b = score_v2(golds, preds, {"b": 0.5, "a": 0.5})
    assert (first_b["best_exact"], first_b["best_exact_thresh"]) == (50.0, 0.0)


def test_score_v2_keeps_integer_probabilities_as_given():
    out = score_v2({"a": ["x"]}, {"a": "x"}, {"a": 1})
    assert out["best_exact_thresh"] == 1 and type(out["best_exact_thresh"]) is int


def test_score_v2_golds_that_normalise_to_empty_count_as_the_empty_answer():
    golds = {"q": ["."]}
    assert score_v2(golds, {"q": ""})["exact"] == 100.0 and score_v2(golds, {"q": ""})["f1"] == 100.0
    assert score_v1(golds, {"q": ""}) == {"exact_match": 100.0, "f1": 0.0}


def test_score_v2_only_reports_groups_that_exist():
    assert list(score_v2({"a": ["x"]}, {"a": "x"})) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1",
                                                       "HasAns_total"]
    assert list(score_v2({"b": []}, {"b": ""})) == ["exact", "f1", "total", "NoAns_exact", "NoAns_f1",
                                                    "NoAns_total"]


def test_score_v2_missing_predictions_raise_naming_count_and_ids():
    preds = {k: v for k, v in TOY_PREDS.items() if k not in ("q2", "q4")}
    with pytest.raises(InputError, match=r"^preds.json: no prediction for 2 of 4 question\(s\) missing: q2, q4"):
        score_v2(TOY_GOLDS, preds, pred_name="preds.json")


def test_score_v2_missing_or_non_numeric_probabilities_raise():
    with pytest.raises(InputError, match=r"na.json: no probability for 1 of 4 question\(s\) missing: q3"):
        score_v2(TOY_GOLDS, TOY_PREDS, {"q1": 0.1, "q2": 0.6, "q4": 0.3}, na_prob_name="na.json")
    with pytest.raises(InputError, match="question q2: no-answer probability must be a number, got a string"):
        score_v2(TOY_GOLDS, TOY_PREDS, dict(TOY_NA, q2="0.6"))
    with pytest.raises(InputError, match="got a boolean"):
        score_v2(TOY_GOLDS, TOY_PREDS, dict(TOY_NA, q2=True))


# ---- datasets and files ------------------------------------------------------------------------------

def test_score_examples_reads_ids_answers_and_is_impossible_from_a_dataset():
    from datasets import Dataset

    rows = [{"id": q, "answers": {"text": t, "answer_start": [0] * len(t)}, "is_impossible": not t}
            for q, t in TOY_GOLDS.items()]
    ds = Dataset.from_list(rows)
    assert score_examples(ds, TOY_PREDS, TOY_NA) == score_v2(TOY_GOLDS, TOY_PREDS, TOY_NA)
    answerable = ds.select([0, 1])
    assert score_examples(answerable, TOY_PREDS) == score_v1({"q1": ["Paris"], "q2": ["blue whale"]}, TOY_PREDS)
    assert list(score_examples(answerable, TOY_PREDS, version="2.0")) == V2_KEYS[:6]


def test_score_files_reads_official_json_and_detects_the_version(dev_v1_slice, dev_v2_slice, tmp_path):
    for data_file, first_key in ((dev_v1_slice, "exact_match"), (dev_v2_slice, "exact")):
        data = json.loads(data_file.read_text())
        preds = {qa["id"]: (qa["answers"][0]["text"] if qa["answers"] else "")
                 for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]}
        out = score_files(data_file, write_json(tmp_path / "p.json", preds))
        assert next(iter(out)) == first_key
        assert out[first_key] == 100.0 and out["f1"] == 100.0


def test_score_files_reads_flat_jsonl_rows(tmp_path):
    rows = [{"id": q, "title": "t", "context": "Paris blue whale", "question": "?",
             "answers": {"text": t, "answer_start": [{"Paris": 0, "blue whale": 6}[x] for x in t]},
             "is_impossible": not t} for q, t in TOY_GOLDS.items()]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = score_files(data, write_json(tmp_path / "p.json", TOY_PREDS), write_json(tmp_path / "na.json", TOY_NA))
    assert out == score_v2(TOY_GOLDS, TOY_PREDS, TOY_NA)


def test_score_files_version_option_overrides_detection_and_rejects_unknown_versions(dev_v1_slice, tmp_path):
    preds = write_json(tmp_path / "p.json", {})
    with pytest.raises(InputError, match="--version '3.0': expected 1.1 or 2.0"):
        score_files(dev_v1_slice, preds, version="3.0")
    with pytest.raises(InputError, match=r"p.json: no prediction for \d+ of \d+ question"):
        score_files(dev_v1_slice, preds, version="2.0")


def test_score_files_forcing_v1_on_unanswerable_questions_raises_naming_the_data_file(dev_v2_slice, tmp_path):
    qas = _questions(dev_v2_slice)
    preds = write_json(tmp_path / "p.json", {qa["id"]: "" for qa in qas})
    first_impossible = next(qa["id"] for qa in qas if qa.get("is_impossible"))
    with pytest.raises(InputError, match=f"^{dev_v2_slice}: question {first_impossible}: no gold answers"):
        score_files(dev_v2_slice, preds, version="1.1")


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"a": "x",\n  "b" }', r"p.json: not valid JSON at line 2 column 7: Expecting ':' delimiter"),
        ('["x"]', r"p.json: expected a JSON object \{question id: answer text\}, got an array"),
        ('{"56be4db0acb8001400a502ec": null}', r"p.json: question 56be4db0acb8001400a502ec: prediction must be a"
                                               r" string, got null"),
    ],
)
def test_score_files_bad_prediction_files_raise_one_line_naming_the_file(dev_v1_slice, tmp_path, content, message):
    pred = tmp_path / "p.json"
    pred.write_text(content)
    with pytest.raises(InputError, match=message) as err:
        score_files(dev_v1_slice, pred)
    assert "\n" not in str(err.value) and str(pred) in str(err.value)


def test_score_files_missing_prediction_file_raises_input_error(dev_v1_slice, tmp_path):
    with pytest.raises(InputError, match="nope.json: file not found"):
        score_files(dev_v1_slice, tmp_path / "nope.json")


def test_score_files_bad_probability_file_raises_naming_it(dev_v2_slice, tmp_path):
    data = json.loads(dev_v2_slice.read_text())
    ids = [qa["id"] for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]]
    preds = write_json(tmp_path / "p.json", {k: "" for k in ids})
    with pytest.raises(InputError, match=r"na.json: no probability for 1 of"):
        score_files(dev_v2_slice, preds, write_json(tmp_path / "na.json", {k: 0.5 for k in ids[1:]}))
    with pytest.raises(InputError, match=r"na.json: expected a JSON object"):
        score_files(dev_v2_slice, preds, write_json(tmp_path / "na.json", [0.5]))


# ---- real dev sets -----------------------------------------------------------------------------------

def _questions(path):
    data = json.loads(path.read_text())
    return [qa for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]]


def _only_punctuation(text):
    return all(ch in string.punctuation or ch.isspace() for ch in text)


def test_dev_v1_gold_predictions_score_100_and_empty_predictions_score_0(squad_dir, tmp_path):
    data_file = squad_dir / "dev-v1.1.json"
    qas = _questions(data_file)
    gold = score_files(data_file, write_json(tmp_path / "g.json", {qa["id"]: qa["answers"][0]["text"] for qa in qas}))
    assert gold == {"exact_match": 100.0, "f1": 100.0}
    empty = score_files(data_file, write_json(tmp_path / "e.json", {qa["id"]: "" for qa in qas}))
    # "" matches exactly the three questions with a gold answer "." (it normalises to ""), F1 stays 0.
    punct_only = [qa["id"] for qa in qas if any(_only_punctuation(a["text"]) for a in qa["answers"])]
    assert len(punct_only) == 3 and len(qas) == 10570
    assert empty == {"exact_match": 100.0 * 3 / 10570, "f1": 0.0}


def test_dev_v1_mixed_predictions_match_a_per_question_formula(squad_dir, tmp_path):
    # i % 3 == 0: first gold (EM 1, F1 1); == 1: "" (EM 1 only for a punctuation-only gold, F1 0);
    # == 2: first gold + an unseen token: EM 0 and F1 = 2n / (2n + 1), n = tokens in the first gold.
    # (No other gold can beat that: with c shared tokens F1 = 2c / (n + 1 + m) and c <= min(n, m).)
    data_file = squad_dir / "dev-v1.1.json"
    qas = _questions(data_file)
    preds, em, f1 = {}, 0, 0.0
    for i, qa in enumerate(qas):
        first = qa["answers"][0]["text"]
        if i % 3 == 0:
            preds[qa["id"]], em, f1 = first, em + 1, f1 + 1.0
        elif i % 3 == 1:
            preds[qa["id"]] = ""
            em += any(_only_punctuation(a["text"]) for a in qa["answers"])
        else:
            preds[qa["id"]] = first + " zzqxj"
            n = len(normalize_answer(first).split())
            f1 += 2 * n / (2 * n + 1)
    out = score_files(data_file, write_json(tmp_path / "m.json", preds))
    assert out["exact_match"] == 100.0 * em / len(qas)
    assert out["f1"] == pytest.approx(100.0 * f1 / len(qas), rel=1e-12)


def test_dev_v2_empty_predictions_score_the_no_answer_share(squad_dir, tmp_path):
    data_file = squad_dir / "dev-v2.0.json"
    qas = _questions(data_file)
    ids = [qa["id"] for qa in qas]
    preds = write_json(tmp_path / "e.json", {k: "" for k in ids})
    na = write_json(tmp_path / "na.json", {k: 0.5 for k in ids})
    out = score_files(data_file, preds, na)
    share = 100.0 * 5945 / 11873
    assert out == {"exact": share, "f1": share, "total": 11873, "HasAns_exact": 0.0, "HasAns_f1": 0.0,
                   "HasAns_total": 5928, "NoAns_exact": 100.0, "NoAns_f1": 100.0, "NoAns_total": 5945,
                   "best_exact": share, "best_exact_thresh": 0.0, "best_f1": share, "best_f1_thresh": 0.0}
    gold = {qa["id"]: (qa["answers"][0]["text"] if qa["answers"] else "") for qa in qas}
    out = score_files(data_file, write_json(tmp_path / "g.json", gold), na)
    assert all(out[k] == 100.0 for k in ("exact", "f1", "HasAns_exact", "NoAns_f1", "best_exact", "best_f1"))


# ---- evaluate module ---------------------------------------------------------------------------------

def test_evaluate_module_loads_offline_and_delegates_to_distill_metrics():
    squad = load_evaluate_metric()
    refs = [{"id": q, "answers": {"text": t, "answer_start": [0] * len(t)}} for q, t in TOY_GOLDS.items() if t]
    preds = [{"id": q, "prediction_text": TOY_PREDS[q]} for q in ("q1", "q2")]
    assert squad.compute(predictions=preds, references=refs) == score_v1({"q1": ["Paris"], "q2": ["blue whale"]},
                                                                          TOY_PREDS)
    squad_v2 = load_evaluate_metric(config_name="squad_v2")
    refs = [{"id": q, "answers": {"text": t, "answer_start": [0] * len(t)}} for q, t in TOY_GOLDS.items()]
    preds = [{"id": q, "prediction_text": p, "no_answer_probability": TOY_NA[q]} for q, p in TOY_PREDS.items()]
    out = squad_v2.compute(predictions=preds, references=refs, no_answer_threshold=0.5)
    assert out == dict(score_v2(TOY_GOLDS, TOY_PREDS, TOY_NA, 0.5))
    assert list(out) == V2_KEYS + BEST_KEYS
