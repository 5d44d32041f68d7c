"""Fail fast, kills, divergence and damaged caches/checkpoints, through `distill run` on a tiny teacher."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import kill_after_lines

from .conftest import HERE, ROOT, base_recipe, set_key, tree_hashes, write_recipe
from .test_bad_input import assert_refused

case = pytest.mark.case
FAULTY_CLI = HERE / "_faulty_cli.py"
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def make_recipe(tmp: Path, data, teacher, **changes) -> Path:
    r = base_recipe(tmp, data, teacher)
    for key, value in changes.items():
        set_key(r, key, value)
    return write_recipe(tmp / "recipe.yaml", r)


def run_cli(*args):
    from typer.testing import CliRunner

    from distill.cli import app

    return CliRunner().invoke(app, ["run", *map(str, args)])


def outcome(out: Path) -> dict:
    """What must match between runs: both scores and the whole training loss curve."""
    metrics = json.loads((out / "metrics.json").read_text())
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return {"teacher": metrics["teacher"], "student": metrics["student"],
            "losses": [(r["step"], r["loss"]) for r in log]}


def faulty(args, tmp: Path, **env) -> subprocess.Popen:
    # this pytest process may already be rank 0 of its own group (in-process runs): the child must not reuse its port
    full_env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    full_env.update(env)
    return subprocess.Popen([sys.executable, str(FAULTY_CLI), *map(str, args)], cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=open(tmp / "faulty.stderr", "w"), text=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, rel_data, tiny_teacher) -> dict:
    """One uninterrupted run of the base recipe: the numbers every interrupted run must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    result = run_cli(make_recipe(tmp, rel_data, tiny_teacher))
    assert result.exit_code == 0, result.stderr[-3000:]
    return {"tmp": tmp, "out": tmp / "out", "cache": tmp / "cache", **outcome(tmp / "out")}


# ---------------------------------------------------------------- fail fast


@case(input="valid recipe whose data.eval has an answer_start off by one",
      expected="exit 2 in preflight within seconds; no output_dir, no cache, no training")
def test_broken_eval_file_fails_in_preflight_before_any_training(tmp_path, rel_data, tiny_teacher, observed):
    """The eval file is only needed at the very end, yet a broken one stops the run before any stage."""
    data = json.loads(rel_data["dev"].read_text())
    qa = data["data"][0]["paragraphs"][1]["qas"][0]
    qa["answers"][0]["answer_start"] += 3
    bad = tmp_path / "dev-broken.json"
    bad.write_text(json.dumps(data))
    recipe = make_recipe(tmp_path, {**rel_data, "dev": bad}, tiny_teacher)
    before = tree_hashes(tmp_path, rel_data["train"])
    t0 = time.perf_counter()
    result = run_cli(recipe)
    seconds = time.perf_counter() - t0
    text = assert_refused(result, "recipe.yaml: recipe check failed", "data.eval", "dev-broken.json",
                          f"question {qa['id']}", problems=True)
    observed(f"{text} ({seconds:.1f} s)")
    assert seconds < 20
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    assert tree_hashes(tmp_path, rel_data["train"]) == before


# ---------------------------------------------------------------- kills


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before the kill point")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("kill point never reached")
        time.sleep(0.05)


@pytest.mark.slow
@case(input="SIGKILL `distill run` after step 3 (checkpoint at step 2), then `distill run --resume`",
      expected="resumes from step 2; teacher/student EM/F1 and every logged loss equal an uninterrupted run")
def test_sigkill_during_training_then_resume_matches_uninterrupted(tmp_path, rel_data, tiny_teacher, reference,
                                                                   observed):
    """Kill -9 mid-training; --resume gives exactly the metrics and losses of a run never interrupted."""
    recipe = make_recipe(tmp_path, rel_data, tiny_teacher, cache_dir=str(reference["cache"]))
    out = tmp_path / "out"
    log = out / "train_log.jsonl"
    proc = faulty(["run", recipe], tmp_path, FAULT_LOSS_SLEEP="0.4")
    _wait_for(proc, lambda: (out / "checkpoints" / "step2" / "complete.json").is_file()
              and log.is_file() and len(log.read_text().splitlines()) >= 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "metrics.json").exists() and not (out / "student").exists()

    result = run_cli(recipe, "--resume")
    assert result.exit_code == 0, result.stderr[-3000:]
    assert "resumed from" in result.stderr and "step2" in result.stderr
    got = outcome(out)
    observed(f"killed at step 3, resumed from step2: student {got['student']}, final loss {got['losses'][-1][1]}")
    assert got == {k: reference[k] for k in ("teacher", "student", "losses")}


@pytest.mark.slow
@case(input="SIGKILL `distill run` while it caches teacher logits (2 of 9 shards written), then rerun",
      expected="no commit marker after the kill; the rerun's cache, losses and metrics are bit-identical to an "
               "uninterrupted run's")
def test_sigkill_during_teacher_caching_then_rerun(tmp_path, rel_data, tiny_teacher, reference, monkeypatch,
                                                   observed):
    """A killed cache build is never read as a cache; the rerun finishes it and matches the reference.

    Promised on every CPU kind, bit for bit: the finished cache (shards are whole batches of one
    longest-first order, so the shard size and the kill point change no batch), hence every loss and
    both scores. Before shards followed that order, batches of another width gave logits 1 ulp apart and
    an AVX2 CPU's losses differed in the 7th digit at one step.
    """
    import distill.teacher

    recipe = make_recipe(tmp_path, rel_data, tiny_teacher)
    proc = faulty(["run", recipe], tmp_path, FAULT_SHARD_SIZE="8", FAULT_SHARD_SLEEP="1")
    shards = kill_after_lines(proc, "shard", 2)
    proc.wait(timeout=30)
    assert shards == 2, (tmp_path / "faulty.stderr").read_text()[-3000:]
    (cache_dir,) = (tmp_path / "cache" / "teacher_logits").iterdir()
    assert not (cache_dir / "complete.json").exists()
    assert not (tmp_path / "out" / "checkpoints").exists(), "training must not start on a partial cache"

    # the rerun uses the same shard size as the killed build, so its finished shards are reused
    monkeypatch.setattr(distill.teacher, "build_logit_cache",
                        functools.partial(distill.teacher.build_logit_cache, shard_size=8))
    result = run_cli(recipe, "--resume")
    assert result.exit_code == 0, result.stderr[-3000:]
    assert "resuming an interrupted build" in result.stderr
    assert (cache_dir / "complete.json").is_file() and not list(cache_dir.glob("shard-*"))
    (ref_cache,) = (reference["cache"] / "teacher_logits").iterdir()
    assert ref_cache.name == cache_dir.name
    assert read_logits(cache_dir) == read_logits(ref_cache)
    got = outcome(tmp_path / "out")
    observed(f"killed after 2 shards; rerun: teacher {got['teacher']}, student {got['student']}")
    assert got == {k: reference[k] for k in ("teacher", "student", "losses")}


def read_logits(cache_dir: Path) -> tuple[bytes, bytes]:
    import numpy as np

    from distill.teacher import load_logit_cache

    ds = load_logit_cache(cache_dir)
    return np.asarray(ds["start_logits"]).tobytes(), np.asarray(ds["end_logits"]).tobytes()


# ---------------------------------------------------------------- divergence and damaged files


@pytest.fixture(scope="module")
def diverged(tmp_path_factory, rel_data, tiny_teacher, reference) -> dict:
    """A run whose loss turns NaN at step 3 (checkpoint_every 2): the state the next tests inspect."""
    import distill.losses

    tmp = tmp_path_factory.mktemp("diverged")
    recipe = make_recipe(tmp, rel_data, tiny_teacher, cache_dir=str(reference["cache"]))
    real, calls = distill.losses.distillation_loss, []

    def nan_from_step_3(*a, **kw):
        calls.append(1)
        out = real(*a, **kw)
        return dict(out, loss=out["loss"] * float("nan")) if len(calls) >= 3 else out

    mp = pytest.MonkeyPatch()
    mp.setattr(distill.losses, "distillation_loss", nan_from_step_3)
    try:
        result = run_cli(recipe)
    finally:
        mp.undo()
    return {"tmp": tmp, "recipe": recipe, "out": tmp / "out", "result": result, "calls": len(calls)}


@case(input="loss made NaN from step 3 (train.checkpoint_every 2)",
      expected="exit 2 at step 3 naming the step; checkpoint step2 intact and verifiable; no student, no metrics")
def test_nan_loss_stops_at_that_step_and_keeps_the_last_checkpoint(diverged, observed):
    """A NaN loss is caught in the step it appears, before it reaches the weights; step2 stays resumable."""
    from distill.checkpoints import verify_checkpoint

    out = diverged["out"]
    text = assert_refused(diverged["result"], "training diverged at step 3", "loss is nan",
                          f"last checkpoint {out / 'checkpoints' / 'step2'} is intact")
    observed(text)
    assert diverged["calls"] == 3, "detected within the step it appeared"
    verify_checkpoint(out / "checkpoints" / "step2")
    assert [p.name for p in (out / "checkpoints").glob("step*")] == ["step2"]
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2]
    assert not (out / "student").exists() and not (out / "metrics.json").exists()


@case(input="a checkpoint file truncated to half its size, then `distill run --resume`",
      expected="exit 2 naming the checkpoint and the file as truncated; nothing in output_dir changed")
def test_truncated_checkpoint_is_refused_on_resume(diverged, observed):
    """A damaged checkpoint is an error, never a silent fresh start (which would delete it)."""
    out = diverged["out"]
    tag = out / "checkpoints" / "step2"
    victim = max((p for p in tag.rglob("*.pt") if p.is_file()), key=lambda p: p.stat().st_size)
    saved = victim.read_bytes()
    victim.write_bytes(saved[: len(saved) // 2])
    try:
        before = tree_hashes(out)
        result = run_cli(diverged["recipe"], "--resume")
        text = assert_refused(result, f"checkpoint {tag}", victim.name, "is truncated")
        observed(text)
        assert tree_hashes(out) == before
    finally:
        victim.write_bytes(saved)


@case(input="the committed teacher logit cache with its Arrow file truncated, then a new run using that cache",
      expected="exit 2 naming the file as truncated and how to rebuild; the cache is left as it is; no training")
def test_truncated_teacher_logit_cache_is_refused(tmp_path, rel_data, tiny_teacher, reference, observed):
    """A truncated cache file fails the commit marker's size check: refused, not trained on."""
    cache = tmp_path / "cache"
    shutil.copytree(reference["cache"] / "teacher_logits", cache / "teacher_logits")
    (cache_dir,) = (cache / "teacher_logits").iterdir()
    arrow = next((cache_dir / "logits").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    before = tree_hashes(cache)
    result = run_cli(make_recipe(tmp_path, rel_data, tiny_teacher))
    text = assert_refused(result, f"teacher logit cache {cache_dir}", arrow.name, "is truncated", f"delete {cache_dir}")
    observed(text)
    assert tree_hashes(cache) == before
    assert not (tmp_path / "out" / "train_log.jsonl").exists() and not (tmp_path / "out" / "checkpoints").exists()
