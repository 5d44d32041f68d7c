"""Distillation with a transfer set at equal student steps, through `distill run`'s own pipeline (distill.run.run).

Per student seed, three runs of recipes/quickstart_cpu.yaml with squad_cpu.py's settings and cache (WORK/cache,
so they share squad_cpu.py's fine-tuned teacher and its logits):
  ce           CE only (alpha 0): squad_cpu.py's student_ce run (the same recipe, so a finished one is reused)
  kd           KD + CE on the labelled questions: squad_cpu.py's student_kd run (likewise)
  kd_transfer  kd plus data.transfer: the next --transfer-questions questions of train-v1.1 (after the labelled
               slice; never an eval question or paragraph), their answers ignored, trained on the teacher's
               logits alone; train.max_steps pinned to the kd run's step count, so all three take equal steps.
Runs are reused when finished and resumed when interrupted, so the comparison can be built up over several
invocations (--seeds 42 now, --seeds 42,43 later).

Writes benchmarks/results/squad_cpu_transfer[_quick][_heldout].json: teacher {f1, exact_match}; ce, kd,
kd_transfer (lists of per-seed {seed, f1, exact_match}); steps; transfer_questions; train_efficiency (per run:
train_log.jsonl's mean achieved FLOP/s over its best matmul peak, distill.flops.run_efficiency); the CPU kind
and compute dtype; stage seconds. The Markdown beside it gives mean and spread. Choose --transfer-questions with
--heldout (held-out train articles), never by dev.

    python benchmarks/squad_cpu_transfer.py --seeds 42,43                       # full dev-v1.1
    python benchmarks/squad_cpu_transfer.py --heldout --transfer-questions 24000 --seeds 42
    python benchmarks/squad_cpu_transfer.py --quick                              # tiny slices, minutes
    python benchmarks/squad_cpu_transfer.py --seeds 42,43 --finished-only         # report what has finished
    # a teacher with more labels than the students: its other questions become their transfer set
    python benchmarks/squad_cpu_transfer.py --teacher-questions 12000 --train-questions 4000 \
        --transfer-questions 8000 --student-epochs 4 --student-attention-dropout 0 --seeds 42,43 \
        --out benchmarks/results/squad_cpu_transfer_t12k_s4k.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import squad_cpu
from squad_cpu import RECIPE, common_overrides, finished_metrics, run_or_reuse, shared_key, student_overrides, student_tag

VARIANTS = ("ce", "kd", "kd_transfer")


def extend(p):
    p.add_argument("--transfer-questions", type=int, default=12000,
                   help="size of the transfer set (default: as many as the labelled slice, so in the kd run's steps "
                        "every window is seen about once instead of twice)")
    p.add_argument("--seeds", default="42", help="student seeds, comma-separated (the teacher keeps --seed)")
    p.add_argument("--steps", type=int, default=None,
                   help="pin every run to this many optimizer steps (train.max_steps; its output_dir name ends in "
                        "_steps<N>) instead of the kd run's epochs, so one variant can run without the others")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="which of ce, kd, kd_transfer to run or reuse (default: all three); a long comparison can "
                        "be built up over several invocations")
    p.add_argument("--finished-only", action="store_true",
                   help="train nothing: write the JSON/Markdown from the runs already finished; the others are "
                        "listed under \"missing\" and shown as not run")


def train_log(out_dir: Path) -> list[dict]:
    log = out_dir / "train_log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def mean_efficiency(out_dir: Path) -> float | None:
    from distill.flops import run_efficiency

    value = run_efficiency(train_log(out_dir))
    return None if value is None else round(value, 4)


def paired_gain(results: dict, a: str, b: str) -> tuple[float, list[int]] | None:
    """Mean F1 of a minus b over the seeds both arms ran, and those seeds; None where they share none."""
    f1 = {v: {r["seed"]: r["f1"] for r in results[v]} for v in (a, b)}
    seeds = sorted(f1[a].keys() & f1[b].keys())
    return (statistics.fmean(f1[a][s] - f1[b][s] for s in seeds), seeds) if seeds else None


def spread(values: list[float]) -> str:
    if not values:
        return "not run"
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)} seeds)"


def markdown(summary: dict, args, eval_name: str, precision: str) -> str:
    results, teacher, steps = {v: summary[v] for v in VARIANTS}, summary["teacher"], summary["steps"]
    f1 = {v: [r["f1"] for r in results[v]] for v in VARIANTS}
    dropout = "the model's own" if args.student_attention_dropout is None else args.student_attention_dropout
    md = [f"# {summary['benchmark']}: KD with a transfer set, equal student steps",
          "",
          f"Teacher: MiniLM-L6 fine-tuned on the first {summary['teacher_questions']} questions of train-v1.1; "
          f"students: {args.architecture}, layers {args.layers}, labels of the first {args.train_questions} "
          f"questions, {steps} steps of batch {args.batch_size} each, attention dropout "
          f"{dropout}; "
          f"transfer set: the next {summary['transfer_questions']} train-v1.1 questions "
          f"({summary['transfer_features']} windows), answers ignored. Eval: {eval_name}. "
          f"CPU: {summary['machine']['cpu_kind']}, compute dtype {precision}.",
          "",
          "| model | F1 (mean ± sd over seeds) | per seed (F1 / EM) |", "|---|---|---|",
          f"| teacher | {teacher['f1']:.2f} | EM {teacher['exact_match']:.2f} |" if teacher
          else "| teacher | not scored by these runs (the ce run skips it) | |"]
    md += [f"| {v} | {spread(f1[v])} | " + ", ".join(f"s{r['seed']}: {r['f1']:.2f} / {r['exact_match']:.2f}"
                                                  for r in results[v]) + " |" for v in VARIANTS]

    def gain(a: str, b: str) -> str:
        paired = paired_gain(results, a, b)
        return (f"**{paired[0]:+.2f}** (seeds {', '.join(map(str, paired[1]))})" if paired else "not run")

    kept = (f"**{100 * statistics.fmean(f1['kd_transfer']) / teacher['f1']:.1f}%** "
            f"({len(f1['kd_transfer'])} seed{'s' * (len(f1['kd_transfer']) > 1)})"
            if f1["kd_transfer"] and teacher else "not run")
    md += ["", f"- KD gain over CE (mean F1 over the seeds both ran): {gain('kd', 'ce')}; "
               f"KD + transfer over CE: {gain('kd_transfer', 'ce')}",
           f"- retention (KD + transfer / teacher F1): {kept}",
           f"- train_efficiency (achieved / peak {precision} matmul FLOP/s): "
           + ", ".join(f"{k} {v}" for k, v in summary["train_efficiency"].items())]
    if summary["missing"]:
        md.append("- not run yet: " + ", ".join(f"{m['variant']} seed {m['seed']}" for m in summary["missing"]))
    md.append(f"- this invocation: {time.perf_counter() - squad_cpu.T_START:.0f} s (finished runs are reused)")
    return "\n".join(md) + "\n"


def main() -> int:
    args = squad_cpu.parse_args(description=__doc__, extend=extend, name="squad_cpu_transfer")
    if args.out.parent.name == "squad_cpu" and args.out.name.startswith("squad_cpu_transfer"):
        args.out = args.out.parent.parent / args.out.name  # benchmarks/results/squad_cpu_transfer*.json
    if args.quick:
        args.transfer_questions = min(args.transfer_questions, 160)
    import logging

    import torch

    from distill.cli import setup_logging
    from distill.precision import cpu_kind, resolve
    from distill.recipe import load_recipe

    setup_logging()
    log = logging.getLogger("distill")
    work, squad, eval_file = squad_cpu.run_paths(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    asked = set(args.variants.split(","))
    variants = [v for v in VARIANTS if v in asked]
    if asked - set(VARIANTS):
        raise SystemExit(f"squad_cpu_transfer.py: --variants takes some of {', '.join(VARIANTS)}: {args.variants!r}")
    results = {v: [] for v in VARIANTS}
    transfer = {"n_transfer_questions": None, "n_transfer_features": None}
    efficiency, stages, teacher, steps, missing = {}, {}, None, None, []
    for seed in seeds:
        args.student_seed = seed
        common = common_overrides(args, squad, eval_file, work)
        base = load_recipe(RECIPE, [*common, f"output_dir={work / 'unused'}"])
        key, grouped = shared_key(base), base.train.group_by_length
        specs = student_overrides(args)
        kd_alpha, _, kd_extra = specs["student_kd"]
        kd_dir = work / f"student_kd_{student_tag(args, key, kd_alpha, 0.0, grouped)}"
        runs = {"ce": (specs["student_ce"][2], work / f"student_ce_{student_tag(args, key, 0.0, 0.0, grouped)}"),
                "kd": (kd_extra, kd_dir)}
        if args.steps:
            runs = {v: ([*extra, f"train.max_steps={args.steps}"], Path(f"{out}_steps{args.steps}"))
                    for v, (extra, out) in runs.items()}
        for variant in variants:
            if variant == "kd_transfer":
                # the transfer run takes exactly as many optimizer steps as the kd run logged (or --steps)
                logged = [r["step"] for r in train_log(kd_dir)]
                if not (args.steps or logged):
                    if args.finished_only:
                        missing.append({"variant": variant, "seed": seed, "output_dir": None})
                        continue
                    raise SystemExit(f"squad_cpu_transfer.py: kd_transfer takes the kd run's steps: run kd first "
                                     f"({kd_dir} has no train_log.jsonl) or give --steps")
                steps = args.steps or max(logged)
                extra = [*kd_extra, f"data.transfer={squad / 'train-v1.1.json'}",
                         f"data.transfer_questions={args.transfer_questions}", f"train.max_steps={steps}"]
                out = Path(f"{kd_dir}_x{args.transfer_questions}_steps{steps}".replace("student_kd_", "student_kdx_"))
            else:
                extra, out = runs[variant]
            recipe = load_recipe(RECIPE, [*common, *extra, f"output_dir={out}"])
            if args.finished_only:
                metrics, reused = finished_metrics(recipe), True
                if metrics is None:
                    missing.append({"variant": variant, "seed": seed, "output_dir": str(out)})
                    continue
            else:
                metrics, reused = run_or_reuse(recipe)
            log.info("seed %d %s: %s%s", seed, variant, metrics["student"], " (reused)" if reused else "")
            results[variant].append({"seed": seed, **{k: metrics["student"][k] for k in ("f1", "exact_match")}})
            efficiency[f"{variant}_s{seed}"] = mean_efficiency(out)
            stages[f"{variant}_s{seed}"] = metrics["stage_seconds"]
            if metrics.get("teacher"):  # the ce run does not score the teacher
                teacher = {k: metrics["teacher"][k] for k in ("f1", "exact_match")}
            steps = steps or max((r["step"] for r in train_log(out)), default=None)
            if variant == "kd_transfer":
                transfer = {k: metrics[k] for k in ("n_transfer_questions", "n_transfer_features")}
    precision = resolve(base.train.precision, quiet=True).precision
    summary = {
        "benchmark": "squad_cpu_transfer" + ("_quick" if args.quick else "") + ("_heldout" if args.heldout else ""),
        "pipeline": "distill.run.run (the code `distill run` runs), one run per student",
        "eval_file": str(eval_file), "train_questions": args.train_questions,
        "teacher_questions": args.teacher_questions or args.train_questions,
        "teacher": teacher, **results, "steps": steps, "transfer_questions": transfer["n_transfer_questions"],
        "transfer_features": transfer["n_transfer_features"], "seeds": seeds, "missing": missing,
        "train_efficiency": efficiency,
        "machine": {"cpu_kind": cpu_kind(), "compute_dtype": precision, "threads": torch.get_num_threads()},
        "stage_seconds": stages,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    md = markdown(summary, args, eval_file.name, precision)
    args.out.with_suffix(".md").write_text(md)
    print(md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
