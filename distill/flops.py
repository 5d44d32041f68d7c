"""How close training runs to the machine: model FLOPs of the tokens computed against a measured matmul peak.

Reads: a model (its Linear layers and config) and the shape of each micro batch after padding is trimmed.
Writes nothing; train.py puts `achieved_gflops`, `peak_gflops` and `train_efficiency` into train_log.jsonl.

Counting (the usual transformer estimate): a forward pass costs 2 FLOPs per Linear weight per token, plus
4 * layers * hidden * width per token for the attention scores and their weighted sum; a training step
is 3 forward passes (backward ~2x forward) of the student, plus one forward of a teacher run online.
Embedding lookups, softmax, LayerNorm and the optimizer are left out, so the estimate is a floor.
The peak is the best rate of a square matmul in the compute dtype, measured in the same process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

PEAK_SIZE = 1024  # a 1024^2 matmul: long enough to reach the peak, short even where a dtype is emulated


@dataclass(frozen=True)
class FlopModel:
    linear_params: int
    layers: int
    hidden: int

    def forward(self, rows: int, width: int) -> float:
        tokens = rows * width
        return 2.0 * self.linear_params * tokens + 4.0 * self.layers * self.hidden * width * tokens


def flop_model(model) -> FlopModel:
    """The counts `FlopModel.forward` needs, from a BERT-, DistilBERT- or similar encoder."""
    import torch

    linear = sum(getattr(m.weight, "ds_numel", m.weight.numel()) for m in model.modules()
                 if isinstance(m, torch.nn.Linear))
    cfg = model.config
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layers", 0)
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "dim", 0)
    return FlopModel(linear, layers, hidden)


def matmul_peak(dtype, device, size: int = PEAK_SIZE, min_seconds: float = 0.3) -> float:
    """FLOP/s of the fastest of repeated size x size matmuls in `dtype` on `device` (after one warm-up)."""
    import torch

    rng = torch.Generator(device=device).manual_seed(0)  # its own generator: training's RNG streams stay as seeded
    a = torch.randn(size, size, device=device, generator=rng).to(dtype)
    b = torch.randn(size, size, device=device, generator=rng).to(dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    torch.matmul(a, b)
    sync()
    best, spent = float("inf"), 0.0
    while spent < min_seconds:
        start = time.perf_counter()
        torch.matmul(a, b)
        sync()
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return 2.0 * size ** 3 / best
