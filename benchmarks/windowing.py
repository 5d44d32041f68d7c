"""Loading, windowing and gold-position figures on the real SQuAD files.

Reads: ../shared/data/squad/{dev-v1.1,dev-v2.0,train-v1.1}.json and the packaged MiniLM tokenizer.
Writes: benchmarks/results/windowing.json (and prints it). Datasets caches go to fresh temporary
directories (deleted at the end) so "cold" timings really tokenise.

Usage: .venv/bin/python benchmarks/windowing.py [--skip-train] [--num-proc 1 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from distill.data.features import WindowConfig, prepare_features  # noqa: E402
from distill.data.squad import load_squad, squad_version  # noqa: E402
from distill.files import write_text  # noqa: E402
from distill.metrics import normalize_answer  # noqa: E402
from distill.models import packaged_minilm_dir  # noqa: E402
from distill.postprocess import postprocess_predictions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SQUAD = ROOT.parent / "shared" / "data" / "squad"
OUT = ROOT / "benchmarks" / "results" / "windowing.json"


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - t, 3)


def bench_loading(cache: str) -> dict:
    res = {}
    for name in ("dev-v1.1.json", "dev-v2.0.json", "train-v1.1.json"):
        path = SQUAD / name
        ds, cold = timed(load_squad, path, cache_dir=cache)
        _, warm = timed(load_squad, path, cache_dir=cache)
        _, sha = timed(lambda: hashlib.sha256(path.read_bytes()).hexdigest())
        res[name] = {
            "questions": len(ds), "impossible": int(sum(ds["is_impossible"])), "version": squad_version(ds),
            "load_s_cold": cold, "load_s_cached": warm, "sha256_s": sha,
        }
    return res


def classify(context: str, offsets, s: int, e: int, start_char: int, end_char: int) -> str:
    """Why the gold tokens' text differs from the gold answer after normalisation."""
    if offsets[s][0] < start_char or offsets[e][1] > end_char:
        inside_word = (offsets[s][0] < start_char and context[start_char - 1].isalnum()) or (
            offsets[e][1] > end_char and context[end_char].isalnum())
        piece = context[offsets[s][0] : offsets[e][1]][:40]
        if inside_word:
            return f"answer boundary inside a word (the covering tokens read {piece!r})"
        return f"answer boundary inside a punctuation token (the covering tokens read {piece!r})"
    return "other"


def bench_alignment(tok, cache: str) -> dict:
    window = WindowConfig(max_seq_length=384, doc_stride=128, max_query_length=64)
    ds = load_squad(SQUAD / "dev-v1.1.json", cache_dir=cache)
    feats, secs = timed(prepare_features, ds, tok, window)
    by_id: dict[str, list[int]] = {}
    for i, eid in enumerate(feats["example_id"]):
        by_id.setdefault(eid, []).append(i)
    starts, ends = feats["start_positions"], feats["end_positions"]
    offsets_col = feats["offset_mapping"]
    no_window, exact, normalised_only, exceptions = 0, 0, 0, []
    for row in ds:
        gold = row["answers"]["text"][0]
        start_char = row["answers"]["answer_start"][0]
        hits = [f for f in by_id[row["id"]] if starts[f] != 0]
        if not hits:
            no_window += 1
            continue
        f = hits[0]
        offsets = offsets_col[f]
        s, e = starts[f], ends[f]
        got = row["context"][offsets[s][0] : offsets[e][1]]
        if got == gold:
            exact += 1
        elif normalize_answer(got) == normalize_answer(gold):
            normalised_only += 1
        else:
            reason = classify(row["context"], offsets, s, e, start_char, start_char + len(gold))
            exceptions.append({"id": row["id"], "gold": gold, "from_offsets": got, "why": reason})
    kinds = Counter(x["why"].split(" (")[0] for x in exceptions)
    post = bench_postprocess(ds, feats)
    return {
        "window": window.model_dump(), "questions": len(ds), "features": len(feats), "prepare_s": secs,
        "no_window_contains_answer": no_window, "exact_text": exact, "equal_after_normalisation_only": normalised_only,
        "mismatch_after_normalisation": len(exceptions), "mismatch_kinds": dict(kinds), "mismatch_examples": exceptions,
        "postprocess": post,
    }


def bench_postprocess(ds, feats) -> dict:
    """Oracle logits (gold positions +10 over N(0,1) noise) through the span search, v1 and v2 modes."""
    rng = np.random.default_rng(0)
    n, seq = len(feats), len(feats[0]["input_ids"])
    start, end = rng.normal(size=(n, seq)), rng.normal(size=(n, seq))
    rows = np.arange(n)
    start[rows, feats["start_positions"]] += 10
    end[rows, feats["end_positions"]] += 10
    (preds, _), v1_s = timed(postprocess_predictions, ds, feats, start, end)
    (_, na), v2_s = timed(postprocess_predictions, ds, feats, start, end, version_2=True)
    hit = sum(normalize_answer(preds[r["id"]]) in {normalize_answer(t) for t in r["answers"]["text"]} for r in ds)
    return {"features": n, "questions": len(ds), "seconds_v1": v1_s, "seconds_v2": v2_s,
            "oracle_prediction_matches_a_gold_answer": hit, "na_probs": len(na)}


def bench_train(tok, num_procs: list[int]) -> dict:
    window = WindowConfig()
    res = {}
    for nproc in num_procs:
        cache = tempfile.mkdtemp(prefix=f"distill-bench-train{nproc}-")
        try:
            ds = load_squad(SQUAD / "train-v1.1.json", cache_dir=cache)
            feats, cold = timed(prepare_features, ds, tok, window, num_proc=None if nproc == 1 else nproc)
            files = sorted(c["filename"] for c in feats.cache_files)
            again, warm = timed(prepare_features, ds, tok, window, num_proc=None if nproc == 1 else nproc)
            res[f"num_proc={nproc}"] = {
                "questions": len(ds), "features": len(feats), "prepare_s_cold": cold, "prepare_s_cached": warm,
                "cache_files_reused": files == sorted(c["filename"] for c in again.cache_files),
                "same_fingerprint": feats._fingerprint == again._fingerprint,
                "arrow_mb": round(sum(os.path.getsize(f) for f in files) / 2**20, 1),
            }
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    datasets.disable_progress_bars()
    tok = AutoTokenizer.from_pretrained(str(packaged_minilm_dir()))
    cache = tempfile.mkdtemp(prefix="distill-bench-")
    try:
        result = {"cpu_count": os.cpu_count(), "loading": bench_loading(cache), "dev_v1_alignment": bench_alignment(tok, cache)}
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if not args.skip_train:
        result["train_v1_features"] = bench_train(tok, args.num_proc)
    write_text(OUT, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
