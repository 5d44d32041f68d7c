"""bench.json, bench.md and bench.png from a bench dict.

Reads: the dict `run_bench` returns. Writes (`write_outputs`): OUT/bench.json (every figure, the
environment and the settings), OUT/bench.md (tables), OUT/bench.png (latency vs batch size, EM/F1
bars), each atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distill.bench.figures import memory_figure
from distill.bench.settings import ROLES
from distill.bench.timing import PERCENTILES
from distill.files import atomic_open, write_json, write_text


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _mb(n):
    return None if n is None else n / 2**20


def _summary_lines(bench: dict) -> list[str]:
    t, s = bench["models"]["teacher"], bench["models"]["student"]
    st, env, r = bench["settings"], bench["env"], bench["ratios"]
    return [
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


def _latency_lines(bench: dict) -> list[str]:
    t, s, r = bench["models"]["teacher"], bench["models"]["student"], bench["ratios"]
    lines = []
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
    return lines


def render_markdown(bench: dict) -> str:
    """bench.md: settings, quality, size and memory, latency tables, and how they were measured."""
    st = bench["settings"]
    method = (bench["models"]["teacher"].get("memory") or {}).get("peak_method", "not measured")
    lines = _summary_lines(bench) + _latency_lines(bench)
    lines += ["Method: after warm-up, teacher and student iterations alternate (same load on both);"
              f" at least {st['min_iters']} iterations and {st['min_seconds']} s each. Memory: each model in a"
              f" fresh process, peak minus RSS before loading ({method}).", ""]
    return "\n".join(lines)


def render_plot(bench: dict, path: Path) -> None:
    """bench.png: p50 latency vs batch size (both models, both modes) and EM/F1 bars."""
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
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def write_outputs(bench: dict, out: Path) -> dict[str, Path]:
    """Write OUT/bench.json, bench.md and bench.png; returns their paths by kind (json, md, png)."""
    paths = {"json": out / "bench.json", "md": out / "bench.md", "png": out / "bench.png"}
    write_json(paths["json"], bench)
    write_text(paths["md"], render_markdown(bench))
    render_plot(bench, paths["png"])
    return paths
