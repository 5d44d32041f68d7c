"""Dropout for training on a CPU: a mask from a quarter of a 64-bit draw per element, not a draw each.

Reads the environment variable DISTILL_CPU_DROPOUT: `bits` (the default) or `torch` (PyTorch's own).
Writes nothing; `session.setup` calls `use_cpu_dropout` on the model it trains when it trains on a CPU.

PyTorch draws a CPU dropout mask with `bernoulli_`, which uses MKL's parallel generator on Intel CPUs
only; on others (the AMD EPYC VMs here) it runs on one thread, one mt19937 double per element: 0.046 s of
a 0.58 s student step, 8% (benchmarks/results/profile_train_ad0_grouped.md). `CpuDropout` takes 64 bits
of the same generator per four elements and keeps an element when its 16 bits reach p, so p is rounded to
a multiple of 1/65536 (0.1 becomes 0.100006) and the kept values are scaled by 1 / (1 - that p). The
generator is torch's default, so `torch.manual_seed` and activation checkpointing's RNG replay govern it
as they govern `bernoulli_`; the masks themselves differ from PyTorch's.
"""

from __future__ import annotations


import torch
from torch import nn

from distill.errors import env_choice

ENV = "DISTILL_CPU_DROPOUT"
CHOICES = ("bits", "torch")
LEVELS = 1 << 16


def choice() -> str:
    """DISTILL_CPU_DROPOUT's value, checked: `bits` (the default) or `torch`."""
    return env_choice(ENV, CHOICES)


def keep_mask(shape, p: float, dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of `shape`: 0 where dropped, 1 / (1 - p') where kept, p' = p rounded to 1/65536."""
    cut = round(p * LEVELS)
    n = torch.Size(shape).numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)  # all 64 bits uniform
    draws = bits.view(torch.int16)[:n].view(shape)
    return (draws >= cut - LEVELS // 2).to(dtype).mul_(LEVELS / (LEVELS - cut))


class CpuDropout(nn.Dropout):
    """nn.Dropout whose mask on a CPU comes from `keep_mask`; elsewhere it is nn.Dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu" or not 0 < round(self.p * LEVELS) < LEVELS:
            return super().forward(x)
        mask = keep_mask(x.shape, self.p, x.dtype)
        return x.mul_(mask) if self.inplace else x * mask


def use_cpu_dropout(model: nn.Module) -> int:
    """Swap each plain nn.Dropout in `model` for a CpuDropout with the same p; returns how many.

    Dropout holds no weights, so saved models and checkpoints are unchanged. Attention dropout that a model
    applies through `nn.functional.dropout` (transformers' attention functions) keeps PyTorch's mask.
    """
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if type(child) is nn.Dropout]
    for parent, name, child in swaps:
        setattr(parent, name, CpuDropout(child.p, child.inplace))
    return len(swaps)
