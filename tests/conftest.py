"""Shared fixtures: offline hub, CPU DeepSpeed, real SQuAD slices, tiny models."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json
from pathlib import Path

import pytest

from distill.testing import make_tiny_bert

ROOT = Path(__file__).resolve().parents[1]
SQUAD_DIR = ROOT.parent / "shared" / "data" / "squad"


@pytest.fixture(scope="session")
def squad_dir() -> Path:
    if not (SQUAD_DIR / "dev-v1.1.json").is_file():
        pytest.fail(f"real SQuAD data missing at {SQUAD_DIR} (../shared/data/squad beside the repo)")
    return SQUAD_DIR


def write_squad_slice(src: Path, dst: Path, n_articles: int = 1, n_paragraphs: int = 3, version: str | None = None):
    """Copy the first paragraphs of a real SQuAD file into a small official-format file."""
    data = json.loads(src.read_text())
    articles = []
    for art in data["data"][:n_articles]:
        articles.append({"title": art["title"], "paragraphs": art["paragraphs"][:n_paragraphs]})
    dst.write_text(json.dumps({"version": version or data.get("version", "1.1"), "data": articles}))
    return dst


@pytest.fixture
def dev_v1_slice(squad_dir, tmp_path) -> Path:
    return write_squad_slice(squad_dir / "dev-v1.1.json", tmp_path / "dev-v1.1-slice.json")


@pytest.fixture
def dev_v2_slice(squad_dir, tmp_path) -> Path:
    return write_squad_slice(squad_dir / "dev-v2.0.json", tmp_path / "dev-v2.0-slice.json", n_paragraphs=4)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from distill.models import packaged_minilm_dir

    return packaged_minilm_dir()


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_dir) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), minilm_dir)


def kill_after_lines(proc, prefix: str, count: int) -> int:
    """SIGKILL `proc` once it has printed `count` stdout lines starting with `prefix`; returns how many it saw."""
    import signal

    seen = 0
    for line in proc.stdout:
        seen += line.startswith(prefix)
        if seen == count:
            proc.send_signal(signal.SIGKILL)
            break
    return seen
