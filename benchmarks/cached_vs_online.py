"""Cached teacher logits vs an online teacher (the Hugging Face script's way), same student, same data.

Pairs (--pair):
  minilm                 all-MiniLM-L6-v2 with a QA head (6 layers) -> its layers 0, 2, 4 (real weights)
  bert-base-distilbert   BERT-base shape (12 x 768) -> DistilBERT-base shape (6 x 768), random init
  bert-large-distilbert  BERT-large shape (24 x 1024) -> DistilBERT-base shape: the pair of the Hugging Face
                         distillation example (bert-large-uncased-whole-word-masking-finetuned-squad teacher)
Shapes alone set the time, so the BERT pairs are built from configs (no hub access here).
Both runs train the student for the same steps on the same windows of train-v1.1 through
`train.train_student`, in the compute dtype `precision: auto` picks here; one reads the teacher's logits from
the cache, the other runs the teacher every step. The pair of runs is repeated (--repeats, the order
alternating) because two runs on a shared machine differ by more than the effect; reports each epoch time,
the median cached/online ratio and its range, the ratio the FLOP counts alone imply (distill.flops: 3 student
forwards against 3 plus one teacher forward, at full window width), the one-time cost of the cache, and per
run the train_efficiency of its train_log.jsonl (mean achieved over best peak FLOP/s, distill.flops.run_efficiency).

    python benchmarks/cached_vs_online.py [--pair minilm] [--questions 400] [--max-seq-length 256]
                                          [--repeats 3] [--attention-dropout 0]

Writes benchmarks/results/cached_vs_online.json (minilm) or cached_vs_online_PAIR.json (_adX with
--attention-dropout X).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]


def make_pair(pair: str):
    """(teacher, a function returning a fresh student with the same init each call)."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering, DistilBertConfig, DistilBertForQuestionAnswering

    from distill.models import load_qa_model
    from distill.student import student_from_teacher_layers

    if pair == "minilm":
        teacher = load_qa_model("minilm")
        return teacher, lambda: student_from_teacher_layers(teacher, [0, 2, 4])
    large = pair == "bert-large-distilbert"
    torch.manual_seed(0)
    teacher = BertForQuestionAnswering(BertConfig(
        hidden_size=1024 if large else 768, num_hidden_layers=24 if large else 12,
        num_attention_heads=16 if large else 12, intermediate_size=4096 if large else 3072)).eval()

    def student():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            return DistilBertForQuestionAnswering(DistilBertConfig())
    return teacher, student


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", choices=["minilm", "bert-base-distilbert", "bert-large-distilbert"], default="minilm")
    p.add_argument("--questions", type=int, default=400)
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--doc-stride", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--squad", default=str(ROOT.parent / "shared" / "data" / "squad" / "train-v1.1.json"))
    p.add_argument("--repeats", type=int, default=3, help="pairs of runs, cached and online, order alternating")
    p.add_argument("--attention-dropout", type=float, default=None,
                   help="train.attention_dropout for the student (default: the model's own 0.1)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    suffix = "" if args.pair == "minilm" else "_" + args.pair.replace("-", "_")
    if args.attention_dropout is not None:
        suffix += f"_ad{args.attention_dropout:g}"
    args.out = args.out or str(ROOT / "benchmarks" / "results" / f"cached_vs_online{suffix}.json")

    import statistics

    import torch

    from distill.cli import setup_logging
    from distill.data.features import WindowConfig, prepare_features
    from distill.data.squad import load_squad, take_questions
    from distill.flops import flop_model, run_efficiency
    from distill.models import load_tokenizer, training_attention
    from distill.precision import cpu_kind, default_device, resolve
    from distill.recipe import TrainConfig
    from distill.teacher import build_logit_cache
    from distill.train import train_student

    setup_logging()
    tokenizer = load_tokenizer("minilm")
    examples = take_questions(load_squad(args.squad, split="train"), args.questions)
    window = WindowConfig(max_seq_length=args.max_seq_length, doc_stride=args.doc_stride)
    features = prepare_features(examples, tokenizer, window)
    teacher, make_student = make_pair(args.pair)
    precision = resolve("auto", quiet=True).precision
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, lr=1e-4, alpha=0.5, temperature=2.0,
                      precision=precision, ds_config=str(ROOT / "ds_configs" / f"zero2_{precision}.json"),
                      log_every=1, attention_dropout=args.attention_dropout)
    results = {"cached": [], "online": []}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        logits, info = build_logit_cache(teacher, features, Path(tmp) / "cache", batch_size=64, precision=precision)
        results["cache_build_s"] = round(time.perf_counter() - t0, 2)
        for r in range(args.repeats):
            for mode in ("cached", "online") if r % 2 == 0 else ("online", "cached"):
                student = make_student()
                out = Path(tmp) / f"{mode}{r}"
                online = mode == "online"
                t0 = time.perf_counter()
                train_student(cfg.model_copy(update={"online_teacher": online}), student, tokenizer, features, out,
                              teacher_logits=None if online else logits, teacher_model=teacher if online else None)
                wall = time.perf_counter() - t0
                log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
                results[mode].append({"epoch_s": log[-1]["elapsed_s"], "wall_s": round(wall, 2),
                                      "steps": log[-1]["step"], "final_loss": log[-1]["loss"],
                                      "train_efficiency": round(run_efficiency(log), 4)})
    results["params"] = {"teacher": sum(p.numel() for p in teacher.parameters()),
                         "student": sum(p.numel() for p in student.parameters())}  # the last student trained
    ratios = [c["epoch_s"] / o["epoch_s"] for c, o in zip(results["cached"], results["online"])]
    cached_s = statistics.median(c["epoch_s"] for c in results["cached"])
    online_s = statistics.median(o["epoch_s"] for o in results["online"])
    f_student = flop_model(student).forward(1, args.max_seq_length)
    f_teacher = flop_model(teacher).forward(1, args.max_seq_length)
    summary = {
        "benchmark": "cached_vs_online", "pair": args.pair, "n_questions": len(examples), "n_features": len(features),
        "max_seq_length": args.max_seq_length, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "cpu_kind": cpu_kind(), "compute_dtype": precision,
        "attention_dropout": args.attention_dropout if args.attention_dropout is not None else "model's own (0.1)",
        "attn_implementation": (training_attention(cfg.attn_implementation, default_device(), precision)
                                or student.config._attn_implementation),  # no override: the model's own
        **results, "cached_over_online_epoch_ratios": [round(x, 3) for x in ratios],
        "cached_over_online_epoch_ratio": round(statistics.median(ratios), 3),
        "cached_over_online_flops_implied": round(3 * f_student / (3 * f_student + f_teacher), 3),
        "epochs_to_amortise_cache": round(results["cache_build_s"] / max(1e-9, online_s - cached_s), 2),
    }
    summary["within_10pct_of_implied"] = (summary["cached_over_online_epoch_ratio"]
                                          <= 1.1 * summary["cached_over_online_flops_implied"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
