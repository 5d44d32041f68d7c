"""What each rank computes at each optimizer step: the epoch's row order, its micro batches, trimmed padding.

Reads row counts, lengths and tensors; writes nothing.

Data order: every epoch a permutation drawn from torch.Generator(seed + epoch), padded by wrapping to a
whole number of optimizer steps, cut into global batches of batch_size x gradient_accumulation x world_size
rows; rank r takes the r-th slice of each micro batch. So 2 ranks x batch b see the same rows per step as
1 rank x batch 2b, and equal-sized slices make DeepSpeed's gradient average the global mean.
"""

from __future__ import annotations


def epoch_order(n_rows: int, rows_per_step: int, seed: int, epoch: int, lengths=None,
                group_steps: int = 50) -> list[int]:
    """Shuffled row ids for one epoch, padded by wrapping to a whole number of optimizer steps.

    With `lengths` (real tokens per row), rows of similar length share a step, so trim_padding cuts
    less: the shuffled order is cut into groups of `group_steps` steps, each group is sorted by length
    and split into steps, and the steps are shuffled again (transformers' LengthGroupedSampler, plus
    that last shuffle so long steps are not bunched at the start of each group).
    """
    import torch

    gen = torch.Generator().manual_seed(seed + epoch)
    perm = torch.randperm(n_rows, generator=gen).tolist()
    pad = -len(perm) % rows_per_step
    order = perm + [perm[i % len(perm)] for i in range(pad)]
    if lengths is None:
        return order
    group = rows_per_step * group_steps
    ranked = [i for lo in range(0, len(order), group)
              for i in sorted(order[lo:lo + group], key=lambda r: -int(lengths[r]))]
    steps = [ranked[lo:lo + rows_per_step] for lo in range(0, len(ranked), rows_per_step)]
    return [i for s in torch.randperm(len(steps), generator=gen).tolist() for i in steps[s]]


def micro_batches(order: list[int], step: int, *, batch_size: int, accumulation: int, rank: int, world: int):
    """Row ids of this rank's micro batches for optimizer step `step` (0-based within the epoch)."""
    per_step = batch_size * accumulation * world
    rows = order[step * per_step:(step + 1) * per_step]
    for micro in range(accumulation):
        chunk = rows[micro * batch_size * world:(micro + 1) * batch_size * world]
        yield chunk[rank * batch_size:(rank + 1) * batch_size]


def trim_padding(batch: dict) -> dict:
    """Cut every per-token column to the batch's longest real sequence.

    Windows are padded to max_seq_length, but most SQuAD windows are shorter: computing on the padding
    would cost up to 2x at seq 256 and change nothing (it is masked in attention and in the losses).
    """
    width = int(batch["attention_mask"].sum(dim=1).max())
    return {k: v[:, :width] if v.ndim == 2 else v for k, v in batch.items()}
