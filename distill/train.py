"""Student training under DeepSpeed: KD on teacher logits + CE on gold spans.

Reads: the features Dataset (docs/architecture.md), teacher logits aligned row by row with it (or a
teacher model run online, which hidden-state KD needs), the ds_config JSON named by `train.ds_config`.
Writes under OUTPUT/ (rank 0 only, except checkpoint shards which every rank writes):
  train_log.jsonl      one JSON line per logged optimizer step: step, epoch, loss, kd_loss, ce_loss, hidden_loss,
                       lr, elapsed_s
  tensorboard/         the same scalars
  checkpoints/step<N>/ DeepSpeed checkpoint (model, optimizer, scheduler; client_state: step, epoch, position
                       in the epoch, rows per step), rng_rank<r>.pt (python/numpy/torch RNG of each rank: DeepSpeed
                       writes client_state from rank 0 only), then complete.json (the commit marker, with sizes
                       and sha256 of every file; a tag without it is never resumed from)
  student/             the trained student in HF format (full fp32 weights) with the tokenizer

Data order: every epoch a permutation drawn from torch.Generator(seed + epoch), padded by wrapping to a
whole number of optimizer steps, cut into global batches of batch_size x gradient_accumulation x world_size
rows; rank r takes the r-th slice of each micro batch. So 2 ranks x batch b see the same rows per step as
1 rank x batch 2b, and equal-sized slices make DeepSpeed's gradient average the global mean.

Divergence: a non-finite loss stops training with TrainingDiverged (an InputError, exit code 2: the user
fixes it with a lower lr, another precision or clean teacher logits) before that step touches the
weights; checkpoints already written stay as they are.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import logging
import math
import os
import random
import shutil
import socket
import time
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from distill.errors import InputError
from distill.files import sha256_file
from distill.precision import Precision

log = logging.getLogger("distill")

MARKER = "complete.json"
TRAIN_LOG = "train_log.jsonl"
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
LOSS_KEYS = ("loss", "kd_loss", "ce_loss", "hidden_loss")


class TrainConfig(BaseModel):
    """The recipe's `train` section."""

    model_config = ConfigDict(extra="forbid")
    section: ClassVar[str] = "train"  # the recipe key, for messages

    epochs: int = Field(3, gt=0, description="Passes over the training features (ignored when max_steps is set).")
    max_steps: Optional[int] = Field(None, gt=0, description="Stop after this many optimizer steps; overrides epochs.")
    batch_size: int = Field(8, gt=0, description="Micro batch per rank (DeepSpeed train_micro_batch_size_per_gpu).")
    gradient_accumulation: int = Field(1, gt=0, description="Micro batches per optimizer step.")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate (AdamW), linear warmup then linear decay to 0.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (not applied to biases and LayerNorm).")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Fraction of optimizer steps spent warming up.")
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
    attention_dropout: Optional[float] = Field(
        None, ge=0, lt=1, description="Dropout on attention probabilities while training; null keeps the model's "
                                      "own (0.1 in BERT/DistilBERT). 0 makes a CPU step ~1.7x faster (docs/training.md).")
    group_by_length: bool = Field(
        False, description="Put windows of similar length in the same step: less padding computed (0.67x step "
                           "time at seq 256 on SQuAD) but a less even mix per step; hurt a short fresh-head fine-tune "
                           "once, not a longer one (docs/training.md).")

    @property
    def teacher_runs_online(self) -> bool:
        """The teacher model is run every step (its logits or hidden states are used, and not from a cache)."""
        return self.online_teacher and (self.alpha > 0 or self.hidden_weight > 0)


class TrainingDiverged(InputError):
    """The loss became NaN/inf; exit code 2 like any InputError (lower lr, change precision, check logits)."""


# ---------------------------------------------------------------- process setup


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(device: str) -> None:
    """Use the launcher's env (deepspeed/torchrun); a bare process becomes rank 0 of 1."""
    import deepspeed
    import torch.distributed as tdist

    if "RANK" not in os.environ:
        os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if not tdist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- data


def epoch_order(n_rows: int, rows_per_step: int, seed: int, epoch: int, lengths=None,
                group_steps: int = 50) -> list[int]:
    """Shuffled row ids for one epoch, padded by wrapping to a whole number of optimizer steps.

    With `lengths` (real tokens per row), rows of similar length share a step, so trim_padding cuts
    less: the shuffled order is cut into groups of `group_steps` steps, each group is sorted by length
    and split into steps, and the steps are shuffled again (transformers' LengthGroupedSampler, plus
    that last shuffle so long steps are not bunched at the start of each group).
    """
    import torch

    gen = torch.Generator().manual_seed(seed + epoch)
    perm = torch.randperm(n_rows, generator=gen).tolist()
    pad = -len(perm) % rows_per_step
    order = perm + [perm[i % len(perm)] for i in range(pad)]
    if lengths is None:
        return order
    group = rows_per_step * group_steps
    ranked = [i for lo in range(0, len(order), group)
              for i in sorted(order[lo:lo + group], key=lambda r: -int(lengths[r]))]
    steps = [ranked[lo:lo + rows_per_step] for lo in range(0, len(ranked), rows_per_step)]
    return [i for s in torch.randperm(len(steps), generator=gen).tolist() for i in steps[s]]


def micro_batches(order: list[int], step: int, *, batch_size: int, accumulation: int, rank: int, world: int):
    """Row ids of this rank's micro batches for optimizer step `step` (0-based within the epoch)."""
    per_step = batch_size * accumulation * world
    rows = order[step * per_step:(step + 1) * per_step]
    for micro in range(accumulation):
        chunk = rows[micro * batch_size * world:(micro + 1) * batch_size * world]
        yield chunk[rank * batch_size:(rank + 1) * batch_size]


def trim_padding(batch: dict) -> dict:
    """Cut every per-token column to the batch's longest real sequence.

    Windows are padded to max_seq_length, but most SQuAD windows are shorter: computing on the padding
    would cost up to 2x at seq 256 and change nothing (it is masked in attention and in the losses).
    """
    width = int(batch["attention_mask"].sum(dim=1).max())
    return {k: v[:, :width] if v.ndim == 2 else v for k, v in batch.items()}


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


def hidden_layer_map(cfg: TrainConfig, student_config, teacher_config) -> list[int]:
    """Teacher hidden-state index (1-based layer) matched to each student layer, checked against both models."""
    n_s, n_t = student_config.num_hidden_layers, teacher_config.num_hidden_layers
    layers = cfg.hidden_layers or [round((i + 1) * n_t / n_s) for i in range(n_s)]
    if len(layers) != n_s or not all(1 <= j <= n_t for j in layers):
        raise InputError(f"train.hidden_layers: {layers} must give one teacher layer in 1..{n_t} for each of the "
                         f"student's {n_s} layers")
    if student_config.hidden_size != teacher_config.hidden_size:
        raise InputError(f"train.hidden_weight: student hidden size {student_config.hidden_size} differs from the "
                         f"teacher's {teacher_config.hidden_size} (no projection is learned); set hidden_weight 0")
    return layers


# ---------------------------------------------------------------- checkpoints


def _write_marker(tag_dir: Path, step: int) -> None:
    files = {str(p.relative_to(tag_dir)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(tag_dir.rglob("*")) if p.is_file() and p.name != MARKER}
    tmp = tag_dir / (MARKER + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"step": step, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(tag_dir / MARKER)


def complete_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every committed checkpoint, oldest first."""
    found = []
    for marker in ckpt_dir.glob(f"step*/{MARKER}"):
        try:
            found.append((int(json.loads(marker.read_text())["step"]), marker.parent))
        except (ValueError, KeyError, json.JSONDecodeError):
            raise InputError(f"checkpoint {marker}: unreadable commit marker; delete that checkpoint "
                             "directory to resume from an older one") from None
    return sorted(found)


def verify_checkpoint(tag_dir: Path) -> None:
    """Sizes and sha256 against the marker: a truncated or altered file is an error, never a fresh start."""
    listed = json.loads((tag_dir / MARKER).read_text())["files"]
    for name, meta in listed.items():
        path = tag_dir / name
        if not path.is_file():
            raise InputError(f"checkpoint {tag_dir}: {name} is missing; delete {tag_dir} to resume from an "
                             "older checkpoint, or start without --resume")
        size = path.stat().st_size
        if size != meta["bytes"] or sha256_file(path) != meta["sha256"]:
            what = f"truncated ({size} of {meta['bytes']} bytes)" if size != meta["bytes"] else "corrupt (sha256 differs)"
            raise InputError(f"checkpoint {tag_dir}: {name} is {what}; delete {tag_dir} to resume from an "
                             "older checkpoint, or start without --resume")


def _prune(ckpt_dir: Path, keep: int) -> None:
    done = complete_checkpoints(ckpt_dir)
    kept = {d for _, d in done[-keep:]}
    for tag_dir in ckpt_dir.glob("step*"):
        if tag_dir not in kept:  # older committed tags and uncommitted leftovers of a killed run
            shutil.rmtree(tag_dir, ignore_errors=True)


def _truncate_log(path: Path, step: int) -> None:
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


# ---------------------------------------------------------------- saving the student


def _full_state_dict(engine, ds: dict, ckpt_dir: Path, tag: str) -> dict | None:
    """Full fp32 weights on rank 0 (None elsewhere); collective, every rank must call it."""
    import deepspeed
    import torch

    from distill.ds_config import zero_stage

    params = list(engine.module.parameters())
    stage = zero_stage(ds)
    if any(p.dtype != torch.float32 for p in params) and stage > 0:
        # fp16/bf16-block configs keep the fp32 masters in the optimizer: read them from the final checkpoint
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        if engine.global_rank != 0:
            return None
        return get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
    if stage == 3:
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            if engine.global_rank == 0:
                return {k: v.detach().float().cpu().clone() for k, v in engine.module.state_dict().items()}
        return None
    if engine.global_rank != 0:
        return None
    return {k: v.detach().float().cpu().clone() for k, v in engine.module.state_dict().items()}


# ---------------------------------------------------------------- the loop


def train_student(cfg: TrainConfig, student_model, tokenizer, features, output_dir: Path, *,
                  teacher_logits=None, teacher_model=None, resume: bool = False) -> Path:
    import deepspeed
    import torch
    import torch.distributed as tdist
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from distill.data.features import window_lengths
    from distill.ds_config import build_ds_config
    from distill.losses import distillation_loss, hidden_state_loss, valid_positions_mask
    from distill.models import set_attention_dropout
    from distill.precision import default_device, resolve

    _check_inputs(cfg, features, teacher_logits, teacher_model)
    if cfg.attention_dropout is not None:
        try:
            set_attention_dropout(student_model, cfg.attention_dropout)
        except InputError as err:
            raise InputError(f"{cfg.section}.attention_dropout: {err}") from None
    output_dir = Path(output_dir)
    device = default_device()
    init_distributed(device)
    rank, world = tdist.get_rank(), tdist.get_world_size()
    is_main = rank == 0
    precision = resolve(cfg.precision, device, what=f"{cfg.section}.precision", quiet=not is_main).precision

    rows_per_step = cfg.batch_size * cfg.gradient_accumulation * world
    steps_per_epoch = math.ceil(len(features) / rows_per_step)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    warmup_steps = math.ceil(total_steps * cfg.warmup_ratio)
    ds = build_ds_config(cfg, world, total_steps=total_steps, warmup_steps=warmup_steps, device=device,
                         precision=precision)

    seed_everything(cfg.seed)
    decay = [p for p in student_model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in student_model.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = None if "optimizer" in ds else torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    scheduler = None if "scheduler" in ds else (
        lambda opt: get_linear_schedule_with_warmup(opt, warmup_steps, total_steps))
    engine, _, _, _ = deepspeed.initialize(model=student_model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=ds)
    autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    if is_main:
        # an engine whose precision block silently stayed off computes in fp32: ~1.5x slower on CPU
        compute = ("fp16" if engine.fp16_enabled() else "bf16" if engine.bfloat16_enabled()
                   else "bf16 autocast" if engine.torch_autocast_enabled() else "fp32")
        log.info("DeepSpeed engine computes in %s (ZeRO stage %d)", compute, engine.zero_optimization_stage())

    hidden_map = None
    if teacher_model is not None and cfg.teacher_runs_online:
        teacher_model.eval().to(engine.device)
        teacher_inputs = set(inspect.signature(teacher_model.forward).parameters)
        if cfg.hidden_weight > 0:
            hidden_map = hidden_layer_map(cfg, student_model.config, teacher_model.config)
            if is_main:
                log.info("hidden-state KD: student layers 1..%d matched to teacher layers %s, weight %g",
                         len(hidden_map), hidden_map, cfg.hidden_weight)
    else:
        teacher_model = None
    student_inputs = set(inspect.signature(student_model.forward).parameters)
    columns = [c for c in (*MODEL_INPUTS, "context_mask", "start_positions", "end_positions")
               if c in features.column_names]
    rows = features.with_format("torch", columns=columns)
    lengths = window_lengths(features) if cfg.group_by_length else None
    logit_rows = None
    if cfg.alpha > 0 and teacher_model is None:
        logit_rows = teacher_logits.with_format("torch", columns=["start_logits", "end_logits"])

    ckpt_dir = output_dir / "checkpoints"
    log_path = output_dir / TRAIN_LOG
    step = 0
    if resume and ckpt_dir.is_dir():
        done = complete_checkpoints(ckpt_dir)
        if done:
            _, tag_dir = done[-1]
            verify_checkpoint(tag_dir)  # on every rank: a rank that raised alone would leave the others hanging
            try:
                loaded, client = engine.load_checkpoint(str(ckpt_dir), tag=tag_dir.name)
                rng = torch.load(tag_dir / f"rng_rank{rank}.pt", weights_only=False)
            except Exception as err:  # DeepSpeed/torch raise many types for damaged files
                raise InputError(f"checkpoint {tag_dir}: cannot be loaded ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0] if str(err) else ''})") from None
            if loaded is None:
                raise InputError(f"checkpoint {tag_dir}: DeepSpeed could not load it")
            if client.get("rows_per_step") != rows_per_step:
                raise InputError(f"checkpoint {tag_dir}: written with {client.get('rows_per_step')} rows per step "
                                 f"(batch x accumulation x ranks), this run uses {rows_per_step}; resume with the "
                                 "same batch_size, gradient_accumulation and number of ranks")
            step = int(client["step"])
            set_rng_state(rng)
            if is_main:
                _truncate_log(log_path, step)
                log.info("resumed from %s (step %d of %d)", tag_dir, step, total_steps)
        elif is_main:
            log.info("resume: no complete checkpoint in %s, starting from step 0", ckpt_dir)

    writer = None
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        if not step:  # a fresh start must not later resume from, or keep, an older run's checkpoints
            log_path.unlink(missing_ok=True)
            shutil.rmtree(ckpt_dir, ignore_errors=True)
            shutil.rmtree(output_dir / "tensorboard", ignore_errors=True)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=step + 1 if step else None)
        log.info("training: %d features, %d steps (%d per epoch), %d rank(s) x batch %d x accumulation %d",
                 len(features), total_steps, steps_per_epoch, world, cfg.batch_size, cfg.gradient_accumulation)

    def save(step_done: int) -> str:
        tag = f"step{step_done}"
        epoch_now, in_epoch = divmod(step_done, steps_per_epoch)
        engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={
            "step": step_done, "epoch": epoch_now, "step_in_epoch": in_epoch, "seed": cfg.seed,
            "rows_per_step": rows_per_step})
        torch.save(rng_state(), ckpt_dir / tag / f"rng_rank{rank}.pt")
        tdist.barrier()  # every rank's shards and RNG file are on disk before the commit marker
        if is_main:
            _write_marker(ckpt_dir / tag, step_done)
            _prune(ckpt_dir, cfg.keep_checkpoints)
        tdist.barrier()
        return tag

    engine.train()
    started = time.perf_counter()
    skipped_before = engine.skipped_steps
    last_saved = step if step else None
    bar = tqdm(total=total_steps, initial=step, desc="train", disable=not is_main, dynamic_ncols=True)
    while step < total_steps:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        order = epoch_order(len(features), rows_per_step, cfg.seed, epoch, lengths=lengths)
        sums = torch.zeros(4, dtype=torch.float64)
        for idx in micro_batches(order, in_epoch, batch_size=cfg.batch_size,
                                 accumulation=cfg.gradient_accumulation, rank=rank, world=world):
            batch = trim_padding({k: v.to(engine.device) for k, v in rows[idx].items()})
            inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch and k in student_inputs}
            if hidden_map:
                inputs["output_hidden_states"] = True
            t_start = t_end = t_out = None
            if teacher_model is not None:
                with torch.no_grad(), (torch.autocast(engine.device.type, dtype=autocast_dtype) if autocast_dtype
                                       else contextlib.nullcontext()):
                    t_out = teacher_model(**{k: batch[k] for k in MODEL_INPUTS if k in batch and k in teacher_inputs},
                                          output_hidden_states=bool(hidden_map))
                if cfg.alpha > 0:
                    t_start, t_end = t_out.start_logits, t_out.end_logits
            elif logit_rows is not None:
                cached = logit_rows[idx]
                width = batch["input_ids"].shape[1]
                t_start = cached["start_logits"][:, :width].to(engine.device)
                t_end = cached["end_logits"][:, :width].to(engine.device)
            out = engine(**inputs)
            losses = distillation_loss(out.start_logits, out.end_logits, t_start, t_end, batch["start_positions"],
                                       batch["end_positions"], valid_positions_mask(batch["context_mask"]),
                                       temperature=cfg.temperature, alpha=cfg.alpha)
            losses["hidden_loss"] = torch.zeros_like(losses["loss"])
            if hidden_map:
                losses["hidden_loss"] = hidden_state_loss(out.hidden_states[1:],
                                                          [t_out.hidden_states[j] for j in hidden_map],
                                                          batch["attention_mask"])
                losses["loss"] = losses["loss"] + cfg.hidden_weight * losses["hidden_loss"]
            # global mean (equal slices per rank) so every rank takes the same stop/continue decision
            part = torch.stack([losses[k].detach().double().cpu() for k in LOSS_KEYS])
            tdist.all_reduce(part)
            part /= world
            if not torch.isfinite(part).all():
                bar.close()
                where = f"last checkpoint {ckpt_dir / f'step{last_saved}'} is intact" if last_saved else \
                    "no checkpoint was written"
                raise TrainingDiverged(f"training diverged at step {step + 1} (epoch {epoch + 1}): loss is "
                                       f"{part[0].item()} (kd {part[1].item()}, ce {part[2].item()}, hidden "
                                       f"{part[3].item()}); {where}")
            sums += part
            engine.backward(losses["loss"])
            engine.step()
        step += 1
        bar.update(1)
        if engine.skipped_steps > skipped_before:
            skipped_before = engine.skipped_steps
            if is_main:
                scale = getattr(engine.optimizer, "cur_scale", None) or getattr(engine.optimizer, "loss_scale", None)
                log.warning("step %d: fp16 overflow, DeepSpeed skipped the update (loss scale now %s)", step, scale)
        if is_main and (step % cfg.log_every == 0 or step == total_steps):
            mean = (sums / cfg.gradient_accumulation).tolist()
            record = {"step": step, "epoch": epoch + (in_epoch + 1) / steps_per_epoch, **dict(zip(LOSS_KEYS, mean)),
                      "lr": engine.get_lr()[0], "elapsed_s": round(time.perf_counter() - started, 3)}
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            for key in (*LOSS_KEYS, "lr"):
                writer.add_scalar(f"train/{key}", record[key], step)
            bar.set_postfix(loss=f"{mean[0]:.4f}")
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps:
            save(step)
            last_saved = step
    bar.close()

    tag = f"step{step}" if last_saved == step else save(step)
    state = _full_state_dict(engine, ds, ckpt_dir, tag)
    student_dir = output_dir / "student"
    if is_main:
        writer.close()
        tmp = output_dir / "student.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        # a fresh fp32 instance: the engine's module may be bf16/fp16 or ZeRO-3-partitioned, and
        # save_pretrained records the module's dtype in config.json, which from_pretrained then loads as
        fresh = type(engine.module)(copy.deepcopy(engine.module.config))
        fresh.load_state_dict(state, strict=True)
        fresh.to(torch.float32).save_pretrained(tmp)
        del fresh
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(student_dir, ignore_errors=True)
        tmp.rename(student_dir)
        log.info("student saved to %s", student_dir)
    tdist.barrier()
    return student_dir
