"""Sampling posts from a causal LM, the one way tweetlm does it (`tweetlm generate`, the web app, the
prediction table during training, the generation config saved with a run), and its defaults.

A post is prompted as the separator (EOS) then the prompt's tokens, sampled until EOS, decoded, and cut
to the platform's length.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TEMPERATURE = 1.0
TOP_P = 0.95
TOP_K = 0  # off
MAX_NEW_TOKENS = 96
MAX_CHARS = 280  # a post on X


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """The separator, then the prompt's tokens: how every training post starts."""
    eos = tokenizer.eos_token_id
    return [eos, *tokenizer(prompt, add_special_tokens=False)["input_ids"]] if prompt else [eos]


def sample_continuations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[list[int]],
    max_new_tokens: int = MAX_NEW_TOKENS,
    temperature: float = TEMPERATURE,
    top_p: float = TOP_P,
    top_k: int = TOP_K,
    **generate: Any,
) -> list[str]:
    """Sample one continuation per row of token ids, in one left-padded batch with the KV cache; each is
    decoded up to its first EOS. `generate` passes on to `model.generate` (logits processors, stopping
    criteria)."""
    import torch

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    width = max(map(len, rows))
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in rows], dtype=torch.long)
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in rows], dtype=torch.long)
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
            use_cache=True,
            **generate,
        )
    texts = []
    for row in out[:, width:].tolist():
        tokens = row[: row.index(eos)] if eos in row else row
        texts.append(tokenizer.decode(tokens, skip_special_tokens=True))
    return texts


def cut(text: str, max_chars: int) -> str:
    """Cut to at most `max_chars`, at a word boundary when one is near, without trailing space."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    space = head.rfind(" ")
    return (head[:space] if space > max_chars * 0.6 else head).rstrip()


def generation_config(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The `generation_config.json` saved with a run: these defaults, for `transformers.pipeline`."""
    return {
        "do_sample": True,
        "temperature": TEMPERATURE,
        "top_p": TOP_P,
        "top_k": TOP_K,
        "max_new_tokens": MAX_NEW_TOKENS,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.eos_token_id,
    }
