"""Export a run as GGUF in each type and read it back with transformers and llama.cpp (llama-cpp-python,
where installed): logit differences against the run folder on its validation posts, sizes, times.

    python benchmarks/gguf_roundtrip.py RUN [--posts 16]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

from tweetlm.export import GGUF_TYPES, compare_logits, export_gguf
from tweetlm.runs import RunFolder


def llama_cpp_logits(run_dir: Path, gguf: Path, texts: list[str]) -> dict[str, float]:
    import numpy as np
    import torch
    from llama_cpp import Llama

    from tweetlm.dataset import encode_posts
    from tweetlm.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(str(run_dir))
    model = load_model(str(run_dir)).eval()
    llm = Llama(model_path=str(gguf), n_ctx=256, logits_all=True, verbose=False)
    worst = kl = 0.0
    agree = total = same_ids = 0
    for text, ids in zip(texts, encode_posts(tokenizer, texts, 128), strict=True):
        llm.reset()
        llm.eval(ids)
        theirs = torch.tensor(np.array(llm.scores[: len(ids)]))
        with torch.inference_mode():
            ours = model(torch.tensor([ids])).logits[0]
        worst = max(worst, (theirs - ours).abs().max().item())
        kl += torch.nn.functional.kl_div(
            theirs.log_softmax(-1), ours.log_softmax(-1), log_target=True, reduction="sum"
        ).item()
        agree += int((theirs.argmax(-1) == ours.argmax(-1)).sum())
        total += len(ids)
        same_ids += (
            llm.tokenize(text.encode(), add_bos=False, special=False)
            == tokenizer(text, add_special_tokens=False)["input_ids"]
        )
    sample = llm.create_completion(
        f"{tokenizer.eos_token}I don't like", max_tokens=40, stop=[tokenizer.eos_token], seed=1, top_k=0, top_p=0.95
    )["choices"][0]["text"]
    return {
        "max_abs": worst,
        "mean_kl": kl / total,
        "argmax_agreement": agree / total,
        "same_token_ids": same_ids / len(texts),
        "sample": "I don't like" + sample,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--posts", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    run_dir = RunFolder.resolve(args.run).path
    posts = json.loads((run_dir / "posts.json").read_text())
    texts = [t for ts in posts["validation"].values() for t in ts][: args.posts]
    rows = {}
    for gguf_type in GGUF_TYPES:
        t0 = time.monotonic()
        dest = export_gguf(run_dir, (args.out / gguf_type) if args.out else None, gguf_type)
        row: dict[str, object] = {
            "export_s": round(time.monotonic() - t0, 1),
            "size_mb": round((dest / "model.gguf").stat().st_size / 1e6, 1),
            "transformers": compare_logits(run_dir, dest / "model.gguf", texts),
        }
        if importlib.util.find_spec("llama_cpp") is not None:
            row["llama_cpp"] = llama_cpp_logits(run_dir, dest / "model.gguf", texts)
        rows[gguf_type] = row
        print(gguf_type, json.dumps(row, indent=1), flush=True)
    print(json.dumps({"run": run_dir.name, "posts": len(texts), "types": rows}, indent=1))


if __name__ == "__main__":
    main()
