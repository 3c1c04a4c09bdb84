"""Few-shot prompting, no training: the untouched instruct model is shown K real posts of an account
through the chat template its tokenizer ships, as earlier turns of a conversation (asked for a post, it
answered with a real one), then asked for one more. `tweetlm generate ACCOUNT --few-shot K` samples
that way, and `tweetlm eval` adds it as a column: what fine-tuning buys over prompting.

The examples are drawn at random for every generated post (`random`), or are the K posts most similar
to the prompt in all-MiniLM-L6-v2 embeddings (`similar`), shuffled for every post.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tweetlm.errors import InputError
from tweetlm.generate import Generator

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedTokenizerBase

PICKS = ("random", "similar")
ASK = "Write a new post."


def system_message(account: str) -> str:
    return (
        f"You write short social media posts in the voice of {account}. "
        "Answer with the post alone: no quotes, no comments, no explanation."
    )


def few_shot_messages(account: str, examples: Sequence[str]) -> list[dict[str, str]]:
    """The conversation: the instruction, each example as an answer to the request, the request again."""
    messages = [{"role": "system", "content": system_message(account)}]
    for post in examples:
        messages += [{"role": "user", "content": ASK}, {"role": "assistant", "content": post}]
    return [*messages, {"role": "user", "content": ASK}]


def few_shot_ids(tokenizer: PreTrainedTokenizerBase, account: str, examples: Sequence[str], prompt: str) -> list[int]:
    """The conversation through the tokenizer's chat template, the assistant's turn opened, and the
    prompt's start of the post after it."""
    require_chat_template(tokenizer)
    text = tokenizer.apply_chat_template(
        few_shot_messages(account, examples), tokenize=False, add_generation_prompt=True
    )
    return tokenizer(str(text) + prompt, add_special_tokens=False)["input_ids"]


def require_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(
            "the base model's tokenizer has no chat template: few-shot prompting needs an instruct model "
            "(the embedded smollm2 has one)"
        )


def most_similar(posts: Sequence[str], prompt: str, k: int, embed: Callable[[Sequence[str]], np.ndarray]) -> list[str]:
    """The `k` posts closest to `prompt` (cosine of normalised embeddings; ties by position)."""
    if not prompt:
        raise InputError("--pick similar picks the posts closest to the prompt: give a prompt")
    vectors = embed([prompt, *posts])
    scores = vectors[1:] @ vectors[0]
    order = sorted(range(len(posts)), key=lambda i: (-float(scores[i]), i))
    return [posts[i] for i in order[:k]]


class FewShotGenerator(Generator):
    """Samples the untouched model at `model_path`, prompted with `k` of the account's `posts`; outputs
    that copy one of `posts` are dropped, as a run's copies of its training posts are."""

    def __init__(
        self,
        model_path: str,
        account: str,
        posts: Sequence[str],
        k: int,
        pick: str = "random",
        precision: str = "auto",
        embed: Callable[[Sequence[str]], np.ndarray] | None = None,
    ) -> None:
        import torch

        from tweetlm.models import load_model, load_tokenizer, resolve_precision

        if pick not in PICKS:
            raise InputError(f"pick={pick!r}: must be one of {', '.join(PICKS)}")
        if not 1 <= k <= 50:
            raise InputError(f"few_shot={k}: show between 1 and 50 posts")
        if len(posts) < k:
            raise InputError(f"few_shot={k}: {account} has only {len(posts)} curated posts")
        self.account, self.k, self.pick, self.embed = account, k, pick, embed
        self.name = f"few-shot:{account}:{k}:{pick}"
        self.precision = resolve_precision(precision)
        self.tokenizer = load_tokenizer(model_path)
        require_chat_template(self.tokenizer)
        self.model = load_model(model_path, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float32)
        self.model.eval()
        self.training_posts = list(posts)
        self.keep_newlines = False
        self._similar: tuple[str, list[str]] | None = None

    def examples(self, prompt: str, rng: random.Random) -> list[str]:
        if self.pick == "random":
            return rng.sample(self.training_posts, self.k)
        if self._similar is None or self._similar[0] != prompt:
            if self.embed is None:
                raise InputError("pick='similar' needs an embedding model (embed=...); pick='random' does not")
            self._similar = (prompt, most_similar(self.training_posts, prompt, self.k, self.embed))
        chosen = list(self._similar[1])
        rng.shuffle(chosen)
        return chosen

    def prompt_row(self, prompt: str, rng: random.Random) -> list[int]:
        return few_shot_ids(self.tokenizer, f"@{self.account}", self.examples(prompt, rng), prompt)
