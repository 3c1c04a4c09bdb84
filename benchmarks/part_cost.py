#!/usr/bin/env python
"""What one micro-batch's forward and backward pass costs, by its size: a fixed part paid per pass, and a
part per token.

The embedded SmolLM2-135M as `tweetlm train` runs it on this CPU (bf16 where supported, eager attention,
fused blocks, the chunked loss, the training heap and kernel caches), on random token ids in parts of
ROWSxLENGTH tokens. Passes are grouped into steps of `--parts` passes, as the Trainer's micro-batches are:
the gradients are set to None at each step's start and the heap trimmed as `trainer.Heap` does; no
optimizer. Each variant runs in a fresh process: `in-place` adds the weight gradients into `.grad` with one
matmul (`fused.fused_blocks(grads_in_place=True)`, the default), `autograd` leaves that to autograd (a
fresh gradient, then added to the one before). It prints seconds, CPU seconds and page faults per pass, and
the least-squares line seconds = fixed + per-token x tokens over the shapes, with the machine and load.

    python benchmarks/part_cost.py [--shapes 1x8,2x104,4x104,8x104,16x32] [--passes 8] [--parts 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from loss_chunks import machine

VARIANTS = ("autograd", "in-place")


def run_variant(variant: str, shapes: list[tuple[int, int]], passes: int, parts: int) -> list[dict[str, float]]:
    import torch

    from tweetlm.fused import fused_blocks
    from tweetlm.train import TrainConfig, bound_kernel_caches, build_model, resolve_base_model, resolve_precision
    from tweetlm.trainer import training_heap

    bound_kernel_caches()
    config = TrainConfig(accounts=("bench",))
    model, _ = build_model(config, resolve_base_model(config.base_model), resolve_precision(config.precision))
    model.train()
    vocab = model.get_input_embeddings().weight.shape[0]
    results = []
    with training_heap() as heap, fused_blocks(model, grads_in_place=variant == "in-place"):
        for rows, length in shapes:
            ids = torch.randint(0, vocab, (rows, length), generator=torch.Generator().manual_seed(0))
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
            items = rows * (length - 1)
            for index in range(parts):  # warm-up: one step
                one_pass(model, heap, inputs, items, index % parts == 0)
            before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            for index in range(passes):
                one_pass(model, heap, inputs, items, index % parts == 0)
            seconds = (time.perf_counter() - start) / passes
            after = resource.getrusage(resource.RUSAGE_SELF)
            results.append(
                {
                    "rows": rows,
                    "length": length,
                    "seconds": seconds,
                    "user": (after.ru_utime - before.ru_utime) / passes,
                    "system": (after.ru_stime - before.ru_stime) / passes,
                    "faults": (after.ru_minflt - before.ru_minflt) / passes,
                }
            )
    return results


def one_pass(model: Any, heap: Any, inputs: dict[str, Any], items: int, first: bool) -> None:
    """A part's forward and backward pass; the first of a step starts with no gradients, as in training."""
    from tweetlm.trainer import hidden_state_loss

    if first:
        model.zero_grad()
        heap.after_step()
    hidden_state_loss(model, inputs, items).backward()


def line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of (x, y) points."""
    n = len(points)
    mean_x, mean_y = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0
    return mean_y - slope * mean_x, slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="1x8,2x104,4x104,8x104,16x32", help="parts as ROWSxLENGTH, comma-separated")
    parser.add_argument("--passes", type=int, default=8, help="timed passes per shape")
    parser.add_argument("--parts", type=int, default=2, help="passes a step (gradients set to None at its start)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant, in this process
    args = parser.parse_args()
    try:
        shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    except ValueError:
        shapes = []
    if args.passes < 1 or args.parts < 1 or not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        sys.exit("error: --passes and --parts must be >= 1, and --shapes ROWSxLENGTH parts like 4x104,16x32")
    if args.variant:
        print(json.dumps(run_variant(args.variant, shapes, args.passes, args.parts)))  # type: ignore[arg-type]
        return
    print(f"machine: {machine()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"{args.passes} timed passes a shape, steps of {args.parts} parts (gradients set to None at each step's start)"
    )
    table: dict[str, list[dict[str, float]]] = {}
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--variant", variant, "--shapes", args.shapes]
        command += ["--passes", str(args.passes), "--parts", str(args.parts)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        table[variant] = json.loads(out.strip().splitlines()[-1])
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'part':>8}{'tokens':>8}" + "".join(f"{v + ': s, CPU s, faults':>34}" for v in VARIANTS))
    for index, (rows, length) in enumerate(shapes):
        cells = "".join(
            f"{r['seconds']:>14.3f}{r['user'] + r['system']:>9.2f}{r['faults']:>11.0f}"
            for r in (table[v][index] for v in VARIANTS)
        )
        print(f"{f'{rows}x{length}':>8}{rows * length:>8}{cells}")
    for variant in VARIANTS:
        fixed, per_token = line([(r["rows"] * r["length"], r["seconds"]) for r in table[variant]])
        print(f"{variant}: seconds a pass = {fixed:.3f} + {per_token * 1e3:.3f} ms x tokens")


if __name__ == "__main__":
    main()
