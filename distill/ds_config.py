"""DeepSpeed config from a JSON file in ds_configs/ plus the recipe's `train` settings.

Reads: the JSON named by `train.ds_config` (relative to the working directory, else to the project root).
Writes nothing. `"auto"` values are filled from the recipe; explicit values that disagree with the recipe
are ALL reported in one InputError (as accelerate's DeepSpeed plugin does), never silently overridden.

Precision: `distill.precision.resolve` turns `auto` into fp16 on CUDA, bf16 on a CPU with native bf16, else
fp32. The recipe's precision is met by the file's `fp16`/`bf16` block or by a `torch_autocast` block (fp32
weights, autocast matmuls). The shipped bf16 configs use the `bf16` block: on this CPU (avx512_bf16) the
bf16 module with fp32 masters in ZeRO's optimizer is as fast as a plain autocast loop, while DeepSpeed's
fp32/torch_autocast path pays for an extra fp32 copy of every weight (benchmarks/deepspeed_overhead.py).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

from distill.errors import InputError
from distill.precision import resolve

log = logging.getLogger("distill")

ROOT = Path(__file__).resolve().parents[1]
AUTO = "auto"


def find_ds_config(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.is_absolute() and (ROOT / p).is_file():
        return ROOT / p
    raise InputError(f"ds_config {path}: file not found (shipped configs: "
                     f"{', '.join(sorted(q.name for q in (ROOT / 'ds_configs').glob('*.json')))})")


def load_ds_json(path: str | Path) -> tuple[Path, dict]:
    file = find_ds_config(path)
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"ds_config {file}: not valid JSON (line {err.lineno}, column {err.colno}): {err.msg}") from None
    if not isinstance(data, dict):
        raise InputError(f"ds_config {file}: expected a JSON object at the top level")
    return file, data


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))
    return a == b


class _Filler:
    """Fills "auto" in place and collects disagreements between explicit values and the recipe."""

    def __init__(self, section: str):
        self.section = section
        self.problems: list[str] = []

    def put(self, block: dict, key: str, value, dotted: str, recipe_key: str | None, *, add: bool = True):
        if key not in block:
            if add:
                block[key] = value
            return
        if block[key] == AUTO:
            block[key] = value
        elif not _same(block[key], value):
            source = f"recipe {self.section}.{recipe_key}" if recipe_key else "the recipe"
            self.problems.append(f"{dotted}={json.dumps(block[key])} but {source} gives {json.dumps(value)}")


def build_ds_config(cfg, world_size: int = 1, *, total_steps: int | None = None, warmup_steps: int | None = None,
                    device: str | None = None, precision: str | None = None) -> dict:
    """The filled DeepSpeed dict for `cfg` (a TrainConfig) on `world_size` ranks.

    `total_steps`/`warmup_steps` (optimizer steps) fill a `scheduler` block; they are unknown before the
    data is read, so a preflight check leaves scheduler "auto" values alone.
    """
    file, raw = load_ds_json(cfg.ds_config)
    precision = precision or resolve(cfg.precision, device, quiet=True).precision
    ds = copy.deepcopy(raw)
    f = _Filler(cfg.section)

    f.put(ds, "train_micro_batch_size_per_gpu", cfg.batch_size, "train_micro_batch_size_per_gpu", "batch_size")
    f.put(ds, "gradient_accumulation_steps", cfg.gradient_accumulation, "gradient_accumulation_steps",
          "gradient_accumulation")
    f.put(ds, "train_batch_size", cfg.batch_size * cfg.gradient_accumulation * world_size, "train_batch_size",
          f"batch_size x gradient_accumulation x {world_size} rank(s)")
    f.put(ds, "gradient_clipping", cfg.max_grad_norm, "gradient_clipping", "max_grad_norm")

    opt = ds.get("optimizer")
    if isinstance(opt, dict):
        params = opt.setdefault("params", {})
        f.put(params, "lr", cfg.lr, "optimizer.params.lr", "lr")
        f.put(params, "weight_decay", cfg.weight_decay, "optimizer.params.weight_decay", "weight_decay")
        f.put(params, "betas", list(cfg.adam_betas), "optimizer.params.betas", "adam_betas", add=False)
        f.put(params, "eps", cfg.adam_epsilon, "optimizer.params.eps", "adam_epsilon", add=False)

    sched = ds.get("scheduler")
    if isinstance(sched, dict) and total_steps is not None:
        params = sched.setdefault("params", {})
        f.put(params, "total_num_steps", total_steps, "scheduler.params.total_num_steps", "epochs/max_steps")
        f.put(params, "warmup_num_steps", warmup_steps or 0, "scheduler.params.warmup_num_steps", "warmup_ratio")
        f.put(params, "warmup_max_lr", cfg.lr, "scheduler.params.warmup_max_lr", "lr", add=False)

    _fill_precision(ds, precision, f)
    if f.problems:
        raise InputError(f"ds_config {file.name}: " + "; ".join(f.problems))
    return ds


def _fill_precision(ds: dict, precision: str, f: _Filler) -> None:
    want = {"fp16": precision == "fp16", "bf16": False}
    autocast = ds.get("torch_autocast")
    autocast_bf16 = isinstance(autocast, dict) and autocast.get("dtype", "bfloat16") in ("bfloat16", "bf16")
    if isinstance(autocast, dict):
        f.put(autocast, "enabled", precision == "bf16" and autocast_bf16, "torch_autocast.enabled", "precision")
    autocast_on = isinstance(autocast, dict) and autocast.get("enabled") is True
    # bf16 is met either by the bf16 block or by bf16 autocast; the file decides which, the recipe whether
    want["bf16"] = precision == "bf16" and not autocast_on
    for key, on in want.items():
        block = ds.get(key)
        if isinstance(block, dict):
            f.put(block, "enabled", on, f"{key}.enabled", "precision")
        elif on:
            ds[key] = {"enabled": True}
    if precision == "bf16" and not autocast_on and not (ds.get("bf16") or {}).get("enabled"):
        f.problems.append(f"no bf16 block enabled but recipe {f.section}.precision is bf16")
    if precision != "bf16" and autocast_on:
        f.problems.append(f"torch_autocast.enabled=true but recipe {f.section}.precision is {precision}")


def zero_stage(ds: dict) -> int:
    return int((ds.get("zero_optimization") or {}).get("stage", 0))
