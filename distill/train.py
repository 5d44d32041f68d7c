"""Student training under DeepSpeed: KD on teacher logits + CE on gold spans.

Reads: the features Dataset (docs/architecture.md), teacher logits aligned row by row with it (or a
teacher model run online, which hidden-state KD needs), the ds_config JSON named by `train.ds_config`.
Writes under OUTPUT/ (rank 0 only, except checkpoint shards which every rank writes):
  train_log.jsonl      one JSON line per logged optimizer step: step, epoch, loss, kd_loss, ce_loss, hidden_loss,
                       lr, elapsed_s, and since the previous line achieved_gflops, peak_gflops (the best matmul
                       rate so far), train_efficiency (distill.flops); with validation, also {step, epoch,
                       eval_loss} lines
  tensorboard/         the same scalars
  checkpoints/step<N>/ DeepSpeed checkpoint + RNG states + commit marker (distill.checkpoints)
  student/             the trained student in HF format (full fp32 weights) with the tokenizer

`train_student` runs the named steps: `session.setup` (process group, precision, DeepSpeed engine, data views),
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
import shutil
import time
from pathlib import Path
from typing import Optional

from distill import checkpoints
from distill.batching import epoch_order, micro_batches, trim_padding
from distill.errors import InputError
from distill.recipe import TrainConfig
from distill.session import MODEL_INPUTS, Session, setup

log = logging.getLogger("distill")

# train_log.jsonl keys measured with a clock: they differ between identical runs, the rest must not.
TIMED_KEYS = ("elapsed_s", "achieved_gflops", "peak_gflops", "train_efficiency")

LOSS_KEYS = ("loss", "kd_loss", "ce_loss", "hidden_loss")


class TrainingDiverged(InputError):
    """The loss became NaN/inf; exit code 2 like any InputError (lower lr, change precision, check logits)."""


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
    from torch.profiler import record_function  # named ranges for benchmarks/profile_train.py

    from distill.losses import distillation_loss, hidden_state_loss, valid_positions_mask

    batch = trim_padding({k: v.to(s.engine.device) for k, v in s.rows[idx].items()})
    accepts = inspect.signature(s.engine.module.forward).parameters
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch and k in accepts}
    if s.hidden_map:
        inputs["output_hidden_states"] = True
    rows, width = batch["input_ids"].shape
    s.flops += 3 * s.student_flops.forward(rows, width) + (s.teacher_flops.forward(rows, width)
                                                           if s.teacher_flops else 0.0)
    with record_function("distill.teacher"):
        t_start, t_end, t_out = _teacher_signal(s, batch, idx)
    with record_function("distill.student_forward"):
        out = s.engine(**inputs)
    losses = distillation_loss(out.start_logits, out.end_logits, t_start, t_end, batch["start_positions"],
                               batch["end_positions"], valid_positions_mask(batch["context_mask"]),
                               temperature=s.cfg.temperature, alpha=s.cfg.alpha, labelled=batch.get("labelled"))
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
    from torch.profiler import record_function

    cfg = s.cfg
    epoch, in_epoch = divmod(step, s.steps_per_epoch)
    if s.order is None or s.order[0] != epoch:  # drawn once per epoch: sorting by length costs ~20 ms
        s.order = (epoch, epoch_order(s.n_rows, s.rows_per_step, cfg.seed, epoch, lengths=s.lengths))
    order = s.order[1]
    sums = torch.zeros(len(LOSS_KEYS), dtype=torch.float64)
    for idx in micro_batches(order, in_epoch, batch_size=cfg.batch_size, accumulation=cfg.gradient_accumulation,
                             rank=s.rank, world=s.world):
        losses = _micro_losses(s, idx)
        # global mean (equal slices per rank) so every rank takes the same stop/continue decision
        part = torch.stack([losses[k].detach().double().cpu() for k in LOSS_KEYS])
        tdist.all_reduce(part)
        part /= s.world
        if not torch.isfinite(part).all():
            diverged(s, step, f"loss is {part[0].item()} (kd {part[1].item()}, ce {part[2].item()}, hidden "
                              f"{part[3].item()})")
        sums += part
        with record_function("distill.backward"):
            s.engine.backward(losses["loss"])
        with record_function("distill.optimizer_step"):
            s.engine.step()
    # DeepSpeed skips a non-finite update only where it scans for one (fp16, bf16); in fp32 ZeRO (or bf16 with
    # check_grad_overflow off) it applies it, and only the norm it computed tells
    if not getattr(s.engine.optimizer, "check_grad_overflow", s.engine.fp16_enabled()):
        norm = s.engine.get_global_grad_norm()
        if norm is not None and not math.isfinite(float(norm)):
            diverged(s, step, f"gradient norm is {float(norm)}")
    return sums


def diverged(s: Session, step: int, what: str):
    where = (f"last checkpoint {s.ckpt_dir / f'step{s.last_saved}'} is intact" if s.last_saved
             else "no checkpoint was written")
    raise TrainingDiverged(f"training diverged at step {step + 1} (epoch {step // s.steps_per_epoch + 1}): "
                           f"{what}; {where}")


def log_step(s: Session, step: int, sums, started: float) -> Optional[float]:
    """Rank 0, every log_every steps and the last: a train_log.jsonl line and TensorBoard scalars."""
    if not s.is_main or not (step % s.cfg.log_every == 0 or step == s.total_steps):
        return None
    epoch, in_epoch = divmod(step - 1, s.steps_per_epoch)
    mean = (sums / s.cfg.gradient_accumulation).tolist()
    achieved = s.flops / s.busy_s if s.busy_s else 0.0
    peak = s.peak.sample(s.busy_s)
    record = {"step": step, "epoch": epoch + (in_epoch + 1) / s.steps_per_epoch, **dict(zip(LOSS_KEYS, mean)),
              "lr": s.engine.get_lr()[0], "elapsed_s": round(time.perf_counter() - started, 3),
              "achieved_gflops": round(achieved / 1e9, 3), "peak_gflops": round(peak / 1e9, 3),
              "train_efficiency": round(achieved / peak, 4)}
    s.flops = s.busy_s = 0.0
    with open(s.log_path, "a") as f:
        f.write(json.dumps(record) + "\n")
    for key in (*LOSS_KEYS, "lr", "train_efficiency"):
        s.writer.add_scalar(f"train/{key}", record[key], step)
    return mean[0]


def validation_loss(s: Session, rows, n_rows: int) -> float:
    """Mean gold-span CE over the eval windows (the training CE, dropout off); every rank takes a share."""
    import torch
    import torch.distributed as tdist

    from distill.losses import distillation_loss, valid_positions_mask
    from distill.models import attention_kernel

    accepts = inspect.signature(s.engine.module.forward).parameters
    total = torch.zeros(2, dtype=torch.float64)
    mine = list(range(s.rank, n_rows, s.world))
    s.engine.eval()
    with torch.no_grad(), attention_kernel(s.engine.module, s.own_attention):
        for lo in range(0, len(mine), s.cfg.batch_size):
            idx = mine[lo:lo + s.cfg.batch_size]
            batch = trim_padding({k: v.to(s.engine.device) for k, v in rows[idx].items()})
            out = s.engine(**{k: batch[k] for k in MODEL_INPUTS if k in batch and k in accepts})
            ce = distillation_loss(out.start_logits, out.end_logits, None, None, batch["start_positions"],
                                   batch["end_positions"], valid_positions_mask(batch["context_mask"]),
                                   alpha=0.0)["ce_loss"]
            total += torch.tensor([ce.item() * len(idx), len(idx)], dtype=torch.float64)
    s.engine.train()
    tdist.all_reduce(total)
    return (total[0] / total[1]).item()


def log_validation(s: Session, step: int, loss: float) -> None:
    if not s.is_main:
        return
    record = {"step": step, "epoch": step / s.steps_per_epoch, "eval_loss": loss}
    with open(s.log_path, "a") as f:
        f.write(json.dumps(record) + "\n")
    s.writer.add_scalar("eval/loss", loss, step)
    log.info("step %d (epoch %.2f): validation loss %.4f", step, record["epoch"], loss)


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
    s.engine.module.set_attn_implementation(s.own_attention)  # the caller's model infers as it came
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
                  teacher_logits=None, teacher_model=None, resume: bool = False, validation=None) -> Path:
    """Train `student_model` on `features` (see module doc); the directory of the saved student.

    `validation`: (eval features, every) with every `"epoch"` or a number of steps: validation loss rows
    ({"step", "epoch", "eval_loss"}) go to train_log.jsonl and TensorBoard.
    """
    from tqdm.auto import tqdm

    s = setup(cfg, student_model, features, output_dir, teacher_logits=teacher_logits, teacher_model=teacher_model)
    if validation is not None:
        eval_features, every = validation
        every = s.steps_per_epoch if every == "epoch" else int(every)
        eval_rows = eval_features.with_format("torch", columns=[c for c in s.rows.format["columns"]
                                                                if c in eval_features.column_names])
    step = resume_latest(s) if resume else 0
    open_logs(s, step)
    s.engine.train()
    started = time.perf_counter()
    skipped_before = s.engine.skipped_steps
    with tqdm(total=s.total_steps, initial=step, desc="train", disable=not s.is_main, dynamic_ncols=True) as bar:
        while step < s.total_steps:
            busy = time.perf_counter()
            sums = train_step(s, step)
            s.busy_s += time.perf_counter() - busy
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
            if validation is not None and (step % every == 0 or step == s.total_steps):
                log_validation(s, step, validation_loss(s, eval_rows, len(eval_features)))
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < s.total_steps:
                save_checkpoint(s, step)
    return finish(s, step, tokenizer)
