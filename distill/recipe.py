"""The recipe: one typed schema that is the single source of defaults, validation and help.

Reads: a YAML file plus `--set a.b=c` overrides. Writes nothing (the run saves
`recipe.resolved.yaml` beside its outputs). Unknown keys, wrong types and impossible combinations
are collected and raised together as one InputError, each line prefixed with its YAML path.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import ClassVar, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from distill.data.features import WindowConfig
from distill.errors import InputError
from distill.precision import Precision

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    train: str = Field(description="Training SQuAD: official JSON, flat JSON/JSONL rows, or a hub id (rajpurkar/squad).")
    eval: str = Field(description="Evaluation SQuAD, same forms as `train`.")
    train_split: str = Field("train", description="Split name when `train` is a hub id.")
    eval_split: str = Field("validation", description="Split name when `eval` is a hub id.")
    train_questions: Optional[int] = Field(None, gt=0, description="Use only the first N training questions.")
    eval_questions: Optional[int] = Field(None, gt=0, description="Use only the first N evaluation questions.")
    train_articles: Optional[tuple[float, float]] = Field(
        None, description="Use only the articles in this [from, to) fraction of the file's article list, e.g. "
                          "[0, 0.8] (applied before train_questions).")
    eval_articles: Optional[tuple[float, float]] = Field(
        None, description="The same for the evaluation data, e.g. [0.8, 1] to evaluate on the other articles of one file.")

    @field_validator("train_articles", "eval_articles")
    @classmethod
    def _fraction_span(cls, v):
        if v is not None and not 0 <= v[0] < v[1] <= 1:
            raise ValueError(f"expected [from, to] with 0 <= from < to <= 1, got {list(v)}")
        return v
    window: WindowConfig = Field(default_factory=WindowConfig, description="Windowing of long contexts.")
    transfer: Optional[str] = Field(
        None, description="Transfer set: questions only the teacher labels (a SQuAD file or hub id whose answers are "
                          "ignored, or JSON/JSONL rows of question and context). Its windows train on the KD term "
                          "alone; questions also in the train or eval data, or on an eval paragraph, are dropped.")
    transfer_split: str = Field("train", description="Split name when `transfer` is a hub id.")
    transfer_questions: Optional[int] = Field(
        None, gt=0, description="Use only the first N transfer questions (after dropping those in train/eval).")


class TrainConfig(BaseModel):
    """The recipe's `train` section."""

    model_config = ConfigDict(extra="forbid")
    section: ClassVar[str] = "train"  # the recipe key, for messages

    epochs: int = Field(3, gt=0, description="Passes over the training features (ignored when max_steps is set).")
    max_steps: Optional[int] = Field(None, gt=0, description="Stop after this many optimizer steps; overrides epochs.")
    batch_size: int = Field(8, gt=0, description="Micro batch per rank (DeepSpeed train_micro_batch_size_per_gpu).")
    gradient_accumulation: int = Field(1, gt=0, description="Micro batches per optimizer step.")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate (AdamW), reached after the warmup.")
    lr_scheduler: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="After a linear warmup: linear decay to 0, cosine decay to 0, or constant.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (not applied to biases and LayerNorm).")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    warmup_ratio: Optional[float] = Field(
        0.1, ge=0, le=1, description="Fraction of optimizer steps spent warming up (null when warmup_steps is set).")
    warmup_steps: Optional[int] = Field(
        None, ge=0, description="Warmup in optimizer steps, instead of warmup_ratio (give one of the two).")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping (DeepSpeed gradient_clipping); 0 = off.")
    temperature: float = Field(2.0, gt=0, description="KD softmax temperature T (the KD term is scaled by T^2).")
    alpha: float = Field(0.5, ge=0, le=1, description="loss = alpha*KD + (1-alpha)*CE; 0 trains on gold spans only.")
    seed: int = Field(42, description="Seeds python, numpy, torch (dropout) and the data order.")
    precision: Precision = Field(
        "auto", description="auto: fp16 on CUDA, bf16 on a CPU with native bf16 (AVX512-BF16/AMX), else fp32.")
    ds_config: str = Field("ds_configs/zero2_bf16.json",
                           description="DeepSpeed JSON; its \"auto\" values are filled from this section.")
    checkpoint_every: int = Field(0, ge=0, description="Checkpoint every N optimizer steps; 0 = only at the end.")
    keep_checkpoints: int = Field(2, gt=0, description="How many recent checkpoints to keep.")
    log_every: int = Field(10, gt=0, description="Log (train_log.jsonl, TensorBoard) every N optimizer steps.")
    online_teacher: bool = Field(False, description="Run the teacher every step instead of reading cached logits.")
    hidden_weight: float = Field(
        0.0, ge=0, description="Add hidden_weight x a hidden-state loss: per matched layer, MSE(student, teacher) "
                               "/ Var(teacher) over real tokens. Needs online_teacher and equal hidden sizes.")
    hidden_layers: Optional[list[int]] = Field(
        None, description="Teacher layer (1-based) each student layer's output is matched to; default spreads "
                          "them evenly, e.g. [2, 4, 6] for a 3-layer student of a 6-layer teacher.")
    attention_dropout: Optional[float] = Field(None, ge=0, lt=1, description="Dropout on attention probabilities while "
                                               "training; null keeps the model's own (0.1 in BERT/DistilBERT).")
    attn_implementation: Literal["auto", "sdpa", "eager"] = Field(
        "auto", description="Attention kernel while training: auto = eager on CPU in bf16 (faster there than SDPA's "
                            "kernels, docs/training.md), else the model's own. Inference always uses the model's own.")
    group_by_length: bool = Field(False, description="Put windows of similar length in the same step: less padding "
                                  "computed (0.67x step time at seq 256 on SQuAD) but a less even mix per step; hurt a "
                                  "short fresh-head fine-tune once, not a longer one (docs/training.md).")

    @field_validator("adam_betas")
    @classmethod
    def _betas_in_range(cls, v):
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"each beta must be in [0, 1), got {list(v)}")
        return v

    @model_validator(mode="after")
    def _one_warmup(self):
        if self.warmup_steps is not None:
            if "warmup_ratio" in self.model_fields_set and self.warmup_ratio is not None:
                raise ValueError(f"{self.section}.warmup_steps and {self.section}.warmup_ratio are both set; give one")
            self.warmup_ratio = None  # so the resolved recipe says which one applies
        elif self.warmup_ratio is None:
            raise ValueError(f"{self.section}.warmup_ratio is null but {self.section}.warmup_steps is not set")
        return self

    def warmup_for(self, total_steps: int) -> int:
        """Warmup optimizer steps for a run of `total_steps`."""
        if self.warmup_steps is not None:
            return min(self.warmup_steps, total_steps)
        return math.ceil(total_steps * self.warmup_ratio)

    @property
    def teacher_runs_online(self) -> bool:
        """The teacher model is run every step (its logits or hidden states are used, and not from a cache)."""
        return self.online_teacher and (self.alpha > 0 or self.hidden_weight > 0)


class FinetuneConfig(TrainConfig):
    """Teacher fine-tuning: the student loop with cross-entropy only."""

    section: ClassVar[str] = "teacher.finetune"

    alpha: float = Field(0.0, ge=0.0, le=0.0, description="Fixed at 0: fine-tuning uses gold spans only.")
    online_teacher: bool = Field(False, description="Not used for teacher fine-tuning.")
    hidden_weight: float = Field(0.0, ge=0.0, le=0.0, description="Fixed at 0: fine-tuning has no teacher.")
    hidden_layers: Optional[list[int]] = Field(None, description="Not used for teacher fine-tuning.")
    train_questions: Optional[int] = Field(None, gt=0, description="Fine-tune on the first N questions of data.train "
                                           "(default: data.train_questions): a teacher with more labels than the student.")

    @field_validator("online_teacher", "hidden_layers")
    @classmethod
    def _no_online(cls, v):
        if v:
            raise ValueError("teacher fine-tuning has no teacher of its own")
        return v


class TeacherConfig(Strict):
    model: str = Field(description="Hub id, local model directory, or `minilm` (the packaged all-MiniLM-L6-v2).")
    finetune: Optional[FinetuneConfig] = Field(
        None, description="Fine-tune the teacher on data.train first (needed for a base encoder without a QA head).")
    logits_dtype: Literal["fp16", "fp32"] = Field("fp16", description="Storage dtype of the cached logits.")
    batch_size: int = Field(64, gt=0, description="Inference batch size for caching and evaluation.")
    precision: Precision = Field("auto", description="Inference precision.")


class StudentConfig(Strict):
    model: Optional[str] = Field(None, description="Pretrained student: hub id or local directory.")
    config: Optional[str] = Field(None, description="Random init from a config: hub id, directory or config.json.")
    from_teacher_layers: Optional[list[int]] = Field(
        None, description="Init from the teacher keeping these layers, e.g. [0, 2, 4] (DistilBERT-style).")
    architecture: Literal["teacher", "distilbert"] = Field(
        "teacher", description="With from_teacher_layers: `teacher` keeps the teacher's class (a BERT cut), "
                               "`distilbert` maps a BERT teacher's layers onto a DistilBertForQuestionAnswering.")

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in ("model", "config", "from_teacher_layers") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of model, config, from_teacher_layers (got {given or 'none'})")
        if self.architecture != "teacher" and self.from_teacher_layers is None:
            raise ValueError("student.architecture applies only with student.from_teacher_layers")
        return self


class EvalConfig(Strict):
    batch_size: int = Field(64, gt=0, description="Inference batch size.")
    n_best_size: int = Field(20, gt=0, description="Candidates per window for the span search.")
    max_answer_length: int = Field(30, gt=0, description="Longest answer span in tokens.")
    null_threshold: Optional[float] = Field(
        0.0, description="SQuAD v2: predict no-answer when null score - best span score (a logit difference) > this "
                         "(null when no_answer_probability is set).")
    no_answer_probability: Optional[float] = Field(
        None, ge=0, le=1, description="SQuAD v2, instead of null_threshold: predict no-answer when na_prob > this, "
                                      "the unit of the official best_f1_thresh (null_threshold = ln(p / (1 - p))).")
    precision: Precision = Field("auto", description="Inference precision.")
    teacher: bool = Field(True, description="Also evaluate the teacher (false: only the student, e.g. when the "
                                            "teacher was scored by an earlier run sharing its cache).")
    every: Optional[Union[Literal["epoch"], PositiveInt]] = Field(
        None, description="Validation loss (the training CE on the eval set's windows) during training: `epoch` "
                          "or every N optimizer steps, into train_log.jsonl, TensorBoard and the model card; null = off.")

    @field_validator("every", mode="before")
    @classmethod
    def _epoch_or_steps(cls, v):
        if v is None or v == "epoch" or (isinstance(v, int) and not isinstance(v, bool) and v > 0):
            return v
        raise ValueError(f"must be `epoch` or a positive number of optimizer steps (got {v!r})")

    @model_validator(mode="after")
    def _one_no_answer_rule(self):
        if self.no_answer_probability is not None:
            if "null_threshold" in self.model_fields_set and self.null_threshold is not None:
                raise ValueError("eval.null_threshold and eval.no_answer_probability are both set; give one")
            object.__setattr__(self, "null_threshold", None)  # the resolved recipe then says which rule applies
        elif self.null_threshold is None:
            raise ValueError("eval.null_threshold is null but eval.no_answer_probability is not set")
        return self


class BenchGate(Strict):
    max_f1_drop: float = Field(1.0, ge=0, description="Regression if student F1 drops by more than this (absolute).")
    max_em_drop: float = Field(1.0, ge=0, description="Regression if student EM drops by more than this (absolute).")
    max_ratio_increase: float = Field(
        0.15, ge=0, description="Regression if a student/teacher speed or memory ratio grows by more than this fraction.")


class Recipe(Strict):
    output_dir: str = Field(description="Where the run writes its outputs; never overwritten by another run.")
    cache_dir: str = Field(".cache/distill", description="Shared cache: fine-tuned teachers and teacher logits.")
    data: DataConfig
    teacher: Optional[TeacherConfig] = Field(
        None, description="The model to distil from; without this section the run fine-tunes student.model on "
                          "gold spans only (fine-tune mode).")
    student: StudentConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    bench: BenchGate = Field(default_factory=BenchGate)

    @model_validator(mode="after")
    def _needs_teacher_signal(self):
        problems = self._finetune_mode_problems() if self.teacher is None else []
        t = self.train
        if t.online_teacher and t.alpha == 0 and t.hidden_weight == 0:
            problems.append("train.online_teacher needs train.alpha > 0 or train.hidden_weight > 0 "
                            "(otherwise the teacher is never used)")
        if t.hidden_weight > 0 and not t.online_teacher:
            problems.append("train.hidden_weight > 0 needs train.online_teacher: true (hidden states are not cached)")
        if t.hidden_layers is not None and t.hidden_weight == 0:
            problems.append("train.hidden_layers is set but train.hidden_weight is 0")
        if self.data.transfer is not None and (self.teacher is None or t.alpha == 0):
            problems.append("data.transfer needs a teacher and train.alpha > 0 (its questions have no gold spans: "
                            "they train on the teacher's logits alone)")
        if self.data.transfer_questions is not None and self.data.transfer is None:
            problems.append("data.transfer_questions is set but data.transfer is not")
        layers = self.student.from_teacher_layers
        if t.hidden_layers is not None and layers is not None and len(t.hidden_layers) != len(layers):
            problems.append(f"train.hidden_layers: {len(t.hidden_layers)} entries for a student of {len(layers)} "
                            "layers (student.from_teacher_layers)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _finetune_mode_problems(self) -> list[str]:
        """Without a teacher, train on gold spans only: alpha defaults to 0, and nothing may need a teacher."""
        t, problems = self.train, []
        if "alpha" in t.model_fields_set and t.alpha > 0:
            problems.append("train.alpha: must be 0 without a teacher section (fine-tune mode trains on gold spans)")
        t.alpha = 0.0
        if t.online_teacher or t.hidden_weight > 0:
            problems.append("train.online_teacher/hidden_weight: need a teacher section")
        if self.student.from_teacher_layers is not None:
            problems.append("student.from_teacher_layers: needs a teacher section")
        if "teacher" in self.eval.model_fields_set and self.eval.teacher:
            problems.append("eval.teacher: there is no teacher section to evaluate")
        self.eval.teacher = False
        return problems


def _loc(loc) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-"))


def format_validation_error(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        path = _loc(e["loc"])  # empty for cross-section checks, whose message names the keys itself
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif "input" in e and e["type"] != "assertion_error":
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{path}: {msg}" if path else msg)
    return lines


def apply_override(raw: dict, assignment: str) -> None:
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set train.lr=3e-5")
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise InputError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        node[parts[-1]] = value


def read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: recipe file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise InputError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a recipe is a YAML mapping of sections, got {type(raw).__name__}")
    return raw


def load_recipe(path: str | os.PathLike, overrides: list[str] = ()) -> Recipe:
    """Parse and schema-validate; every problem is reported in one InputError."""
    path = Path(path)
    raw = read_yaml(path)
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        lines = format_validation_error(err) + missing_files(raw)
        raise InputError(f"{path}: {len(lines)} problem(s)\n  " + "\n  ".join(lines)) from None


FILE_KEYS = ("data.train", "data.eval", "train.ds_config", "teacher.finetune.ds_config")


def missing_files(raw: dict) -> list[str]:
    """File keys pointing nowhere, checked on the raw YAML so they join the schema errors."""
    from distill.ds_config import find_ds_config

    problems = []
    for key in FILE_KEYS:
        node = raw
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, str):
            continue
        if key.endswith("ds_config"):
            try:
                find_ds_config(node)
            except InputError as err:
                problems.append(f"{key}: {err}")
        elif looks_like_path(node) and not resolve_path(node).is_file():
            problems.append(f"{key}: file not found: {node}")
    return problems


def resolve_path(value: str) -> Path:
    """Paths in recipes are relative to the working directory (run from the project root)."""
    return Path(value).expanduser()


def looks_like_path(value: str) -> bool:
    return value.endswith((".json", ".jsonl", ".yaml", ".yml")) or value.startswith((".", "/", "~")) \
        or Path(value).exists()


def dump_resolved(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def help_text(model: type[BaseModel] = Recipe, prefix: str = "") -> list[str]:
    """Every key with its default and description, generated from the schema (for `distill validate --keys`)."""
    lines = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if sub is None:
            args = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
            sub = args[0] if args else None
        if sub is not None:
            lines.append(f"{key}: {field.description or ''}")
            lines.extend(help_text(sub, key + "."))
        else:
            default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
            lines.append(f"{key} = {default}  # {field.description or ''}")
    return lines
