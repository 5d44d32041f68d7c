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

import json
import sys
from pathlib import Path

from host_memory import alternate, arguments, child, summary

SETTINGS = ("bits", "torch")


def main() -> int:
    args = arguments(__doc__, "cpu_dropout.json")
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return 0
    runs = alternate(__file__, "DISTILL_CPU_DROPOUT", SETTINGS, args)
    out = summary("cpu_dropout", runs, args, ("s_per_step", "optimizer_step_s", "train_efficiency", "max_rss_mb"))
    out["hidden_dropout"] = 0.1
    out["cpu_dropout_modules"] = {s: runs[s][0]["cpu_dropout_modules"] for s in SETTINGS}
    out["bits_over_torch_s_per_step"] = [round(b["s_per_step"] / t["s_per_step"], 3)
                                         for b, t in zip(runs["bits"], runs["torch"])]
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    m = out["median"]
    print(f"{out['cpu_kind']}, {out['compute_dtype']}: " + "; ".join(
        f"{s}: {m[s]['s_per_step']:.3f} s/step (optimizer {m[s]['optimizer_step_s']:.3f}), train_efficiency "
        f"{m[s]['train_efficiency']:.3f}" for s in SETTINGS)
        + f"; bits/torch per round {out['bits_over_torch_s_per_step']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
