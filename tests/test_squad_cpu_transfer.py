"""benchmarks/squad_cpu_transfer.py: a report from finished runs only, and KD gains paired by seed."""

import importlib.util
import json
import sys

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def bench():
    modules = {}
    for name in ("squad_cpu", "squad_cpu_transfer"):
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        sys.modules[name] = modules[name]  # squad_cpu_transfer imports squad_cpu
        spec.loader.exec_module(modules[name])
    return modules


def test_finished_metrics_only_for_the_same_recipe_with_its_final_metrics(bench, tmp_path):
    from distill.recipe import dump_resolved, load_recipe

    squad_cpu = bench["squad_cpu"]
    recipe = load_recipe(squad_cpu.RECIPE, [f"output_dir={tmp_path}"])
    assert squad_cpu.finished_metrics(recipe) is None  # nothing there
    (tmp_path / squad_cpu.RESOLVED).write_text(dump_resolved(recipe))
    (tmp_path / "metrics.json").write_text(json.dumps({"student": {"f1": 50.0}}))
    assert squad_cpu.finished_metrics(recipe) is None  # interrupted: no stage_seconds yet
    done = {"student": {"f1": 50.0}, "stage_seconds": {"train": 1.0}}
    (tmp_path / "metrics.json").write_text(json.dumps(done))
    assert squad_cpu.finished_metrics(recipe) == done
    other = load_recipe(squad_cpu.RECIPE, [f"output_dir={tmp_path}", "train.alpha=0.7"])
    assert squad_cpu.finished_metrics(other) is None  # another recipe's run in this dir


def test_gain_is_averaged_over_the_seeds_both_arms_ran(bench):
    gain = bench["squad_cpu_transfer"].paired_gain
    results = {"ce": [{"seed": 42, "f1": 48.0}, {"seed": 43, "f1": 50.0}],
               "kd": [{"seed": 42, "f1": 57.0}],
               "kd_transfer": []}
    assert gain(results, "kd", "ce") == (9.0, [42])
    assert gain(results, "kd_transfer", "ce") is None
    results["kd"].append({"seed": 43, "f1": 56.0})
    assert gain(results, "kd", "ce") == (7.5, [42, 43])
