"""Training checkpoints: commit, find, verify, prune, and the full fp32 weights at the end.

Reads and writes OUTPUT/checkpoints/step<N>/: DeepSpeed's checkpoint (model, optimizer, scheduler,
client_state: step, epoch, position in the epoch, rows per step), rng_rank<r>.pt (python/numpy/torch RNG
of each rank: DeepSpeed writes client_state from rank 0 only), then complete.json, the commit marker of
`distill.files` (sizes and sha256 of every file). A tag without it is never resumed from.
Also trims OUTPUT/train_log.jsonl back to a resumed step.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from distill.errors import InputError
from distill.files import MARKER, read_marker, verify_marker, write_marker


def _fix(tag_dir: Path) -> str:
    return f"delete {tag_dir} to resume from an older checkpoint, or start without --resume"


def commit(tag_dir: Path, step: int) -> None:
    write_marker(tag_dir, step=step)


def complete_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every committed checkpoint, oldest first."""
    found = []
    for marker in Path(ckpt_dir).glob(f"step*/{MARKER}"):
        info = read_marker(marker.parent, what="checkpoint", fix=_fix(marker.parent))
        if not isinstance(info.get("step"), int):
            raise InputError(f"checkpoint {marker.parent}: commit marker without a step; {_fix(marker.parent)}")
        found.append((info["step"], marker.parent))
    return sorted(found)


def verify_checkpoint(tag_dir: Path) -> None:
    """Sizes and sha256 against the marker: a truncated or altered file is an error, never a fresh start."""
    verify_marker(tag_dir, what="checkpoint", fix=_fix(tag_dir))


def prune(ckpt_dir: Path, keep: int) -> None:
    """Keep the `keep` newest committed tags; drop older ones and uncommitted leftovers of a killed run."""
    kept = {d for _, d in complete_checkpoints(ckpt_dir)[-keep:]}
    for tag_dir in Path(ckpt_dir).glob("step*"):
        if tag_dir not in kept:
            shutil.rmtree(tag_dir, ignore_errors=True)


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines past `step`: a resumed run logs those steps again."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def rng_state() -> dict:
    import random

    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def full_state_dict(engine, ds: dict, ckpt_dir: Path, tag: str) -> dict | None:
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

