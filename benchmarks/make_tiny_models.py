"""Build the two tiny random-init BERT QA models the CI smoke bench compares (distill.testing.make_tiny_bert).

Reads: the packaged MiniLM tokenizer (`distill.models.packaged_minilm_dir()`). Writes OUT/teacher
(4 layers) and OUT/student (2 layers), hidden 64, each a Hugging Face model directory with the
tokenizer. Seeds are fixed, so the weights and therefore EM/F1 are the same on every run.
With --flagship: OUT/teacher is a 2-layer BertForQuestionAnswering and OUT/student a 1-layer
DistilBertForQuestionAnswering (hidden 32), stand-ins for recipes/distilbert_squad.yaml's hub models.

    python benchmarks/make_tiny_models.py OUT
    python benchmarks/make_tiny_models.py --flagship OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

SPECS = {"teacher": {"layers": 4, "seed": 1}, "student": {"layers": 2, "seed": 2}}
HIDDEN = 64


def main(out: Path, flagship: bool = False) -> None:
    from distill.models import packaged_minilm_dir
    from distill.testing import make_tiny_bert, make_tiny_distilbert

    tokenizer_dir = packaged_minilm_dir()
    if flagship:
        make_tiny_bert(out / "teacher", tokenizer_dir, layers=2, hidden=32, seed=1)
        make_tiny_distilbert(out / "student", tokenizer_dir, layers=1, hidden=32, seed=2)
        print(f"{out / 'teacher'}: BERT, 2 layers; {out / 'student'}: DistilBERT, 1 layer; hidden 32")
        return
    for role, spec in SPECS.items():
        make_tiny_bert(out / role, tokenizer_dir, layers=spec["layers"], hidden=HIDDEN, seed=spec["seed"])
        print(f"{out / role}: {spec['layers']} layers, hidden {HIDDEN}, seed {spec['seed']}")


if __name__ == "__main__":
    args = sys.argv[1:]
    flagship = "--flagship" in args
    args = [a for a in args if a != "--flagship"]
    if len(args) != 1:
        sys.exit("usage: python benchmarks/make_tiny_models.py [--flagship] OUT_DIR")
    main(Path(args[0]), flagship)
