"""Turn start/end logits over windows into one answer string per question.

Reads: the examples Dataset (id, context), the features Dataset (example_id, offset_mapping) and
start/end logits as arrays [n_features, max_seq_length] in feature order. Writes nothing; returns
(predictions {id: text}, na_probs {id: probability of "no answer"}; empty for SQuAD v1.1).

Span search (as HF run_qa, vectorised): per window the n_best highest start and end logits among
context tokens, every pair with start <= end and length <= max_answer_length, scored
start_logit + end_logit; the best pair over all windows of a question wins. Non-context tokens are
masked before the top-n_best cut, so question/special tokens never crowd out valid spans.

v2.0: the null score is the minimum over a question's windows of start_logits[0] + end_logits[0]
(as run_qa). The answer is "" when null_score - best_span_score > null_threshold, and
na_prob = sigmoid(null_score - best_span_score): monotonic in the same difference, so the official
evaluator's best-threshold search over na_probs finds the same decision boundary.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 4096  # features per vectorised block: bounds the [chunk, n_best, n_best] score array


def _offset_arrays(features, n: int, seq: int) -> tuple[np.ndarray, np.ndarray]:
    """Char start/end per token as int arrays [n, seq], -1 where the offset is None (not context)."""
    if hasattr(features, "with_format"):
        import pyarrow as pa
        import pyarrow.compute as pc

        # Arrow straight to numpy: converting 10^5 x 384 offset pairs to Python lists takes minutes.
        col = features.select_columns(["offset_mapping"]).with_format("arrow")[:]["offset_mapping"]
        inner = col.combine_chunks().flatten()
        if len(inner) != n * seq:
            raise ValueError(f"offset_mapping has {len(inner)} tokens, logits have {n} x {seq}")
        if inner.type == pa.null():  # no context token anywhere: Arrow inferred a null-typed column
            empty = np.full((n, seq), -1, dtype=np.int64)
            return empty, empty.copy()
        starts = pc.fill_null(pc.list_element(inner, 0), -1).to_numpy(zero_copy_only=False)
        ends = pc.fill_null(pc.list_element(inner, 1), -1).to_numpy(zero_copy_only=False)
        return starts.reshape(n, seq).astype(np.int64), ends.reshape(n, seq).astype(np.int64)
    starts = np.full((n, seq), -1, dtype=np.int64)
    ends = np.full((n, seq), -1, dtype=np.int64)
    for i, row in enumerate(features["offset_mapping"] if isinstance(features, dict) else (f["offset_mapping"] for f in features)):
        for j, off in enumerate(row):
            if off is not None:
                starts[i, j], ends[i, j] = off
    return starts, ends


def _column(table, name) -> list:
    if isinstance(table, dict) or hasattr(table, "column_names"):
        return list(table[name])
    return [row[name] for row in table]


def _best_spans(start_logits, end_logits, valid, n_best_size: int, max_answer_length: int):
    """Per feature: best valid (score, start, end); score -inf when the window has no valid span."""
    n, seq = start_logits.shape
    k = min(n_best_size, seq)
    score = np.full(n, -np.inf, dtype=np.float64)
    best_start = np.zeros(n, dtype=np.int64)
    best_end = np.zeros(n, dtype=np.int64)
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        s = np.where(valid[lo:hi], start_logits[lo:hi], -np.inf)
        e = np.where(valid[lo:hi], end_logits[lo:hi], -np.inf)
        top_s = np.argpartition(-s, k - 1, axis=1)[:, :k]
        top_e = np.argpartition(-e, k - 1, axis=1)[:, :k]
        pair = np.take_along_axis(s, top_s, 1)[:, :, None] + np.take_along_axis(e, top_e, 1)[:, None, :]
        length = top_e[:, None, :] - top_s[:, :, None] + 1
        pair = np.where((length >= 1) & (length <= max_answer_length), pair, -np.inf).reshape(hi - lo, -1)
        arg = pair.argmax(axis=1)
        rows = np.arange(hi - lo)
        score[lo:hi] = pair[rows, arg]
        best_start[lo:hi] = top_s[rows, arg // k]
        best_end[lo:hi] = top_e[rows, arg % k]
    return score, best_start, best_end


def best_answers(examples, features, start_logits, end_logits, *, n_best_size: int = 20,
                 max_answer_length: int = 30) -> dict[str, dict]:
    """Per question id: the best span over its windows (see module doc).

    {"text", "start", "end" (char offsets into the context; -1 when no window has a valid span),
    "span_score" (start + end logit), "null_score" (min over windows of the CLS start + end logits),
    "span_probability" (softmax start x end probability of the span within its window, over context + CLS)}.
    """
    start_logits = np.asarray(start_logits, dtype=np.float64)
    end_logits = np.asarray(end_logits, dtype=np.float64)
    if start_logits.ndim != 2 or start_logits.shape != end_logits.shape:
        raise ValueError(f"start/end logits must both be [n_features, seq], got {start_logits.shape} and {end_logits.shape}")
    n, seq = start_logits.shape
    if len(features) != n:
        raise ValueError(f"{len(features)} features but logits for {n}")
    if n_best_size < 1 or max_answer_length < 1:
        raise ValueError("n_best_size and max_answer_length must be positive")

    ids = _column(examples, "id")
    contexts = _column(examples, "context")
    index = {qid: i for i, qid in enumerate(ids)}
    try:
        feat_ex = np.fromiter((index[e] for e in _column(features, "example_id")), dtype=np.int64, count=n)
    except KeyError as err:
        raise ValueError(f"feature for question {err.args[0]} which is not among the examples") from None

    char_start, char_end = _offset_arrays(features, n, seq)
    valid = char_start >= 0
    score, tok_start, tok_end = _best_spans(start_logits, end_logits, valid, n_best_size, max_answer_length)

    # One sort groups features by question with the best-scoring window first (stable: earliest wins ties).
    order = np.lexsort((-score, feat_ex))
    grouped = feat_ex[order]
    first = np.r_[True, grouped[1:] != grouped[:-1]] if n else np.zeros(0, dtype=bool)
    best_feature = np.full(len(ids), -1, dtype=np.int64)
    best_feature[grouped[first]] = order[first]
    null_score = np.full(len(ids), np.inf)
    np.minimum.at(null_score, feat_ex, start_logits[:, 0] + end_logits[:, 0])

    answers = {}
    for i, qid in enumerate(ids):
        f = best_feature[i]
        span_score = float(score[f]) if f >= 0 else -np.inf
        found = {"text": "", "start": -1, "end": -1, "span_score": span_score, "null_score": float(null_score[i]),
                 "span_probability": 0.0}
        if np.isfinite(span_score):
            lo, hi = int(char_start[f, tok_start[f]]), int(char_end[f, tok_end[f]])
            found.update(text=contexts[i][lo:hi], start=lo, end=hi,
                         span_probability=_span_probability(start_logits[f], end_logits[f], valid[f],
                                                            tok_start[f], tok_end[f]))
        answers[qid] = found
    return answers


def _span_probability(start, end, valid, s: int, e: int) -> float:
    keep = valid.copy()
    keep[0] = True  # CLS, the no-answer slot, takes part as in the losses
    ps = np.exp(start[s] - np.logaddexp.reduce(start[keep]))
    pe = np.exp(end[e] - np.logaddexp.reduce(end[keep]))
    return float(ps * pe)


def no_answer_probability_of(found: dict) -> float:
    """sigmoid(null_score - span_score): the v2.0 na_prob (see module doc)."""
    diff = found["null_score"] - found["span_score"]
    if not np.isfinite(diff):
        return float(diff > 0)
    with np.errstate(over="ignore"):
        return float(1.0 / (1.0 + np.exp(-diff)))


def postprocess_predictions(examples, features, start_logits, end_logits, *, n_best_size: int = 20,
                            max_answer_length: int = 30, version_2: bool = False, null_threshold: float = 0.0,
                            no_answer_probability: float | None = None) -> tuple[dict[str, str], dict[str, float]]:
    """Best answer text per question id, and v2.0 no-answer probabilities (see module doc).

    v2.0: the answer is "" when null_score - span_score > null_threshold (a logit difference), or, given
    `no_answer_probability`, when na_prob > it: the unit and rule of the official evaluator's best_f1_thresh.
    """
    answers = best_answers(examples, features, start_logits, end_logits, n_best_size=n_best_size,
                           max_answer_length=max_answer_length)
    predictions: dict[str, str] = {}
    na_probs: dict[str, float] = {}
    for qid, found in answers.items():
        predictions[qid] = found["text"]
        if version_2:
            na_probs[qid] = no_answer_probability_of(found)
            declined = (na_probs[qid] > no_answer_probability if no_answer_probability is not None
                        else found["null_score"] - found["span_score"] > null_threshold)
            if declined:
                predictions[qid] = ""
    return predictions, na_probs
