"""`distill run`: orders the stages of a recipe and owns its output directory.

Reads: a Recipe (see recipe.py). Writes into recipe.output_dir:
  recipe.resolved.yaml   the validated recipe with every default filled in
  train_log.jsonl, tensorboard/, checkpoints/, student/   (train.py)
  teacher_predictions.json, predictions.json (student), [teacher_]na_probs.json (v2), metrics.json,
  student/README.md (model card, distill.card; the fine-tuned teacher gets one too)
and into recipe.cache_dir: fine-tuned teachers (teachers/<key>/), teacher logits (teacher_logits/<key>/) and
the teacher's eval score and predictions (teacher_eval/<key>/).

Stages, each in its own module and skipped when its result is cached: preflight (every input loaded and
checked) -> data.features -> teacher (fine-tune if asked, logit cache) -> student (build) -> train ->
predict.evaluate of teacher and student. Without a `teacher` section (fine-tune mode) the teacher stages
are skipped and the student trains on gold spans only. With `data.transfer` the transfer questions are
windowed too, the teacher labels them (their own logit cache) and the student trains on both, the transfer
windows on the KD term alone (`labelled` column, losses.distillation_loss).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import yaml

from distill.distributed import barrier, launcher_rank
from distill.errors import InputError
from distill.recipe import Recipe, dump_resolved, resolve_path

log = logging.getLogger("distill")

RESOLVED = "recipe.resolved.yaml"


def claim_output_dir(recipe: Recipe, resume: bool, *, write: bool = True) -> Path:
    """Refuse to mix runs: an existing output_dir must hold this same recipe, and only with --resume."""
    from distill.files import write_text

    out = resolve_path(recipe.output_dir)
    if not write:  # other ranks of a launcher: rank 0 checks and writes
        return out
    resolved = dump_resolved(recipe)
    if out.exists() and any(out.iterdir()):
        saved = out / RESOLVED
        if not saved.is_file():
            raise InputError(f"output_dir {out}: exists and holds files that are not a distill run; choose another")
        if saved.read_text() != resolved:
            changed = _changed_keys(yaml.safe_load(saved.read_text()), yaml.safe_load(resolved))
            raise InputError(f"output_dir {out}: holds a run of a different recipe ({saved}; differs in "
                             f"{', '.join(changed) or 'formatting'}); choose another output_dir or undo the change")
        if not resume:
            raise InputError(f"output_dir {out}: already holds this run; pass --resume to continue it")
    elif resume:
        log.info("--resume: %s holds no run yet, starting fresh", out)
    write_text(out / RESOLVED, resolved)
    return out


def _changed_keys(old, new, prefix: str = "") -> list[str]:
    """Dotted recipe keys whose values differ between two resolved recipes."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in sorted(set(old) | set(new), key=str)
                for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


class _Laps:
    """Wall seconds of each stage, in order."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._clock, 2)
        self._clock = now


def evaluate_models(recipe: Recipe, models: dict, tokenizer, examples, out: Path) -> dict:
    """Score each model ({"teacher": m, "student": m}) on the eval data; writes predictions and metrics.json."""
    from distill.data.features import prepare_features
    from distill.data.squad import squad_version
    from distill.files import write_json
    from distill.precision import resolve
    from distill.predict import evaluate
    from distill.teacher import evaluate_teacher

    features = prepare_features(examples, tokenizer, recipe.data.window)
    metrics = {"eval_data": recipe.data.eval, "n_questions": len(examples), "version": squad_version(examples)}
    e = recipe.eval
    precision = resolve(e.precision, what="eval.precision").precision
    settings = dict(batch_size=e.batch_size, null_threshold=e.null_threshold,
                    no_answer_probability=e.no_answer_probability, n_best_size=e.n_best_size,
                    max_answer_length=e.max_answer_length)
    for role, model in models.items():
        t0 = time.perf_counter()
        if role == "teacher":
            metrics[role], metrics["teacher_eval_reused"] = evaluate_teacher(
                model, examples, features, out, resolve_path(recipe.cache_dir), precision=precision, **settings)
        else:
            metrics[role] = evaluate(model, examples, features, out_dir=out, precision=precision,
                                     desc=f"eval {role}", **settings)
        metrics[f"{role}_eval_seconds"] = round(time.perf_counter() - t0, 2)
        log.info("eval %s: %s", role, json.dumps(metrics[role]))
    write_json(out / "metrics.json", metrics)
    return metrics


def teacher_stage(recipe: Recipe, loaded: dict, tokenizer, features, cache_root: Path):
    """(teacher model, its directory), fine-tuned first when the recipe asks; (None, None) in fine-tune mode."""
    from distill.card import data_summary, write_teacher_card
    from distill.data.features import prepare_features
    from distill.models import load_qa_model, resolve_source
    from distill.teacher import finetune_teacher

    if recipe.teacher is None:
        return None, None
    teacher = loaded["models"].get("teacher.model") or load_qa_model(recipe.teacher.model)
    teacher_dir = resolve_source(recipe.teacher.model)
    if recipe.teacher.finetune is not None:
        examples = loaded.get("teacher_train", loaded["train"])
        if "teacher_train" in loaded:  # teacher.finetune.train_questions: its own slice of data.train
            features = prepare_features(examples, tokenizer, recipe.data.window, desc="Windowing teacher questions")
            log.info("features: %d teacher fine-tune windows from %d questions", len(features), len(examples))
        teacher_dir = str(finetune_teacher(recipe.teacher.finetune, teacher, tokenizer, features, cache_root))
        teacher = load_qa_model(teacher_dir)
        if launcher_rank()[0] == 0 and not (Path(teacher_dir) / "README.md").is_file():  # once per cached teacher
            write_teacher_card(recipe, Path(teacher_dir), data_summary(recipe.data.train, examples, features))
    return teacher, teacher_dir


def teacher_logits(recipe: Recipe, teacher, features, cache_root: Path, transfer=None):
    """The cached teacher logits the student trains on, or None when it needs none (CE only, online).

    With a transfer set: the training windows' cache followed by the transfer windows' (each its own
    fingerprinted cache, so adding or resizing a transfer set never recomputes the other)."""
    from datasets import concatenate_datasets

    from distill.teacher import build_logit_cache

    if recipe.train.alpha == 0 or recipe.train.online_teacher:
        return None
    rank, world = launcher_rank()
    parts = []
    # Under a launcher rank 0 builds the cache while the others wait, then every rank opens it.
    for turn in ((0,), range(1, world)) if world > 1 else ((0,),):
        if rank in turn:
            parts = [build_logit_cache(teacher, windows, cache_root, dtype=recipe.teacher.logits_dtype,
                                       precision=recipe.teacher.precision, batch_size=recipe.teacher.batch_size,
                                       progress=rank == 0)[0]
                     for windows in (features, transfer) if windows is not None]
        barrier()
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def log_epoch_table(out: Path) -> None:
    """The per-epoch Training/Validation Loss table of the model card, in the log at the end of a run."""
    from distill.card import epoch_table

    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"
    rows = [f"{r['epoch']:>5} | {r['step']:>6} | {fmt(r['training_loss']):>13} | {fmt(r['validation_loss']):>15}"
            for r in epoch_table(out / "train_log.jsonl")]
    log.info("Epoch |   Step | Training Loss | Validation Loss\n%s", "\n".join(rows))


def run(recipe: Recipe, *, resume: bool = False, recipe_path: str | os.PathLike | None = None) -> dict:
    """Every stage of the recipe in order; rank 0 returns metrics.json's contents (other ranks: {})."""
    from distill.card import data_summary, write_student_card
    from distill.data.features import join_transfer, prepare_features
    from distill.distributed import init_distributed
    from distill.files import write_json
    from distill.models import load_qa_model
    from distill.precision import default_device
    from distill.preflight import preflight
    from distill.student import make_student
    from distill.train import train_student

    lap = _Laps()
    loaded = preflight(recipe, recipe_path=recipe_path)
    rank, world = launcher_rank()
    if world > 1:
        init_distributed(default_device())
    out = claim_output_dir(recipe, resume, write=rank == 0)
    barrier()
    cache_root = resolve_path(recipe.cache_dir)
    tokenizer = loaded["tokenizer"]
    lap("preflight")

    features = prepare_features(loaded["train"], tokenizer, recipe.data.window)
    log.info("features: %d train windows from %d questions", len(features), len(loaded["train"]))
    transfer = None
    if "transfer" in loaded:
        transfer = prepare_features(loaded["transfer"], tokenizer, recipe.data.window, desc="Windowing transfer set")
        log.info("features: %d transfer windows from %d questions (KD term only)", len(transfer),
                 len(loaded["transfer"]))
    lap("features")

    teacher, teacher_dir = teacher_stage(recipe, loaded, tokenizer, features, cache_root)
    lap("teacher_finetune")

    logits = teacher_logits(recipe, teacher, features, cache_root, transfer) if teacher is not None else None
    lap("teacher_logits")

    student = make_student(recipe.student, teacher, loaded["models"].get("student.model"), seed=recipe.train.seed)
    validation = None
    if recipe.eval.every is not None:
        validation = (prepare_features(loaded["eval"], tokenizer, recipe.data.window), recipe.eval.every)
    student_dir = train_student(recipe.train, student, tokenizer, join_transfer(features, transfer), out,
                                teacher_logits=logits,
                                teacher_model=teacher if recipe.train.online_teacher else None, resume=resume,
                                validation=validation)
    lap("student_train")
    if rank != 0:
        return {}

    models = {"teacher": teacher} if recipe.eval.teacher and teacher is not None else {}
    models["student"] = load_qa_model(str(student_dir))
    metrics = evaluate_models(recipe, models, tokenizer, loaded["eval"], out)
    lap("eval")
    if transfer is not None:
        metrics.update(n_transfer_questions=len(loaded["transfer"]), n_transfer_features=len(transfer))
    metrics.update(n_train_features=len(features), stage_seconds=lap.seconds, student_dir=str(student_dir),
                   **({"teacher_dir": teacher_dir} if teacher_dir else {}))
    write_json(out / "metrics.json", metrics)
    write_student_card(recipe, student_dir, data_summary(recipe.data.train, loaded["train"], features), metrics)
    log_epoch_table(out)
    return metrics
