"""Cached teacher logits vs an online teacher (the Hugging Face script's way), same student, same data.

Pairs (--pair):
  minilm                 all-MiniLM-L6-v2 with a QA head (6 layers) -> its layers 0, 2, 4 (real weights)
  bert-base-distilbert   BERT-base shape (12 x 768) -> DistilBERT-base shape (6 x 768), random init
  bert-large-distilbert  BERT-large shape (24 x 1024) -> DistilBERT-base shape: the pair of the Hugging Face
                         distillation example (bert-large-uncased-whole-word-masking-finetuned-squad teacher)
Shapes alone set the time, so the BERT pairs are built from configs (no hub access here).
Both runs train the student for the same steps on the same windows of train-v1.1 through
`train.train_student`; one reads the teacher's logits from the cache, the other runs the teacher every
step. Reports epoch time of each, their ratio (target <= 0.6), and the one-time cost of the cache.

    python benchmarks/cached_vs_online.py [--pair minilm] [--questions 400] [--max-seq-length 256]

Writes benchmarks/results/cached_vs_online.json (minilm) or cached_vs_online_PAIR.json.
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
    p.add_argument("--out", default=None)
    args = p.parse_args()
    suffix = "" if args.pair == "minilm" else "_" + args.pair.replace("-", "_")
    args.out = args.out or str(ROOT / "benchmarks" / "results" / f"cached_vs_online{suffix}.json")

    import torch

    from distill.cli import setup_logging
    from distill.data.features import WindowConfig, prepare_features
    from distill.data.squad import load_squad, take_questions
    from distill.models import load_tokenizer
    from distill.teacher import build_logit_cache
    from distill.recipe import TrainConfig
    from distill.train import train_student

    setup_logging()
    tokenizer = load_tokenizer("minilm")
    examples = take_questions(load_squad(args.squad, split="train"), args.questions)
    window = WindowConfig(max_seq_length=args.max_seq_length, doc_stride=args.doc_stride)
    features = prepare_features(examples, tokenizer, window)
    teacher, make_student = make_pair(args.pair)
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, lr=1e-4, alpha=0.5, temperature=2.0,
                      precision="bf16", ds_config="ds_configs/zero2_bf16.json", log_every=1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        logits, info = build_logit_cache(teacher, features, Path(tmp) / "cache", batch_size=64)
        results["cache_build_s"] = round(time.perf_counter() - t0, 2)
        for mode in ("cached", "online"):
            student = make_student()
            out = Path(tmp) / mode
            online = mode == "online"
            t0 = time.perf_counter()
            train_student(cfg.model_copy(update={"online_teacher": online}), student, tokenizer, features, out,
                          teacher_logits=None if online else logits, teacher_model=teacher if online else None)
            wall = time.perf_counter() - t0
            log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
            results[mode] = {"epoch_s": log[-1]["elapsed_s"], "wall_s": round(wall, 2), "steps": log[-1]["step"],
                             "final_loss": log[-1]["loss"]}
    results["params"] = {"teacher": sum(p.numel() for p in teacher.parameters()),
                         "student": sum(p.numel() for p in student.parameters())}  # the last student trained
    ratio = results["cached"]["epoch_s"] / results["online"]["epoch_s"]
    summary = {
        "benchmark": "cached_vs_online", "pair": args.pair, "n_questions": len(examples), "n_features": len(features),
        "max_seq_length": args.max_seq_length, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        **results, "cached_over_online_epoch_ratio": round(ratio, 3), "target": "<= 0.6",
        "epochs_to_amortise_cache": round(results["cache_build_s"] /
                                          max(1e-9, results["online"]["epoch_s"] - results["cached"]["epoch_s"]), 2),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
