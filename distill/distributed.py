"""Process-group helpers for runs under `deepspeed`, `torchrun` or a bare process.

Reads the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT). Writes nothing.
Distribution itself is DeepSpeed's and torch's; a bare process becomes rank 0 of 1.
"""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (for a local rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_rank() -> tuple[int, int]:
    """(rank, world size) as set by deepspeed/torchrun; (0, 1) in a bare process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str) -> None:
    """Use the launcher's env (deepspeed/torchrun); a bare process becomes rank 0 of 1."""
    import deepspeed
    import torch.distributed as tdist

    if "RANK" not in os.environ:
        os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    if not tdist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")


def barrier() -> None:
    """Wait for every rank; nothing to wait for without a process group."""
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
        tdist.barrier()
