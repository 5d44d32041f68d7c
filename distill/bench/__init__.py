"""`distill bench`: quality, latency, throughput, memory and size of a teacher and its student.

Reads: a teacher and a student model (directories or hub ids), SQuAD evaluation data, settings (or a
`distill run` directory that supplies them). Writes: OUT/bench.json (every figure, the environment and
the settings), OUT/bench.md (tables), OUT/bench.png (latency vs batch size, EM/F1 bars).

Modules: `settings` (what to measure, run-directory reading), `measure` (run_bench: quality, latency,
size), `timing` (interleaved timing, percentiles), `probe` (peak memory in a subprocess, run as
`python -m distill.bench probe ...`), `figures` (ratios derived from a bench dict), `render` (the three
output files). Each module's docstring says how its figures are measured.
"""

from distill.bench.figures import compute_ratios, memory_figure, quality_em_f1
from distill.bench.measure import run_bench
from distill.bench.render import render_markdown, render_plot, write_outputs
from distill.bench.settings import (ROLES, SCHEMA, BenchSettings, expected_settings, load_inputs,
                                    settings_from_run_dir)
from distill.bench.timing import interleaved_timing, percentiles_ms

__all__ = ["BenchSettings", "ROLES", "SCHEMA", "compute_ratios", "expected_settings", "interleaved_timing",
           "load_inputs", "memory_figure", "percentiles_ms", "quality_em_f1", "render_markdown", "render_plot",
           "run_bench", "settings_from_run_dir", "write_outputs"]
