"""Student training steps with freed host memory kept in the process (DISTILL_HOST_MALLOC=keep) and without.

The setting is process-wide, so each measurement is its own process, in turns (keep, system, system, keep,
...) so a slow stretch of this noisy machine slows both. Each runs distill's own training functions
(`session.setup`, then `train.train_step`, as `train_student` does): the DistilBERT student made from the
packaged MiniLM-L6's layers 0, 2, 4, KD from cached teacher logits (the packaged MiniLM with its untrained QA
head: only shapes matter for time) on the first --questions train-v1.1 questions, 2 warm-up steps, then
--steps timed. Reported per setting: seconds per step, of it the optimizer step (`engine.step`), the
train_efficiency train_log.jsonl would show (model FLOPs of the steps over their time, against the matmul
peak the session measured), minor page faults per step, the process's peak RSS and how much of it the
timed steps added (a heap that kept growing would show there).

    python benchmarks/host_memory.py [--rounds 3] [--steps 20] [--questions 200]

Writes benchmarks/results/host_memory.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "results" / "host_memory_work"
SETTINGS = ("keep", "system")


def child(args) -> dict:
    """One measurement in this process, under the environment (DISTILL_HOST_MALLOC, DISTILL_CPU_DROPOUT) the
    parent set."""
    import torch

    from distill.cli import setup_logging
    from distill.data.features import WindowConfig, prepare_features
    from distill.data.squad import load_squad, take_questions
    from distill.dropout import CpuDropout
    from distill.models import load_qa_model, load_tokenizer
    from distill.precision import resolve
    from distill.recipe import TrainConfig
    from distill.session import setup
    from distill.student import distilbert_from_bert_layers
    from distill.teacher import build_logit_cache
    from distill.train import train_step

    setup_logging()
    precision = resolve("auto", quiet=True).precision
    tokenizer = load_tokenizer("minilm")
    examples = take_questions(load_squad(args.squad, split="train"), args.questions)
    features = prepare_features(examples, tokenizer, WindowConfig(max_seq_length=256, doc_stride=96))
    teacher = load_qa_model("minilm")
    logits, _ = build_logit_cache(teacher, features, WORK / "logits", precision=precision, progress=False)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-4, alpha=0.5, temperature=2.0, precision=precision,
                      ds_config=str(ROOT / "ds_configs" / f"zero2_{precision}.json"), log_every=10_000,
                      attention_dropout=0.0)
    s = setup(cfg, distilbert_from_bert_layers(teacher, [0, 2, 4]), features, WORK / "run", teacher_logits=logits)
    cpu_dropouts = sum(isinstance(m, CpuDropout) for m in s.engine.module.modules())
    s.engine.train()
    opt = {"s": 0.0}
    engine_step = s.engine.step

    def timed_step(*a, **k):
        start = time.perf_counter()
        engine_step(*a, **k)
        opt["s"] += time.perf_counter() - start

    s.engine.step = timed_step
    for step in range(2):
        train_step(s, step)
    before = resource.getrusage(resource.RUSAGE_SELF)
    opt["s"], flops0 = 0.0, s.flops
    start = time.perf_counter()
    for step in range(2, 2 + args.steps):
        train_step(s, step)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"s_per_step": round(wall / args.steps, 4), "optimizer_step_s": round(opt["s"] / args.steps, 4),
            "train_efficiency": round((s.flops - flops0) / wall / s.peak_flops, 4),
            "minor_faults_per_step": (usage.ru_minflt - before.ru_minflt) // args.steps,
            "max_rss_mb": round(usage.ru_maxrss / 1024),
            "max_rss_growth_mb_timed_steps": round((usage.ru_maxrss - before.ru_maxrss) / 1024), "precision": precision,
            "threads": torch.get_num_threads(), "n_features": len(features),
            "cpu_dropout_modules": cpu_dropouts}


def alternate(script: str, var: str, settings: tuple[str, ...], args) -> dict[str, list[dict]]:
    """`script --child` once per setting and round with environment variable `var` set to it, in turns
    (a, b, b, a, ...); each child's RESULT dict, by setting. Exits naming the setting whose child failed."""
    runs = {k: [] for k in settings}
    for r in range(args.rounds):
        for setting in settings if r % 2 == 0 else settings[::-1]:
            cmd = [sys.executable, script, "--child", "--steps", str(args.steps), "--questions", str(args.questions),
                   "--squad", args.squad]
            done = subprocess.run(cmd, env={**os.environ, var: setting}, capture_output=True, text=True)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
            if done.returncode or not lines:
                sys.stderr.write(done.stderr[-3000:])
                raise SystemExit(f"the {var}={setting} run failed (exit {done.returncode})")
            runs[setting].append(json.loads(lines[-1][len("RESULT "):]))
            print(f"round {r + 1} {setting}: {runs[setting][-1]}", flush=True)
    return runs


def measure(script: str, doc: str, out: str, var: str, settings: tuple[str, ...]):
    """A/B benchmark entry: in a `--child` process print its RESULT and return None; in the parent return the
    arguments and `alternate`'s runs by setting."""
    args = arguments(doc, out)
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return None
    return args, alternate(script, var, settings, args)


def arguments(doc: str, out: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--questions", type=int, default=200)
    p.add_argument("--squad", default=str(ROOT.parent / "shared" / "data" / "squad" / "train-v1.1.json"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / out))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def summary(name: str, runs: dict[str, list[dict]], args, keys: tuple[str, ...]) -> dict:
    """The JSON both A/B benchmarks write: setup, every run, and per setting the median of `keys`."""
    from distill.precision import cpu_kind

    first = next(iter(runs.values()))[0]
    a, b = runs
    return {
        "benchmark": name, "pipeline": "distill.session.setup + distill.train.train_step",
        "cpu_kind": cpu_kind(), "compute_dtype": first["precision"], "threads": first["threads"],
        "student": "DistilBERT 3x384 from MiniLM-L6 layers 0,2,4", "questions": args.questions,
        "n_features": first["n_features"], "max_seq_length": 256, "batch_size": 16,
        "attention_dropout": 0.0, "rounds": args.rounds, "steps": args.steps, "runs": runs,
        "median": {s: {k: statistics.median(run[k] for run in rs) for k in keys} for s, rs in runs.items()},
        f"{a}_over_{b}_s_per_step": [round(x["s_per_step"] / y["s_per_step"], 3) for x, y in zip(runs[a], runs[b])],
    }


def finish(out: dict, path: str, detail) -> None:
    """Write `out` to `path` and print one line: per setting its median step times and `detail(median)`."""
    Path(path).write_text(json.dumps(out, indent=2) + "\n")
    m = out["median"]
    a, b = m
    print(f"{out['cpu_kind']}, {out['compute_dtype']}: " + "; ".join(
        f"{s}: {m[s]['s_per_step']:.3f} s/step (optimizer {m[s]['optimizer_step_s']:.3f}), train_efficiency "
        f"{m[s]['train_efficiency']:.3f}{detail(m[s])}" for s in m)
        + f"; {a}/{b} per round {out[f'{a}_over_{b}_s_per_step']}")
    print(f"wrote {path}")


def main() -> int:
    measured = measure(__file__, __doc__, "host_memory.json", "DISTILL_HOST_MALLOC", SETTINGS)
    if measured is None:
        return 0
    args, runs = measured
    keys = ("s_per_step", "optimizer_step_s", "train_efficiency", "minor_faults_per_step", "max_rss_mb",
            "max_rss_growth_mb_timed_steps")
    finish(summary("host_memory", runs, args, keys), args.out,
           lambda m: f", {m['minor_faults_per_step']} faults/step, {m['max_rss_mb']} MB peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
