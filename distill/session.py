"""Training setup: the DeepSpeed engine and the Session that the training steps (distill.train) share.

Reads: the recipe's train section, the student model, the features Dataset, teacher logits or a teacher
model, the ds_config JSON. Writes nothing: `setup` checks the inputs, on a CPU keeps freed host memory and
draws dropout masks 64 bits at a time (distill.hostmem, distill.dropout), joins the process group, resolves
the precision, fills the DeepSpeed config, builds the engine (AdamW + warmup/decay schedule unless the JSON
has its own) and this rank's tensor views of the data.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from distill.errors import InputError
from distill.recipe import TrainConfig

log = logging.getLogger("distill")

TRAIN_LOG = "train_log.jsonl"
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_inputs(cfg: TrainConfig, features, teacher_logits, teacher_model) -> None:
    needed = {"input_ids", "attention_mask", "context_mask", "start_positions", "end_positions"}
    missing = sorted(needed - set(features.column_names))
    if missing:
        raise InputError(f"training features lack column(s) {', '.join(missing)}")
    if len(features) == 0:
        raise InputError("training features are empty")
    if cfg.teacher_runs_online and teacher_model is None:
        raise InputError("train.online_teacher is set but no teacher model was given")
    if cfg.hidden_weight > 0 and not cfg.online_teacher:
        raise InputError("train.hidden_weight > 0 needs train.online_teacher (hidden states are not cached)")
    if cfg.alpha > 0 and not cfg.online_teacher:
        if teacher_logits is None:
            raise InputError("train.alpha > 0 needs teacher logits (or train.online_teacher)")
        if len(teacher_logits) != len(features):
            raise InputError(f"teacher logits have {len(teacher_logits)} rows but the features have "
                             f"{len(features)}: they must be aligned row by row (rebuild the logit cache)")
        lacking = {"start_logits", "end_logits"} - set(teacher_logits.column_names)
        if lacking:
            raise InputError(f"teacher logits lack column(s) {', '.join(sorted(lacking))}")


@dataclass
class Session:
    """Everything the steps share: settings, the engine, this rank's place, the data views, the outputs."""

    cfg: TrainConfig
    engine: Any
    ds: dict
    rank: int
    world: int
    rows_per_step: int
    steps_per_epoch: int
    total_steps: int
    output_dir: Path
    rows: Any                      # features as torch tensors
    n_rows: int
    lengths: Any = None            # real tokens per row, when grouping by length
    order: Optional[tuple] = None  # (epoch, its row order), drawn at the epoch's first step
    logit_rows: Any = None         # cached teacher logits as torch tensors
    teacher: Any = None            # the teacher model, when it runs online
    hidden_map: Optional[list[int]] = None
    autocast_dtype: Any = None
    writer: Any = None
    last_saved: Optional[int] = None
    student_flops: Any = None      # distill.flops.FlopModel of the student (and of an online teacher)
    teacher_flops: Any = None
    peak: Any = None               # distill.flops.PeakMeter: the best matmul FLOP/s in the compute dtype so far
    own_attention: str = "sdpa"    # the model's attention kernel, for inference and once trained
    flops: float = 0.0             # model FLOPs and seconds of training steps since the last log line
    busy_s: float = 0.0

    @property
    def peak_flops(self) -> float:
        return self.peak.best if self.peak else 0.0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def ckpt_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    @property
    def log_path(self) -> Path:
        return self.output_dir / TRAIN_LOG


def _build_engine(cfg: TrainConfig, model, ds: dict, total_steps: int, warmup_steps: int):
    import deepspeed
    import torch
    from transformers import get_scheduler

    seed_everything(cfg.seed)
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    # fused: one pass over each flat fp32 partition; ~8x the per-tensor loop for 17 M params on 2 CPU cores
    optimizer = None if "optimizer" in ds else torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr,
        betas=tuple(cfg.adam_betas), eps=cfg.adam_epsilon, fused=True)
    name = {"constant": "constant_with_warmup"}.get(cfg.lr_scheduler, cfg.lr_scheduler)
    scheduler = None if "scheduler" in ds else (
        lambda opt: get_scheduler(name, opt, num_warmup_steps=warmup_steps, num_training_steps=total_steps))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds)
    return engine


def setup(cfg: TrainConfig, student_model, features, output_dir: Path, *, teacher_logits=None,
          teacher_model=None) -> Session:
    """Check the inputs, join the process group, build the DeepSpeed engine and this rank's data views."""
    import torch
    import torch.distributed as tdist

    from distill.data.features import window_lengths
    from distill.distributed import init_distributed
    from distill.dropout import choice as dropout_choice
    from distill.dropout import use_cpu_dropout
    from distill.ds_config import build_ds_config
    from distill.flops import PeakMeter, flop_model
    from distill.hostmem import keep_freed_memory
    from distill.losses import hidden_layer_map
    from distill.models import set_attention_dropout, training_attention
    from distill.precision import default_device, resolve

    _check_inputs(cfg, features, teacher_logits, teacher_model)
    if cfg.attention_dropout is not None:
        try:
            set_attention_dropout(student_model, cfg.attention_dropout)
        except InputError as err:
            raise InputError(f"{cfg.section}.attention_dropout: {err}") from None
    device = default_device()
    kept = device == "cpu" and keep_freed_memory()
    swapped = device == "cpu" and dropout_choice() == "bits" and use_cpu_dropout(student_model)
    init_distributed(device)
    rank, world = tdist.get_rank(), tdist.get_world_size()
    if kept and rank == 0:
        log.info("host memory: freed blocks stay in this process, not page-faulted in again each step "
                 "(DISTILL_HOST_MALLOC=system turns this off)")
    if swapped and rank == 0:
        log.info("dropout: %d modules draw their CPU masks 64 bits per 4 elements, not by bernoulli_ "
                 "(DISTILL_CPU_DROPOUT=torch turns this off)", swapped)
    precision = resolve(cfg.precision, device, what=f"{cfg.section}.precision", quiet=rank != 0).precision
    own_attention = student_model.config._attn_implementation
    kernel = training_attention(cfg.attn_implementation, device, precision) or own_attention
    if kernel != own_attention:
        try:
            student_model.set_attn_implementation(kernel)
        except (ValueError, ImportError) as err:
            raise InputError(f"{cfg.section}.attn_implementation: {kernel}: {err}") from None
    if rank == 0:
        log.info("attention: %s while training, %s for inference (%s.attn_implementation: %s)", kernel,
                 own_attention, cfg.section, cfg.attn_implementation)
    rows_per_step = cfg.batch_size * cfg.gradient_accumulation * world
    steps_per_epoch = math.ceil(len(features) / rows_per_step)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    warmup_steps = cfg.warmup_for(total_steps)
    ds = build_ds_config(cfg, world, total_steps=total_steps, warmup_steps=warmup_steps, device=device,
                         precision=precision)
    student_flops = flop_model(student_model)
    engine = _build_engine(cfg, student_model, ds, total_steps, warmup_steps)
    # an engine whose precision block silently stayed off computes in fp32: ~1.5x slower on CPU
    compute = ("fp16" if engine.fp16_enabled() else "bf16" if engine.bfloat16_enabled()
               else "bf16 autocast" if engine.torch_autocast_enabled() else "fp32")
    peak = PeakMeter({"fp16": torch.float16, "fp32": torch.float32}.get(compute, torch.bfloat16), engine.device)
    if rank == 0:
        log.info("DeepSpeed engine computes in %s (ZeRO stage %d); %s matmul peak here %.1f GFLOP/s", compute,
                 engine.zero_optimization_stage(), compute.split()[0], peak.best / 1e9)
    columns = [c for c in (*MODEL_INPUTS, "context_mask", "start_positions", "end_positions", "labelled")
               if c in features.column_names]
    s = Session(cfg=cfg, engine=engine, ds=ds, rank=rank, world=world, rows_per_step=rows_per_step,
                steps_per_epoch=steps_per_epoch, total_steps=total_steps, output_dir=Path(output_dir),
                rows=features.with_format("torch", columns=columns), n_rows=len(features),
                lengths=window_lengths(features) if cfg.group_by_length else None,
                autocast_dtype={"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision),
                student_flops=student_flops, peak=peak, own_attention=own_attention)
    if teacher_model is not None and cfg.teacher_runs_online:
        s.teacher = teacher_model.eval().to(engine.device)
        s.teacher_flops = flop_model(teacher_model)
        if cfg.hidden_weight > 0:
            s.hidden_map = hidden_layer_map(cfg, student_model.config, teacher_model.config)
            if s.is_main:
                log.info("hidden-state KD: student layers 1..%d matched to teacher layers %s, weight %g",
                         len(s.hidden_map), s.hidden_map, cfg.hidden_weight)
    elif cfg.alpha > 0:
        s.logit_rows = teacher_logits.with_format("torch", columns=["start_logits", "end_logits"])
    return s
