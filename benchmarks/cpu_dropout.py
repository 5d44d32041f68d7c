"""Student training steps with dropout masks from `distill.dropout` (DISTILL_CPU_DROPOUT=bits) and from
PyTorch's `bernoulli_` (DISTILL_CPU_DROPOUT=torch).

The same measurement as benchmarks/host_memory.py (its `child`: distill's own `session.setup` and
`train.train_step`, the DistilBERT 3x384 student from MiniLM-L6 layers 0, 2, 4 with the model's hidden
dropout 0.1 and attention dropout 0, KD from cached logits, fixed-width seq 256, batch 16), one process per
measurement, in turns (bits, torch, torch, bits, ...). Reported per setting: seconds per step, of it the
optimizer step, and the train_efficiency train_log.jsonl would show.

    python benchmarks/cpu_dropout.py [--rounds 3] [--steps 20] [--questions 200]

Writes benchmarks/results/cpu_dropout.json (or --out).
"""

from __future__ import annotations

import sys

from host_memory import finish, measure, summary

SETTINGS = ("bits", "torch")


def main() -> int:
    measured = measure(__file__, __doc__, "cpu_dropout.json", "DISTILL_CPU_DROPOUT", SETTINGS)
    if measured is None:
        return 0
    args, runs = measured
    out = summary("cpu_dropout", runs, args, ("s_per_step", "optimizer_step_s", "train_efficiency", "max_rss_mb"))
    out["hidden_dropout"] = 0.1
    out["cpu_dropout_modules"] = {s: runs[s][0]["cpu_dropout_modules"] for s in SETTINGS}
    finish(out, args.out, lambda m: "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
