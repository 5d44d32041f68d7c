"""Test helper: synthetic QA features, and a script that runs train_student in its own process.

Reads: a tiny model directory (distill.testing.make_tiny_bert). Writes: whatever train_student writes under --out.
Run directly (or under torchrun) by tests/test_train.py for multi-rank, SIGKILL and divergence tests:

  python tests/_train_worker.py --model DIR --out DIR [--ds-config ds_configs/zero2_fp32.json] [--batch-size 4]
         [--max-steps 6] [--checkpoint-every 2] [--resume] [--nan-at-step N] [--step-delay 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SEQ = 64


def make_features(n_rows: int = 24, seq: int = SEQ, seed: int = 0, vocab: int = 30522):
    """Rows shaped like distill.data.features output: padded windows with a context span and gold positions."""
    import datasets
    import numpy as np

    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("input_ids", "attention_mask", "token_type_ids", "context_mask", "offset_mapping",
                            "start_positions", "end_positions", "example_id", "feature_index")}
    for i in range(n_rows):
        length = int(rng.integers(seq // 2, seq + 1))
        q_len = int(rng.integers(4, 10))
        ids = [101] + rng.integers(1000, vocab, q_len).tolist() + [102]
        ctx_start = len(ids)
        ids += rng.integers(1000, vocab, length - len(ids) - 1).tolist() + [102]
        ctx_end = length - 2
        pad = seq - length
        context = [0] * ctx_start + [1] * (ctx_end - ctx_start + 1) + [0] + [0] * pad
        if rng.random() < 0.25:
            start = end = 0
        else:
            start = int(rng.integers(ctx_start, ctx_end + 1))
            end = int(min(ctx_end, start + rng.integers(0, 4)))
        cols["input_ids"].append(ids + [0] * pad)
        cols["attention_mask"].append([1] * length + [0] * pad)
        cols["token_type_ids"].append([0] * ctx_start + [1] * (length - ctx_start) + [0] * pad)
        cols["context_mask"].append(context)
        cols["offset_mapping"].append([[j, j + 1] if c else None for j, c in enumerate(context)])
        cols["start_positions"].append(start)
        cols["end_positions"].append(end)
        cols["example_id"].append(f"q{i // 2}")
        cols["feature_index"].append(i)
    return datasets.Dataset.from_dict(cols)


def teacher_logits_for(teacher, features, dtype: str = "fp32", batch_size: int = 8):
    """Raw teacher logits aligned row by row with `features` (what the teacher cache stores)."""
    import datasets
    import numpy as np
    import torch

    teacher.eval()
    rows = features.with_format("torch", columns=["input_ids", "attention_mask", "token_type_ids"])
    starts, ends = [], []
    with torch.no_grad():
        for i in range(0, len(features), batch_size):
            out = teacher(**rows[i:i + batch_size])
            starts.append(out.start_logits.numpy())
            ends.append(out.end_logits.numpy())
    np_dtype = np.float16 if dtype == "fp16" else np.float32
    start, end = np.concatenate(starts).astype(np_dtype), np.concatenate(ends).astype(np_dtype)
    return datasets.Dataset.from_dict({"start_logits": list(start), "end_logits": list(end)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ds-config", default="ds_configs/zero2_fp32.json")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--checkpoint-every", type=int, default=0)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--nan-at-step", type=int, default=0, help="make the loss NaN from this (1-based) step on")
    ap.add_argument("--inf-grad-at-step", type=int, default=0,
                    help="make one gradient infinite (the loss stays finite) from this (1-based) step on")
    ap.add_argument("--step-delay", type=float, default=0.0, help="sleep per micro batch (gives a kill a window)")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    import distill.losses
    from distill.recipe import TrainConfig
    from distill.train import TrainingDiverged, train_student

    torch.set_num_threads(1)
    real_loss = distill.losses.distillation_loss
    calls = {"n": 0}

    def loss_with_test_faults(*a, **kw):
        calls["n"] += 1
        out = real_loss(*a, **kw)
        if args.step_delay:
            time.sleep(args.step_delay)
        if args.nan_at_step and calls["n"] >= args.nan_at_step:  # one micro batch per step in these tests
            out = dict(out, loss=out["loss"] * float("nan"))
        return out

    distill.losses.distillation_loss = loss_with_test_faults

    cfg = TrainConfig(batch_size=args.batch_size, max_steps=args.max_steps, lr=1e-3, warmup_ratio=0.2,
                      precision="fp32", ds_config=args.ds_config, checkpoint_every=args.checkpoint_every,
                      log_every=1, alpha=args.alpha, seed=7)
    model = AutoModelForQuestionAnswering.from_pretrained(args.model)
    if args.inf_grad_at_step:
        model.qa_outputs.weight.register_hook(
            lambda g: g * float("inf") if calls["n"] >= args.inf_grad_at_step else g)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    features = make_features(args.rows)
    logits = None
    if args.alpha > 0:
        teacher = AutoModelForQuestionAnswering.from_pretrained(args.model)
        torch.manual_seed(123)
        with torch.no_grad():
            for p in teacher.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        logits = teacher_logits_for(teacher, features)
    try:
        train_student(cfg, model, tokenizer, features, Path(args.out), teacher_logits=logits, resume=args.resume)
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"done": True}))


if __name__ == "__main__":
    main()
