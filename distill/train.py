"""Student training under DeepSpeed: KD on teacher logits + CE on gold spans.

Reads: the features Dataset (docs/architecture.md), teacher logits aligned row by row with it (or a
teacher model run online, which hidden-state KD needs), the ds_config JSON named by `train.ds_config`.
Writes under OUTPUT/ (rank 0 only, except checkpoint shards which every rank writes):
  train_log.jsonl      one JSON line per logged optimizer step: step, epoch, loss, kd_loss, ce_loss, hidden_loss,
                       lr, elapsed_s
  tensorboard/         the same scalars
  checkpoints/step<N>/ DeepSpeed checkpoint + RNG states + commit marker (distill.checkpoints)
  student/             the trained student in HF format (full fp32 weights) with the tokenizer

`train_student` runs the named steps: `setup` (process group, precision, DeepSpeed engine, data views),
`resume_latest` (the newest committed checkpoint), `train_step` (one optimizer step over this rank's micro
batches, in the order of distill.batching), `save_checkpoint`, and `finish` (fp32 export).

Divergence: a non-finite loss raises TrainingDiverged (exit 2: lower lr, other precision, clean teacher logits)
before that step touches the weights; checkpoints already written stay as they are.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from distill import checkpoints
from distill.batching import epoch_order, micro_batches, trim_padding
from distill.errors import InputError
from distill.recipe import TrainConfig

log = logging.getLogger("distill")

TRAIN_LOG = "train_log.jsonl"
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
LOSS_KEYS = ("loss", "kd_loss", "ce_loss", "hidden_loss")


class TrainingDiverged(InputError):
    """The loss became NaN/inf; exit code 2 like any InputError (lower lr, change precision, check logits)."""


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
    logit_rows: Any = None         # cached teacher logits as torch tensors
    teacher: Any = None            # the teacher model, when it runs online
    hidden_map: Optional[list[int]] = None
    autocast_dtype: Any = None
    writer: Any = None
    last_saved: Optional[int] = None

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
    optimizer = None if "optimizer" in ds else torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr,
        betas=tuple(cfg.adam_betas), eps=cfg.adam_epsilon)
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
    from distill.ds_config import build_ds_config
    from distill.losses import hidden_layer_map
    from distill.models import set_attention_dropout
    from distill.precision import default_device, resolve

    _check_inputs(cfg, features, teacher_logits, teacher_model)
    if cfg.attention_dropout is not None:
        try:
            set_attention_dropout(student_model, cfg.attention_dropout)
        except InputError as err:
            raise InputError(f"{cfg.section}.attention_dropout: {err}") from None
    device = default_device()
    init_distributed(device)
    rank, world = tdist.get_rank(), tdist.get_world_size()
    precision = resolve(cfg.precision, device, what=f"{cfg.section}.precision", quiet=rank != 0).precision
    rows_per_step = cfg.batch_size * cfg.gradient_accumulation * world
    steps_per_epoch = math.ceil(len(features) / rows_per_step)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    warmup_steps = cfg.warmup_for(total_steps)
    ds = build_ds_config(cfg, world, total_steps=total_steps, warmup_steps=warmup_steps, device=device,
                         precision=precision)
    engine = _build_engine(cfg, student_model, ds, total_steps, warmup_steps)
    if rank == 0:
        # an engine whose precision block silently stayed off computes in fp32: ~1.5x slower on CPU
        compute = ("fp16" if engine.fp16_enabled() else "bf16" if engine.bfloat16_enabled()
                   else "bf16 autocast" if engine.torch_autocast_enabled() else "fp32")
        log.info("DeepSpeed engine computes in %s (ZeRO stage %d)", compute, engine.zero_optimization_stage())
    columns = [c for c in (*MODEL_INPUTS, "context_mask", "start_positions", "end_positions")
               if c in features.column_names]
    s = Session(cfg=cfg, engine=engine, ds=ds, rank=rank, world=world, rows_per_step=rows_per_step,
                steps_per_epoch=steps_per_epoch, total_steps=total_steps, output_dir=Path(output_dir),
                rows=features.with_format("torch", columns=columns), n_rows=len(features),
                lengths=window_lengths(features) if cfg.group_by_length else None,
                autocast_dtype={"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision))
    if teacher_model is not None and cfg.teacher_runs_online:
        s.teacher = teacher_model.eval().to(engine.device)
        if cfg.hidden_weight > 0:
            s.hidden_map = hidden_layer_map(cfg, student_model.config, teacher_model.config)
            if s.is_main:
                log.info("hidden-state KD: student layers 1..%d matched to teacher layers %s, weight %g",
                         len(s.hidden_map), s.hidden_map, cfg.hidden_weight)
    elif cfg.alpha > 0:
        s.logit_rows = teacher_logits.with_format("torch", columns=["start_logits", "end_logits"])
    return s


def resume_latest(s: Session) -> int:
    """Load the newest committed checkpoint into the engine and RNGs; the step it ends (0 when none)."""
    import torch

    done = checkpoints.complete_checkpoints(s.ckpt_dir) if s.ckpt_dir.is_dir() else []
    if not done:
        if s.is_main:
            log.info("resume: no complete checkpoint in %s, starting from step 0", s.ckpt_dir)
        return 0
    _, tag_dir = done[-1]
    checkpoints.verify_checkpoint(tag_dir)  # on every rank: a rank that raised alone would leave the others hanging
    try:
        loaded, client = s.engine.load_checkpoint(str(s.ckpt_dir), tag=tag_dir.name)
        rng = torch.load(tag_dir / f"rng_rank{s.rank}.pt", weights_only=False)
    except Exception as err:  # DeepSpeed/torch raise many types for damaged files
        raise InputError(f"checkpoint {tag_dir}: cannot be loaded ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if loaded is None:
        raise InputError(f"checkpoint {tag_dir}: DeepSpeed could not load it")
    if client.get("rows_per_step") != s.rows_per_step:
        raise InputError(f"checkpoint {tag_dir}: written with {client.get('rows_per_step')} rows per step "
                         f"(batch x accumulation x ranks), this run uses {s.rows_per_step}; resume with the "
                         "same batch_size, gradient_accumulation and number of ranks")
    step = int(client["step"])
    checkpoints.set_rng_state(rng)
    if s.is_main:
        checkpoints.truncate_log(s.log_path, step)
        log.info("resumed from %s (step %d of %d)", tag_dir, step, s.total_steps)
    s.last_saved = step
    return step


def open_logs(s: Session, step: int) -> None:
    """Rank 0: TensorBoard writer; a fresh start first clears an older run's log, checkpoints and events."""
    if not s.is_main:
        return
    s.output_dir.mkdir(parents=True, exist_ok=True)
    if not step:  # a fresh start must not later resume from, or keep, an older run's checkpoints
        s.log_path.unlink(missing_ok=True)
        shutil.rmtree(s.ckpt_dir, ignore_errors=True)
        shutil.rmtree(s.output_dir / "tensorboard", ignore_errors=True)
    from torch.utils.tensorboard import SummaryWriter

    s.writer = SummaryWriter(str(s.output_dir / "tensorboard"), purge_step=step + 1 if step else None)
    cfg = s.cfg
    log.info("training: %d features, %d steps (%d per epoch), %d rank(s) x batch %d x accumulation %d",
             s.n_rows, s.total_steps, s.steps_per_epoch, s.world, cfg.batch_size, cfg.gradient_accumulation)


def _teacher_signal(s: Session, batch: dict, idx: list[int]):
    """(teacher start logits, end logits, teacher output for hidden states) for one micro batch."""
    import torch

    if s.teacher is not None:
        accepts = inspect.signature(s.teacher.forward).parameters
        autocast = (torch.autocast(s.engine.device.type, dtype=s.autocast_dtype) if s.autocast_dtype
                    else contextlib.nullcontext())
        with torch.no_grad(), autocast:
            out = s.teacher(**{k: batch[k] for k in MODEL_INPUTS if k in batch and k in accepts},
                            output_hidden_states=bool(s.hidden_map))
        return (out.start_logits, out.end_logits, out) if s.cfg.alpha > 0 else (None, None, out)
    if s.logit_rows is None:
        return None, None, None
    cached = s.logit_rows[idx]
    width = batch["input_ids"].shape[1]
    return (cached["start_logits"][:, :width].to(s.engine.device),
            cached["end_logits"][:, :width].to(s.engine.device), None)


def _micro_losses(s: Session, idx: list[int]) -> dict:
    """Forward one micro batch of rows `idx`; the loss terms (LOSS_KEYS) as tensors."""
    import torch

    from distill.losses import distillation_loss, hidden_state_loss, valid_positions_mask

    batch = trim_padding({k: v.to(s.engine.device) for k, v in s.rows[idx].items()})
    accepts = inspect.signature(s.engine.module.forward).parameters
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch and k in accepts}
    if s.hidden_map:
        inputs["output_hidden_states"] = True
    t_start, t_end, t_out = _teacher_signal(s, batch, idx)
    out = s.engine(**inputs)
    losses = distillation_loss(out.start_logits, out.end_logits, t_start, t_end, batch["start_positions"],
                               batch["end_positions"], valid_positions_mask(batch["context_mask"]),
                               temperature=s.cfg.temperature, alpha=s.cfg.alpha)
    losses["hidden_loss"] = torch.zeros_like(losses["loss"])
    if s.hidden_map:
        losses["hidden_loss"] = hidden_state_loss(out.hidden_states[1:], [t_out.hidden_states[j] for j in s.hidden_map],
                                                  batch["attention_mask"])
        losses["loss"] = losses["loss"] + s.cfg.hidden_weight * losses["hidden_loss"]
    return losses


def train_step(s: Session, step: int):
    """Optimizer step `step` + 1: every micro batch of this rank; the summed global-mean loss terms."""
    import torch
    import torch.distributed as tdist

    cfg = s.cfg
    epoch, in_epoch = divmod(step, s.steps_per_epoch)
    order = epoch_order(s.n_rows, s.rows_per_step, cfg.seed, epoch, lengths=s.lengths)
    sums = torch.zeros(len(LOSS_KEYS), dtype=torch.float64)
    for idx in micro_batches(order, in_epoch, batch_size=cfg.batch_size, accumulation=cfg.gradient_accumulation,
                             rank=s.rank, world=s.world):
        losses = _micro_losses(s, idx)
        # global mean (equal slices per rank) so every rank takes the same stop/continue decision
        part = torch.stack([losses[k].detach().double().cpu() for k in LOSS_KEYS])
        tdist.all_reduce(part)
        part /= s.world
        if not torch.isfinite(part).all():
            where = (f"last checkpoint {s.ckpt_dir / f'step{s.last_saved}'} is intact" if s.last_saved
                     else "no checkpoint was written")
            raise TrainingDiverged(f"training diverged at step {step + 1} (epoch {epoch + 1}): loss is "
                                   f"{part[0].item()} (kd {part[1].item()}, ce {part[2].item()}, hidden "
                                   f"{part[3].item()}); {where}")
        sums += part
        s.engine.backward(losses["loss"])
        s.engine.step()
    return sums


def log_step(s: Session, step: int, sums, started: float) -> Optional[float]:
    """Rank 0, every log_every steps and the last: a train_log.jsonl line and TensorBoard scalars."""
    if not s.is_main or not (step % s.cfg.log_every == 0 or step == s.total_steps):
        return None
    epoch, in_epoch = divmod(step - 1, s.steps_per_epoch)
    mean = (sums / s.cfg.gradient_accumulation).tolist()
    record = {"step": step, "epoch": epoch + (in_epoch + 1) / s.steps_per_epoch, **dict(zip(LOSS_KEYS, mean)),
              "lr": s.engine.get_lr()[0], "elapsed_s": round(time.perf_counter() - started, 3)}
    with open(s.log_path, "a") as f:
        f.write(json.dumps(record) + "\n")
    for key in (*LOSS_KEYS, "lr"):
        s.writer.add_scalar(f"train/{key}", record[key], step)
    return mean[0]


def save_checkpoint(s: Session, step: int) -> str:
    """Every rank writes its shards and RNG state; rank 0 then commits the tag and prunes old ones."""
    import torch
    import torch.distributed as tdist

    tag = f"step{step}"
    epoch, in_epoch = divmod(step, s.steps_per_epoch)
    s.engine.save_checkpoint(str(s.ckpt_dir), tag=tag, client_state={
        "step": step, "epoch": epoch, "step_in_epoch": in_epoch, "seed": s.cfg.seed,
        "rows_per_step": s.rows_per_step})
    torch.save(checkpoints.rng_state(), s.ckpt_dir / tag / f"rng_rank{s.rank}.pt")
    tdist.barrier()  # every rank's shards and RNG file are on disk before the commit marker
    if s.is_main:
        checkpoints.commit(s.ckpt_dir / tag, step)
        checkpoints.prune(s.ckpt_dir, s.cfg.keep_checkpoints)
    tdist.barrier()
    s.last_saved = step
    return tag


def finish(s: Session, step: int, tokenizer) -> Path:
    """Final checkpoint (if not just written), then rank 0 saves full fp32 weights + tokenizer to student/."""
    import torch
    import torch.distributed as tdist

    from distill.models import save_tokenizer_for

    tag = f"step{step}" if s.last_saved == step else save_checkpoint(s, step)
    state = checkpoints.full_state_dict(s.engine, s.ds, s.ckpt_dir, tag)
    student_dir = s.output_dir / "student"
    if s.is_main:
        s.writer.close()
        tmp = s.output_dir / "student.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        # a fresh fp32 instance: the engine's module may be bf16/fp16 or ZeRO-3-partitioned, and
        # save_pretrained records the module's dtype in config.json, which from_pretrained then loads as
        fresh = type(s.engine.module)(copy.deepcopy(s.engine.module.config))
        fresh.load_state_dict(state, strict=True)
        fresh.to(torch.float32).save_pretrained(tmp)
        save_tokenizer_for(fresh, tokenizer, tmp)
        del fresh
        shutil.rmtree(student_dir, ignore_errors=True)
        tmp.rename(student_dir)
        log.info("student saved to %s", student_dir)
    tdist.barrier()
    return student_dir


def train_student(cfg: TrainConfig, student_model, tokenizer, features, output_dir: Path, *,
                  teacher_logits=None, teacher_model=None, resume: bool = False) -> Path:
    """Train `student_model` on `features` (see module doc); the directory of the saved student."""
    from tqdm.auto import tqdm

    s = setup(cfg, student_model, features, output_dir, teacher_logits=teacher_logits, teacher_model=teacher_model)
    step = resume_latest(s) if resume else 0
    open_logs(s, step)
    s.engine.train()
    started = time.perf_counter()
    skipped_before = s.engine.skipped_steps
    with tqdm(total=s.total_steps, initial=step, desc="train", disable=not s.is_main, dynamic_ncols=True) as bar:
        while step < s.total_steps:
            sums = train_step(s, step)
            step += 1
            bar.update(1)
            if s.engine.skipped_steps > skipped_before:
                skipped_before = s.engine.skipped_steps
                if s.is_main:
                    opt = s.engine.optimizer
                    scale = getattr(opt, "cur_scale", None) or getattr(opt, "loss_scale", None)
                    log.warning("step %d: fp16 overflow, DeepSpeed skipped the update (loss scale now %s)", step, scale)
            loss = log_step(s, step, sums, started)
            if loss is not None:
                bar.set_postfix(loss=f"{loss:.4f}")
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < s.total_steps:
                save_checkpoint(s, step)
    return finish(s, step, tokenizer)
