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


def main() -> None:  # pragma: no cover - console entry for `python -m distill`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
