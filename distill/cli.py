"""The `distill` command line: run, validate, eval, score, bench, report.

Exit codes: 0 ok, 1 regression found by bench/report, 2 bad input (one line on stderr, no traceback).
Heavy imports (torch, transformers, deepspeed) happen inside the commands so `--help` stays fast.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from distill.errors import EXIT_BAD_INPUT, InputError

app = typer.Typer(
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


def _setup_logging(verbose: bool = False) -> None:
    import logging
    import os

    from rich.logging import RichHandler

    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level if rank == 0 else logging.WARNING, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(show_path=False, markup=False)], force=True)
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
    from distill.run import preflight

    if keys:
        typer.echo("\n".join(help_text()))
        return
    r = load_recipe(recipe, overrides or [])
    if deep:
        _setup_logging()
        preflight(r, load_data=True)
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
    _setup_logging(verbose)
    metrics = run(r, resume=resume)
    typer.echo(json.dumps({k: metrics[k] for k in ("teacher", "student") if k in metrics}))


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
    from pydantic import ValidationError

    from distill.data.features import WindowConfig
    from distill.predict import evaluate_model

    try:
        window = WindowConfig(max_seq_length=max_seq_length, doc_stride=doc_stride, max_query_length=max_query_length)
    except ValidationError as err:
        raise InputError("; ".join(f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
                                   for e in err.errors())) from None
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise InputError(f"--precision {precision!r}: expected auto, fp32, bf16 or fp16")
    _setup_logging()
    metrics = evaluate_model(model, data_file, out, window=window, batch_size=batch_size, precision=precision,
                             max_questions=max_questions)
    typer.echo(json.dumps(metrics))


def main() -> None:  # pragma: no cover - console entry for `python -m distill`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
