"""Seconds per student training step with each attention kernel (`train.attn_implementation`), taking turns.

Runs distill's own training functions (`session.setup`, then `train.train_step`, as `train_student` does),
without a profiler (its per-op overhead would charge eager attention, which runs more ops, for more time):
the DistilBERT student made from the packaged MiniLM-L6's layers 0, 2, 4, on train-v1.1 windows, CE only,
batches grouped by length, one session per kernel. The kernels take turns for --rounds rounds of --steps steps,
in alternating order, so a slow stretch of this noisy machine slows both; reported: the median seconds per step
of each, and eager/sdpa per round.

    python benchmarks/attention_kernels.py [--attention-dropout 0] [--precision fp32] [--rounds 4] [--steps 8]

Writes benchmarks/results/attention_kernels_<precision>_ad<X>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
KERNELS = ("sdpa", "eager")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=200)
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--attention-dropout", type=float, default=0.1, help="train.attention_dropout (models' own: 0.1)")
    p.add_argument("--precision", default="auto", help="train.precision (auto: bf16 on a CPU with native bf16)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=8, help="steps per kernel per round")
    p.add_argument("--squad", default=str(ROOT.parent / "shared" / "data" / "squad" / "train-v1.1.json"))
    p.add_argument("--out", default=None)
    args = p.parse_args()

    from distill.cli import setup_logging
    from distill.data.features import WindowConfig, prepare_features
    from distill.data.squad import load_squad, take_questions
    from distill.models import load_qa_model, load_tokenizer, training_attention
    from distill.precision import cpu_kind, default_device, resolve
    from distill.recipe import TrainConfig
    from distill.session import setup
    from distill.student import distilbert_from_bert_layers
    from distill.train import train_step

    setup_logging()
    precision = resolve(args.precision, quiet=True).precision
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"attention_kernels_{precision}_ad{args.attention_dropout:g}.json")
    tokenizer = load_tokenizer("minilm")
    examples = take_questions(load_squad(args.squad, split="train"), args.questions)
    features = prepare_features(examples, tokenizer, WindowConfig(max_seq_length=args.max_seq_length, doc_stride=96))
    teacher = load_qa_model("minilm")
    times, sessions, step = {k: [] for k in KERNELS}, {}, {k: 0 for k in KERNELS}
    with tempfile.TemporaryDirectory() as tmp:
        for kernel in KERNELS:
            cfg = TrainConfig(epochs=1, batch_size=args.batch_size, lr=1e-4, alpha=0.0, precision=precision,
                              ds_config=str(ROOT / "ds_configs" / f"zero2_{precision}.json"), log_every=10_000,
                              attention_dropout=args.attention_dropout, attn_implementation=kernel,
                              group_by_length=True)
            sessions[kernel] = setup(cfg, distilbert_from_bert_layers(teacher, [0, 2, 4]), features, Path(tmp) / kernel)
            sessions[kernel].engine.train()
            for _ in range(2):  # warm-up
                train_step(sessions[kernel], step[kernel])
                step[kernel] += 1
        for r in range(args.rounds):
            for kernel in KERNELS if r % 2 == 0 else KERNELS[::-1]:
                s, start = sessions[kernel], time.perf_counter()
                for _ in range(args.steps):
                    train_step(s, step[kernel])
                    step[kernel] += 1
                times[kernel].append(round((time.perf_counter() - start) / args.steps, 4))
    ratios = [round(e / s, 3) for e, s in zip(times["eager"], times["sdpa"])]
    summary = {
        "benchmark": "attention_kernels", "pipeline": "distill.session.setup + distill.train.train_step",
        "cpu_kind": cpu_kind(), "compute_dtype": precision, "threads": __import__("torch").get_num_threads(),
        "attention_dropout": args.attention_dropout, "n_features": len(features),
        "max_seq_length": args.max_seq_length, "batch_size": args.batch_size, "rounds": args.rounds,
        "steps_per_round": args.steps, "s_per_step": times,
        "median_s_per_step": {k: statistics.median(v) for k, v in times.items()},
        "eager_over_sdpa_per_round": ratios, "eager_over_sdpa_median": round(statistics.median(ratios), 3),
        "auto_picks": training_attention("auto", default_device(), precision) or "the model's own (sdpa)",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"{summary['cpu_kind']}, {precision}, attention dropout {args.attention_dropout:g}: "
          + ", ".join(f"{k} {v:.3f} s/step" for k, v in summary["median_s_per_step"].items())
          + f"; eager/sdpa {summary['eager_over_sdpa_median']} (per round {ratios}); auto picks {summary['auto_picks']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
