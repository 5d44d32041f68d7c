"""`distill run`: the whole pipeline from a recipe.

Reads: a Recipe (see recipe.py). Writes into recipe.output_dir:
  recipe.resolved.yaml   the validated recipe with every default filled in
  train_log.jsonl, tensorboard/, checkpoints/, student/   (from train.py)
  teacher_predictions.json, predictions.json (student), na_probs*.json (v2), metrics.json
and into recipe.cache_dir: fine-tuned teachers (teachers/<key>/) and teacher logits (teacher_logits/<key>/).

Stages, each skipped when its result is cached: data -> features -> teacher fine-tune (if asked)
-> teacher logit cache -> student training -> evaluation of teacher and student.
Every input is loaded and validated before the first expensive stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

from distill.errors import InputError
from distill.recipe import Recipe, dump_resolved, looks_like_path, resolve_path

log = logging.getLogger("distill")

RESOLVED = "recipe.resolved.yaml"


# ---------------------------------------------------------------- preflight


def _is_hub(source: str) -> bool:
    from distill.models import PACKAGED_MINILM

    return source != PACKAGED_MINILM and not looks_like_path(source)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1"


def preflight(recipe: Recipe, *, for_run: bool = True, recipe_path: str | os.PathLike | None = None) -> dict:
    """Load and check every input before any expensive stage; all problems in one InputError.

    Checks: data files (loaded and validated), model sources, tokenizer pairing, ds_config files and
    their "auto" filling, precision on this device. Hub sources cannot be checked offline: they are
    listed in `notes` instead. `for_run=False` (validate) reports device-dependent problems, such as
    fp16 on a machine without CUDA, as notes: the recipe may be meant for another machine.
    Returns what it loaded (examples, tokenizer, models by recipe key) so the run does not load twice,
    plus `notes`.
    `recipe_path` (the recipe file) heads the error message.
    """
    from distill.data.squad import load_squad, take_questions
    from distill.ds_config import build_ds_config
    from distill.models import layer_list, load_qa_model, load_tokenizer, resolve_source, tokenizers_compatible

    problems: list[str] = []
    notes: list[str] = []
    loaded: dict = {"notes": notes}

    def hub_skip(key: str, source: str) -> bool:
        if _is_hub(source) and _offline():
            notes.append(f"{key}: {source} is a hub id; not checked (HF_HUB_OFFLINE=1)")
            return True
        return False

    for key in ("train", "eval"):
        source = getattr(recipe.data, key)
        if hub_skip(f"data.{key}", source):
            continue
        split, limit = getattr(recipe.data, f"{key}_split"), getattr(recipe.data, f"{key}_questions")
        try:
            ds = load_squad(str(resolve_path(source)) if looks_like_path(source) else source, split=split)
            loaded[key] = take_questions(ds, limit) if limit else ds
        except InputError as err:
            problems.append(f"data.{key}: {err}")

    tokenizers, models = {}, {}
    student_source = recipe.student.model or recipe.student.config
    for key, source in (("teacher.model", recipe.teacher.model),
                        ("student.model" if recipe.student.model else "student.config", student_source)):
        if source is None or hub_skip(key, source):
            continue
        try:
            resolve_source(source)
            if key != "student.config":
                tokenizers[key] = load_tokenizer(source)
                # the weights too: a damaged file must fail here, not after features and teacher caching
                models[key] = load_qa_model(source)
        except InputError as err:
            problems.append(f"{key}: {err}")
    if "teacher.model" in tokenizers:
        loaded["tokenizer"] = tokenizers["teacher.model"]
    loaded["models"] = models
    layers = recipe.student.from_teacher_layers
    if layers is not None and "teacher.model" in models:
        try:
            _, _, blocks = layer_list(models["teacher.model"])
            if not layers or any(not 0 <= i < len(blocks) for i in layers):
                problems.append(f"student.from_teacher_layers: {layers} must be non-empty indices in "
                                f"0..{len(blocks) - 1} (teacher {recipe.teacher.model} has {len(blocks)} layers)")
        except InputError as err:
            problems.append(f"student.from_teacher_layers: {err}")
    if len(tokenizers) == 2:
        try:
            tokenizers_compatible(tokenizers["teacher.model"], tokenizers["student.model"],
                                  recipe.teacher.model, student_source)
        except InputError as err:
            problems.append(f"student.model: {err}")

    for section, cfg in (("train", recipe.train), ("teacher.finetune", recipe.teacher.finetune)):
        if cfg is None:
            continue
        try:
            build_ds_config(cfg, world_size=1)
        except InputError as err:
            device_only = "CUDA" in str(err) and cfg.precision == "fp16"
            line = f"{section}.{'precision' if device_only else 'ds_config'}: {err}"
            (notes if device_only and not for_run else problems).append(line)
    if problems:
        where = f"{recipe_path}: " if recipe_path else ""
        raise InputError(f"{where}recipe check failed, {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    for note in notes:
        log.warning("note: %s", note)
    return loaded


# ---------------------------------------------------------------- output directory


def launcher_rank() -> tuple[int, int]:
    """(rank, world size) as set by deepspeed/torchrun; (0, 1) in a bare process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def claim_output_dir(recipe: Recipe, resume: bool, *, write: bool = True) -> Path:
    """Refuse to mix runs: an existing output_dir must hold this same recipe, and only with --resume."""
    out = resolve_path(recipe.output_dir)
    if not write:  # other ranks of a launcher: rank 0 checks and writes
        return out
    resolved = dump_resolved(recipe)
    if out.exists() and any(out.iterdir()):
        saved = out / RESOLVED
        if not saved.is_file():
            raise InputError(f"output_dir {out}: exists and holds files that are not a distill run; choose another")
        if saved.read_text() != resolved:
            raise InputError(
                f"output_dir {out}: holds a run of a different recipe ({saved}); choose another output_dir")
        if not resume:
            raise InputError(f"output_dir {out}: already holds this run; pass --resume to continue it")
    elif resume:
        log.info("--resume: %s holds no run yet, starting fresh", out)
    if write:
        out.mkdir(parents=True, exist_ok=True)
        (out / RESOLVED).write_text(resolved)
    return out


# ---------------------------------------------------------------- stages


def _hash_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


# settings added after teachers were first cached: at these values they train exactly as before,
# so they stay out of the key
_KEY_NEUTRAL = {"group_by_length": False, "hidden_weight": 0.0, "hidden_layers": None, "attention_dropout": None}


def finetune_key(cfg, weights: str, fingerprint: str) -> str:
    """Base weights, features and settings, with `precision` as resolved here (device and dtype, never auto)."""
    from distill.precision import resolve

    settings = {k: v for k, v in cfg.model_dump(mode="json").items()
                if not (k in _KEY_NEUTRAL and v == _KEY_NEUTRAL[k])}
    settings["precision"] = resolve(cfg.precision, quiet=True).key
    return _hash_json([weights, fingerprint, settings])


def finetune_teacher(cfg, teacher, tokenizer, features, cache_root: Path) -> Path:
    """Fine-tune a base encoder on the training features (CE only); reused when already done.

    The result is keyed by the base weights, the features' fingerprint and the fine-tuning settings.
    """
    from distill.models import weights_hash
    from distill.train import train_student

    key = finetune_key(cfg, weights_hash(teacher), features._fingerprint)
    final = Path(cache_root) / "teachers" / key
    if (final / "config.json").is_file():
        log.info("teacher fine-tune: reusing %s", final)
        return final
    work = Path(cache_root) / "teachers" / f"{key}.work"
    log.info("teacher fine-tune: training on %d features -> %s", len(features), final)
    student_dir = train_student(cfg, teacher, tokenizer, features, work, resume=(work / "checkpoints").exists())
    rank, world = launcher_rank()
    if rank == 0:
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(student_dir, tmp)
        tmp.rename(final)
        shutil.rmtree(work, ignore_errors=True)
    if world > 1:
        import torch.distributed as tdist

        tdist.barrier()
    return final


def make_student(recipe: Recipe, teacher, pretrained=None):
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    from distill.models import load_qa_model, resolve_source, student_from_teacher_layers

    s = recipe.student
    if s.from_teacher_layers is not None:
        try:
            return student_from_teacher_layers(teacher, s.from_teacher_layers)
        except InputError as err:
            raise InputError(f"student.from_teacher_layers: {err}") from None
    if s.model is not None:
        return pretrained if pretrained is not None else load_qa_model(s.model)
    source = resolve_source(s.config)
    config = AutoConfig.from_pretrained(source)
    return AutoModelForQuestionAnswering.from_config(config)


def evaluate_pair(recipe: Recipe, models: dict, tokenizer, examples, out: Path) -> dict:
    from distill.data.features import prepare_features
    from distill.data.squad import squad_version
    from distill.metrics import score_examples
    from distill.precision import resolve
    from distill.predict import predict, write_json

    features = prepare_features(examples, tokenizer, recipe.data.window)
    metrics = {"eval_data": recipe.data.eval, "n_questions": len(examples), "version": squad_version(examples)}
    names = {"teacher": "teacher_predictions.json", "student": "predictions.json"}
    e = recipe.eval
    precision = resolve(e.precision, what="eval.precision").precision
    for role, model in models.items():
        t0 = time.perf_counter()
        preds, na_probs, version = predict(model, examples, features, batch_size=e.batch_size,
                                           precision=precision, null_threshold=e.null_threshold,
                                           n_best_size=e.n_best_size, max_answer_length=e.max_answer_length,
                                           desc=f"eval {role}")
        write_json(out / names[role], preds)
        if version == "2.0":
            write_json(out / names[role].replace("predictions", "na_probs"), na_probs)
        metrics[role] = score_examples(examples, preds, na_probs=na_probs or None, version=version)
        metrics[f"{role}_eval_seconds"] = round(time.perf_counter() - t0, 2)
        log.info("eval %s: %s", role, json.dumps(metrics[role]))
    write_json(out / "metrics.json", metrics)
    return metrics


def run(recipe: Recipe, *, resume: bool = False, recipe_path: str | os.PathLike | None = None) -> dict:
    from distill.data.features import prepare_features
    from distill.models import load_qa_model, resolve_source
    from distill.teacher import build_logit_cache
    from distill.train import train_student

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage):
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 2)
        clock = now

    loaded = preflight(recipe, recipe_path=recipe_path)
    rank, world = launcher_rank()
    if world > 1:
        import torch.distributed as tdist

        from distill.precision import default_device
        from distill.train import init_distributed

        init_distributed(default_device())
    out = claim_output_dir(recipe, resume, write=rank == 0)
    if world > 1:
        tdist.barrier()
    cache_root = resolve_path(recipe.cache_dir)
    tokenizer = loaded["tokenizer"]
    lap("preflight")

    train_features = prepare_features(loaded["train"], tokenizer, recipe.data.window)
    log.info("features: %d train windows from %d questions", len(train_features), len(loaded["train"]))
    lap("features")

    teacher = loaded["models"].get("teacher.model") or load_qa_model(recipe.teacher.model)
    teacher_dir = resolve_source(recipe.teacher.model)
    if recipe.teacher.finetune is not None:
        teacher_dir = str(finetune_teacher(recipe.teacher.finetune, teacher, tokenizer, train_features, cache_root))
        teacher = load_qa_model(teacher_dir)
    lap("teacher_finetune")

    logits = None
    if recipe.train.alpha > 0 and not recipe.train.online_teacher:
        # Under a launcher rank 0 builds the cache while the others wait, then every rank opens it.
        for turn in ((0,), range(1, world)) if world > 1 else ((0,),):
            if rank in turn:
                logits, _ = build_logit_cache(teacher, train_features, cache_root,
                                              dtype=recipe.teacher.logits_dtype, precision=recipe.teacher.precision,
                                              batch_size=recipe.teacher.batch_size, progress=rank == 0)
            if world > 1:
                tdist.barrier()
    lap("teacher_logits")

    student = make_student(recipe, teacher, loaded["models"].get("student.model"))
    student_dir = train_student(
        recipe.train, student, tokenizer, train_features, out, teacher_logits=logits,
        teacher_model=teacher if recipe.train.online_teacher else None, resume=resume,
    )
    lap("student_train")

    if rank != 0:
        return {}
    metrics = evaluate_pair(recipe, {"teacher": teacher, "student": load_qa_model(str(student_dir))}, tokenizer,
                            loaded["eval"], out)
    lap("eval")
    metrics["stage_seconds"] = timings
    metrics["teacher_dir"] = teacher_dir
    metrics["student_dir"] = str(student_dir)
    from distill.predict import write_json

    write_json(out / "metrics.json", metrics)
    return metrics
