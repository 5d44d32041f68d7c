"""SQuAD EM/F1 with the exact semantics and float arithmetic of the official evaluate-v1.1.py / evaluate-v2.0.py.

Reads: a SQuAD data file (official nested JSON or flat JSON/JSONL rows, via `distill.data.squad.load_squad`),
a predictions JSON {question id: answer text} and, for v2.0, an optional no-answer-probability JSON
{question id: number}; or the same as in-memory data. Writes nothing; v1.1 prints the official
"Unanswered question ..." warning on stderr for each question without a prediction.

Returns the official dicts: v1.1 {"exact_match", "f1"}; v2.0 an OrderedDict exact, f1, total, HasAns_*,
NoAns_* (when such questions exist) and, when no-answer probabilities are given, best_exact,
best_exact_thresh, best_f1, best_f1_thresh. Where the official scripts crash (a v2.0 question without a
prediction or probability, a v1.1 question without gold answers) we raise InputError instead.
"""

from __future__ import annotations

import json
import re
import string
import sys
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Mapping

from distill.errors import InputError

VERSIONS = ("1.1", "2.0")
_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_SHOW_IDS = 5


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, drop whole-word a/an/the, collapse whitespace (both scripts)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


# ---- v1.1 ---------------------------------------------------------------------------------------------

def f1_v1(prediction: str, ground_truth: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_tokens)
    recall = 1.0 * num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_v1(prediction: str, ground_truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def score_v1(golds: Mapping[str, list[str]], preds: Mapping[str, str], *, pred_name: str = "predictions",
             data_name: str = "data") -> dict:
    """Official v1.1 `evaluate`: golds {id: [answer texts]} in data order, preds {id: text}."""
    if not golds:
        raise InputError("no questions to score")
    _check_preds(preds, pred_name)
    # Running `+=` sums in data order, as the official loop does (sum() rounds differently on Python >= 3.12).
    f1 = exact_match = total = 0
    for qid, ground_truths in golds.items():
        total += 1
        if qid not in preds:
            print(f"Unanswered question {qid} will receive score 0.", file=sys.stderr)
            continue
        if not ground_truths:
            raise InputError(
                f"{data_name}: question {qid}: no gold answers; SQuAD v1.1 scoring needs at least one"
                " (score it as version 2.0)"
            )
        prediction = preds[qid]
        exact_match += max(exact_v1(prediction, g) for g in ground_truths)
        f1 += max(f1_v1(prediction, g) for g in ground_truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


# ---- v2.0 ---------------------------------------------------------------------------------------------

def _tokens_v2(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def exact_v2(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def f1_v2(a_gold: str, a_pred: str) -> float:
    gold_toks = _tokens_v2(a_gold)
    pred_toks = _tokens_v2(a_pred)
    num_same = sum((Counter(gold_toks) & Counter(pred_toks)).values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def _missing(ids: list[str], total: int) -> str:
    shown = ", ".join(ids[:_SHOW_IDS]) + (", ..." if len(ids) > _SHOW_IDS else "")
    return f"{len(ids)} of {total} question(s) missing: {shown}"


def _eval_dict(exact: dict, f1: dict, qids: list[str] | None = None) -> OrderedDict:
    if not qids:
        total = len(exact)
        return OrderedDict([("exact", 100.0 * sum(exact.values()) / total),
                            ("f1", 100.0 * sum(f1.values()) / total), ("total", total)])
    total = len(qids)
    return OrderedDict([("exact", 100.0 * sum(exact[k] for k in qids) / total),
                        ("f1", 100.0 * sum(f1[k] for k in qids) / total), ("total", total)])


def _apply_threshold(scores: dict, na_probs: Mapping, has_ans: dict, thresh: float) -> dict:
    return {qid: float(not has_ans[qid]) if na_probs[qid] > thresh else s for qid, s in scores.items()}


def _best_thresh(preds: Mapping, scores: dict, na_probs: Mapping, has_ans: dict):
    # Official find_best_thresh: walk every na_probs key (extra ids included) in stable probability order.
    cur_score = best_score = sum(1 for k in has_ans if not has_ans[k])
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def score_v2(golds: Mapping[str, list[str]], preds: Mapping[str, str], na_probs: Mapping[str, float] | None = None,
             na_prob_thresh: float = 1.0, *, pred_name: str = "predictions",
             na_prob_name: str = "no-answer probabilities") -> OrderedDict:
    """Official v2.0 `main`: golds {id: [answer texts]} (empty list = impossible) in data order.

    Without `na_probs` every probability is 0.0 and no best_* keys are returned, as in the official script.
    """
    if not golds:
        raise InputError("no questions to score")
    _check_preds(preds, pred_name)
    missing = [qid for qid in golds if qid not in preds]
    if missing:
        raise InputError(f"{pred_name}: no prediction for {_missing(missing, len(golds))}"
                         ' (SQuAD v2.0 needs one for every question; "" means no answer)')
    given_probs = na_probs is not None
    if given_probs:
        _check_na_probs(na_probs, na_prob_name)
        missing = [qid for qid in golds if qid not in na_probs]
        if missing:
            raise InputError(f"{na_prob_name}: no probability for {_missing(missing, len(golds))}")
    else:
        na_probs = {k: 0.0 for k in preds}

    has_ans = {qid: bool(answers) for qid, answers in golds.items()}
    exact_raw, f1_raw = {}, {}
    for qid, answers in golds.items():
        gold_answers = [a for a in answers if normalize_answer(a)] or [""]
        a_pred = preds[qid]
        exact_raw[qid] = max(exact_v2(a, a_pred) for a in gold_answers)
        f1_raw[qid] = max(f1_v2(a, a_pred) for a in gold_answers)

    exact_thresh = _apply_threshold(exact_raw, na_probs, has_ans, na_prob_thresh)
    f1_thresh = _apply_threshold(f1_raw, na_probs, has_ans, na_prob_thresh)
    out = _eval_dict(exact_thresh, f1_thresh)
    for prefix, qids in (("HasAns", [k for k, v in has_ans.items() if v]),
                         ("NoAns", [k for k, v in has_ans.items() if not v])):
        if qids:
            for key, value in _eval_dict(exact_thresh, f1_thresh, qids).items():
                out[f"{prefix}_{key}"] = value
    if given_probs:
        out["best_exact"], out["best_exact_thresh"] = _best_thresh(preds, exact_raw, na_probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = _best_thresh(preds, f1_raw, na_probs, has_ans)
    return out


# ---- inputs -------------------------------------------------------------------------------------------

def _check_preds(preds: Any, name: str) -> None:
    if not isinstance(preds, Mapping):
        raise InputError(f"{name}: expected a JSON object {{question id: answer text}}, got {_json_type(preds)}")
    for qid, text in preds.items():
        if not isinstance(text, str):
            raise InputError(f"{name}: question {qid}: prediction must be a string, got {_json_type(text)}")


def _check_na_probs(na_probs: Any, name: str) -> None:
    if not isinstance(na_probs, Mapping):
        raise InputError(f"{name}: expected a JSON object {{question id: probability}}, got {_json_type(na_probs)}")
    for qid, p in na_probs.items():
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise InputError(f"{name}: question {qid}: no-answer probability must be a number, got {_json_type(p)}")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def read_json_object(path: str | Path) -> Any:
    """Parse a JSON file, turning every read/parse problem into a one-line InputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {'is a directory, expected a file' if path.is_dir() else 'file not found'}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None


def check_version(version: str | None) -> str | None:
    if version is not None and version not in VERSIONS:
        raise InputError(f"--version {version!r}: expected 1.1 or 2.0")
    return version


def golds_from_examples(examples) -> dict[str, list[str]]:
    """{id: gold texts} in dataset order from an examples Dataset (impossible questions get [])."""
    impossible = examples["is_impossible"] if "is_impossible" in examples.column_names else [False] * len(examples)
    return {qid: ([] if imp else list(ans["text"]))
            for qid, ans, imp in zip(examples["id"], examples["answers"], impossible)}


def _detect_version(examples) -> str:
    from distill.data.squad import squad_version

    return squad_version(examples)


def score_examples(examples, preds: Mapping[str, str], na_probs: Mapping[str, float] | None = None,
                   na_prob_thresh: float = 1.0, version: str | None = None, *, pred_name: str = "predictions",
                   na_prob_name: str = "no-answer probabilities", data_name: str = "data"):
    """Score an examples Dataset (columns id, answers, is_impossible); v1.1 ignores na_probs/na_prob_thresh."""
    version = check_version(version) or _detect_version(examples)
    golds = golds_from_examples(examples)
    if version == "1.1":
        return score_v1(golds, preds, pred_name=pred_name, data_name=data_name)
    return score_v2(golds, preds, na_probs, na_prob_thresh, pred_name=pred_name, na_prob_name=na_prob_name)


def _load_quietly(data_file):
    """load_squad without the datasets progress bars, so `distill score` stderr carries only real messages."""
    from datasets.utils import logging as ds_logging

    from distill.data.squad import load_squad

    enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        return load_squad(data_file)
    finally:
        if enabled:
            ds_logging.enable_progress_bar()


def score_files(data_file: str | Path, pred_file: str | Path, na_prob_file: str | Path | None = None,
                na_prob_thresh: float = 1.0, version: str | None = None):
    """`distill score`: read the three files and score them like the official script for the data's version."""
    check_version(version)
    preds = read_json_object(pred_file)
    _check_preds(preds, str(pred_file))
    na_probs = None
    if na_prob_file is not None:
        na_probs = read_json_object(na_prob_file)
        _check_na_probs(na_probs, str(na_prob_file))
    examples = _load_quietly(data_file)
    version = version or _detect_version(examples)
    if version == "1.1" and na_prob_file is not None:
        print(f"note: {na_prob_file} ignored: no-answer probabilities only apply to SQuAD v2.0", file=sys.stderr)
    return score_examples(examples, preds, na_probs, na_prob_thresh, version,
                          pred_name=str(pred_file), na_prob_name=str(na_prob_file), data_name=str(data_file))


def load_evaluate_metric(**kwargs):
    """The local `evaluate` module in distill/squad_metric (offline); config_name "squad" (v1.1) or "squad_v2"."""
    import evaluate

    return evaluate.load(str(Path(__file__).resolve().parent / "squad_metric"), **kwargs)
