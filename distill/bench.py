"""`distill bench`: quality, latency, throughput, memory and size of a teacher and its student.

Reads: a teacher and a student model (directories or hub ids), SQuAD evaluation data, settings.
Writes: OUT/bench.json (every figure, the environment and the settings), OUT/bench.md (tables),
OUT/bench.png (latency vs batch size, EM/F1 bars).

How each figure is measured:
- quality: `predict.predict` + `metrics.score_examples`, the code path of `distill eval`; the score
  dicts are stored with the keys `distill score` prints (v1.1 exact_match/f1, v2.0 exact/f1/HasAns_...).
- threads: torch's intra-op threads (--threads; torch's default otherwise). On a machine shared with
  other jobs, 1 thread avoids OpenMP barrier stalls that make multi-threaded timings erratic.
- latency, per batch size: "model" is a forward pass over a fixed batch of real windows cut to the
  batch's longest real window, as `compute_logits` cuts them (torch.inference_mode, autocast at the
  chosen precision; the width used is stored as settings.model_only_widths); "e2e" is tokenisation and
  windowing (prepare_features' windowing, without its datasets cache), compute_logits and
  postprocess_predictions for a fixed batch of questions. After warm-up, teacher and student
  iterations are interleaved until each has min_iters samples and min_seconds of measured time,
  so load from other processes hits both models alike and their ratio stays meaningful.
- memory: each model is loaded in a fresh subprocess (so nothing the other model or the parent left
  in the allocator is reused); after imports and input loading the kernel's peak-RSS mark is reset
  (/proc/self/clear_refs), then the model is loaded and run at the largest batch size; the figure is
  peak RSS (VmHWM; ru_maxrss where /proc is unavailable) minus RSS before loading. The probe fixes
  glibc's MALLOC_MMAP_THRESHOLD_ at 64 KiB (unless set): glibc's moving threshold made freed
  activations stay resident in some runs and not others (one model: 216-282 MB; fixed: within 0.5 MB).
  Weights are memory-mapped from safetensors and count once touched, so embedding rows the batch
  does not use stay out (params and size_bytes give the whole). On CUDA it is
  torch.cuda.max_memory_allocated over the same steps.
- size: parameter count, and the summed size of the files in the model directory.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.errors import InputError
from distill.files import sha256_file
from distill.precision import cpu_kind, resolve

SCHEMA = "distill-bench/1"
ROLES = ("teacher", "student")
PERCENTILES = (50, 90, 99)


@dataclass
class BenchSettings:
    teacher: str
    student: str
    data: str
    out: Path
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    seq_len: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    max_questions: int | None = None
    data_split: str = "validation"
    precision: str = "fp32"
    device: str | None = None
    threads: int | None = None
    eval_batch_size: int = 32
    n_best_size: int = 20
    max_answer_length: int = 30
    null_threshold: float = 0.0
    warmup: int = 2
    min_iters: int = 10
    min_seconds: float = 1.0
    max_iters: int = 100_000
    memory: bool = True
    progress: bool = True


# ---------------------------------------------------------------- small helpers


def quality_em_f1(scores: dict) -> tuple[float, float]:
    """(EM, F1) from a `distill score` dict: v1.1 says exact_match, v2.0 says exact."""
    em = scores.get("exact_match", scores.get("exact"))
    if em is None or "f1" not in scores:
        raise KeyError("score dict without exact_match/exact and f1")
    return float(em), float(scores["f1"])


def percentiles_ms(samples: list[float]) -> dict:
    arr = np.asarray(samples, dtype=np.float64) * 1000.0
    out = {f"p{p}_ms": round(float(np.percentile(arr, p)), 4) for p in PERCENTILES}
    out["mean_ms"] = round(float(arr.mean()), 4)
    out["iters"] = len(samples)
    return out


def dir_size_bytes(source: str) -> int | None:
    path = Path(source)
    if not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def data_identity(source: str, split: str) -> dict:
    """What makes two benches' data the same: the file's sha256, or the hub id and split."""
    path = Path(source).expanduser()
    if path.is_file():
        return {"source": source, "sha256": sha256_file(path)}
    return {"source": source, "split": split}


def _ratio(student, teacher):
    if student is None or teacher is None or teacher == 0:
        return None
    return round(student / teacher, 6)


def _versions() -> dict:
    import torch
    import transformers

    import distill

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "distill": distill.__version__, "python": platform.python_version()}


def _cycle(n_available: int, n: int) -> list[int]:
    """Row indices 0..n-1 wrapped around the available rows (a batch larger than the data repeats it)."""
    return [i % n_available for i in range(n)]


# ---------------------------------------------------------------- memory probe (subprocess)

PROBE_MMAP_THRESHOLD = 64 * 1024  # bytes; see the module docstring


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


def _probe(model_dir: str, inputs_file: str, precision: str, device: str, threads: int) -> dict:
    """Runs in a fresh interpreter: memory attributable to loading and running one model."""
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
    import gc

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


def _start_probe(model_dir: str, inputs_file: Path, settings: BenchSettings, device: str, threads: int):
    cmd = [sys.executable, "-m", "distill.bench", "probe", model_dir, str(inputs_file), settings.precision,
           device, str(threads)]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(PROBE_MMAP_THRESHOLD))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish_probe(proc, role: str) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        tail = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
        raise RuntimeError(f"memory probe for the {role} failed: {tail}")
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------- timing


def _timed(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def interleaved_timing(fns: dict, *, warmup: int, min_iters: int, min_seconds: float, max_iters: int = 100_000,
                       sync=lambda: None) -> dict[str, list[float]]:
    """Warm up every fn, then alternate them until each has min_iters samples and min_seconds of time."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    while True:
        for key, fn in fns.items():
            samples[key].append(_timed(fn, sync))
        done = all(len(s) >= min_iters and sum(s) >= min_seconds for s in samples.values())
        if done or len(next(iter(samples.values()))) >= max_iters:
            return samples


def _timing_limits(settings: BenchSettings) -> dict:
    return {"warmup": settings.warmup, "min_iters": settings.min_iters, "min_seconds": settings.min_seconds,
            "max_iters": settings.max_iters}


# ---------------------------------------------------------------- the bench


def _load_inputs(settings: BenchSettings):
    from distill.data.features import WindowConfig
    from distill.data.squad import load_squad, take_questions
    from pydantic import ValidationError

    try:
        window = WindowConfig(max_seq_length=settings.seq_len, doc_stride=settings.doc_stride,
                              max_query_length=settings.max_query_length)
    except ValidationError as err:
        raise InputError("window settings: " + "; ".join(e["msg"] for e in err.errors())) from None
    examples = load_squad(settings.data, split=settings.data_split)
    if settings.max_questions:
        examples = take_questions(examples, settings.max_questions)
    return window, examples


def expected_settings(settings: BenchSettings, examples) -> dict:
    """The part of bench.json that must match a baseline for the comparison to mean anything."""
    from distill.data.squad import squad_version

    return {
        "data": data_identity(settings.data, settings.data_split),
        "n_questions": len(examples),
        "version": squad_version(examples),
        "seq_len": settings.seq_len,
        "doc_stride": settings.doc_stride,
        "max_query_length": settings.max_query_length,
        "batch_sizes": list(settings.batch_sizes),
        # resolved: `auto` is bf16 on one CPU and fp32 on another, and those runs are not comparable
        "precision": resolve(settings.precision, settings.device, quiet=True).precision,
    }


def run_bench(settings: BenchSettings, *, prepared=None) -> dict:
    """Measure both models (see module doc) and return the bench.json dict (not written)."""
    import torch
    from datasets import disable_progress_bars, enable_progress_bars
    from tqdm.auto import tqdm

    from distill.data.features import prepare_features
    from distill.models import load_tokenizer, resolve_source, tokenizers_compatible
    from distill.predict import model_input_columns

    window, examples = prepared or _load_inputs(settings)
    compute = resolve(settings.precision, settings.device, what="bench precision")
    device = torch.device(settings.device or compute.device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    dtype = compute.dtype
    threads = torch.get_num_threads()
    sources = {"teacher": settings.teacher, "student": settings.student}
    tokenizer = load_tokenizer(settings.teacher)
    tokenizers_compatible(tokenizer, load_tokenizer(settings.student), settings.teacher, settings.student)

    disable_progress_bars()
    try:
        features = prepare_features(examples, tokenizer, window)
    finally:
        enable_progress_bars()
    n_steps = 2 + 2 * len(settings.batch_sizes) + (1 if settings.memory else 0)
    bar = tqdm(total=n_steps, desc="bench", unit="step", disable=not settings.progress)

    max_bs = max(settings.batch_sizes)
    cols = model_input_columns(features)
    fixed = features.select(_cycle(len(features), max_bs)).with_format("torch", columns=cols)[:]
    workdir = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    probes = {}
    try:
        if settings.memory:
            torch.save({k: v for k, v in fixed.items()}, workdir / "inputs.pt")
            for role in ROLES:
                probes[role] = _start_probe(resolve_source(sources[role]), workdir / "inputs.pt", settings,
                                            device.type, threads)
        return _measure(settings, examples, features, fixed, tokenizer, window, device, dtype, threads, sources,
                        probes, bar)
    finally:
        for proc in probes.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
        bar.close()


def _measure(settings, examples, features, fixed, tokenizer, window, device, dtype, threads, sources, probes, bar):
    import torch

    from distill.metrics import score_examples
    from distill.models import load_qa_model, resolve_source
    from distill.postprocess import postprocess_predictions
    from distill.predict import compute_logits, predict
    from distill.train import trim_padding

    result: dict = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "settings": {**expected_settings(settings, examples), "n_features": len(features),
                                 "eval_batch_size": settings.eval_batch_size, "warmup": settings.warmup,
                                 "min_iters": settings.min_iters, "min_seconds": settings.min_seconds},
                    "env": {"device": str(device), "device_name": _device_name(device), "threads": threads,
                            "dtype": str(dtype).replace("torch.", ""), **_versions(),
                            **({"cpu_kind": cpu_kind()} if device.type == "cpu" else {}),
                            "platform": platform.platform()},
                    "models": {}, "ratios": {}}
    models = {}
    for role in ROLES:
        model = load_qa_model(sources[role]).to(device).eval()
        models[role] = model
        preds, na_probs, version = predict(model, examples, features, batch_size=settings.eval_batch_size,
                                           precision=settings.precision, null_threshold=settings.null_threshold,
                                           n_best_size=settings.n_best_size,
                                           max_answer_length=settings.max_answer_length, progress=False)
        scores = score_examples(examples, preds, na_probs=na_probs or None, version=version)
        em, f1 = quality_em_f1(scores)
        result["models"][role] = {
            "source": sources[role], "params": sum(p.numel() for p in model.parameters()),
            "size_bytes": dir_size_bytes(resolve_source(sources[role])), "quality": scores, "em": em, "f1": f1,
            "latency": {"model": {}, "e2e": {}}, "memory": {},
        }
        bar.set_postfix_str(f"{role} F1 {f1:.2f}")
        bar.update(1)

    if probes:
        bar.set_postfix_str("memory probes")
        for role in ROLES:
            result["models"][role]["memory"] = _finish_probe(probes[role], role)
        bar.update(1)

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    autocast = dtype != torch.float32
    result["settings"]["model_only_widths"] = {}
    for bs in settings.batch_sizes:
        # padding past the longest real window is never computed in eval or e2e: timing it would make
        # model-only slower than end-to-end
        batch = {k: v.to(device) for k, v in trim_padding({k: v[:bs] for k, v in fixed.items()}).items()}
        result["settings"]["model_only_widths"][str(bs)] = batch["input_ids"].shape[1]

        def forward(model=None, batch=batch):
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=autocast):
                model(**batch)

        bar.set_postfix_str(f"model-only bs={bs}")
        fns = {role: (lambda m=models[role]: forward(m)) for role in ROLES}
        samples = interleaved_timing(fns, **_timing_limits(settings), sync=sync)
        for role in ROLES:
            stats = percentiles_ms(samples[role])
            stats["windows_per_s"] = round(bs / (stats["mean_ms"] / 1000.0), 3)
            result["models"][role]["latency"]["model"][str(bs)] = stats
        bar.update(1)

        rows = examples.select(_cycle(len(examples), bs)).to_dict()
        if bs > len(examples):  # repeated questions need distinct ids for post-processing
            rows["id"] = [f"{qid}#{i}" for i, qid in enumerate(rows["id"])]

        def end_to_end(model, rows=rows):
            feats = window_questions(rows, tokenizer, window)
            start, end = compute_logits(model, feats, batch_size=max(bs, len(feats)), precision=settings.precision,
                                        device=device, progress=False)
            postprocess_predictions(rows, feats, start, end, n_best_size=settings.n_best_size,
                                    max_answer_length=settings.max_answer_length,
                                    version_2=result["settings"]["version"] == "2.0",
                                    null_threshold=settings.null_threshold)

        bar.set_postfix_str(f"end-to-end bs={bs}")
        samples = interleaved_timing({role: (lambda m=models[role]: end_to_end(m)) for role in ROLES},
                                     **_timing_limits(settings), sync=sync)
        for role in ROLES:
            stats = percentiles_ms(samples[role])
            stats["questions_per_s"] = round(bs / (stats["mean_ms"] / 1000.0), 3)
            result["models"][role]["latency"]["e2e"][str(bs)] = stats
        bar.update(1)
    result["ratios"] = compute_ratios(result)
    return result


def window_questions(rows: dict, tokenizer, window):
    """prepare_features' windowing for one batch of questions, as an in-memory Dataset.

    `prepare_features` itself runs `Dataset.map`, whose fingerprint hashes the whole tokenizer
    (~0.2 s a call): paid once per dataset in `distill eval`, it would swamp a per-batch latency.
    """
    from datasets import Dataset

    from distill.data.features import _feature_types, _window_batch

    with_token_types = "token_type_ids" in tokenizer.model_input_names
    columns = _window_batch(rows, tokenizer, window.max_seq_length, window.doc_stride, window.max_query_length,
                            with_token_types)
    return Dataset.from_dict(columns, features=_feature_types(with_token_types))


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def compute_ratios(bench: dict) -> dict:
    """Student/teacher for every figure; None where the teacher's figure is 0 or missing."""
    t, s = bench["models"]["teacher"], bench["models"]["student"]
    ratios = {
        "em_retention": _ratio(s["em"], t["em"]),
        "f1_retention": _ratio(s["f1"], t["f1"]),
        "params": _ratio(s["params"], t["params"]),
        "size": _ratio(s.get("size_bytes"), t.get("size_bytes")),
        "memory": _ratio(memory_figure(s), memory_figure(t)),
    }
    for mode, thr in (("model", "windows_per_s"), ("e2e", "questions_per_s")):
        for bs, ts in t["latency"][mode].items():
            ss = s["latency"][mode].get(bs)
            if ss is None:
                continue
            for p in PERCENTILES:
                ratios[f"{mode}.bs{bs}.p{p}_latency"] = _ratio(ss[f"p{p}_ms"], ts[f"p{p}_ms"])
            ratios[f"{mode}.bs{bs}.throughput"] = _ratio(ss[thr], ts[thr])
    return ratios


def memory_figure(model_entry: dict) -> float | None:
    """The memory figure that ratios use: CUDA peak on GPU, RSS growth on CPU."""
    mem = model_entry.get("memory") or {}
    return mem.get("cuda_peak_allocated_mb", mem.get("peak_rss_growth_mb"))


# ---------------------------------------------------------------- outputs


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(bench: dict) -> str:
    t, s = bench["models"]["teacher"], bench["models"]["student"]
    st, env, r = bench["settings"], bench["env"], bench["ratios"]
    lines = [
        "# distill bench",
        "",
        f"- teacher: `{t['source']}`",
        f"- student: `{s['source']}`",
        f"- data: `{st['data']['source']}` ({st['n_questions']} questions, {st['n_features']} windows,"
        f" SQuAD v{st['version']}), seq_len {st['seq_len']}",
        f"- device: {env['device']} ({env['device_name']}{', ' + env['cpu_kind'] if 'cpu_kind' in env else ''}),"
        f" {env['threads']} threads, {env['dtype']}",
        f"- versions: torch {env['torch']}, transformers {env['transformers']}, distill {env['distill']},"
        f" python {env['python']}",
        "",
        "## Quality",
        "",
        "| model | EM | F1 |",
        "|---|---:|---:|",
        f"| teacher | {_fmt(t['em'])} | {_fmt(t['f1'])} |",
        f"| student | {_fmt(s['em'])} | {_fmt(s['f1'])} |",
        f"| retention (student/teacher) | {_fmt(r['em_retention'], 3)} | {_fmt(r['f1_retention'], 3)} |",
        "",
        "## Size and memory",
        "",
        "| figure | teacher | student | student/teacher |",
        "|---|---:|---:|---:|",
        f"| parameters | {t['params']:,} | {s['params']:,} | {_fmt(r['params'], 3)} |",
        f"| size on disk (MB) | {_fmt(_mb(t.get('size_bytes')))} | {_fmt(_mb(s.get('size_bytes')))} |"
        f" {_fmt(r['size'], 3)} |",
        f"| peak memory growth (MB) | {_fmt(memory_figure(t))} | {_fmt(memory_figure(s))} | {_fmt(r['memory'], 3)} |",
        "",
    ]
    for mode, title, thr, unit in (("model", "Latency, model only (forward over a fixed batch of windows, cut to its"
                                             " longest real window)", "windows_per_s", "windows/s"),
                                   ("e2e", "Latency, end to end (windowing + forward + post-processing)",
                                    "questions_per_s", "questions/s")):
        lines += [f"## {title}", "",
                  f"| batch | teacher p50 / p90 / p99 ms | student p50 / p90 / p99 ms | p50 ratio |"
                  f" teacher {unit} | student {unit} | throughput ratio | iters |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for bs, ts in t["latency"][mode].items():
            ss = s["latency"][mode][bs]
            trio = lambda x: " / ".join(_fmt(x[f"p{p}_ms"]) for p in PERCENTILES)
            lines.append(f"| {bs} | {trio(ts)} | {trio(ss)} | {_fmt(r.get(f'{mode}.bs{bs}.p50_latency'), 3)} |"
                         f" {_fmt(ts[thr])} | {_fmt(ss[thr])} | {_fmt(r.get(f'{mode}.bs{bs}.throughput'), 3)} |"
                         f" {ts['iters']}/{ss['iters']} |")
        lines.append("")
    method = (t.get("memory") or {}).get("peak_method", "not measured")
    lines += ["Method: after warm-up, teacher and student iterations alternate (same load on both);"
              f" at least {st['min_iters']} iterations and {st['min_seconds']} s each. Memory: each model in a"
              f" fresh process, peak minus RSS before loading ({method}).", ""]
    return "\n".join(lines)


def _mb(n):
    return None if n is None else n / 2**20


def render_plot(bench: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lat, ax_q) = plt.subplots(1, 2, figsize=(11, 4.2))
    for role, color in (("teacher", "tab:blue"), ("student", "tab:orange")):
        lat = bench["models"][role]["latency"]
        for mode, style in (("model", "-o"), ("e2e", "--s")):
            bss = sorted(lat[mode], key=int)
            ax_lat.plot([int(b) for b in bss], [lat[mode][b]["p50_ms"] for b in bss], style, color=color,
                        label=f"{role} {'model only' if mode == 'model' else 'end to end'}")
    ax_lat.set_xscale("log", base=2)
    ax_lat.set_xlabel("batch size")
    ax_lat.set_ylabel("p50 latency per batch (ms)")
    ax_lat.set_title("Latency vs batch size")
    ax_lat.legend(fontsize=8)
    x = np.arange(2)
    for i, role in enumerate(ROLES):
        m = bench["models"][role]
        bars = ax_q.bar(x + (i - 0.5) * 0.38, [m["em"], m["f1"]], 0.38, label=role)
        ax_q.bar_label(bars, fmt="%.1f", fontsize=8)
    ax_q.set_xticks(x, ["EM", "F1"])
    ax_q.set_ylim(0, 100)
    ax_q.set_title("Quality")
    ax_q.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(bench: dict, out: Path) -> dict[str, Path]:
    from distill.predict import write_json

    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "md": out / "bench.md", "png": out / "bench.png"}
    write_json(paths["json"], bench)
    paths["md"].write_text(render_markdown(bench))
    render_plot(bench, paths["png"])
    return paths


# ---------------------------------------------------------------- run directories


def settings_from_run_dir(run_dir: Path) -> tuple[dict, "object"]:
    """(BenchSettings keyword arguments, BenchGate) for `distill bench RUN_DIR`."""
    from distill.recipe import load_recipe

    resolved = run_dir / "recipe.resolved.yaml"
    if not resolved.is_file():
        raise InputError(f"{run_dir}: not a distill run directory (no recipe.resolved.yaml)")
    recipe = load_recipe(resolved)
    metrics_file = run_dir / "metrics.json"
    metrics = {}
    if metrics_file.is_file():
        try:
            metrics = json.loads(metrics_file.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{metrics_file}: malformed JSON: {err.msg}") from None
    # The run may have fine-tuned the teacher into the cache; metrics.json says where.
    teacher = metrics.get("teacher_dir") or recipe.teacher.model
    student = run_dir / "student"
    if not (student / "config.json").is_file():
        raise InputError(f"{run_dir}: no trained student in {student} (has the run finished?)")
    w = recipe.data.window
    kwargs = dict(teacher=str(teacher), student=str(student), data=recipe.data.eval,
                  data_split=recipe.data.eval_split, max_questions=recipe.data.eval_questions,
                  seq_len=w.max_seq_length, doc_stride=w.doc_stride, max_query_length=w.max_query_length,
                  precision=recipe.eval.precision, eval_batch_size=recipe.eval.batch_size,
                  n_best_size=recipe.eval.n_best_size, max_answer_length=recipe.eval.max_answer_length,
                  null_threshold=recipe.eval.null_threshold)
    return kwargs, recipe.bench


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "probe":
        _, _, model_dir, inputs_file, precision, device, threads = sys.argv
        print(json.dumps(_probe(model_dir, inputs_file, precision, device, int(threads))))
    else:
        sys.exit("usage: python -m distill.bench probe MODEL_DIR INPUTS_PT PRECISION DEVICE THREADS")
