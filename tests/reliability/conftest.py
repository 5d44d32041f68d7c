"""Reliability suite fixtures: tiny teacher, small SQuAD slices, recipe files, hashing, result recording.

Every test here is a "case" of docs/reliability.md: `@pytest.mark.case(input=..., expected=...)` (or a
pytest.param carrying that mark) plus `observed(...)` for what the CLI actually printed. The hooks below
write each case's id, description, input, expected, observed and outcome to RESULTS; make_doc.py renders it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import yaml

from conftest import write_squad_slice
from distill.testing import make_tiny_bert

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = Path(os.environ.get("DISTILL_RELIABILITY_RESULTS", HERE / "results.json"))
_records: list[dict] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "case(input, expected): a row of docs/reliability.md")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    mark = item.get_closest_marker("case")
    if mark is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        doc = (getattr(item, "function", None).__doc__ or "").strip().splitlines()
        _records.append({
            "id": item.nodeid.split("::", 1)[1],
            "file": item.nodeid.split("::", 1)[0],
            "description": doc[0] if doc else "",
            "input": mark.kwargs.get("input", ""),
            "expected": mark.kwargs.get("expected", ""),
            "observed": dict(item.user_properties).get("observed", ""),
            "outcome": report.outcome,
            "seconds": round(report.duration, 2),
            "slow": item.get_closest_marker("slow") is not None,
        })


def pytest_sessionfinish(session):
    if _records:
        args = " ".join(session.config.invocation_params.args)
        RESULTS.write_text(json.dumps({"generated": time.strftime("%Y-%m-%d %H:%M:%S"),
                                       "command": f".venv/bin/python -m pytest {args}",
                                       "cases": _records}, indent=1) + "\n")


@pytest.fixture
def observed(record_property):
    """Record what the CLI printed (the table's `observed` column)."""
    return lambda text: record_property("observed", text.strip())


# ---------------------------------------------------------------- inputs


def tree_hashes(*paths: Path) -> dict[str, str]:
    """sha256 of every file under the given files/directories (absent paths map to nothing)."""
    out = {}
    for root in paths:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def rel_data(squad_dir, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rel_data")
    train = write_squad_slice(squad_dir / "train-v1.1.json", d / "train.json", n_articles=1, n_paragraphs=10)
    dev = write_squad_slice(squad_dir / "dev-v1.1.json", d / "dev.json", n_articles=1, n_paragraphs=3)
    dev2 = write_squad_slice(squad_dir / "dev-v2.0.json", d / "dev-v2.json", n_articles=1, n_paragraphs=4)
    return {"train": train, "dev": dev, "dev_v2": dev2}


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, minilm_dir) -> Path:
    """A 2-layer BERT QA teacher with the MiniLM vocab (no fine-tuning needed)."""
    return make_tiny_bert(tmp_path_factory.mktemp("rel_teacher"), minilm_dir, layers=2, hidden=32, seed=1)


@pytest.fixture(scope="session")
def small_vocab_model(tmp_path_factory) -> Path:
    """A tiny BERT QA model whose tokenizer has its own 100-word vocab (mismatches the teacher's)."""
    from transformers import BertConfig, BertForQuestionAnswering, BertTokenizerFast

    path = tmp_path_factory.mktemp("small_vocab")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    cfg = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertForQuestionAnswering(cfg).save_pretrained(path)
    return path


def base_recipe(tmp: Path, data: dict, teacher: Path) -> dict:
    """The tiny fp32 CPU recipe every case starts from (runs end to end in well under a minute)."""
    return {
        "output_dir": str(tmp / "out"),
        "cache_dir": str(tmp / "cache"),
        "data": {"train": str(data["train"]), "eval": str(data["dev"]), "train_questions": 40,
                 "eval_questions": 20,
                 "window": {"max_seq_length": 96, "doc_stride": 32, "max_query_length": 24}},
        "teacher": {"model": str(teacher), "logits_dtype": "fp32", "precision": "fp32", "batch_size": 16},
        "student": {"from_teacher_layers": [0]},
        "train": {"max_steps": 6, "batch_size": 8, "lr": 1e-3, "warmup_ratio": 0.2, "precision": "fp32",
                  "ds_config": "ds_configs/zero2_fp32.json", "checkpoint_every": 2, "log_every": 1, "seed": 5},
        "eval": {"batch_size": 32, "precision": "fp32"},
    }


def set_key(recipe: dict, dotted: str, value) -> dict:
    node = recipe
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    if value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return recipe


DELETE = object()


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture
def recipe_factory(tmp_path, rel_data, tiny_teacher):
    """recipe_factory(**{"train.batch_size": -1}) -> path of a recipe YAML in tmp_path."""
    def make(name: str = "recipe.yaml", **changes) -> Path:
        r = base_recipe(tmp_path, rel_data, tiny_teacher)
        for key, value in changes.items():
            set_key(r, key, value)
        return write_recipe(tmp_path / name, r)
    return make


@pytest.fixture
def cli():
    """Invoke `distill ...` in-process; returns click's Result (stdout/stderr separate)."""
    from typer.testing import CliRunner

    from distill.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])
