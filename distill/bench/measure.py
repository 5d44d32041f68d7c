"""`distill bench`'s measurements: quality, latency, throughput, memory and size of a teacher and its student.

Reads: both models (directories or hub ids), SQuAD evaluation data, BenchSettings. Writes nothing but a
temporary directory for the memory probes' inputs (deleted at the end); `run_bench` returns the
bench.json dict, which `render.write_outputs` writes.

How each figure is measured:
- quality: `predict.evaluate`, the code path of `distill eval`; the score dicts are stored with the
  keys `distill score` prints (v1.1 exact_match/f1, v2.0 exact/f1/HasAns_...).
- threads: torch's intra-op threads (--threads; torch's default otherwise). On a machine shared with
  other jobs, 1 thread avoids OpenMP barrier stalls that make multi-threaded timings erratic.
- latency, per batch size: "model" is a forward pass over a fixed batch of real windows cut to the
  batch's longest real window, as `compute_logits` cuts them (torch.inference_mode, autocast at the
  chosen precision; the width used is stored as settings.model_only_widths); "e2e" is tokenisation and
  windowing (`features.window_questions`: prepare_features' windowing without its datasets cache),
  compute_logits and postprocess_predictions for a fixed batch of questions. Teacher and student
  take turns (see `timing`).
- memory: peak memory of each model in a fresh subprocess (see `probe`).
- size: parameter count, and the summed size of the files in the model directory.
"""

from __future__ import annotations

import functools
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.bench.figures import compute_ratios, quality_em_f1
from distill.bench.probe import finish_probe, start_probe
from distill.bench.settings import ROLES, SCHEMA, BenchSettings, expected_settings, load_inputs
from distill.bench.timing import interleaved_timing, percentiles_ms
from distill.precision import cpu_kind, resolve


@dataclass
class _Bench:
    """What every measuring step shares: settings, data, the fixed batch, the device, the loaded models."""

    settings: BenchSettings
    window: Any
    examples: Any
    tokenizer: Any
    features: Any
    fixed: dict  # model inputs of the largest batch, as CPU tensors; smaller batches are its first rows
    device: Any
    dtype: Any
    bar: Any
    models: dict = field(default_factory=dict)

    @property
    def sources(self) -> dict:
        return {"teacher": self.settings.teacher, "student": self.settings.student}

    def take_turns(self, fn) -> dict[str, list[float]]:
        """interleaved_timing of fn(model) for both models, with the settings' limits."""
        import torch

        s = self.settings
        sync = (lambda: torch.cuda.synchronize(self.device)) if self.device.type == "cuda" else (lambda: None)
        return interleaved_timing({role: functools.partial(fn, self.models[role]) for role in ROLES},
                                  warmup=s.warmup, min_iters=s.min_iters, min_seconds=s.min_seconds,
                                  max_iters=s.max_iters, sync=sync)


def dir_size_bytes(source: str) -> int | None:
    path = Path(source)
    if not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _cycle(n_available: int, n: int) -> list[int]:
    """Row indices 0..n-1 wrapped around the available rows (a batch larger than the data repeats it)."""
    return [i % n_available for i in range(n)]


def _versions() -> dict:
    import torch
    import transformers

    import distill

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "distill": distill.__version__, "python": platform.python_version()}


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def run_bench(settings: BenchSettings, *, prepared=None) -> dict:
    """Measure both models (see module doc) and return the bench.json dict (not written).

    `prepared`: `load_inputs(settings)`'s result, when the caller already has it.
    """
    import torch

    from distill.models import resolve_source

    window, examples = prepared or load_inputs(settings)
    bench = _prepare(settings, window, examples)
    workdir = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    probes = {}
    try:
        if settings.memory:
            # started first, so both probes run while this process measures quality
            torch.save(dict(bench.fixed), workdir / "inputs.pt")
            for role in ROLES:
                probes[role] = start_probe(resolve_source(bench.sources[role]), workdir / "inputs.pt",
                                           precision=settings.precision, device=bench.device.type,
                                           threads=torch.get_num_threads())
        return _measure(bench, probes)
    finally:
        for proc in probes.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
        bench.bar.close()


def _prepare(settings: BenchSettings, window, examples) -> _Bench:
    """Device, threads, tokenizer, windowed features, the fixed batch, and the progress bar."""
    import torch
    from datasets import disable_progress_bars, enable_progress_bars
    from tqdm.auto import tqdm

    from distill.data.features import prepare_features
    from distill.models import load_tokenizer, tokenizers_compatible
    from distill.predict import model_input_columns

    compute = resolve(settings.precision, settings.device, what="bench precision")
    device = torch.device(settings.device or compute.device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    tokenizer = load_tokenizer(settings.teacher)
    tokenizers_compatible(tokenizer, load_tokenizer(settings.student), settings.teacher, settings.student)
    disable_progress_bars()
    try:
        features = prepare_features(examples, tokenizer, window)
    finally:
        enable_progress_bars()
    n_steps = 2 + 2 * len(settings.batch_sizes) + (1 if settings.memory else 0)
    bar = tqdm(total=n_steps, desc="bench", unit="step", disable=not settings.progress)
    cols = model_input_columns(features)
    fixed = features.select(_cycle(len(features), max(settings.batch_sizes))).with_format("torch", columns=cols)[:]
    return _Bench(settings=settings, window=window, examples=examples, tokenizer=tokenizer, features=features,
                  fixed=fixed, device=device, dtype=compute.dtype, bar=bar)


def _measure(bench: _Bench, probes: dict) -> dict:
    result = _header(bench)
    for role in ROLES:
        result["models"][role] = _quality(bench, role)
    if probes:
        bench.bar.set_postfix_str("memory probes")
        for role in ROLES:
            result["models"][role]["memory"] = finish_probe(probes[role], role)
        bench.bar.update(1)
    result["settings"]["model_only_widths"] = {}
    for bs in bench.settings.batch_sizes:
        _time_model_only(bench, bs, result)
        _time_end_to_end(bench, bs, result)
    result["ratios"] = compute_ratios(result)
    return result


def _header(bench: _Bench) -> dict:
    """bench.json without figures: schema, time, settings, environment."""
    import torch

    s, device = bench.settings, bench.device
    return {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": {**expected_settings(s, bench.examples), "n_features": len(bench.features),
                         "eval_batch_size": s.eval_batch_size, "warmup": s.warmup,
                         "min_iters": s.min_iters, "min_seconds": s.min_seconds},
            "env": {"device": str(device), "device_name": _device_name(device), "threads": torch.get_num_threads(),
                    "dtype": str(bench.dtype).replace("torch.", ""), **_versions(),
                    **({"cpu_kind": cpu_kind()} if device.type == "cpu" else {}),
                    "platform": platform.platform()},
            "models": {}, "ratios": {}}


def _quality(bench: _Bench, role: str) -> dict:
    """Load one model (kept in bench.models for timing), score it; its bench.json entry without timings."""
    from distill.models import load_qa_model, resolve_source
    from distill.predict import evaluate

    s, source = bench.settings, bench.sources[role]
    model = load_qa_model(source).to(bench.device).eval()
    bench.models[role] = model
    scores = evaluate(model, bench.examples, bench.features, batch_size=s.eval_batch_size, precision=s.precision,
                      device=bench.device, null_threshold=s.null_threshold, n_best_size=s.n_best_size,
                      max_answer_length=s.max_answer_length, progress=False, desc=f"{role} quality")
    em, f1 = quality_em_f1(scores)
    bench.bar.set_postfix_str(f"{role} F1 {f1:.2f}")
    bench.bar.update(1)
    return {"source": source, "params": sum(p.numel() for p in model.parameters()),
            "size_bytes": dir_size_bytes(resolve_source(source)), "quality": scores, "em": em, "f1": f1,
            "latency": {"model": {}, "e2e": {}}, "memory": {}}


def _store_latency(bench: _Bench, result: dict, samples: dict, mode: str, bs: int, per_s: str) -> None:
    for role in ROLES:
        stats = percentiles_ms(samples[role])
        stats[per_s] = round(bs / (stats["mean_ms"] / 1000.0), 3)
        result["models"][role]["latency"][mode][str(bs)] = stats
    bench.bar.update(1)


def _time_model_only(bench: _Bench, bs: int, result: dict) -> None:
    """Forward passes over the fixed batch's first `bs` windows."""
    import torch

    from distill.batching import trim_padding

    # padding past the longest real window is never computed in eval or e2e: timing it would make
    # model-only slower than end-to-end
    batch = {k: v.to(bench.device) for k, v in trim_padding({k: v[:bs] for k, v in bench.fixed.items()}).items()}
    result["settings"]["model_only_widths"][str(bs)] = batch["input_ids"].shape[1]
    autocast = bench.dtype != torch.float32

    def forward(model):
        with torch.inference_mode(), torch.autocast(bench.device.type, dtype=bench.dtype, enabled=autocast):
            model(**batch)

    bench.bar.set_postfix_str(f"model-only bs={bs}")
    _store_latency(bench, result, bench.take_turns(forward), "model", bs, "windows_per_s")


def _time_end_to_end(bench: _Bench, bs: int, result: dict) -> None:
    """Windowing, forward and post-processing of `bs` questions (the data repeated when it has fewer)."""
    from distill.data.features import window_questions
    from distill.postprocess import postprocess_predictions
    from distill.predict import compute_logits

    s, examples = bench.settings, bench.examples
    rows = examples.select(_cycle(len(examples), bs)).to_dict()
    if bs > len(examples):  # repeated questions need distinct ids for post-processing
        rows["id"] = [f"{qid}#{i}" for i, qid in enumerate(rows["id"])]
    version_2 = result["settings"]["version"] == "2.0"

    def end_to_end(model):
        feats = window_questions(rows, bench.tokenizer, bench.window)
        start, end = compute_logits(model, feats, batch_size=max(bs, len(feats)), precision=s.precision,
                                    device=bench.device, progress=False)
        postprocess_predictions(rows, feats, start, end, n_best_size=s.n_best_size,
                                max_answer_length=s.max_answer_length, version_2=version_2,
                                null_threshold=s.null_threshold)

    bench.bar.set_postfix_str(f"end-to-end bs={bs}")
    _store_latency(bench, result, bench.take_turns(end_to_end), "e2e", bs, "questions_per_s")
