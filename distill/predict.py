"""Run a QA model over windowed features and turn its logits into scored predictions.

Reads: a model (any AutoModelForQuestionAnswering), features from `data.features`, examples from
`data.squad`. Writes (evaluate): OUT/[prefix]predictions.json (official format), OUT/[prefix]na_probs.json (v2);
evaluate_model (`distill eval`) adds OUT/metrics.json (the `distill score` output).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("distill")

# Padding positions get this logit; postprocess and losses ignore them anyway.
PAD_LOGIT = -1e4


def model_input_columns(features, model=None) -> list[str]:
    cols = ["input_ids", "attention_mask"]
    if "token_type_ids" in features.column_names:
        accepts = model is None or "token_type_ids" in inspect.signature(model.forward).parameters
        if accepts:
            cols.append("token_type_ids")
    return cols


def compute_logits(model, features, *, batch_size: int = 32, precision: str = "auto", device=None,
                   desc: str = "predict", progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Start/end logits, float32 arrays [n_features, max_seq_length], in feature order.

    Features run longest first, so each batch holds windows of similar length and is cut to its
    longest real sequence (padding costs compute, not accuracy); positions beyond it get PAD_LOGIT.
    """
    import torch
    from tqdm.auto import tqdm

    from distill.data.features import window_lengths
    from distill.precision import resolve

    compute = resolve(precision, str(device) if device else None)
    device = torch.device(device or compute.device)
    dtype = compute.dtype
    model = model.to(device).eval()
    cols = model_input_columns(features, model)
    n, seq = len(features), len(features[0]["input_ids"]) if len(features) else 0
    start = np.full((n, seq), PAD_LOGIT, dtype=np.float32)
    end = np.full((n, seq), PAD_LOGIT, dtype=np.float32)
    data = features.with_format("torch", columns=cols)
    autocast = dtype != torch.float32
    lengths = window_lengths(features)
    order = np.argsort(-lengths, kind="stable")
    with torch.inference_mode(), tqdm(total=n, desc=desc, unit="feat", disable=not progress, leave=False) as bar:
        for lo in range(0, n, batch_size):
            rows = order[lo:lo + batch_size]
            batch = data[rows.tolist()]
            width = int(lengths[rows].max())
            inputs = {k: v[:, :width].to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=dtype, enabled=autocast):
                out = model(**inputs)
            start[rows, :width] = out.start_logits.float().cpu().numpy()
            end[rows, :width] = out.end_logits.float().cpu().numpy()
            bar.update(len(rows))
    return start, end


def predict(model, examples, features, *, batch_size: int = 32, precision: str = "auto", device=None,
            null_threshold: float = 0.0, no_answer_probability: float | None = None, n_best_size: int = 20,
            max_answer_length: int = 30,
            progress: bool = True, desc: str = "predict"):
    """(predictions {id: text}, na_probs {id: p} (v2 only, else {}), version)."""
    from distill.data.squad import squad_version
    from distill.postprocess import postprocess_predictions

    version = squad_version(examples)
    start, end = compute_logits(model, features, batch_size=batch_size, precision=precision, device=device,
                                progress=progress, desc=desc)
    preds, na_probs = postprocess_predictions(
        examples, features, start, end, n_best_size=n_best_size, max_answer_length=max_answer_length,
        version_2=version == "2.0", null_threshold=null_threshold, no_answer_probability=no_answer_probability,
    )
    return preds, na_probs, version


def evaluate(model, examples, features, *, out_dir: Path | None = None, prefix: str = "", batch_size: int = 32,
             precision: str = "auto", device=None, null_threshold: float = 0.0,
             no_answer_probability: float | None = None, n_best_size: int = 20,
             max_answer_length: int = 30, progress: bool = True, desc: str = "eval") -> dict:
    """Predict, score with the official semantics, and (given `out_dir`) write the predictions.

    Writes OUT/{prefix}predictions.json and, for SQuAD v2.0, OUT/{prefix}na_probs.json. Returns the
    `distill score` dict. The one path from a model to its EM/F1, for run, eval, bench and the benchmarks.
    """
    from distill.files import write_json
    from distill.metrics import score_examples

    preds, na_probs, version = predict(model, examples, features, batch_size=batch_size, precision=precision,
                                       device=device, null_threshold=null_threshold,
                                       no_answer_probability=no_answer_probability, n_best_size=n_best_size,
                                       max_answer_length=max_answer_length, progress=progress, desc=desc)
    if out_dir is not None:
        write_json(Path(out_dir) / f"{prefix}predictions.json", preds)
        if version == "2.0":
            write_json(Path(out_dir) / f"{prefix}na_probs.json", na_probs)
    return score_examples(examples, preds, na_probs=na_probs or None, version=version)


def evaluate_model(model_source: str, data_source: str, out_dir: Path, *, window=None, batch_size: int = 32,
                   precision: str = "auto", max_questions: int | None = None, progress: bool = True) -> dict:
    """`distill eval`: window the data, run the model, post-process, score; returns the score dict."""
    from distill.data.features import WindowConfig, prepare_features
    from distill.data.squad import load_squad, take_questions
    from distill.files import write_json
    from distill.models import load_qa_model, load_tokenizer

    examples = load_squad(data_source)
    if max_questions:
        examples = take_questions(examples, max_questions)
    tokenizer = load_tokenizer(model_source)
    model = load_qa_model(model_source)
    features = prepare_features(examples, tokenizer, window or WindowConfig())
    metrics = evaluate(model, examples, features, out_dir=out_dir, batch_size=batch_size, precision=precision,
                       progress=progress)
    write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics
