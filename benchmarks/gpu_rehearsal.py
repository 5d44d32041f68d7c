"""GPU rehearsal: the flagship recipe through `distill run` on CUDA, fp16, ZeRO-2 and ZeRO-3, no network.

Reads: recipes/distilbert_squad.yaml, a SQuAD train/dev file (--squad-dir), the packaged MiniLM tokenizer
(the bert-base-uncased vocabulary). Writes: WORK/ (stand-in models, runs, caches) and
benchmarks/results/gpu_rehearsal.json: per ZeRO stage, optimizer samples/s, peak GPU memory, fp16
loss-scale overflows (skipped steps), teacher-cache build throughput, stage seconds.

The hub models of the flagship are replaced by random-weight models of their sizes: a BERT-base-sized
BertForQuestionAnswering teacher (12 layers, hidden 768) and a DistilBERT-base-sized student (6 layers,
hidden 768), so the figures are throughput and memory, not quality. Meant for one GPU in under 8 minutes:

    python benchmarks/gpu_rehearsal.py --squad-dir ../shared/data/squad
    python benchmarks/gpu_rehearsal.py --cpu-smoke    # tiny models, a few steps: checks the path on a CPU
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--squad-dir", default=str(ROOT.parent / "shared" / "data" / "squad"))
    p.add_argument("--work", default=str(ROOT / "benchmarks" / "results" / "gpu_rehearsal_work"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_rehearsal.json"))
    p.add_argument("--train-questions", type=int, default=6000)
    p.add_argument("--eval-questions", type=int, default=500)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--stages", default="2,3", help="ZeRO stages to run, comma-separated")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny models, bf16/fp32 on CPU, a few steps")
    return p.parse_args()


def make_models(work: Path, smoke: bool) -> tuple[Path, Path]:
    """Random-weight stand-ins of the flagship's sizes (tiny with --cpu-smoke), with the bert-base-uncased vocab."""
    import torch
    from transformers import (AutoTokenizer, BertConfig, BertForQuestionAnswering, DistilBertConfig,
                              DistilBertForQuestionAnswering)

    from distill.models import packaged_minilm_dir, save_tokenizer_for

    hidden, t_layers, s_layers, heads = (32, 2, 1, 2) if smoke else (768, 12, 6, 12)
    tokenizer = AutoTokenizer.from_pretrained(str(packaged_minilm_dir()))
    torch.manual_seed(0)
    teacher = BertForQuestionAnswering(BertConfig(hidden_size=hidden, num_hidden_layers=t_layers,
                                                  num_attention_heads=heads, intermediate_size=4 * hidden))
    student = DistilBertForQuestionAnswering(DistilBertConfig(dim=hidden, n_layers=s_layers, n_heads=heads,
                                                              hidden_dim=4 * hidden))
    dirs = work / "teacher", work / "student"
    for model, path in zip((teacher, student), dirs):
        model.save_pretrained(path)
        save_tokenizer_for(model, tokenizer, path)
    return dirs


class _Overflows(logging.Handler):
    """Counts DeepSpeed's skipped fp16 steps, which train.py logs as warnings."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record):
        self.count += "fp16 overflow" in record.getMessage()


def rehearse(args, stage: int, teacher: Path, student: Path, work: Path) -> dict:
    import torch

    from distill.recipe import load_recipe
    from distill.run import run

    squad = Path(args.squad_dir)
    precision = "auto" if args.cpu_smoke else "fp16"
    suffix = "bf16" if args.cpu_smoke else "fp16"
    overrides = [f"teacher.model={teacher}", f"student.model={student}",
                 f"data.train={squad / 'train-v1.1.json'}", f"data.eval={squad / 'dev-v1.1.json'}",
                 f"data.train_questions={args.train_questions}", f"data.eval_questions={args.eval_questions}",
                 f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}", "train.log_every=10",
                 f"train.precision={precision}", f"train.ds_config=ds_configs/zero{stage}_{suffix}.json",
                 f"teacher.precision={precision}", f"eval.precision={precision}", "train.checkpoint_every=0",
                 f"output_dir={work / f'zero{stage}'}", f"cache_dir={work / 'cache'}"]
    recipe = load_recipe(ROOT / "recipes" / "distilbert_squad.yaml", overrides)
    overflows = _Overflows()
    logging.getLogger("distill").addHandler(overflows)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        metrics = run(recipe, resume=(work / f"zero{stage}").exists())
    finally:
        logging.getLogger("distill").removeHandler(overflows)
    log = [json.loads(line) for line in (work / f"zero{stage}" / "train_log.jsonl").read_text().splitlines()]
    first, last = log[0], log[-1]
    rows = args.batch_size * (last["step"] - first["step"])
    return {
        "zero_stage": stage, "precision": precision, "steps": last["step"],
        "samples_per_s": round(rows / (last["elapsed_s"] - first["elapsed_s"]), 2) if rows else None,
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "fp16_overflow_skipped_steps": overflows.count,
        "final_loss": last["loss"], "stage_seconds": metrics["stage_seconds"],
        "n_train_features": metrics["n_train_features"],
    }


def main() -> int:
    args = parse_args()
    import torch

    from distill.cli import setup_logging

    if not torch.cuda.is_available() and not args.cpu_smoke:
        raise SystemExit("gpu_rehearsal.py: no CUDA device (use --cpu-smoke to check the path on a CPU)")
    if args.cpu_smoke:
        args.train_questions, args.eval_questions, args.steps, args.batch_size = 40, 20, 4, 4
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    setup_logging()
    work = Path(args.work + ("_smoke" if args.cpu_smoke else ""))
    started = time.perf_counter()
    teacher, student = make_models(work, args.cpu_smoke)
    runs = [rehearse(args, int(stage), teacher, student, work) for stage in args.stages.split(",")]
    first = runs[0]["stage_seconds"]
    result = {
        "benchmark": "gpu_rehearsal" + ("_cpu_smoke" if args.cpu_smoke else ""),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "settings": {k: v for k, v in vars(args).items()},
        # the first run builds the teacher-logit cache; later runs reuse it
        "teacher_cache_seconds": first["teacher_logits"],
        "teacher_cache_windows_per_s": round(runs[0]["n_train_features"] / first["teacher_logits"], 1),
        "runs": runs, "wall_seconds": round(time.perf_counter() - started, 1),
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda},
    }
    out = Path(args.out if not args.cpu_smoke else work / "gpu_rehearsal_cpu_smoke.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
