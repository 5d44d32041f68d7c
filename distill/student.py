"""Student stage: build the model that `train.train_student` trains.

Reads: the recipe's `student` section, the (fine-tuned) teacher model, and a pretrained student already
loaded by preflight. Writes nothing. Three ways, exactly one per recipe: a pretrained model
(`student.model`), a fresh model from a config (`student.config`), or a copy of the teacher that keeps
only some of its layers (`student.from_teacher_layers`, DistilBERT-style init), either in the teacher's own
class or, with `student.architecture: distilbert`, as a DistilBERT (`distilbert_from_bert_layers`).
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
        build = distilbert_from_bert_layers if cfg.architecture == "distilbert" else student_from_teacher_layers
        try:
            return build(teacher, cfg.from_teacher_layers)
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


# BERT parameter (under bert.encoder.layer.<j>.) -> DistilBERT parameter (under distilbert.transformer.layer.<i>.)
_BERT_TO_DISTILBERT_LAYER = {
    "attention.self.query": "attention.q_lin", "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin", "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm", "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2", "output.LayerNorm": "output_layer_norm",
}


def distilbert_from_bert_layers(teacher, layers: list[int]):
    """A DistilBertForQuestionAnswering initialised from the BERT `teacher`'s embeddings, chosen layers and QA head.

    DistilBERT has no segment embeddings: the teacher's token-type-0 row is added to every position
    embedding, so for segment-0 input (all-zero token_type_ids) the student computes what the BERT cut
    from the same layers computes.
    """
    import torch
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering

    t = teacher.config
    if t.model_type != "bert" or getattr(t, "position_embedding_type", "absolute") != "absolute":
        raise InputError(f"architecture distilbert needs a BERT teacher with absolute positions, got {t.model_type}")
    blocks = teacher.bert.encoder.layer
    if not layers or any(not 0 <= i < len(blocks) for i in layers):
        raise InputError(f"{layers} must be non-empty indices in 0..{len(blocks) - 1}")
    config = DistilBertConfig(
        vocab_size=t.vocab_size, max_position_embeddings=t.max_position_embeddings, sinusoidal_pos_embds=False,
        n_layers=len(layers), n_heads=t.num_attention_heads, dim=t.hidden_size, hidden_dim=t.intermediate_size,
        dropout=t.hidden_dropout_prob, attention_dropout=t.attention_probs_dropout_prob, activation=t.hidden_act,
        qa_dropout=t.hidden_dropout_prob, initializer_range=t.initializer_range, pad_token_id=t.pad_token_id)
    student = DistilBertForQuestionAnswering(config)
    emb = teacher.bert.embeddings
    source = {
        "distilbert.embeddings.word_embeddings.weight": emb.word_embeddings.weight,
        "distilbert.embeddings.position_embeddings.weight": emb.position_embeddings.weight
        + emb.token_type_embeddings.weight[0],
        "distilbert.embeddings.LayerNorm.weight": emb.LayerNorm.weight,
        "distilbert.embeddings.LayerNorm.bias": emb.LayerNorm.bias,
        "qa_outputs.weight": teacher.qa_outputs.weight, "qa_outputs.bias": teacher.qa_outputs.bias,
    }
    for i, j in enumerate(layers):
        block = dict(blocks[j].named_parameters())
        for bert_name, distil_name in _BERT_TO_DISTILBERT_LAYER.items():
            for kind in ("weight", "bias"):
                source[f"distilbert.transformer.layer.{i}.{distil_name}.{kind}"] = block[f"{bert_name}.{kind}"]
    params = dict(student.named_parameters())
    assert set(params) == set(source), sorted(set(params) ^ set(source))
    with torch.no_grad():
        for name, value in source.items():
            params[name].copy_(value)
    return student
