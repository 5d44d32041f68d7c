"""`distill answer`: answer questions about contexts with a saved QA model (transformers 5 has no QA pipeline).

Reads: a QA model (directory, hub id or `minilm`) and its tokenizer; questions with their contexts.
Writes nothing; returns one {"answer", "score", "start", "end"} per question. Long contexts are windowed,
the model is run and the spans are post-processed exactly as `distill eval` does
(`data.features.window_questions`, `predict.compute_logits`, `postprocess.best_answers`).

`score` is the probability of the returned answer: for a span, softmax(start) x softmax(end) within its
window (over the context and CLS); for "no answer" (only with `null_threshold`, as a SQuAD v2 model is
evaluated), sigmoid(null score - best span score). `start`/`end` are character offsets into the context
(-1 for no answer).
"""

from __future__ import annotations

import json
from pathlib import Path

from distill.errors import InputError


def answer_questions(model, tokenizer, items: list[dict], *, window=None, precision: str = "auto",
                     batch_size: int = 32, n_best_size: int = 20, max_answer_length: int = 30,
                     null_threshold: float | None = None) -> list[dict]:
    """Answers for `items` ({"question", "context"}, optional "id"), in order."""
    from distill.data.features import WindowConfig, window_questions
    from distill.postprocess import best_answers, no_answer_probability_of
    from distill.predict import compute_logits

    for n, item in enumerate(items):
        for key in ("question", "context"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise InputError(f"question {item.get('id', n + 1)}: '{key}' must be a non-empty string")
    ids = [str(item.get("id", n)) for n, item in enumerate(items)]
    if len(set(ids)) != len(ids):
        raise InputError("question ids must be unique")
    rows = {"id": ids, "title": [""] * len(items), "question": [i["question"] for i in items],
            "context": [i["context"] for i in items],
            "answers": [{"text": [], "answer_start": []} for _ in items], "is_impossible": [False] * len(items)}
    features = window_questions(rows, tokenizer, window or WindowConfig())
    start, end = compute_logits(model, features, batch_size=batch_size, precision=precision, progress=False)
    found = best_answers(rows, features, start, end, n_best_size=n_best_size, max_answer_length=max_answer_length)
    out = []
    for qid in ids:
        f = found[qid]
        if null_threshold is not None and f["null_score"] - f["span_score"] > null_threshold:
            out.append({"answer": "", "score": no_answer_probability_of(f), "start": -1, "end": -1})
        else:
            out.append({"answer": f["text"], "score": f["span_probability"], "start": f["start"], "end": f["end"]})
    return out


def answer(model_source: str, question: str, context: str, **kwargs) -> dict:
    """One answer from a model directory, hub id or `minilm` (see answer_questions for the options)."""
    from distill.models import load_qa_model, load_tokenizer

    return answer_questions(load_qa_model(model_source), load_tokenizer(model_source),
                            [{"question": question, "context": context}], **kwargs)[0]


def read_items(question: str | None, context: str | None, context_file: Path | None, jsonl: Path | None) -> list[dict]:
    """The questions of `distill answer`: one from the options, or one per line of a JSONL file."""
    if jsonl is not None:
        if question or context or context_file:
            raise InputError("give --jsonl FILE, or --question with --context/--context-file, not both")
        items = []
        for n, line in enumerate(jsonl.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{jsonl}: line {n}: not JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{jsonl}: line {n}: expected an object with question and context")
            items.append({"id": str(row.get("id", n)), **row})
        return items
    if context_file is not None:
        if context is not None:
            raise InputError("give --context or --context-file, not both")
        context = context_file.read_text()
    if not question or context is None:
        raise InputError("give --question and --context (or --context-file), or --jsonl FILE")
    return [{"question": question, "context": context}]
