"""The `distill` command line: run, validate, eval, score, bench, report.

Exit codes: 0 ok, 1 regression found by bench/report, 2 bad input (one line on stderr, no traceback).
Heavy imports (torch, transformers, deepspeed) happen inside the commands so `--help` stays fast.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup
from typer.core import _click  # typer >= 0.29 vendors click; its exceptions live here, not in `click`

from distill.errors import EXIT_BAD_INPUT, InputError
from distill.precision import PRECISIONS


class _OneLineErrors(TyperGroup):
    """Usage errors as one `error:` line on stderr, like InputError, instead of click's multi-line box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _click.exceptions.NoArgsIsHelpError as err:
            typer.echo(err.ctx.get_help(), err=True)
            sys.exit(err.exit_code)
        except _click.exceptions.UsageError as err:
            where = f"{err.ctx.command_path}: " if err.ctx is not None else ""
            typer.echo(f"error: {where}{err.format_message()} (see --help)", err=True)
            sys.exit(err.exit_code)
        except _click.exceptions.ClickException as err:
            typer.echo(f"error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Distil a teacher QA model into a smaller, faster student; score, evaluate and benchmark.",
)


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


def user_errors(fn):
    """Turn InputError (and the usual file errors) into a clean message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as err:
            _fail(str(err), err.exit_code)
        except FileNotFoundError as err:
            _fail(f"{err.filename or err}: file not found")
        except IsADirectoryError as err:
            _fail(f"{err.filename}: is a directory, expected a file")
        except PermissionError as err:
            _fail(f"{err.filename}: permission denied")

    return wrapper


@app.command()
@user_errors
def score(
    data_file: Annotated[Path, typer.Argument(help="SQuAD data: official JSON or flat JSON/JSONL rows.")],
    pred_file: Annotated[Path, typer.Argument(help="Predictions JSON: {question id: answer text}.")],
    na_prob_file: Annotated[
        Optional[Path], typer.Option("--na-prob-file", "-n", help="v2.0: JSON {id: no-answer probability}.")
    ] = None,
    na_prob_thresh: Annotated[
        float, typer.Option("--na-prob-thresh", "-t", help="v2.0: predict no-answer above this probability.")
    ] = 1.0,
    version: Annotated[
        Optional[str], typer.Option("--version", help="1.1 or 2.0; detected from the data when omitted.")
    ] = None,
) -> None:
    """Score predictions with the official SQuAD v1.1 / v2.0 semantics; prints one JSON object."""
    from distill.metrics import score_files

    result = score_files(data_file, pred_file, na_prob_file=na_prob_file, na_prob_thresh=na_prob_thresh, version=version)
    typer.echo(json.dumps(result))


def setup_logging(verbose: bool = False) -> None:
    import logging
    import os

    from rich.console import Console
    from rich.logging import RichHandler

    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if verbose else logging.INFO
    # stderr: stdout carries only results (the metrics JSON of `distill run`, `RECIPE: ok`)
    handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
    logging.basicConfig(level=level if rank == 0 else logging.WARNING, format="%(message)s", datefmt="[%X]",
                        handlers=[handler], force=True)
    for noisy in ("datasets", "transformers", "DeepSpeed", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML (see `distill validate --keys` for every key).")]
SetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", help="Override a recipe key, e.g. --set train.lr=3e-5 (repeatable).")
]


@app.command()
@user_errors
def validate(
    recipe: RecipeArg,
    overrides: SetOpt = None,
    keys: Annotated[bool, typer.Option("--keys", help="List every recipe key with its default and meaning.")] = False,
    deep: Annotated[bool, typer.Option("--deep/--schema-only", help="Also load data files, tokenizers, ds_configs.")] = True,
) -> None:
    """Check a recipe without running it: schema, files, ds_config, tokenizer pairing; exit 2 on problems."""
    from distill.recipe import help_text, load_recipe
    from distill.preflight import preflight

    if keys:
        typer.echo("\n".join(help_text()))
        return
    r = load_recipe(recipe, overrides or [])
    if deep:
        setup_logging()
        preflight(r, for_run=False, recipe_path=recipe)
    typer.echo(f"{recipe}: ok")


@app.command("run")
@user_errors
def run_cmd(
    recipe: RecipeArg,
    overrides: SetOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in output_dir from its last checkpoint.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Distil: data -> features -> teacher (fine-tune, logits) -> student (DeepSpeed) -> eval."""
    from distill.recipe import load_recipe
    from distill.run import run

    r = load_recipe(recipe, overrides or [])
    setup_logging(verbose)
    metrics = run(r, resume=resume, recipe_path=recipe)
    typer.echo(json.dumps({k: metrics[k] for k in ("teacher", "student") if k in metrics}))


def _window(max_seq_length: int, doc_stride: int, max_query_length: int):
    from pydantic import ValidationError

    from distill.data.features import WindowConfig

    try:
        return WindowConfig(max_seq_length=max_seq_length, doc_stride=doc_stride, max_query_length=max_query_length)
    except ValidationError as err:
        # a model-level check (doc_stride vs max_seq_length) has an empty loc: name the window options then
        raise InputError("; ".join(
            f"{'--' + '-'.join(str(p) for p in e['loc']).replace('_', '-') if e['loc'] else 'window options'}: "
            f"{e['msg'].removeprefix('Value error, ')}" for e in err.errors())) from None


@app.command("eval")
@user_errors
def eval_cmd(
    model: Annotated[str, typer.Argument(help="QA model: directory, hub id, or `minilm`.")],
    data_file: Annotated[str, typer.Argument(help="SQuAD data: official JSON, flat JSON/JSONL, or hub id.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for predictions.json, na_probs.json, metrics.json.")],
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    max_seq_length: Annotated[int, typer.Option(min=8)] = 384,
    doc_stride: Annotated[int, typer.Option(min=1)] = 128,
    max_query_length: Annotated[int, typer.Option(min=1)] = 64,
    max_questions: Annotated[Optional[int], typer.Option(min=1, help="Only the first N questions.")] = None,
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16.")] = "auto",
) -> None:
    """Run a QA model over SQuAD and write official-format predictions and scores."""
    from distill.predict import evaluate_model

    window = _window(max_seq_length, doc_stride, max_query_length)
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision!r}: expected auto, fp32, bf16 or fp16")
    setup_logging()
    metrics = evaluate_model(model, data_file, out, window=window, batch_size=batch_size, precision=precision,
                             max_questions=max_questions)
    typer.echo(json.dumps(metrics))


@app.command("answer")
@user_errors
def answer_cmd(
    model: Annotated[str, typer.Argument(help="QA model: directory, hub id, or `minilm`.")],
    question: Annotated[Optional[str], typer.Option(help="The question.")] = None,
    context: Annotated[Optional[str], typer.Option(help="The text to answer from.")] = None,
    context_file: Annotated[Optional[Path], typer.Option(help="Read the context from this file.")] = None,
    jsonl: Annotated[Optional[Path], typer.Option(
        help="Batch: one JSON object per line with question, context (and optional id); prints one line each.")] = None,
    max_seq_length: Annotated[int, typer.Option(min=8)] = 384,
    doc_stride: Annotated[int, typer.Option(min=1)] = 128,
    max_query_length: Annotated[int, typer.Option(min=1)] = 64,
    null_threshold: Annotated[Optional[float], typer.Option(
        help="SQuAD v2 models: answer \"\" when null score - best span score exceeds this (eval.null_threshold).")] = None,
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16.")] = "auto",
) -> None:
    """Answer a question about a context (long contexts are windowed); prints JSON {answer, score, start, end}."""
    from distill.answer import answer_questions, read_items
    from distill.models import load_qa_model, load_tokenizer

    window = _window(max_seq_length, doc_stride, max_query_length)
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision!r}: expected auto, fp32, bf16 or fp16")
    items = read_items(question, context, context_file, jsonl)
    results = answer_questions(load_qa_model(model), load_tokenizer(model), items, window=window,
                               precision=precision, null_threshold=null_threshold)
    for item, result in zip(items, results):
        typer.echo(json.dumps({"id": item["id"], **result} if jsonl is not None else result, ensure_ascii=False))


F1DropOpt = Annotated[Optional[float], typer.Option(
    "--max-f1-drop", min=0, help="Regression if F1 drops by more than this (points); default: recipe bench section.")]
EMDropOpt = Annotated[Optional[float], typer.Option(
    "--max-em-drop", min=0, help="Regression if EM drops by more than this (points); default: recipe bench section.")]
RatioOpt = Annotated[Optional[float], typer.Option(
    "--max-ratio-increase", min=0,
    help="Regression if a student/teacher speed, memory or size ratio worsens by more than this fraction.")]


def _gate(base, max_f1_drop, max_em_drop, max_ratio_increase):
    from distill.recipe import BenchGate

    given = {k: v for k, v in (("max_f1_drop", max_f1_drop), ("max_em_drop", max_em_drop),
                               ("max_ratio_increase", max_ratio_increase)) if v is not None}
    return (base or BenchGate()).model_copy(update=given)


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(b < 1 for b in sizes):
        raise InputError(f"--batch-sizes {text!r}: expected positive integers separated by commas, e.g. 1,8,32")
    return sorted(set(sizes))


@app.command("bench")
@user_errors
def bench_cmd(
    run_dir: Annotated[Optional[Path], typer.Argument(
        help="A `distill run` output directory: teacher, student, data and tolerances come from it.")] = None,
    teacher: Annotated[Optional[str], typer.Option(help="Teacher QA model: directory, hub id, or `minilm`.")] = None,
    student: Annotated[Optional[str], typer.Option(help="Student QA model: directory or hub id.")] = None,
    data: Annotated[Optional[str], typer.Option(help="Evaluation SQuAD: official JSON, flat JSON/JSONL, or hub id.")] = None,
    batch_sizes: Annotated[str, typer.Option(help="Batch sizes to time, comma-separated.")] = "1,8,32",
    seq_len: Annotated[Optional[int], typer.Option(min=8, help="Window length (default 384, or the run's).")] = None,
    doc_stride: Annotated[Optional[int], typer.Option(min=1, help="Window overlap (default 128, or the run's).")] = None,
    max_query_length: Annotated[Optional[int], typer.Option(min=1, help="Question tokens kept (default 64).")] = None,
    max_questions: Annotated[Optional[int], typer.Option(min=1, help="Only the first N questions.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto, fp32, bf16 or fp16 (default auto, or the run's).")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda[:N]; default cuda when available.")] = None,
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="torch CPU threads (default: torch's); 1 gives steadier timings on a shared machine.")] = None,
    eval_batch_size: Annotated[Optional[int], typer.Option(min=1, help="Batch size for the quality pass.")] = None,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed iterations per model and setting.")] = 2,
    min_iters: Annotated[int, typer.Option(min=1, help="At least this many timed iterations per setting.")] = 10,
    min_seconds: Annotated[float, typer.Option(min=0, help="And at least this much timed time per setting.")] = 1.0,
    memory: Annotated[bool, typer.Option("--memory/--no-memory", help="Measure peak memory in subprocesses.")] = True,
    baseline: Annotated[Optional[Path], typer.Option(help="A previous bench.json: compare and exit 1 on regression.")] = None,
    max_f1_drop: F1DropOpt = None,
    max_em_drop: EMDropOpt = None,
    max_ratio_increase: RatioOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="Output directory (default: RUN_DIR, else ./bench).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Measure teacher vs student: EM/F1, latency, throughput, memory, size; bench.json/md/png; exit 1 on regression."""
    from distill.bench import BenchSettings, expected_settings, load_inputs, run_bench, settings_from_run_dir, write_outputs
    from distill.errors import EXIT_REGRESSION
    from distill.files import write_text
    from distill.report import check_settings_comparable, compare, load_bench, render_report

    kwargs: dict = {}
    recipe_gate = None
    if run_dir is not None:
        kwargs, recipe_gate = settings_from_run_dir(run_dir)
    explicit = {"teacher": teacher, "student": student, "data": data, "seq_len": seq_len, "doc_stride": doc_stride,
                "max_query_length": max_query_length,
                "max_questions": max_questions, "precision": precision, "eval_batch_size": eval_batch_size}
    kwargs.update({k: v for k, v in explicit.items() if v is not None})
    missing = [f"--{k}" for k in ("teacher", "student", "data") if not kwargs.get(k)]
    if missing:
        raise InputError(f"give a RUN_DIR or all of --teacher, --student, --data (missing {', '.join(missing)})")
    if kwargs.get("precision", "auto") not in PRECISIONS:
        raise InputError(f"--precision {kwargs['precision']!r}: expected auto, fp32, bf16 or fp16")
    out = out or run_dir or Path("bench")
    settings = BenchSettings(**{"precision": "auto", **kwargs}, out=out, batch_sizes=_batch_sizes(batch_sizes),
                             device=device, threads=threads, warmup=warmup, min_iters=min_iters,
                             min_seconds=min_seconds, memory=memory, progress=progress)
    gate = _gate(recipe_gate, max_f1_drop, max_em_drop, max_ratio_increase)
    setup_logging(verbose)

    old = load_bench(baseline) if baseline is not None else None
    prepared = load_inputs(settings)
    if old is not None:
        check_settings_comparable(old, expected_settings(settings, prepared[1]), baseline, out / "bench.json")
    result = run_bench(settings, prepared=prepared)
    paths = write_outputs(result, out)
    typer.echo(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    if old is None:
        return
    comparison = compare(old, result, gate)
    report_md = out / "report.md"
    write_text(report_md, render_report(comparison, baseline, paths["json"], gate))
    typer.echo(f"wrote {report_md}")
    typer.echo(comparison.verdict_line())
    if comparison.regressed:
        raise typer.Exit(code=EXIT_REGRESSION)


@app.command("report")
@user_errors
def report_cmd(
    old: Annotated[Path, typer.Argument(help="Baseline bench.json.")],
    new: Annotated[Path, typer.Argument(help="New bench.json.")],
    out: Annotated[Optional[Path], typer.Option(help="Write DIR/report.md.")] = None,
    md: Annotated[Optional[Path], typer.Option(help="Write the report to this file (e.g. $GITHUB_STEP_SUMMARY).")] = None,
    max_f1_drop: F1DropOpt = None,
    max_em_drop: EMDropOpt = None,
    max_ratio_increase: RatioOpt = None,
) -> None:
    """Compare two bench.json files without measuring; report.md; exit 1 on regression."""
    from distill.errors import EXIT_REGRESSION
    from distill.report import compare_files

    if out is not None and md is not None:
        raise InputError("give --out DIR or --md FILE, not both")
    gate = _gate(None, max_f1_drop, max_em_drop, max_ratio_increase)
    comparison, text = compare_files(old, new, gate)
    target = md or (out / "report.md" if out is not None else None)
    if target is None:
        typer.echo(text)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        typer.echo(f"wrote {target}")
        typer.echo(comparison.verdict_line())
    if comparison.regressed:
        raise typer.Exit(code=EXIT_REGRESSION)


def strip_launcher_args(argv: list[str]) -> list[str]:
    """Drop the `--local_rank=N` DeepSpeed's launcher puts before the command; its env (LOCAL_RANK) says the same."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in ("--local_rank", "--local-rank"):
            os.environ.setdefault("LOCAL_RANK", value if eq else next(it, ""))
            continue
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> None:
    """Console entry (`distill`, `python -m distill`, `deepspeed --module distill`, `torchrun -m distill`)."""
    app(args=strip_launcher_args(sys.argv[1:] if argv is None else list(argv)), prog_name="distill")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
