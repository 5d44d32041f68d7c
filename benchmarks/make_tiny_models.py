"""Build the two tiny random-init BERT QA models the CI smoke bench compares (distill.testing.make_tiny_bert).

Reads: the packaged MiniLM tokenizer (`distill.models.packaged_minilm_dir()`). Writes OUT/teacher
(4 layers) and OUT/student (2 layers), hidden 64, each a Hugging Face model directory with the
tokenizer. Seeds are fixed, so the weights and therefore EM/F1 are the same on every run.

    python benchmarks/make_tiny_models.py OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

SPECS = {"teacher": {"layers": 4, "seed": 1}, "student": {"layers": 2, "seed": 2}}
HIDDEN = 64


def main(out: Path) -> None:
    from distill.models import packaged_minilm_dir
    from distill.testing import make_tiny_bert

    tokenizer_dir = packaged_minilm_dir()
    for role, spec in SPECS.items():
        make_tiny_bert(out / role, tokenizer_dir, layers=spec["layers"], hidden=HIDDEN, seed=spec["seed"])
        print(f"{out / role}: {spec['layers']} layers, hidden {HIDDEN}, seed {spec['seed']}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/make_tiny_models.py OUT_DIR")
    main(Path(sys.argv[1]))
