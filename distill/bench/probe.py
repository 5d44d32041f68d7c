"""Peak memory of one model, measured in a fresh interpreter (`python -m distill.bench probe ...`).

Reads: a model directory (or hub id) and a file of saved input tensors (torch.save of a dict).
Writes: one JSON line on stdout (rss_before_mb, peak_rss_growth_mb, peak_method, and
cuda_peak_allocated_mb on CUDA); nothing on disk.

Method: each model is loaded in a fresh subprocess (so nothing the other model or the parent left
in the allocator is reused); after imports and input loading the kernel's peak-RSS mark is reset
(/proc/self/clear_refs), then the model is loaded and run at the largest batch size; the figure is
peak RSS (VmHWM; ru_maxrss where /proc is unavailable) minus RSS before loading. The probe fixes
glibc's MALLOC_MMAP_THRESHOLD_ at 64 KiB (unless set): glibc's moving threshold made freed
activations stay resident in some runs and not others (one model: 216-282 MB; fixed: within 0.5 MB).
Weights are memory-mapped from safetensors and count once touched, so embedding rows the batch
does not use stay out (params and size_bytes give the whole). On CUDA it is
torch.cuda.max_memory_allocated over the same steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from distill.precision import resolve

PROBE_MMAP_THRESHOLD = 64 * 1024  # bytes; see the module docstring
USAGE = "usage: python -m distill.bench probe MODEL_DIR INPUTS_PT PRECISION DEVICE THREADS"


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes(reset_ok: bool) -> int:
    if reset_ok:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def probe(model_dir: str, inputs_file: str, precision: str, device: str, threads: int) -> dict:
    """Runs in a fresh interpreter: memory attributable to loading and running one model."""
    import gc

    import torch
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    from distill.models import load_qa_model, resolve_source

    torch.set_num_threads(threads)
    dev = torch.device(device)
    dtype = resolve(precision, device, quiet=True).dtype
    inputs = torch.load(inputs_file, weights_only=True)
    # Import the model's code and start the thread pool before the baseline: not the model's memory.
    AutoModelForQuestionAnswering._model_mapping[type(AutoConfig.from_pretrained(resolve_source(model_dir)))]
    torch.ones(64, 64) @ torch.ones(64, 64)
    if dev.type == "cuda":
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats(dev)
        cuda_before = torch.cuda.memory_allocated(dev)
    gc.collect()
    before = _rss_bytes()
    reset_ok = _reset_peak_rss()
    model = load_qa_model(model_dir).to(dev).eval()
    batch = {k: v.to(dev) for k, v in inputs.items()}
    with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
        for _ in range(2):
            model(**batch)
    method = "VmHWM reset via /proc/self/clear_refs" if reset_ok else "ru_maxrss"
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        method += f", MALLOC_MMAP_THRESHOLD_={os.environ['MALLOC_MMAP_THRESHOLD_']}"
    result = {"rss_before_mb": before / 2**20,
              "peak_rss_growth_mb": max(0, _peak_rss_bytes(reset_ok) - before) / 2**20,
              "peak_method": method}
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        result["cuda_peak_allocated_mb"] = (torch.cuda.max_memory_allocated(dev) - cuda_before) / 2**20
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


def start_probe(model_dir: str, inputs_file: Path, *, precision: str, device: str, threads: int):
    """Start `probe` for one model in a subprocess; returns the Popen for `finish_probe`."""
    cmd = [sys.executable, "-m", "distill.bench", "probe", model_dir, str(inputs_file), precision, device,
           str(threads)]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(PROBE_MMAP_THRESHOLD))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish_probe(proc, role: str) -> dict:
    """Wait for a probe started by `start_probe`; its result dict, or RuntimeError with its last error line."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        tail = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
        raise RuntimeError(f"memory probe for the {role} failed: {tail}")
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    """`probe MODEL_DIR INPUTS_PT PRECISION DEVICE THREADS`: print `probe`'s result as one JSON line."""
    if len(argv) != 6 or argv[0] != "probe":
        sys.exit(USAGE)
    _, model_dir, inputs_file, precision, device, threads = argv
    print(json.dumps(probe(model_dir, inputs_file, precision, device, int(threads))))
