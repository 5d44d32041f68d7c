"""Preflight: load and check every input of a recipe before any expensive stage.

Reads: the recipe's data files, model sources (tokenizers and weights), ds_config files. Writes nothing.
Every problem is collected and raised in one InputError, each line starting with its recipe key (or environment
variable). What it loads (examples, tokenizer, models by recipe key) is returned, so the run does not load anything
twice.
Hub sources cannot be checked with HF_HUB_OFFLINE=1: they are listed as notes instead.
"""

from __future__ import annotations

import logging
import os

from distill.errors import InputError
from distill.dropout import choice as cpu_dropout
from distill.hostmem import choice as host_malloc
from distill.recipe import Recipe, looks_like_path, resolve_path

log = logging.getLogger("distill")


def _is_hub(source: str) -> bool:
    from distill.models import PACKAGED_MINILM

    return source != PACKAGED_MINILM and not looks_like_path(source)


def _hub_skipped(key: str, source: str, notes: list[str]) -> bool:
    if _is_hub(source) and os.environ.get("HF_HUB_OFFLINE") == "1":
        notes.append(f"{key}: {source} is a hub id; not checked (HF_HUB_OFFLINE=1)")
        return True
    return False


def _check_data(recipe: Recipe, loaded: dict, problems: list[str], notes: list[str]) -> None:
    from distill.data.squad import load_squad, take_articles, take_questions

    for key in ("train", "eval"):
        source = getattr(recipe.data, key)
        if _hub_skipped(f"data.{key}", source, notes):
            continue
        split, limit = getattr(recipe.data, f"{key}_split"), getattr(recipe.data, f"{key}_questions")
        try:
            ds = load_squad(str(resolve_path(source)) if looks_like_path(source) else source, split=split)
            ds = take_articles(ds, getattr(recipe.data, f"{key}_articles"))
            loaded[key] = take_questions(ds, limit) if limit else ds
            teacher_limit = recipe.teacher and recipe.teacher.finetune and recipe.teacher.finetune.train_questions
            if key == "train" and teacher_limit:
                loaded["teacher_train"] = take_questions(ds, teacher_limit)
        except InputError as err:
            problems.append(f"data.{key}: {err}")
    if recipe.data.transfer is not None and not _hub_skipped("data.transfer", recipe.data.transfer, notes):
        try:
            loaded["transfer"] = _transfer_set(recipe, loaded)
        except InputError as err:
            problems.append(f"data.transfer: {err}")


def _transfer_set(recipe: Recipe, loaded: dict):
    """The transfer questions: answers dropped, none also in train or eval nor on an eval paragraph; the first N."""
    from distill.data.squad import drop_seen, load_squad, take_questions

    source = recipe.data.transfer
    ds = load_squad(str(resolve_path(source)) if looks_like_path(source) else source,
                    split=recipe.data.transfer_split, labelled=False)
    ids = set().union(*(loaded[k]["id"] for k in ("train", "eval") if k in loaded))
    ds = drop_seen(ds, ids, set(loaded["eval"]["context"]) if "eval" in loaded else set())
    if len(ds) == 0:
        raise InputError(f"{source}: every question is in the train or eval data (or on an eval paragraph); "
                         "nothing left to transfer")
    return take_questions(ds, recipe.data.transfer_questions)


def _check_models(recipe: Recipe, loaded: dict, problems: list[str], notes: list[str]) -> None:
    from distill.models import load_qa_model_and_head, load_tokenizer, resolve_source, tokenizers_compatible

    tokenizers, models = {}, {}
    student_key = "student.model" if recipe.student.model else "student.config"
    student_source = recipe.student.model or recipe.student.config
    teacher = recipe.teacher
    for key, source in (("teacher.model", teacher.model if teacher else None), (student_key, student_source)):
        if source is None or _hub_skipped(key, source, notes):
            continue
        try:
            resolve_source(source)
            if key == "student.config":
                if teacher is None:  # fine-tune mode: the features are cut with the student's own tokenizer
                    tokenizers[key] = load_tokenizer(source)
                continue
            tokenizers[key] = load_tokenizer(source)
            # the weights too: a damaged file must fail here, not after features and teacher caching
            models[key], new_head = load_qa_model_and_head(source)
            if new_head and key == "teacher.model" and teacher.finetune is None:
                problems.append(f"teacher.model: {source} has no trained QA head (no qa_outputs weights in its "
                                "checkpoint), so its logits would be random; add a teacher.finetune section")
        except InputError as err:
            problems.append(f"{key}: {err}")
    if tokenizers:  # the teacher's when there is one: the features are cut with it
        loaded["tokenizer"] = tokenizers.get("teacher.model") or tokenizers[student_key]
    loaded["models"] = models
    if len(tokenizers) == 2:
        try:
            tokenizers_compatible(tokenizers["teacher.model"], tokenizers["student.model"], teacher.model,
                                  student_source)
        except InputError as err:
            problems.append(f"student.model: {err}")


def _check_layers(recipe: Recipe, loaded: dict, problems: list[str]) -> None:
    from distill.student import layer_list

    layers, teacher = recipe.student.from_teacher_layers, loaded["models"].get("teacher.model")
    if layers is None or teacher is None:
        return
    try:
        _, _, blocks = layer_list(teacher)
        if not layers or any(not 0 <= i < len(blocks) for i in layers):
            problems.append(f"student.from_teacher_layers: {layers} must be non-empty indices in "
                            f"0..{len(blocks) - 1} (teacher {recipe.teacher.model} has {len(blocks)} layers)")
    except InputError as err:
        problems.append(f"student.from_teacher_layers: {err}")


def _check_ds_configs(recipe: Recipe, for_run: bool, problems: list[str], notes: list[str]) -> None:
    from distill.ds_config import build_ds_config

    finetune = recipe.teacher.finetune if recipe.teacher else None
    for section, cfg in (("train", recipe.train), ("teacher.finetune", finetune)):
        if cfg is None:
            continue
        try:
            build_ds_config(cfg, world_size=1)
        except InputError as err:
            device_only = "CUDA" in str(err) and cfg.precision == "fp16"
            line = f"{section}.{'precision' if device_only else 'ds_config'}: {err}"
            (notes if device_only and not for_run else problems).append(line)


def preflight(recipe: Recipe, *, for_run: bool = True, recipe_path: str | os.PathLike | None = None) -> dict:
    """Check data files, model sources, tokenizer pairing, teacher layers, ds_configs, precision, DISTILL_HOST_MALLOC,
    DISTILL_CPU_DROPOUT.

    `for_run=False` (validate) reports device-dependent problems, such as fp16 on a machine without
    CUDA, as notes: the recipe may be meant for another machine. `recipe_path` heads the error message.
    Returns {"train", "eval", "transfer" (with data.transfer), "teacher_train" (with
    teacher.finetune.train_questions): examples, "tokenizer", "models": {recipe key: model}, "notes"}.
    """
    problems: list[str] = []
    notes: list[str] = []
    loaded: dict = {"notes": notes}
    _check_data(recipe, loaded, problems, notes)
    _check_models(recipe, loaded, problems, notes)
    _check_layers(recipe, loaded, problems)
    _check_ds_configs(recipe, for_run, problems, notes)
    for read_by_setup in (host_malloc, cpu_dropout):  # read by session.setup, long after the run has started
        try:
            read_by_setup()
        except InputError as err:
            problems.append(str(err))
    if problems:
        where = f"{recipe_path}: " if recipe_path else ""
        raise InputError(f"{where}recipe check failed, {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    for note in notes:
        log.warning("note: %s", note)
    return loaded
