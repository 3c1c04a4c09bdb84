#!/usr/bin/env python
"""The plain loss against the chunked one (`tweetlm.loss`): seconds per training step and peak memory.

Each variant runs in a fresh process: the embedded SmolLM2-135M in bf16 as `precision=auto` trains it
on a bf16 CPU (eager attention, MasterAdamW), batches of 16 posts of 24-47 tokens from the bundled
sample (`--batch 64`: 64 posts, about what `--batch-tokens 2048` gives), a full step each (forward, loss,
backward, optimizer). It prints the median and the fastest seconds per step after the warm-up steps (the
fastest is the least disturbed by other work), the process's peak resident memory (VmHWM) and what it
was once the model and batches were loaded, with the machine, the load average and the torch version.
Under glibc, `--mmap-threshold 65536` returns every freed buffer above 64 kB to the system
(MALLOC_MMAP_THRESHOLD_), so the peak is that of the live tensors rather than of what the allocator
keeps (and steps are slower).

    python benchmarks/loss_chunks.py [--steps 8] [--warmup 2] [--chunk 384] [--batch 16] [--mmap-threshold 65536]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from tweetlm.loss import CHUNK_TOKENS

VARIANTS = ("plain", "chunked")
SHORTEST, LONGEST = 24, 47


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def batches(tokenizer: Any, n: int, size: int) -> list[dict[str, Any]]:
    """`n` padded batches of `size` posts of 24-47 tokens (EOS-framed, as training encodes them)."""
    from tweetlm.dataset import collate, encode_posts

    raw = resources.files("tweetlm").joinpath("data", "BarackObama-sample.csv").read_bytes().decode("mac_roman")
    texts = [row["text"] for row in csv.DictReader(io.StringIO(raw, newline=""))]
    seqs = [s for s in encode_posts(tokenizer, texts, 128) if SHORTEST <= len(s) <= LONGEST]
    if len(seqs) < size * n:
        seqs = seqs * (size * n // len(seqs) + 1)
    return [collate([{"input_ids": s} for s in seqs[i * size : (i + 1) * size]], 0) for i in range(n)]


def run_variant(variant: str, steps: int, warmup: int, chunk: int, size: int) -> dict[str, Any]:
    """Train `warmup + steps` steps in this process; the figures of the timed ones."""
    import torch

    from tweetlm.models import load_model, load_tokenizer, resolve_base_model
    from tweetlm.optim import MasterAdamW
    from tweetlm.trainer import direct_model, hidden_state_loss

    path = resolve_base_model("smollm2").path
    tokenizer = load_tokenizer(path)
    torch.manual_seed(0)
    model = load_model(path, dtype=torch.bfloat16)
    model.set_attn_implementation("eager")
    model.train()
    data = batches(tokenizer, warmup + steps, size)
    optimizer = MasterAdamW(model.parameters(), lr=1e-4, fused=True)
    loaded = peak_rss_mb()
    causal = direct_model(model, model)
    times, losses = [], []
    for inputs in data:
        start = time.perf_counter()
        loss = hidden_state_loss(causal, inputs, chunk=chunk) if variant == "chunked" else model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(round(loss.item(), 4))
    timed = times[warmup:]
    return {
        "variant": variant,
        "chunk": chunk if variant == "chunked" else None,
        "tokens_per_batch": statistics.mean(int(b["attention_mask"].sum()) for b in data),
        "padded_tokens_per_batch": statistics.mean(b["input_ids"].numel() for b in data),
        "s_per_step_median": statistics.median(timed),
        "s_per_step_min": min(timed),
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_load_mb": loaded,
        "losses": losses,
        "threads": torch.get_num_threads(),
        "load_after": os.getloadavg(),
    }


def machine() -> str:
    import torch

    cpu = platform.machine()
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    return f"{cpu}, {os.cpu_count()} CPUs; torch {torch.__version__}; Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--chunk", type=int, default=CHUNK_TOKENS, help="tokens per chunk of logits")
    parser.add_argument("--batch", type=int, default=16, help="posts per batch")
    parser.add_argument("--mmap-threshold", type=int, help="MALLOC_MMAP_THRESHOLD_ of the variants' processes")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant, in this process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.steps, args.warmup, args.chunk, args.batch)))
        return
    print(f"machine: {machine()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    env = dict(os.environ)
    if args.mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    print(f"MALLOC_MMAP_THRESHOLD_: {env.get('MALLOC_MMAP_THRESHOLD_', 'unset (glibc default)')}")
    results = []
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--variant", variant, "--steps", str(args.steps)]
        command += ["--warmup", str(args.warmup), "--chunk", str(args.chunk), "--batch", str(args.batch)]
        out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    print(f"batches: {args.batch} posts of {SHORTEST}-{LONGEST} tokens, {results[0]['tokens_per_batch']:.0f} tokens")
    print(f"({results[0]['padded_tokens_per_batch']:.0f} padded); bf16 weights, MasterAdamW, eager attention")
    print(f"{'variant':<16}{'s/step (median)':>16}{'fastest':>8}{'peak RSS MB':>13}{'after load MB':>15}  load after")
    for r in results:
        name = r["variant"] + (f" ({r['chunk']})" if r["chunk"] else "")
        load = " ".join(f"{x:.2f}" for x in r["load_after"])
        print(
            f"{name:<16}{r['s_per_step_median']:>16.3f}{r['s_per_step_min']:>8.3f}"
            f"{r['peak_rss_mb']:>13.0f}{r['rss_after_load_mb']:>15.0f}  {load}"
        )
    print("losses (the same batches):", *(f"{r['variant']}: {r['losses']}" for r in results), sep="\n  ")


if __name__ == "__main__":
    main()
