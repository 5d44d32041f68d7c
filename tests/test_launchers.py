"""The flagship recipe as documented, on small same-class stand-ins: one process, torchrun and deepspeed.

recipes/distilbert_squad.yaml names hub models (a BERT-base SQuAD teacher, distilbert-base-uncased) that
cannot be downloaded here; `--set` swaps them for a tiny BertForQuestionAnswering teacher (with
token_type_ids) and a tiny DistilBertForQuestionAnswering student (without), made by
`benchmarks/make_tiny_models.py --flagship`. Everything else is the flagship's own shape: ZeRO-2, 384/128
windows, KD from cached logits. fp16 needs CUDA, so the CPU runs use fp32.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_squad_slice
from distill.cli import strip_launcher_args
from distill.distributed import free_port

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def test_the_deepspeed_launchers_local_rank_argument_is_taken_off_before_the_command(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert strip_launcher_args(["--local_rank=1", "run", "r.yaml", "--resume"]) == ["run", "r.yaml", "--resume"]
    assert os.environ["LOCAL_RANK"] == "1"
    assert strip_launcher_args(["--local_rank", "0", "validate", "r.yaml"]) == ["validate", "r.yaml"]
    assert os.environ["LOCAL_RANK"] == "1"  # the launcher's env wins over the argument


@pytest.fixture(scope="module")
def flagship(tmp_path_factory, squad_dir):
    root = tmp_path_factory.mktemp("flagship")
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_tiny_models.py"), "--flagship",
                    str(root / "models")], check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    train = write_squad_slice(squad_dir / "train-v1.1.json", root / "train.json", n_paragraphs=6)
    dev = write_squad_slice(squad_dir / "dev-v1.1.json", root / "dev.json", n_paragraphs=3)
    return root, ["--set", f"teacher.model={root / 'models' / 'teacher'}",
                  "--set", f"student.model={root / 'models' / 'student'}",
                  "--set", f"data.train={train}", "--set", f"data.eval={dev}",
                  "--set", "data.train_questions=32", "--set", "data.eval_questions=16",
                  "--set", "train.precision=fp32", "--set", "train.ds_config=ds_configs/zero2_fp32.json",
                  "--set", "train.max_steps=4", "--set", "train.batch_size=4", "--set", "train.log_every=1",
                  "--set", "teacher.precision=fp32", "--set", "eval.precision=fp32"]


def _launch(kind: str) -> list[str]:
    if kind == "one process (as deepspeed --module passes it)":
        return [sys.executable, "-m", "distill", "--local_rank=0"]
    if kind == "torchrun 2 ranks":
        return [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "--master_port",
                str(free_port()), "-m", "distill"]
    return [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()),
            "--module", "distill"]


@pytest.mark.parametrize("kind", ["one process (as deepspeed --module passes it)", "torchrun 2 ranks",
                                  "deepspeed 2 ranks"])
def test_flagship_recipe_runs_end_to_end_on_stand_ins(kind, flagship, tmp_path):
    root, overrides = flagship
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env.update(HF_HUB_OFFLINE="1", DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [*_launch(kind), "run", str(ROOT / "recipes" / "distilbert_squad.yaml"), *overrides,
           "--set", f"output_dir={out}", "--set", f"cache_dir={cache}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"teacher", "student"} <= set(metrics) and "f1" in metrics["student"]
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    student = AutoModelForQuestionAnswering.from_pretrained(out / "student")
    assert type(student).__name__ == "DistilBertForQuestionAnswering"
    inputs = AutoTokenizer.from_pretrained(out / "student")("Who?", "Victor Hugo wrote it.", return_tensors="pt")
    student(**inputs)  # the saved tokenizer emits nothing the DistilBERT cannot take
    assert len(list((cache / "teacher_logits").iterdir())) == 1
    shutil.rmtree(tmp_path)
