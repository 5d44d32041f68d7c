"""KD settings sweep for the squad_cpu benchmark shape, scored on HELD-OUT TRAIN questions (never dev).

Reads: a SQuAD train file (its first --train-questions questions are the train slice) and a held-out SQuAD file
(articles disjoint from that slice: `squad_cpu.py --heldout` writes one to WORK/heldout-train-v1.1.json),
and a base encoder (default: the packaged all-MiniLM-L6-v2). Writes: one JSON with the teacher's and every
student's held-out EM/F1, rewritten after each variant so a cut-short run still reports what it finished, and
the Markdown table beside it.

Every variant is one `distill run`: distill.run.run on recipes/quickstart_cpu.yaml with overrides (data.train /
data.eval, the slice and windows, teacher fine-tuning, train.temperature / alpha / epochs / lr,
student.from_teacher_layers, plus any --set), all sharing one cache_dir, so the teacher is fine-tuned and its
logits cached once, by the first variant, which alone also evaluates the teacher (eval.teacher). Each variant
has its own output_dir, WORK/t<hash of the shared settings>/<variant>; a variant whose output_dir already holds a
finished run of the same recipe is read back (metrics.json), not re-run. Its purpose is to choose T / alpha /
epochs / lr / layers before the real CPU benchmark, without touching dev.

The committed results/kd_sweep.json and results/kd_sweep_lr2e-4.json were NOT produced by this code: they come
from the earlier version of this script (commit 508a9d5, in git history), a plain PyTorch loop with bf16 autocast
run on a lent GPU, which reimplemented distill.train's order, loss and schedule without DeepSpeed. They were not
re-run. Two of their variant families cannot be expressed through the package and are gone from VARIANTS:
  init "base"   (T2_a0.5_e1_base, ce_e1_base): student = layers of the base encoder with a new QA head; the
                recipe's student.from_teacher_layers always takes the fine-tuned teacher's layers;
  kd_mask "all" (T2_a0.5_e1_allmask): KD over every real token; the package's loss masks KD to context + CLS.
--render still prints those JSONs (their init and kd_mask columns included); new runs record init "teacher"
and kd_mask "context", which is what the package does.

    python benchmarks/kd_sweep.py --heldout WORK/heldout-train-v1.1.json --out sweep.json [--variants ce_e1,T2_a0.5_e1]
    python benchmarks/kd_sweep.py --render benchmarks/results/kd_sweep.json benchmarks/results/kd_sweep_lr2e-4.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "quickstart_cpu.yaml"
RESOLVED = "recipe.resolved.yaml"  # what `distill run` saves beside its outputs (docs: distill/run.py)

# name: (temperature, alpha, epochs, lr, layers of the fine-tuned teacher the student starts from)
VARIANTS = {  # most informative first: a time budget cuts from the end
    "ce_e1": (2.0, 0.0, 1, 1e-4, (0, 2, 4)),
    "T2_a0.5_e1": (2.0, 0.5, 1, 1e-4, (0, 2, 4)),
    "T2_a0.9_e1": (2.0, 0.9, 1, 1e-4, (0, 2, 4)),
    "T2_a1.0_e1": (2.0, 1.0, 1, 1e-4, (0, 2, 4)),
    "ce_e2": (2.0, 0.0, 2, 1e-4, (0, 2, 4)),
    "T2_a0.9_e2": (2.0, 0.9, 2, 1e-4, (0, 2, 4)),
    "ce_e3": (2.0, 0.0, 3, 1e-4, (0, 2, 4)),
    "T2_a0.9_e3": (2.0, 0.9, 3, 1e-4, (0, 2, 4)),
    "T4_a0.9_e1": (4.0, 0.9, 1, 1e-4, (0, 2, 4)),
    "T1_a0.9_e1": (1.0, 0.9, 1, 1e-4, (0, 2, 4)),
    "T2_a0.5_e1_lr2e-4": (2.0, 0.5, 1, 2e-4, (0, 2, 4)),
    "ce_e1_lr2e-4": (2.0, 0.0, 1, 2e-4, (0, 2, 4)),
    "T2_a0.5_e1_L135": (2.0, 0.5, 1, 1e-4, (1, 3, 5)),
    "T2_a0.5_e1_L012": (2.0, 0.5, 1, 1e-4, (0, 1, 2)),
    "T4_a0.5_e1": (4.0, 0.5, 1, 1e-4, (0, 2, 4)),
    "T2_a0.5_e2": (2.0, 0.5, 2, 1e-4, (0, 2, 4)),
    "T2_a0.5_e3": (2.0, 0.5, 3, 1e-4, (0, 2, 4)),
    "ce_e2_lr2e-4": (2.0, 0.0, 2, 2e-4, (0, 2, 4)),
    "T2_a0.5_e2_lr2e-4": (2.0, 0.5, 2, 2e-4, (0, 2, 4)),
    "T2_a0.9_e2_lr2e-4": (2.0, 0.9, 2, 2e-4, (0, 2, 4)),
    "T2_a0.7_e2_lr2e-4": (2.0, 0.7, 2, 2e-4, (0, 2, 4)),
}


def render(runs: list[dict]) -> str:
    """Markdown table of one or more sweep JSONs; each KD row is paired with the CE-only row that shares
    its epochs, lr, init and layers (same data and steps), which gives its KD gain."""
    lines = []
    for run in runs:
        v = {k: x for k, x in run["variants"].items() if isinstance(x, dict)}
        lines += [f"teacher (held-out F1 {run['teacher']['f1']}, EM {run['teacher']['exact_match']}), "
                  f"{run['n_train_questions']} train questions ({run['n_train_features']} windows), "
                  f"{run['n_heldout_questions']} held-out train questions, device {run['device']}", "",
                  "| variant | T | alpha | epochs | lr | init | layers | KD mask | EM | F1 | retention | KD gain (F1) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, x in v.items():
            twin = next((y for y in v.values() if y["alpha"] == 0 and all(
                y[k] == x[k] for k in ("epochs", "lr", "init", "layers"))), None)
            gain = f"{x['f1'] - twin['f1']:+.2f}" if twin and x["alpha"] > 0 else ""
            lines.append(f"| {name} | {x['T']} | {x['alpha']} | {x['epochs']} | {x['lr']} | {x['init']} | "
                         f"{','.join(map(str, x['layers']))} | {x['kd_mask']} | {x['exact_match']} | {x['f1']} | "
                         f"{100 * x['retention']:.1f}% | {gain} |")
        lines.append("")
    return "\n".join(lines)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--render", nargs="+", metavar="JSON", help="only print the Markdown table of earlier sweeps")
    p.add_argument("--train", default=str(ROOT.parent / "shared" / "data" / "squad" / "train-v1.1.json"),
                   help="SQuAD train file; its first --train-questions questions are trained on")
    p.add_argument("--heldout", help="held-out SQuAD file, disjoint from the train slice (squad_cpu.py --heldout)")
    p.add_argument("--model", default="minilm", help="base encoder (teacher.model; default the packaged MiniLM)")
    p.add_argument("--out", help="JSON path")
    p.add_argument("--work", default=str(ROOT / "benchmarks" / "results" / "kd_sweep_work"),
                   help="cache_dir and the variants' output_dirs (git-ignored)")
    p.add_argument("--train-questions", type=int, default=12000)
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--doc-stride", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--teacher-lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra recipe override for every variant, like `distill run --set` (repeatable)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--budget-s", type=float, default=1e9, help="skip the remaining variants past this")
    return p.parse_args()


def shared_key(recipe) -> str:
    """Hash of a recipe without its output_dir: the settings every variant of one sweep shares."""
    raw = recipe.model_dump(mode="json")
    raw.pop("output_dir")
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:20]


def run_or_reuse(recipe) -> tuple[dict, bool]:
    """(metrics, reused): distill.run.run, or the metrics.json of a finished run of this same recipe.

    An output_dir holding this recipe without final metrics (an interrupted run) is resumed.
    """
    from distill.recipe import dump_resolved
    from distill.run import run

    out = Path(recipe.output_dir)
    saved = out / RESOLVED
    same = saved.is_file() and saved.read_text() == dump_resolved(recipe)
    if same and (out / "metrics.json").is_file():
        metrics = json.loads((out / "metrics.json").read_text())
        if "stage_seconds" in metrics:  # written last: the run finished
            return metrics, True
    return run(recipe, resume=same), False


def main() -> int:
    args = parse_args()
    if args.render:
        print(render([json.loads(Path(f).read_text()) for f in args.render]))
        return 0
    if not (args.heldout and args.out):
        sys.exit("kd_sweep.py: --heldout and --out are required (or --render)")
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        sys.exit(f"kd_sweep.py: unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    import logging

    import torch

    from distill.cli import setup_logging
    from distill.data.features import prepare_features
    from distill.data.squad import load_squad, take_questions
    from distill.models import load_tokenizer
    from distill.precision import cpu_kind, default_device, resolve
    from distill.recipe import load_recipe

    setup_logging()
    log = logging.getLogger("distill")
    t_all = time.perf_counter()
    work = Path(args.work).resolve()
    common = [
        f"data.train={Path(args.train).resolve()}", f"data.eval={Path(args.heldout).resolve()}",
        f"data.train_questions={args.train_questions}", "data.eval_questions=null",
        f"data.window.max_seq_length={args.max_seq_length}", f"data.window.doc_stride={args.doc_stride}",
        f"cache_dir={work / 'cache'}", f"teacher.model={args.model}",
        "teacher.finetune.epochs=1", f"teacher.finetune.batch_size={args.batch_size}",
        f"teacher.finetune.lr={args.teacher_lr}", f"teacher.finetune.seed={args.seed}",
        "teacher.finetune.group_by_length=true",  # squad_cpu.py's default (--teacher-grouped)
        f"train.batch_size={args.batch_size}", f"train.seed={args.seed}", "train.checkpoint_every=0",
        # the earlier sweep trained with the models' own attention dropout, like squad_cpu.py
        "teacher.finetune.attention_dropout=null", "train.attention_dropout=null",
        *args.overrides,
    ]
    base = load_recipe(RECIPE, [*common, f"output_dir={work / 'unused'}"])
    sweep_dir = work / f"t{shared_key(base)[:8]}"
    device = default_device()
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({cpu_kind()})",
              "torch": torch.__version__, "pipeline": "distill.run.run, one run per variant",
              "precision": resolve(base.train.precision, quiet=True).precision,
              "settings": vars(args), "sweep_dir": str(sweep_dir), "variants": {}}

    def save():
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))

    for i, name in enumerate(args.variants.split(",")):
        if time.perf_counter() - t_all > args.budget_s:
            result["variants"][name] = "skipped: time budget"
            continue
        T, alpha, epochs, lr, layers = VARIANTS[name]
        first = i == 0  # fine-tunes the teacher (or finds it cached) and alone evaluates it
        recipe = load_recipe(RECIPE, [
            *common, f"train.temperature={T}", f"train.alpha={alpha}", f"train.epochs={epochs}", f"train.lr={lr}",
            f"student.from_teacher_layers={list(layers)}", f"eval.teacher={str(first).lower()}",
            f"output_dir={sweep_dir / (name + ('_with_teacher' if first else ''))}"])
        metrics, reused = run_or_reuse(recipe)
        stages = metrics["stage_seconds"]
        if first:
            result["teacher"] = {"exact_match": round(metrics["teacher"]["exact_match"], 2),
                                 "f1": round(metrics["teacher"]["f1"], 2),
                                 # ~0 when the teacher was found in the cache
                                 "train_s": stages["teacher_finetune"], "dir": metrics["teacher_dir"]}
            tokenizer = load_tokenizer(args.model)
            train_ex = take_questions(load_squad(base.data.train, split="train"), args.train_questions)
            result.update(n_train_questions=len(train_ex),
                          n_train_features=len(prepare_features(train_ex, tokenizer, base.data.window)),
                          n_heldout_questions=metrics["n_questions"])
        s = {"exact_match": round(metrics["student"]["exact_match"], 2), "f1": round(metrics["student"]["f1"], 2)}
        s.update(retention=round(s["f1"] / result["teacher"]["f1"], 4), train_s=stages["student_train"],
                 T=T, alpha=alpha, epochs=epochs, lr=lr, init="teacher", layers=list(layers), kd_mask="context",
                 stage_seconds=stages, reused=reused, output_dir=str(recipe.output_dir))
        result["variants"][name] = s
        log.info("%s%s: %s", name, " (reused)" if reused else "", {k: s[k] for k in ("exact_match", "f1", "train_s")})
        save()
    result["total_s"] = round(time.perf_counter() - t_all, 1)
    save()
    Path(args.out).with_suffix(".md").write_text(render([result]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
