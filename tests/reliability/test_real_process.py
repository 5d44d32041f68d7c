"""A few cases again as real `python -m distill` processes: what reaches the terminal, byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import ROOT, base_recipe, set_key, tree_hashes, write_recipe

case = pytest.mark.case


def distill(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    return subprocess.run([sys.executable, "-m", "distill", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=180)


def stderr_error_lines(proc) -> list[str]:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    return lines[start:]


@case(input="`python -m distill run` on a recipe whose data.eval has a wrong answer_start",
      expected="exit 2; stderr ends with the error block; stdout empty; nothing created")
def test_process_run_with_broken_eval_data(tmp_path, rel_data, tiny_teacher, observed):
    """Real process: the preflight error is the last thing on stderr, no traceback, empty stdout."""
    data = json.loads(rel_data["dev"].read_text())
    qa = data["data"][0]["paragraphs"][0]["qas"][2]
    qa["answers"][0]["answer_start"] = -5
    bad = tmp_path / "dev.json"
    bad.write_text(json.dumps(data))
    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(tmp_path, {**rel_data, "dev": bad}, tiny_teacher))
    before = tree_hashes(tmp_path)
    proc = distill("run", recipe)
    block = stderr_error_lines(proc)
    observed("\n".join(block))
    assert proc.returncode == 2 and proc.stdout == ""
    assert block[0] == f"error: {recipe}: recipe check failed, 1 problem(s):"
    assert len(block) == 2 and "data.eval" in block[1] and f"question {qa['id']}" in block[1]
    assert tree_hashes(tmp_path) == before and not (tmp_path / "out").exists()


@case(input="`python -m distill score DATA PRED` with PRED a JSON array",
      expected="exit 2; stderr is exactly one line; stdout empty")
def test_process_score_with_bad_predictions(tmp_path, rel_data, observed):
    """Real process: exactly one line on stderr."""
    pred = tmp_path / "pred.json"
    pred.write_text("[]")
    proc = distill("score", rel_data["dev"], pred)
    observed(proc.stderr)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: {pred}: expected a JSON object {{question id: answer text}}, got an array\n"


@case(input="`python -m distill score DATA` (missing PRED)", expected="exit 2; stderr is exactly one line")
def test_process_missing_argument(rel_data, observed):
    """Real process: a usage error is one line too."""
    proc = distill("score", rel_data["dev"])
    observed(proc.stderr)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: distill score: Missing argument 'pred_file'. (see --help)\n"


@case(input="`python -m distill validate` on an fp16 recipe on this CPU-only machine",
      expected="exit 0; the note on stderr; stdout only `RECIPE: ok`")
def test_process_validate_fp16_note_goes_to_stderr(tmp_path, rel_data, tiny_teacher, observed):
    """Real process: notes and logs go to stderr, so stdout carries only the result."""
    r = base_recipe(tmp_path, rel_data, tiny_teacher)
    set_key(r, "train.precision", "fp16")
    set_key(r, "train.ds_config", "ds_configs/zero2_fp16.json")
    recipe = write_recipe(tmp_path / "r.yaml", r)
    proc = distill("validate", recipe)
    observed(" ".join(line.strip() for line in proc.stderr.splitlines() if line.strip())[-300:])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{recipe}: ok\n"
    assert "fp16 needs a CUDA GPU" in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
