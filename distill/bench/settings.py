"""What a bench measures: its settings, its inputs, and the settings read from a run directory.

Reads: SQuAD evaluation data (`load_inputs`); a `distill run` output directory's recipe.resolved.yaml
and metrics.json (`settings_from_run_dir`). Writes nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import InputError
from distill.files import sha256_file
from distill.precision import resolve

SCHEMA = "distill-bench/1"
ROLES = ("teacher", "student")


@dataclass
class BenchSettings:
    teacher: str
    student: str
    data: str
    out: Path
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    seq_len: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    max_questions: int | None = None
    data_split: str = "validation"
    precision: str = "fp32"
    device: str | None = None
    threads: int | None = None
    eval_batch_size: int = 32
    n_best_size: int = 20
    max_answer_length: int = 30
    null_threshold: float = 0.0
    warmup: int = 2
    min_iters: int = 10
    min_seconds: float = 1.0
    max_iters: int = 100_000
    memory: bool = True
    progress: bool = True


def load_inputs(settings: BenchSettings):
    """(WindowConfig, examples Dataset) for `settings`; InputError on bad window settings."""
    from pydantic import ValidationError

    from distill.data.features import WindowConfig
    from distill.data.squad import load_squad, take_questions

    try:
        window = WindowConfig(max_seq_length=settings.seq_len, doc_stride=settings.doc_stride,
                              max_query_length=settings.max_query_length)
    except ValidationError as err:
        raise InputError("window settings: " + "; ".join(e["msg"] for e in err.errors())) from None
    examples = load_squad(settings.data, split=settings.data_split)
    if settings.max_questions:
        examples = take_questions(examples, settings.max_questions)
    return window, examples


def data_identity(source: str, split: str) -> dict:
    """What makes two benches' data the same: the file's sha256, or the hub id and split."""
    path = Path(source).expanduser()
    if path.is_file():
        return {"source": source, "sha256": sha256_file(path)}
    return {"source": source, "split": split}


def expected_settings(settings: BenchSettings, examples) -> dict:
    """The part of bench.json that must match a baseline for the comparison to mean anything."""
    from distill.data.squad import squad_version

    return {
        "data": data_identity(settings.data, settings.data_split),
        "n_questions": len(examples),
        "version": squad_version(examples),
        "seq_len": settings.seq_len,
        "doc_stride": settings.doc_stride,
        "max_query_length": settings.max_query_length,
        "batch_sizes": list(settings.batch_sizes),
        # resolved: `auto` is bf16 on one CPU and fp32 on another, and those runs are not comparable
        "precision": resolve(settings.precision, settings.device, quiet=True).precision,
    }


def _null_threshold(e) -> float:
    """The recipe's no-answer rule as a logit difference (bench takes that unit)."""
    if e.no_answer_probability is None:
        return e.null_threshold
    p = min(max(e.no_answer_probability, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def settings_from_run_dir(run_dir: Path) -> tuple[dict, "object"]:
    """(BenchSettings keyword arguments, BenchGate) for `distill bench RUN_DIR`."""
    from distill.recipe import load_recipe

    resolved = run_dir / "recipe.resolved.yaml"
    if not resolved.is_file():
        raise InputError(f"{run_dir}: not a distill run directory (no recipe.resolved.yaml)")
    recipe = load_recipe(resolved)
    metrics_file = run_dir / "metrics.json"
    metrics = {}
    if metrics_file.is_file():
        try:
            metrics = json.loads(metrics_file.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{metrics_file}: malformed JSON: {err.msg}") from None
    # The run may have fine-tuned the teacher into the cache; metrics.json says where.
    # None for a fine-tune run (no teacher section): then --teacher names the model to compare with
    teacher = metrics.get("teacher_dir") or (recipe.teacher.model if recipe.teacher else None)
    student = run_dir / "student"
    if not (student / "config.json").is_file():
        raise InputError(f"{run_dir}: no trained student in {student} (has the run finished?)")
    w = recipe.data.window
    kwargs = dict(teacher=teacher and str(teacher), student=str(student), data=recipe.data.eval,
                  data_split=recipe.data.eval_split, max_questions=recipe.data.eval_questions,
                  seq_len=w.max_seq_length, doc_stride=w.doc_stride, max_query_length=w.max_query_length,
                  precision=recipe.eval.precision, eval_batch_size=recipe.eval.batch_size,
                  n_best_size=recipe.eval.n_best_size, max_answer_length=recipe.eval.max_answer_length,
                  null_threshold=_null_threshold(recipe.eval))
    return kwargs, recipe.bench
