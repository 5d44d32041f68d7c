"""`distill report`: compare two bench.json files and decide whether the new one regressed.

Reads: OLD (baseline) and NEW bench.json from `distill bench`. Writes: report.md (a GitHub step
summary: one row per figure with old, new, delta and verdict, then a one-line overall verdict);
the caller turns `Comparison.regressed` into exit code 1.

Rules (tolerances from the recipe's `bench` section, see recipe.BenchGate):
- quality: the student's and the teacher's EM and F1 may drop by at most max_em_drop / max_f1_drop
  points (absolute);
- speed, memory and size: only student/teacher ratios measured in the same run are judged, because
  both models saw the same machine and load. A ratio regresses when it moves the bad way by more
  than max_ratio_increase relative (memory, params, size up; throughput down). Speed is judged by
  the throughput ratio (from mean latency): on a shared machine per-iteration times are often
  bimodal (descheduled or not), and a percentile jumps between the modes while the mean moves
  smoothly. Latency percentile ratios (p50/p90/p99) are shown without a verdict;
- absolute times and sizes are shown for reading, never judged across runs.
Two files are comparable only when they measured the same data, windowing and precision; otherwise
the comparison is refused with an InputError naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import InputError

OK, REGRESSION, IMPROVED, INFO, MISSING = "ok", "**REGRESSION**", "improved", "info", "not compared"
# These settings must be equal for figures to be comparable at all.
COMPARABLE_KEYS = ("data", "n_questions", "version", "seq_len", "doc_stride", "max_query_length", "precision")
REQUIRED_MODEL_KEYS = ("em", "f1", "params", "latency")


@dataclass
class Row:
    figure: str
    old: float | None
    new: float | None
    kind: str  # "points" (absolute delta), "ratio" (relative, judged) or "info" (relative, not judged)
    verdict: str
    unit: str = ""

    @property
    def delta(self) -> str:
        if self.old is None or self.new is None:
            return ""
        if self.kind == "points":
            return f"{self.new - self.old:+.2f}"
        if self.old == 0:
            return "n/a"
        return f"{(self.new / self.old - 1) * 100:+.1f}%"


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == REGRESSION]

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    @property
    def judged(self) -> int:
        return sum(r.verdict in (OK, REGRESSION, IMPROVED) for r in self.rows)

    def verdict_line(self) -> str:
        if self.regressed:
            names = ", ".join(r.figure for r in self.regressions)
            return f"**Verdict: REGRESSION** in {len(self.regressions)} of {self.judged} judged figures: {names}"
        return f"**Verdict: OK**: no regression in {self.judged} judged figures"


# ---------------------------------------------------------------- loading and checking


def load_bench(path: str | Path) -> dict:
    """Read and structurally check a bench.json; InputError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: bench JSON not found")
    try:
        bench = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    check_bench(bench, path)
    return bench


def check_bench(bench, path) -> None:
    from distill.bench import SCHEMA

    if not isinstance(bench, dict) or bench.get("schema") != SCHEMA:
        got = bench.get("schema") if isinstance(bench, dict) else type(bench).__name__
        raise InputError(f"{path}: not a distill bench.json (schema {got!r}, expected {SCHEMA!r})")
    for key in ("settings", "models", "env"):
        if not isinstance(bench.get(key), dict):
            raise InputError(f"{path}: missing section '{key}'")
    for key in COMPARABLE_KEYS:
        if key not in bench["settings"]:
            raise InputError(f"{path}: missing key settings.{key}")
    for role in ("teacher", "student"):
        entry = bench["models"].get(role)
        if not isinstance(entry, dict):
            raise InputError(f"{path}: missing key models.{role}")
        for key in REQUIRED_MODEL_KEYS:
            if key not in entry:
                raise InputError(f"{path}: missing key models.{role}.{key}")
        for key in ("em", "f1", "params"):
            if not isinstance(entry[key], (int, float)) or isinstance(entry[key], bool):
                raise InputError(f"{path}: models.{role}.{key} must be a number, got {entry[key]!r}")
        for mode in ("model", "e2e"):
            if not isinstance(entry["latency"].get(mode), dict):
                raise InputError(f"{path}: missing key models.{role}.latency.{mode}")


def check_comparable(old: dict, new: dict, old_name, new_name) -> None:
    """Refuse to compare benches of different data, windowing or precision."""
    diffs = [f"{key} {old['settings'][key]!r} vs {new['settings'][key]!r}"
             for key in COMPARABLE_KEYS if _identity(old["settings"][key]) != _identity(new["settings"][key])]
    if diffs:
        raise InputError(f"{new_name}: not comparable with baseline {old_name}: {'; '.join(diffs)}")


def _identity(value):
    # Data is the same when its bytes are, wherever the file lives.
    if isinstance(value, dict) and "sha256" in value:
        return value["sha256"]
    return value


def check_settings_comparable(old: dict, new_settings: dict, old_name, new_name) -> None:
    check_comparable(old, {"settings": new_settings}, old_name, new_name)


# ---------------------------------------------------------------- comparison


def _get(d: dict, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _ratio_verdict(old, new, lower_is_better: bool, margin: float) -> str:
    if old is None or new is None:
        return MISSING
    if old <= 0 or new <= 0:
        return OK if old == new else MISSING
    worse = new / old - 1 if lower_is_better else old / new - 1
    if worse > margin:
        return REGRESSION
    if -worse > margin / (1 + margin):
        return IMPROVED
    return OK


def _points_verdict(old, new, max_drop: float) -> str:
    if old is None or new is None:
        return MISSING
    if old - new > max_drop + 1e-9:
        return REGRESSION
    if new - old > max_drop:
        return IMPROVED
    return OK


def compare(old: dict, new: dict, gate) -> Comparison:
    """Every figure of OLD against NEW with a verdict (see module doc); `gate` is a recipe.BenchGate."""
    from distill.bench import compute_ratios, memory_figure

    c = Comparison()
    for role in ("student", "teacher"):
        for key, label, drop in (("f1", "F1", gate.max_f1_drop), ("em", "EM", gate.max_em_drop)):
            o, n = old["models"][role][key], new["models"][role][key]
            c.rows.append(Row(f"{role} {label}", o, n, "points", _points_verdict(o, n, drop)))

    ro, rn = compute_ratios(old), compute_ratios(new)
    m = gate.max_ratio_increase
    judged = [("params", "params ratio", True), ("size", "size-on-disk ratio", True),
              ("memory", "peak-memory ratio", True)]
    for key, label, lower in judged:
        c.rows.append(Row(label, ro.get(key), rn.get(key), "ratio", _ratio_verdict(ro.get(key), rn.get(key), lower, m)))
    for mode, name in (("model", "model-only"), ("e2e", "end-to-end")):
        sizes = sorted(set(old["models"]["teacher"]["latency"][mode]) | set(new["models"]["teacher"]["latency"][mode]),
                       key=int)
        for bs in sizes:
            k = f"{mode}.bs{bs}.throughput"
            c.rows.append(Row(f"{name} throughput ratio, batch {bs}", ro.get(k), rn.get(k), "ratio",
                              _ratio_verdict(ro.get(k), rn.get(k), False, m)))
            for p in (50, 90, 99):
                k = f"{mode}.bs{bs}.p{p}_latency"
                c.rows.append(Row(f"{name} p{p} latency ratio, batch {bs}", ro.get(k), rn.get(k), "info", INFO))
    for key, label in (("f1_retention", "F1 retention"), ("em_retention", "EM retention")):
        c.rows.append(Row(label, ro.get(key), rn.get(key), "info", INFO))
    for role in ("teacher", "student"):
        for mode, name in (("model", "model-only"), ("e2e", "end-to-end")):
            for bs in sorted(new["models"][role]["latency"][mode], key=int):
                o, n = (_get(b, "models", role, "latency", mode, bs, "p50_ms") for b in (old, new))
                c.rows.append(Row(f"{role} {name} p50 ms, batch {bs}", o, n, "info", INFO))
        c.rows.append(Row(f"{role} peak memory MB", memory_figure(old["models"][role]),
                          memory_figure(new["models"][role]), "info", INFO))

    for key in ("device", "threads", "dtype", "torch", "transformers"):
        o, n = old["env"].get(key), new["env"].get(key)
        if o != n:
            c.notes.append(f"{key} differs: {o} (old) vs {n} (new); ratios are still judged, absolute figures are not.")
    return c


# ---------------------------------------------------------------- rendering


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def render_report(c: Comparison, old_name, new_name, gate) -> str:
    lines = [
        "## distill bench: regression report",
        "",
        c.verdict_line(),
        "",
        f"Baseline `{old_name}` vs new `{new_name}`. Tolerances: F1 drop <= {gate.max_f1_drop}, EM drop <="
        f" {gate.max_em_drop} points; student/teacher ratios may worsen by <= {gate.max_ratio_increase:.0%}."
        " Absolute times are shown, never judged across runs.",
        "",
        "| figure | old | new | delta | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    for r in c.rows:
        lines.append(f"| {r.figure} | {_cell(r.old)} | {_cell(r.new)} | {r.delta} | {r.verdict} |")
    if c.notes:
        lines += ["", *[f"- note: {n}" for n in c.notes]]
    lines.append("")
    return "\n".join(lines)


def compare_files(old_path: Path, new_path: Path, gate) -> tuple[Comparison, str]:
    old, new = load_bench(old_path), load_bench(new_path)
    check_comparable(old, new, old_path, new_path)
    comparison = compare(old, new, gate)
    return comparison, render_report(comparison, old_path, new_path, gate)
