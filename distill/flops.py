"""How close training runs to the machine: model FLOPs of the tokens computed against a measured matmul peak.

Reads: a model (its Linear layers and config) and the shape of each micro batch after padding is trimmed.
Writes nothing; train.py puts `achieved_gflops`, `peak_gflops` and `train_efficiency` into train_log.jsonl.

Counting (the usual transformer estimate): a forward pass costs 2 FLOPs per Linear weight per token, plus
4 * layers * hidden * width per token for the attention scores and their weighted sum; a training step
is 3 forward passes (backward ~2x forward) of the student, plus one forward of a teacher run online.
Embedding lookups, softmax, LayerNorm and the optimizer are left out, so the estimate is a floor.
The peak is the best rate of a square matmul in the compute dtype seen in the same process: measured at setup,
then sampled again at each train_log line for a bounded share of the time, so that one slow moment at setup
(measured peaks of 321-443 GFLOP/s on one 2-core host) does not set the denominator of a whole run.
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


class PeakMeter:
    """The best matmul FLOP/s seen so far for size x size operands in `dtype` on `device`.

    Setup times repeated matmuls for `min_seconds` (after one warm-up); `sample(busy_s)` times a few more, costing
    at most `share` of `busy_s` (none where one matmul is too slow for that, e.g. emulated bf16), and returns the
    best rate so far.
    """

    def __init__(self, dtype, device, size: int = PEAK_SIZE, min_seconds: float = 0.3, share: float = 0.005):
        import torch

        rng = torch.Generator(device=device).manual_seed(0)  # its own generator: training's RNG streams stay put
        self.a = torch.randn(size, size, device=device, generator=rng).to(dtype)
        self.b = torch.randn(size, size, device=device, generator=rng).to(dtype)
        self.sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
        self.flops, self.share, self.samples = 2.0 * size ** 3, share, 0
        self.seconds()
        best, spent = float("inf"), 0.0
        while spent < min_seconds:
            took = self.seconds()
            best, spent = min(best, took), spent + took
        self.best = self.flops / best

    def seconds(self) -> float:
        """Wall seconds of one matmul."""
        import torch

        start = time.perf_counter()
        torch.matmul(self.a, self.b)
        self.sync()
        return time.perf_counter() - start

    def sample(self, busy_s: float, most: int = 8) -> float:
        """Time up to `most` matmuls within `share` of `busy_s` seconds; the best rate so far."""
        for _ in range(min(most, int(self.share * busy_s * self.best / self.flops))):
            self.best = max(self.best, self.flops / self.seconds())
            self.samples += 1
        return self.best


def run_efficiency(records: list[dict]) -> float | None:
    """A whole run's train_efficiency from its train_log.jsonl lines: mean achieved FLOP/s over the best peak."""
    timed = [r for r in records if "achieved_gflops" in r]
    if not timed:
        return None
    return sum(r["achieved_gflops"] for r in timed) / len(timed) / max(r["peak_gflops"] for r in timed)
