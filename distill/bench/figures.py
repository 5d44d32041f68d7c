"""Figures derived from a bench.json dict: EM/F1 of a score dict, the memory figure, student/teacher ratios.

Reads and writes nothing; `distill report` uses the same functions, so a bench and its report agree.
"""

from __future__ import annotations

from distill.bench.timing import PERCENTILES


def quality_em_f1(scores: dict) -> tuple[float, float]:
    """(EM, F1) from a `distill score` dict: v1.1 says exact_match, v2.0 says exact."""
    em = scores.get("exact_match", scores.get("exact"))
    if em is None or "f1" not in scores:
        raise KeyError("score dict without exact_match/exact and f1")
    return float(em), float(scores["f1"])


def memory_figure(model_entry: dict) -> float | None:
    """The memory figure that ratios use: CUDA peak on GPU, RSS growth on CPU."""
    mem = model_entry.get("memory") or {}
    return mem.get("cuda_peak_allocated_mb", mem.get("peak_rss_growth_mb"))


def _ratio(student, teacher):
    if student is None or teacher is None or teacher == 0:
        return None
    return round(student / teacher, 6)


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
