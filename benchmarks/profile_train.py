"""Where a student training step's time goes, with cached teacher logits and with the teacher run online.

Runs distill's own training functions (`session.setup`, then `train.train_step` step by step, as
`train_student` does) under torch.profiler, on train-v1.1 windows: the packaged MiniLM-L6 as teacher (its QA
head untrained: only shapes matter for time) and the DistilBERT student made from its layers 0, 2, 4, in the
compute dtype `precision: auto` picks here. train.py marks four ranges: distill.teacher (an online
teacher's forward, or reading cached logits), distill.student_forward, distill.backward,
distill.optimizer_step; the rest of a step (loss, all_reduce of the loss terms, batch assembly) is "other".

Reports per mode: seconds per step in each range, the FLOP rate of the student's forward, its backward
(counted as 2x forward) and the teacher's forward against the matmul peak the session measured, the ops
taking the most self time, cached/online step time against the ratio the FLOP counts alone imply, and the
rate of the matmul ops alone (the profiler's FLOP count over their own time): the ceiling of the whole step's.

    python benchmarks/profile_train.py [--questions 200] [--steps 6] [--warmup 2] [--attention-dropout 0]
                                       [--attn-implementation sdpa] [--ds-config FILE] [--group-by-length]

Writes benchmarks/results/profile_train.json (and .md; with --attention-dropout X, profile_train_adX.*; with
--attn-implementation sdpa or eager, a suffix _sdpa or _eager; with --group-by-length, _grouped: batches of
similar-length windows trimmed of padding, as train.group_by_length gives whole runs, instead of fixed width).
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
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
RANGES = ("distill.teacher", "distill.student_forward", "distill.backward", "distill.optimizer_step")


def range_breakdown(prof, steps: int, top: int = 6) -> dict:
    """Per marked range: the ops under it (at any depth) with the most self time, seconds per step."""
    from collections import Counter

    out = {}
    for name in RANGES:
        acc = Counter()
        todo = [e for e in prof.events() if e.name == name]
        while todo:
            e = todo.pop()
            if e.name != name:
                acc[e.name] += e.self_cpu_time_total
            todo.extend(e.cpu_children)
        out[name.split(".", 1)[1]] = {op: round(us / 1e6 / steps, 4) for op, us in acc.most_common(top)}
    return out


def profile_mode(cfg, student, features, out: Path, *, logits=None, teacher=None, warmup: int, steps: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from distill.session import setup
    from distill.train import train_step

    s = setup(cfg, student, features, out, teacher_logits=logits, teacher_model=teacher)
    s.engine.train()
    for step in range(warmup):
        train_step(s, step)
    flops0 = s.flops
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        t0 = time.perf_counter()
        for step in range(warmup, warmup + steps):
            train_step(s, step)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    ranges = {e.key: e.cpu_time_total / 1e6 / steps for e in events if e.key in RANGES}
    top = sorted((e for e in events if not e.key.startswith(("distill.", "ProfilerStep"))),
                 key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    total_self = sum(e.self_cpu_time_total for e in events) or 1
    # the profiler also counts FLOPs of elementwise add/mul: keep the matmuls, whose rate bounds the step's
    gemms = [e for e in events if e.flops and e.key in GEMM_OPS]
    gemm_s = sum(e.self_cpu_time_total for e in gemms) / 1e6
    return {
        "matmul_ops": {"ops": sorted(e.key for e in gemms), "s_per_step": round(gemm_s / steps, 4),
                       "gflops": round(sum(e.flops for e in gemms) / gemm_s / 1e9, 1) if gemm_s else 0.0},
        "step_s": round(wall / steps, 3), "peak_gflops": round(s.peak_flops / 1e9, 1),
        "flops_per_step": (s.flops - flops0) / steps, "threads": torch.get_num_threads(),
        "ranges_s_per_step": {k.split(".", 1)[1]: round(ranges.get(k, 0.0), 4) for k in RANGES},
        "other_s_per_step": round(wall / steps - sum(ranges.values()), 4),
        "ops_by_range": range_breakdown(prof, steps),
        "top_ops": [{"op": e.key, "self_s_per_step": round(e.self_cpu_time_total / 1e6 / steps, 4),
                     "share": round(e.self_cpu_time_total / total_self, 3), "calls_per_step": e.count // steps}
                    for e in top],
    }


def rate(flops: float, seconds: float, peak_gflops: float) -> dict:
    gflops = flops / seconds / 1e9 if seconds else 0.0
    return {"gflops": round(gflops, 1), "of_peak": round(gflops / peak_gflops, 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=200)
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--doc-stride", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--attention-dropout", type=float, default=None,
                   help="train.attention_dropout for the student (default: the model's own 0.1)")
    p.add_argument("--attn-implementation", choices=("auto", "sdpa", "eager"), default="auto",
                   help="train.attn_implementation (auto: eager on CPU in bf16, else the model's own)")
    p.add_argument("--ds-config", default=None, help="DeepSpeed JSON (default: the shipped zero2_<dtype>.json)")
    p.add_argument("--group-by-length", action="store_true",
                   help="train.group_by_length: steps of similar-length windows, padding trimmed (the recipes' "
                        "setting) instead of every window at --max-seq-length")
    p.add_argument("--squad", default=str(ROOT.parent / "shared" / "data" / "squad" / "train-v1.1.json"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "profile_train.json"))
    args = p.parse_args()
    if args.attention_dropout is not None and args.out == p.get_default("out"):
        args.out = args.out.replace(".json", f"_ad{args.attention_dropout:g}.json")
    if args.attn_implementation != "auto" and Path(args.out).parent == ROOT / "benchmarks" / "results":
        args.out = args.out.replace(".json", f"_{args.attn_implementation}.json")
    if args.group_by_length and Path(args.out).parent == ROOT / "benchmarks" / "results":
        args.out = args.out.replace(".json", "_grouped.json")

    from distill.cli import setup_logging
    from distill.data.features import WindowConfig, prepare_features
    from distill.data.squad import load_squad, take_questions
    from distill.models import load_qa_model, load_tokenizer, training_attention
    from distill.precision import cpu_kind, default_device, resolve
    from distill.recipe import TrainConfig
    from distill.student import distilbert_from_bert_layers
    from distill.teacher import build_logit_cache

    setup_logging()
    tokenizer = load_tokenizer("minilm")
    examples = take_questions(load_squad(args.squad, split="train"), args.questions)
    features = prepare_features(examples, tokenizer, WindowConfig(max_seq_length=args.max_seq_length,
                                                                  doc_stride=args.doc_stride))
    teacher = load_qa_model("minilm")
    precision = resolve("auto", quiet=True).precision
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, lr=1e-4, alpha=0.5, temperature=2.0, precision=precision,
                      ds_config=args.ds_config or str(ROOT / "ds_configs" / f"zero2_{precision}.json"),
                      log_every=10_000, attention_dropout=args.attention_dropout,
                      attn_implementation=args.attn_implementation, group_by_length=args.group_by_length)
    modes = {}
    with tempfile.TemporaryDirectory() as tmp:
        logits, _ = build_logit_cache(teacher, features, Path(tmp) / "cache", batch_size=64, precision=precision,
                                      progress=False)
        for mode in ("cached", "online"):
            online = mode == "online"
            modes[mode] = profile_mode(cfg.model_copy(update={"online_teacher": online}),
                                       distilbert_from_bert_layers(teacher, [0, 2, 4]), features, Path(tmp) / mode,
                                       logits=None if online else logits, teacher=teacher if online else None,
                                       warmup=args.warmup, steps=args.steps)
    cached, online = modes["cached"], modes["online"]
    student_fwd = cached["flops_per_step"] / 3  # the session counts 3 student forwards per step
    teacher_fwd = online["flops_per_step"] - cached["flops_per_step"]  # same seed, same batches
    peak = cached["peak_gflops"]
    r = cached["ranges_s_per_step"]
    summary = {
        "benchmark": "profile_train", "pipeline": "distill.session.setup + distill.train.train_step",
        "cpu_kind": cpu_kind(), "compute_dtype": precision, "n_features": len(features),
        "max_seq_length": args.max_seq_length, "batch_size": args.batch_size, "steps_profiled": args.steps,
        "group_by_length": args.group_by_length,
        "attention_dropout": args.attention_dropout if args.attention_dropout is not None else "model's own (0.1)",
        "attn_implementation": {"setting": args.attn_implementation,
                                "training": training_attention(args.attn_implementation, default_device(), precision) or "sdpa"},
        "ds_config": cfg.ds_config,
        "cached": cached, "online": online,
        "rates": {"student_forward": rate(student_fwd, r["student_forward"], peak),
                  "student_backward": rate(2 * student_fwd, r["backward"], peak),
                  "teacher_forward_online": rate(teacher_fwd, online["ranges_s_per_step"]["teacher"], peak),
                  "whole_step_cached": rate(3 * student_fwd, cached["step_s"], peak),
                  "matmul_ops_cached": {"gflops": cached["matmul_ops"]["gflops"],
                                        "of_peak": round(cached["matmul_ops"]["gflops"] / peak, 3)}},
        "cached_over_online_step": round(cached["step_s"] / online["step_s"], 3),
        "cached_over_online_flops_implied": round(3 * student_fwd / (3 * student_fwd + teacher_fwd), 3),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    md = [f"# profile_train: where a student step's time goes ({summary['cpu_kind']}, {precision})", "",
          f"{len(features)} train-v1.1 windows, seq {args.max_seq_length}"
          f"{' (length-grouped steps, padding trimmed)' if args.group_by_length else ''}, "
          f"batch {args.batch_size}, DistilBERT 3x384 "
          f"student from MiniLM-L6, attention dropout {summary['attention_dropout']}, "
          f"attention kernel {summary['attn_implementation']['training']} ({args.attn_implementation}), "
          f"{Path(cfg.ds_config).name}; {args.steps} steps profiled after {args.warmup} "
          f"warm-up steps; matmul peak {peak} GFLOP/s ({precision}).", "",
          "| seconds per step | " + " | ".join(k.split(".", 1)[1] for k in RANGES) + " | other | whole step |",
          "|---|" + "---|" * (len(RANGES) + 2)]
    for mode, m in modes.items():
        md.append(f"| {mode} | " + " | ".join(f"{v:.3f}" for v in m["ranges_s_per_step"].values())
                  + f" | {m['other_s_per_step']:.3f} | {m['step_s']:.3f} |")
    md += ["", "| part | GFLOP/s | of peak |", "|---|---|---|"]
    md += [f"| {k} | {v['gflops']} | {v['of_peak']} |" for k, v in summary["rates"].items()]
    md += ["", "matmul_ops_cached: the profiler's FLOP count of the matmul ops "
               f"({', '.join(cached['matmul_ops']['ops'])}) over their own time, "
               f"{cached['matmul_ops']['s_per_step']} s per step: the rate the step's GEMMs reach at these shapes."]
    md += ["", f"cached / online step time: **{summary['cached_over_online_step']}**; the FLOP counts alone imply "
               f"{summary['cached_over_online_flops_implied']}.", "", "Ops with the most self time (cached mode):", "",
           "| op | s per step | share | calls per step |", "|---|---|---|---|"]
    md += [f"| `{o['op']}` | {o['self_s_per_step']} | {o['share']} | {o['calls_per_step']} |" for o in cached["top_ops"]]
    for mode, m in modes.items():
        md += ["", f"Ops with the most self time inside each range ({mode} mode), seconds per step:", ""]
        md += [f"- {rng}: " + ", ".join(f"`{op}` {sec}" for op, sec in ops.items())
               for rng, ops in m["ops_by_range"].items() if ops]
    Path(args.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
