"""`python _faulty_cli.py run RECIPE ...`: the real CLI with test faults switched on by environment variables.

FAULT_LOSS_SLEEP=s   sleep s seconds in every loss call (gives a SIGKILL a window between steps)
FAULT_SHARD_SIZE=n   teacher logit cache shards of n features (default 1024 gives one shard here)
FAULT_SHARD_SLEEP=s  after each shard's forward pass print "shard" and sleep s seconds
"""

import functools
import os
import sys
import time

import distill.losses
import distill.predict
import distill.teacher


def main() -> None:
    loss_sleep = float(os.environ.get("FAULT_LOSS_SLEEP", 0))
    shard_sleep = float(os.environ.get("FAULT_SHARD_SLEEP", 0))
    shard_size = int(os.environ.get("FAULT_SHARD_SIZE", 0))

    if loss_sleep:
        real_loss = distill.losses.distillation_loss

        def slow_loss(*a, **kw):
            out = real_loss(*a, **kw)
            print("loss", flush=True)
            time.sleep(loss_sleep)
            return out

        distill.losses.distillation_loss = slow_loss  # train.py imports it at call time
    if shard_size:
        distill.teacher.build_logit_cache = functools.partial(distill.teacher.build_logit_cache, shard_size=shard_size)
    if shard_sleep:
        real_logits = distill.predict.compute_logits

        def slow_logits(*a, **kw):
            out = real_logits(*a, **kw)
            print("shard", flush=True)
            time.sleep(shard_sleep)
            return out

        distill.predict.compute_logits = slow_logits

    from distill.cli import app

    app(prog_name="distill", args=sys.argv[1:])


if __name__ == "__main__":
    main()
