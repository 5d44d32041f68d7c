"""SQuAD v2.0 at CPU scale through `distill run`: KD student vs CE-only student vs teacher vs all-no-answer.

Reads: recipes/squad_v2_cpu.yaml (dev-v2.0 split by article). Writes WORK/{kd,ce}/ (two runs sharing
WORK/cache: the fine-tuned teacher and its logits are made once) and benchmarks/results/squad_v2_cpu.json
and .md: the official v2 keys (exact, f1, HasAns_*, NoAns_*, best_*) of each model beside those of
predicting "" for every question, which already scores the eval part's unanswerable share.

    python benchmarks/squad_v2_cpu.py [--work DIR] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1",
        "best_f1_thresh")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(ROOT / "benchmarks" / "results" / "squad_v2_cpu_work"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "squad_v2_cpu.json"))
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override, repeatable")
    args = p.parse_args()
    started = time.perf_counter()

    from distill.cli import setup_logging
    from distill.data.squad import load_squad, take_articles, take_questions
    from distill.metrics import score_examples
    from distill.precision import cpu_kind, resolve
    from distill.recipe import load_recipe
    from distill.run import run

    setup_logging()
    work = Path(args.work)
    recipe_file = ROOT / "recipes" / "squad_v2_cpu.yaml"
    base = [*args.overrides, f"cache_dir={work / 'cache'}"]
    runs = {}
    for name, extra in (("kd", []), ("ce", ["train.alpha=0", "eval.teacher=false"])):
        recipe = load_recipe(recipe_file, [*base, *extra, f"output_dir={work / name}"])
        done = work / name / "metrics.json"
        runs[name] = json.loads(done.read_text()) if done.is_file() else run(recipe, resume=(work / name).exists())

    d = recipe.data
    examples = take_questions(take_articles(load_squad(d.eval), d.eval_articles), d.eval_questions)
    baseline = score_examples(examples, {q: "" for q in examples["id"]}, version="2.0")
    scores = {"teacher": runs["kd"]["teacher"], "student_kd": runs["kd"]["student"],
              "student_ce": runs["ce"]["student"], "all_no_answer": baseline}
    result = {
        "benchmark": "squad_v2_cpu", "recipe": str(recipe_file.relative_to(ROOT)), "overrides": args.overrides,
        "train_questions": recipe.data.train_questions,
        "n_train_windows": runs["kd"]["n_train_features"], "n_eval_questions": len(examples),
        "scores": scores, "kd_gain_f1": round(scores["student_kd"]["f1"] - scores["student_ce"]["f1"], 3),
        "stage_seconds": {k: v.get("stage_seconds") for k, v in runs.items()},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {"cpu_kind": cpu_kind(), "precision": resolve(recipe.train.precision, quiet=True).precision,
                    "python": platform.python_version()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    md = ["# squad_v2_cpu: MiniLM-L6 teacher -> DistilBERT (layers 0, 2, 4), dev-v2.0 split by article", "",
          f"Train: the first {recipe.data.train_questions} questions of articles [0, 0.8) of dev-v2.0 "
          f"({result['n_train_windows']} windows); eval: the {len(examples)} questions of articles [0.8, 1). "
          f"CPU kind: {result['machine']['cpu_kind']}, {result['machine']['precision']}.", "",
          "| model | " + " | ".join(KEYS) + " |", "|---|" + "---:|" * len(KEYS)]
    md += [f"| {name} | " + " | ".join(f"{s[k]:.2f}" if k in s else "n/a" for k in KEYS) + " |"
           for name, s in scores.items()]
    md += ["", f"- KD gain (F1, KD student - CE student): **{result['kd_gain_f1']:+.2f}**",
           f"- whole invocation: {result['wall_seconds']} s", ""]
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
