"""Device and precision: the one resolver behind training, teacher inference, eval and bench.

Reads: a requested precision (`auto`, `fp32`, `bf16`, `fp16`), the device (CUDA when present) and, on
CPU, whether it computes bf16 natively. Writes nothing; logs each choice once, with the reason.

`auto` is fp16 on CUDA. On CPU it is bf16 only where the CPU has native bf16 instructions (AVX512-BF16 or
AMX on x86, the BF16 extension on Arm); elsewhere bf16 is emulated and a bf16 matmul runs ~100x slower
than fp32 (0.8 vs 99 GFLOP/s measured on an AVX2-only AMD EPYC), so `auto` is fp32 there. An explicit
`bf16` is honoured on any CPU (with a warning where it is emulated); `fp16` needs CUDA, because DeepSpeed
refuses it on CPU.
"""

from __future__ import annotations

import functools
import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from distill.errors import InputError

log = logging.getLogger("distill")

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}  # x86 /proc/cpuinfo flags; Arm lists plain "bf16"


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where the CPU executes bf16 matmuls in hardware, not by oneDNN's emulation.

    Read from the CPU flags (torch exposes no such check; mkldnn's "bf16 supported" is also true where
    bf16 is only emulated). Without /proc/cpuinfo the answer is False: fp32 is never the slow choice.
    """
    flags = _cpuinfo_flags()
    if platform.machine() in ("aarch64", "arm64"):
        return "bf16" in flags
    return bool(flags & NATIVE_BF16_FLAGS)


def cpu_kind() -> str:
    """A short name for timings and logs."""
    return "native bf16" if cpu_has_native_bf16() else "no native bf16"


@dataclass(frozen=True)
class Compute:
    """Where and in what a model runs: `device` 'cuda' or 'cpu', `precision` never 'auto'."""

    device: str
    precision: str

    @property
    def dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    @property
    def key(self) -> str:
        """What cache keys hold: the numbers differ between precisions and between device kinds."""
        return f"{self.device}-{self.precision}"


_logged: set[tuple[str, str, str]] = set()


def resolve(requested: str, device: str | None = None, *, what: str = "precision", quiet: bool = False) -> Compute:
    """The precision `requested` becomes on `device` (default: CUDA if present, else CPU).

    `what` names the setting in messages (e.g. `train.precision`). Logs once per process what `auto` became
    and why, or a warning for bf16 requested on a CPU that only emulates it.
    """
    device = (device or default_device()).split(":")[0]
    if requested not in PRECISIONS:
        raise InputError(f"{what} {requested!r}: expected one of {', '.join(PRECISIONS)}")
    on_cuda = device == "cuda"
    if requested == "fp16" and not on_cuda:
        raise InputError(f"{what} fp16 needs a CUDA GPU (DeepSpeed refuses fp16 on CPU); use bf16 or auto")
    if requested != "auto":
        chosen, why = requested, "as requested"
        if requested == "bf16" and not on_cuda and not cpu_has_native_bf16():
            why += "; this CPU has no native bf16, so bf16 matmuls are emulated and far slower than fp32"
    elif on_cuda:
        chosen, why = "fp16", "auto on CUDA"
    elif cpu_has_native_bf16():
        chosen, why = "bf16", "auto on a CPU with native bf16 (DeepSpeed refuses fp16 without CUDA)"
    else:
        chosen, why = "fp32", "auto on a CPU without native bf16, where bf16 is emulated (~100x slower than fp32)"
    compute = Compute(device, chosen)
    seen = (what, requested, device)
    if not quiet and seen not in _logged:
        _logged.add(seen)
        emulated = chosen == "bf16" and "emulated" in why
        level = logging.WARNING if emulated else logging.INFO if requested == "auto" else logging.DEBUG
        log.log(level, "%s: %s on %s (%s)", what, chosen, device, why)
    return compute
