"""Student stage: build the model that `train.train_student` trains.

Reads: the recipe's `student` section, the (fine-tuned) teacher model, and a pretrained student already
loaded by preflight. Writes nothing. Three ways, exactly one per recipe: a pretrained model
(`student.model`), a fresh model from a config (`student.config`), or a copy of the teacher that keeps
only some of its layers (`student.from_teacher_layers`, DistilBERT-style init).
"""

from __future__ import annotations

import copy

from distill.errors import InputError


def make_student(cfg, teacher, pretrained=None, *, seed: int = 0):
    """The untrained student for the recipe's `student` section `cfg`; a config-built one is drawn from `seed`.

    The seed is set here (the global RNG is left as it was) because what ran before in the process, such as
    a teacher fine-tune or not, would otherwise decide the student's initial weights.
    """
    import torch
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    from distill.models import load_qa_model, resolve_source

    if cfg.from_teacher_layers is not None:
        try:
            return student_from_teacher_layers(teacher, cfg.from_teacher_layers)
        except InputError as err:
            raise InputError(f"student.from_teacher_layers: {err}") from None
    if cfg.model is not None:
        return pretrained if pretrained is not None else load_qa_model(cfg.model)
    config = AutoConfig.from_pretrained(resolve_source(cfg.config))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForQuestionAnswering.from_config(config)


def layer_list(model):
    """The nn.ModuleList of transformer blocks for BERT-like and DistilBERT-like models."""
    base = getattr(model, model.base_model_prefix)
    for attr in ("encoder.layer", "transformer.layer", "encoder.layers", "layers"):
        obj = base
        try:
            for part in attr.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return base, attr, obj
    raise InputError(f"{type(model).__name__}: cannot find its transformer layers to select a subset")


def student_from_teacher_layers(teacher, layers: list[int]):
    """Copy of `teacher` keeping only `layers` (e.g. [0, 2, 4]); embeddings and QA head copied too."""
    import torch.nn as nn

    _, attr, blocks = layer_list(teacher)
    bad = [i for i in layers if not 0 <= i < len(blocks)]
    if bad or not layers:
        raise InputError(f"student.layers: {layers} must be non-empty indices in 0..{len(blocks) - 1}")
    student = copy.deepcopy(teacher)
    base, _, _ = layer_list(student)
    parent = base
    parts = attr.split(".")
    for part in parts[:-1]:
        parent = getattr(parent, part)
    setattr(parent, parts[-1], nn.ModuleList([copy.deepcopy(blocks[i]) for i in layers]))
    for key in ("num_hidden_layers", "n_layers"):
        if hasattr(student.config, key):
            setattr(student.config, key, len(layers))
    return student

