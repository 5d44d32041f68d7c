"""Real CPU-scale distillation on SQuAD v1.1, through `distill run`'s own pipeline (distill.run.run).

Two runs of recipes/quickstart_cpu.yaml with this script's overrides, sharing one cache_dir (WORK/cache):
1. student_kd: the teacher (all-MiniLM-L6-v2 fine-tuned on the first N questions of train-v1.1) is
   fine-tuned and its logits cached, then a student of teacher layers 0, 2, 4 trains on KD + CE (with
   --hidden-weight, also on the teacher's hidden states, the teacher then running online); teacher and
   student are evaluated;
2. student_ce: the same recipe with alpha = 0 (CE only) and eval.teacher=false; it reuses the cached teacher.
Both are scored on dev-v1.1 (all 10,570 questions unless --eval-questions) by the run's own eval;
--heldout scores held-out train questions instead, to compare settings without dev, --eval-file any SQuAD file.

Each run has its own output_dir WORK/<student>_<tag>, the tag naming every setting (and a hash of the rest
of the recipe, eval data included: one run is one recipe, so scoring on another file trains its own students
while reusing the cached teacher), so a rerun with other settings never reuses a stale student. A run whose
output_dir already holds a finished run of the identical recipe (metrics.json and the same recipe.resolved.yaml)
is not run again: its metrics.json is read and reported as reused (its stage seconds are those measured when
it ran). An unfinished one is resumed (resume=True).

Writes benchmarks/results/squad_cpu/squad_cpu.json and .md (EM/F1, KD gain, retention, latency ratio, each
run's stage seconds). Work files (cache, runs) go to --work (git-ignored).

    python benchmarks/squad_cpu.py            # results/squad_cpu/squad_cpu.md (seed 42): 84 min from cold on 2 cores
    python benchmarks/squad_cpu.py --quick    # a few minutes, tiny slices: keeps the path alive in CI
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

T_START = time.perf_counter()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "quickstart_cpu.yaml"
RESOLVED = "recipe.resolved.yaml"  # what `distill run` saves beside its outputs (docs: distill/run.py)


def parse_args(argv=None, *, description: str = __doc__, extend=None, name: str = "squad_cpu"):
    """This benchmark's arguments; `extend(parser)` adds a sibling script's own (squad_cpu_transfer.py)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if extend is not None:
        extend(p)
    p.add_argument("--quick", action="store_true", help="tiny slices, a few minutes (CI smoke)")
    p.add_argument("--train-questions", type=int, default=12000)
    p.add_argument("--teacher-questions", type=int, default=None,
                   help="fine-tune the teacher on the first N questions instead (teacher.finetune.train_questions), "
                        "e.g. more than the students' labels")
    p.add_argument("--eval-questions", type=int, default=None, help="default: all questions of the eval set")
    held = p.add_mutually_exclusive_group()
    held.add_argument("--eval-file", default=None, help="score on this SQuAD JSON instead of dev-v1.1")
    held.add_argument("--heldout", action="store_true",
                      help="score on held-out train questions instead of dev-v1.1 (the last articles of train-v1.1, "
                           ">= 3,000 questions, none shared with the train slice), to compare settings without dev")
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--doc-stride", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--teacher-lr", type=float, default=1e-4)
    # 2 epochs and lr >= 2e-4: from held-out TRAIN questions (benchmarks/kd_sweep.py, results/kd_sweep*.json),
    # where the KD gain grew with lr; 3e-4 itself was then tried on dev (docs/training.md lists every dev run);
    # 4e-4 did no better for the KD student on held-out questions (--heldout, results/squad_cpu_heldout_*.md)
    p.add_argument("--student-lr", type=float, default=3e-4)
    p.add_argument("--teacher-epochs", type=int, default=1)
    p.add_argument("--student-epochs", type=int, default=2)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--hidden-weight", type=float, default=0.0,
                   help="student A also matches the teacher's hidden states (train.hidden_weight; runs the teacher "
                        "online every step instead of reading cached logits)")
    p.add_argument("--teacher-grouped", action=argparse.BooleanOptionalAction, default=True,
                   help="fine-tune the teacher on length-grouped batches (0.62x the tokens computed on this slice)")
    p.add_argument("--student-attention-dropout", type=float, default=None,
                   help="the students' train.attention_dropout (default: the model's own, 0.1, as in the committed "
                        "results; 0 trains faster on CPU, docs/training.md)")
    p.add_argument("--layers", default="0,2,4")
    p.add_argument("--architecture", choices=("distilbert", "teacher"), default="distilbert",
                   help="student class (student.architecture): a DistilBERT mapped from the teacher's layers, or the "
                        "teacher's own class cut to those layers (the BERT-class student of the committed results)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--student-seed", type=int, default=None,
                   help="seed of the two students only (default: --seed), to repeat them with the same teacher")
    p.add_argument("--stop-after-logits", action="store_true",
                   help="only fill WORK/cache with the fine-tuned teacher and its logits, for a later invocation to "
                        "reuse. distill.run.run has no stop-after-stage, so this runs the KD recipe once with "
                        "train.max_steps=1, data.eval_questions=1 and eval.teacher=false into a throwaway "
                        "output_dir (WORK/warmup_<key>): one student step and one eval question more than the "
                        "teacher and logit stages themselves (with --hidden-weight no logits are cached: the KD "
                        "student reads the teacher online)")
    p.add_argument("--squad-dir", default=str(ROOT.parent / "shared" / "data" / "squad"))
    p.add_argument("--work", default=str(ROOT / "benchmarks" / "results" / "squad_cpu_work"))
    p.add_argument("--out", default=None,
                   help="JSON path (default benchmarks/results/squad_cpu/squad_cpu[_quick][_heldout].json)")
    args = p.parse_args(argv)
    if args.quick:
        args.train_questions, args.eval_questions = 160, 80
        args.max_seq_length, args.doc_stride = 128, 48
        args.work = args.work.rstrip("/") + "_quick"
    # a held-out or other-file run never lands on the committed dev result by default
    suffix = ("_quick" if args.quick else "") + ("_heldout" if args.heldout else "") + (
        f"_{Path(args.eval_file).stem}" if args.eval_file else "")
    args.out = Path(args.out or ROOT / "benchmarks" / "results" / "squad_cpu" / f"{name}{suffix}.json")
    if args.student_seed is None:
        args.student_seed = args.seed
    args.layer_ids = [int(x) for x in args.layers.split(",")]
    return args


def student_tag(args, shared_key: str, alpha: float, hidden: float, grouped: bool) -> str:
    """A student run's output_dir name: `shared_key` (a hash of everything the two students share: data, teacher,
    windows, eval, cache; see `shared_key`) and every setting that tells them apart or is worth reading in the
    name, so a rerun with another T, alpha, lr, seed or teacher reuses the cached teacher but never a stale
    student."""
    return (f"t{shared_key[:8]}_s{args.student_seed}_T{args.temperature}_a{alpha}_e{args.student_epochs}"
            f"_lr{args.student_lr}_l{'-'.join(map(str, args.layer_ids))}"
            + ("_grouped" if grouped else "") + (f"_h{hidden}" if hidden else ""))


def shared_key(recipe) -> str:
    """Hash of a recipe without output_dir and without the keys that differ between the KD and CE student."""
    raw = recipe.model_dump(mode="json")
    raw.pop("output_dir")
    for key in ("alpha", "hidden_weight", "online_teacher", "hidden_layers"):
        raw["train"].pop(key, None)
    raw["eval"].pop("teacher", None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:20]


def write_heldout(train_json: Path, train_questions: int, out: Path, min_questions: int = 3000) -> Path:
    """The last whole articles of train_json holding >= min_questions questions, as a SQuAD file at out."""
    articles = json.loads(train_json.read_text())["data"]
    counts = [sum(len(p["qas"]) for p in a["paragraphs"]) for a in articles]
    # the train slice is the first questions in file order (take_questions), so it ends inside this article
    first_unused = bisect.bisect_left(list(itertools.accumulate(counts)), train_questions) + 1
    start, n = len(articles), 0
    while n < min_questions and start > first_unused:
        start -= 1
        n += counts[start]
    if n < min_questions:
        raise SystemExit(f"squad_cpu.py: {train_json} has only {n} questions after the first {train_questions}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"version": "1.1", "data": articles[start:]}))
    return out


def run_paths(args) -> tuple[Path, Path, Path]:
    """(work dir, SQuAD dir, eval file): dev-v1.1, --eval-file, or with --heldout the held-out train file it writes."""
    work = Path(args.work).resolve()
    squad = Path(args.squad_dir).resolve()
    eval_file = Path(args.eval_file).resolve() if args.eval_file else squad / "dev-v1.1.json"
    if args.heldout:
        seen = max(args.train_questions, args.teacher_questions or 0)
        eval_file = write_heldout(squad / "train-v1.1.json", seen, work / "heldout-train-v1.1.json")
    return work, squad, eval_file


def common_overrides(args, squad: Path, eval_file: Path, work: Path) -> list[str]:
    """The `--set` overrides of recipes/quickstart_cpu.yaml every run of this benchmark shares."""
    return [
        f"data.train={squad / 'train-v1.1.json'}", f"data.eval={eval_file}",
        f"data.train_questions={args.train_questions}",
        f"data.eval_questions={args.eval_questions if args.eval_questions else 'null'}",
        f"data.window.max_seq_length={args.max_seq_length}", f"data.window.doc_stride={args.doc_stride}",
        f"cache_dir={work / 'cache'}",
        f"teacher.finetune.epochs={args.teacher_epochs}", f"teacher.finetune.batch_size={args.batch_size}",
        f"teacher.finetune.lr={args.teacher_lr}", f"teacher.finetune.seed={args.seed}",
        f"teacher.finetune.group_by_length={str(args.teacher_grouped).lower()}",
        f"teacher.finetune.train_questions={args.teacher_questions or 'null'}",
        f"train.epochs={args.student_epochs}", f"train.batch_size={args.batch_size}", f"train.lr={args.student_lr}",
        f"train.temperature={args.temperature}", f"train.seed={args.student_seed}",
        "train.checkpoint_every=0", f"student.from_teacher_layers={args.layer_ids}",
        f"student.architecture={args.architecture}",
        # the committed results trained with the models' own attention dropout, not the quickstart's 0
        "teacher.finetune.attention_dropout=null",
        f"train.attention_dropout={'null' if args.student_attention_dropout is None else args.student_attention_dropout}",
        # and their teachers with SDPA (before train.attn_implementation existed), so the cached ones stay valid
        "teacher.finetune.attn_implementation=sdpa",
    ]


def student_overrides(args) -> dict[str, tuple[float, float, list[str]]]:
    """name: (alpha, hidden weight, overrides of that run) of the KD and the CE-only student."""
    hidden = args.hidden_weight
    kd_only = [f"train.alpha={args.alpha}"] + ([f"train.hidden_weight={hidden}", "train.online_teacher=true"]
                                               if hidden else [])
    return {"student_kd": (args.alpha, hidden, kd_only),
            "student_ce": (0.0, 0.0, ["train.alpha=0", "eval.teacher=false"])}


def run_or_reuse(recipe) -> tuple[dict, bool]:
    """(metrics, reused): distill.run.run, or the metrics.json of a finished run of this same recipe.

    An output_dir holding this recipe without final metrics (an interrupted run) is resumed.
    """
    from distill.recipe import dump_resolved
    from distill.run import run

    metrics = finished_metrics(recipe)
    if metrics is not None:
        return metrics, True
    saved = Path(recipe.output_dir) / RESOLVED
    return run(recipe, resume=saved.is_file() and saved.read_text() == dump_resolved(recipe)), False


def finished_metrics(recipe) -> dict | None:
    """metrics.json of a finished run of this same recipe in its output_dir, else None."""
    from distill.recipe import dump_resolved

    out = Path(recipe.output_dir)
    saved, metrics_file = out / RESOLVED, out / "metrics.json"
    if not (saved.is_file() and metrics_file.is_file() and saved.read_text() == dump_resolved(recipe)):
        return None
    metrics = json.loads(metrics_file.read_text())
    return metrics if "stage_seconds" in metrics else None  # written last: the run finished


def cached_entries(cache: Path) -> dict[str, set[str]]:
    """Keys of the finished fine-tuned teachers and logit caches under a cache_dir (layout: distill/run.py)."""
    return {"teacher_finetune": {p.parent.name for p in (cache / "teachers").glob("*/config.json")},
            "teacher_logits": {p.parent.name for p in (cache / "teacher_logits").glob("*/complete.json")}}


def model_latencies(models: dict, features, batch_size: int = 32, rounds: int = 5,
                    precision: str = "auto") -> dict[str, float]:
    """Median seconds for one forward of a fixed batch of real eval features, in the eval's precision.

    The models take turns (distill bench's interleaved timing), so a slow stretch of the machine slows
    them alike and the student/teacher ratio stays fair: timed one after another, this teacher read
    0.60 to 1.01 s.
    """
    import statistics

    from distill.bench import interleaved_timing
    from distill.predict import compute_logits

    batch = features.select(range(min(batch_size, len(features))))
    fns = {name: (lambda m=model: compute_logits(m, batch, batch_size=batch_size, precision=precision,
                                                 progress=False))
           for name, model in models.items()}
    samples = interleaved_timing(fns, warmup=1, min_iters=rounds, min_seconds=0)
    return {name: statistics.median(t) for name, t in samples.items()}


def main() -> int:
    args = parse_args()
    import logging

    import torch
    import transformers

    from distill.cli import setup_logging
    from distill.data.features import prepare_features
    from distill.data.squad import load_squad, take_questions
    from distill.models import load_qa_model, load_tokenizer
    from distill.precision import cpu_kind, resolve
    from distill.recipe import load_recipe

    setup_logging()
    log = logging.getLogger("distill")
    work, squad, eval_file = run_paths(args)
    common = common_overrides(args, squad, eval_file, work)
    base = load_recipe(RECIPE, [*common, f"output_dir={work / 'unused'}"])
    key = shared_key(base)
    hidden = args.hidden_weight
    students = student_overrides(args)
    kd_only = students["student_kd"][2]

    if args.stop_after_logits:
        warm = load_recipe(RECIPE, [*common, *kd_only, f"output_dir={work / f'warmup_t{key[:8]}'}",
                                    "train.max_steps=1", "data.eval_questions=1", "eval.teacher=false"])
        metrics, reused = run_or_reuse(warm)
        log.info("teacher and logits cached under %s (--stop-after-logits; warm-up run %s): %s",
                 work / "cache", "reused" if reused else "ran", metrics.get("stage_seconds"))
        return 0

    runs: dict[str, dict] = {}
    runs_reused: list[str] = []
    cache_hits: dict[str, bool | None] = {}
    recipes = {}
    for name, (alpha, h, extra) in students.items():
        tag = student_tag(args, key, alpha, h, base.train.group_by_length)
        recipes[name] = load_recipe(RECIPE, [*common, *extra, f"output_dir={work / f'{name}_{tag}'}"])
        before = cached_entries(work / "cache")
        runs[name], reused = run_or_reuse(recipes[name])
        if reused:
            runs_reused.append(name)
            log.info("%s: reused the finished run in %s", name, recipes[name].output_dir)
        elif name == "student_kd":  # the run that fine-tunes the teacher and caches its logits
            after = cached_entries(work / "cache")
            cache_hits["teacher_finetune"] = Path(runs[name]["teacher_dir"]).name in before["teacher_finetune"]
            cache_hits["teacher_logits"] = (None if hidden else
                                            not (after["teacher_logits"] - before["teacher_logits"]))
        log.info("%s: %s", name, {k: runs[name].get(k) for k in ("teacher", "student", "stage_seconds")})

    kd, ce = runs["student_kd"], runs["student_ce"]
    results = {"teacher": kd["teacher"], "student_kd": kd["student"], "student_ce": ce["student"]}
    recipe = recipes["student_kd"]
    # windows counted with the runs' own function and settings (the datasets cache makes this a re-read)
    tokenizer = load_tokenizer(recipe.teacher.model)
    train_examples = load_squad(recipe.data.train, split="train")
    if recipe.data.train_questions:
        train_examples = take_questions(train_examples, recipe.data.train_questions)
    n_train_features = len(prepare_features(train_examples, tokenizer, recipe.data.window))
    eval_examples = load_squad(recipe.data.eval, split="validation")
    if recipe.data.eval_questions:
        eval_examples = take_questions(eval_examples, recipe.data.eval_questions)
    eval_features = prepare_features(eval_examples, tokenizer, recipe.data.window)
    eval_precision = resolve(recipe.eval.precision, quiet=True).precision
    models = {"teacher": load_qa_model(kd["teacher_dir"]), "student_kd": load_qa_model(kd["student_dir"]),
              "student_ce": load_qa_model(ce["student_dir"])}
    latency = model_latencies(models, eval_features, precision=eval_precision)

    f1 = {k: v["f1"] for k, v in results.items()}
    summary = {
        "benchmark": "squad_cpu" + ("_quick" if args.quick else ""),
        "pipeline": "distill.run.run (the code `distill run` runs), one run per student",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "n_train_questions": len(train_examples),
        "n_train_features": n_train_features,
        "n_eval_questions": kd["n_questions"], "n_eval_features": len(eval_features),
        "scores": results,
        "kd_gain_f1": round(f1["student_kd"] - f1["student_ce"], 3),
        "retention_f1": round(f1["student_kd"] / f1["teacher"], 4) if f1["teacher"] else None,
        "latency_s_batch32": {k: round(v, 4) for k, v in latency.items()},
        "student_teacher_latency_ratio": round(latency["student_kd"] / latency["teacher"], 3),
        "params": {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()},
        # each run's own stage_seconds; a reused run's are those measured when it ran
        "stage_seconds": {name: m["stage_seconds"] for name, m in runs.items()},
        "runs_reused": runs_reused,
        # in this invocation's KD run: were the fine-tuned teacher / the logits found in the cache (null: not run)
        "cache_hits": cache_hits,
        "output_dirs": {name: str(r.output_dir) for name, r in recipes.items()},
        "teacher_dir": kd["teacher_dir"],
        # this process, start to report (imports, model loading and the latency probe too)
        "wall_seconds": round(time.perf_counter() - T_START, 1),
        "group_by_length": {"teacher": recipe.teacher.finetune.group_by_length,
                            "students": recipe.train.group_by_length},
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "transformers": transformers.__version__, "threads": torch.get_num_threads(),
                    "cpu": platform.processor() or platform.machine(), "cpu_kind": cpu_kind(),
                    # what each `auto` became here (distill.precision.resolve)
                    "precision": {"teacher_finetune": resolve(recipe.teacher.finetune.precision, quiet=True).precision,
                                  "train": resolve(recipe.train.precision, quiet=True).precision,
                                  "eval": eval_precision}},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    stage_names = list(dict.fromkeys(k for m in runs.values() for k in m["stage_seconds"]))
    md = [
        f"# {summary['benchmark']}: MiniLM-L6 teacher -> 3-layer student, SQuAD v1.1",
        "",
        f"train: first {summary['n_train_questions']} questions of train-v1.1 ({summary['n_train_features']} windows), "
        f"seq {args.max_seq_length} / stride {args.doc_stride}; eval: {summary['n_eval_questions']} questions of {eval_file.name}.",
        "",
        f"teacher: {args.teacher_epochs} epoch(s), lr {args.teacher_lr}; students ({args.architecture}): layers {args.layers} of the fine-tuned "
        f"teacher, {args.student_epochs} epoch(s), lr {args.student_lr}, batch {args.batch_size}; KD: T {args.temperature}, "
        f"alpha {args.alpha}"
        + (f", hidden-state KD weight {args.hidden_weight} (teacher online)" if args.hidden_weight else "")
        + f"; CE only: alpha 0; seed {args.seed}"
        + (f" (students {args.student_seed})" if args.student_seed != args.seed else "")
        + "; batches grouped by window length: "
        f"teacher {'yes' if recipe.teacher.finetune.group_by_length else 'no'}, "
        f"students {'yes' if recipe.train.group_by_length else 'no'}. "
        f"Each student is one `distill run` of recipes/quickstart_cpu.yaml with overrides; "
        f"CPU: {cpu_kind()}, train precision {summary['machine']['precision']['train']}.",
        "",
        "| model | EM | F1 | params | latency (bs 32) |",
        "|---|---|---|---|---|",
    ]
    for name in models:
        md.append(f"| {name} | {results[name]['exact_match']:.2f} | {results[name]['f1']:.2f} | "
                  f"{summary['params'][name]:,} | {latency[name]:.3f} s |")
    hits = [k for k, v in cache_hits.items() if v]
    md += [
        "",
        f"- KD gain (F1 A - F1 B): **{summary['kd_gain_f1']:+.2f}**",
        f"- retention (F1 A / F1 teacher): **{100 * (summary['retention_f1'] or 0):.1f}%**",
        f"- student/teacher latency ratio: **{summary['student_teacher_latency_ratio']:.2f}**",
        "",
        "| stage (s) | " + " | ".join(f"{n} run{' (reused, as it ran then)' if n in runs_reused else ''}"
                                       for n in runs) + " |",
        "|---|" + "---|" * len(runs),
        *[f"| {stage}{' (cache hit)' if stage in hits else ''} | "
          + " | ".join(str(m["stage_seconds"].get(stage, "")) for m in runs.values()) + " |" for stage in stage_names],
        f"| **whole invocation** | {summary['wall_seconds']}"
        f"{' (some runs reused)' if runs_reused else ''}" + " |" * len(runs),
        "",
        "The student_ce run reads the teacher the student_kd run fine-tuned from the shared cache (its "
        "teacher_finetune is that read) and needs no teacher logits (alpha 0).",
    ]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
