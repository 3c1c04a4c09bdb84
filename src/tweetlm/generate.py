"""Generate posts from a run: batched sampling with the KV cache, stopped at EOS, cut to the platform's
length, empty outputs retried, copies of training posts dropped and counted. Every output is labelled.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tweetlm.card import SHORT_LABEL
from tweetlm.copies import DEFAULT_RUN, CopyIndex
from tweetlm.curate import collapse_whitespace
from tweetlm.errors import InputError
from tweetlm.options import option
from tweetlm.runs import RunFolder
from tweetlm.sampling import MAX_CHARS, MAX_NEW_TOKENS, TEMPERATURE, TOP_K, TOP_P, cut, prompt_ids, sample_continuations

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class GenerateConfig:
    n: int = option(10, "How many posts.", "-n", "--num", label="posts")
    temperature: float = option(TEMPERATURE, "Sampling temperature.", "--temperature", "-t", label="temperature")
    top_p: float = option(TOP_P, "Nucleus sampling.", "--top-p", label="top-p")
    top_k: int = option(TOP_K, "Top-k sampling (0: off).", "--top-k")
    max_chars: int = option(
        MAX_CHARS, "Cut posts to this many characters (280 on X).", "--max-chars", label="max characters"
    )
    max_new_tokens: int = field(default=MAX_NEW_TOKENS, metadata={"help": "tokens to sample at most"})
    seed: int | None = option(None, "Seed (random if not given; always printed).", "--seed", label="seed")
    allow_copies: bool = option(False, "Keep outputs that copy a training post.", "--allow-copies")
    copy_run: int = field(default=DEFAULT_RUN, metadata={"help": "shared words that make a near copy"})
    max_rounds: int = field(default=4, metadata={"help": "sampling rounds to replace dropped outputs"})

    def __post_init__(self) -> None:
        if not 1 <= self.n <= 500:
            raise InputError(f"n={self.n}: generate between 1 and 500 posts")
        if self.temperature <= 0:
            raise InputError(f"temperature={self.temperature}: must be > 0")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p={self.top_p}: must be in (0, 1]")
        if self.top_k < 0 or self.max_chars < 1 or self.max_new_tokens < 1:
            raise InputError("top_k must be >= 0, max_chars and max_new_tokens >= 1")


@dataclass
class Generation:
    run: str
    prompt: str
    posts: list[str]
    seed: int
    settings: dict[str, Any]
    dropped_copies: int = 0
    dropped_empty: int = 0
    label: str = SHORT_LABEL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Generator:
    """A loaded run, ready to sample from. Load once, generate many times."""

    def __init__(self, run_dir: Path, precision: str = "auto", model_path: str | None = None) -> None:
        """`model_path`: sample another model with the run's tokenizer (the base model, for `tweetlm eval`)."""
        import torch

        from tweetlm.models import load_model, load_tokenizer, resolve_precision

        self.run_dir = run_dir
        self.name = str(run_dir)
        folder = RunFolder(run_dir)
        self.run = folder.read()
        self.precision = resolve_precision(precision)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self.tokenizer: PreTrainedTokenizerBase = load_tokenizer(str(run_dir))
        self.model: PreTrainedModel = load_model(model_path or str(run_dir), dtype=dtype)
        self.model.eval()
        self.training_posts = folder.posts().training_texts()
        # Posts keep line breaks only if the model was trained on posts that kept them.
        self.keep_newlines = self.run.keep_newlines

    def generate(self, prompt: str, config: GenerateConfig) -> Generation:
        import torch

        prompt = prompt.strip()
        seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
        rng = random.Random(seed)
        checked_prompt(
            self.tokenizer,
            prompt,
            config,
            getattr(self.model.config, "max_position_embeddings", None),
            self.prompt_row(prompt, random.Random(seed)),
        )
        torch.manual_seed(seed)
        index = None if config.allow_copies else CopyIndex(self.training_posts, config.copy_run)
        kept: list[str] = []
        copies = empties = 0
        for round_ in range(config.max_rounds):
            want = config.n - len(kept)
            if want <= 0:
                break
            # Later rounds replace dropped outputs; ask for twice as many, as drops tend to recur.
            rows = [self.prompt_row(prompt, rng) for _ in range(want if round_ == 0 else 2 * want)]
            for text in self._sample(rows, prompt, config):
                if len(kept) >= config.n:
                    break
                if not text or text == prompt:
                    empties += 1
                elif index is not None and index.is_copy(text):
                    copies += 1
                else:
                    kept.append(text)
        settings = {k: v for k, v in asdict(config).items() if k not in ("seed", "n")}
        return Generation(self.name, prompt, kept, seed, settings, copies, empties)

    def prompt_row(self, prompt: str, rng: random.Random) -> list[int]:
        """The token ids a post is sampled after (`rng` lets a subclass vary them from row to row)."""
        return prompt_ids(self.tokenizer, prompt)

    def _sample(self, rows: list[list[int]], prompt: str, config: GenerateConfig) -> list[str]:
        width = max(map(len, rows))
        continuations = sample_continuations(
            self.model,
            self.tokenizer,
            rows,
            config.max_new_tokens,
            temperature=config.temperature,
            top_p=1.0,  # applied by TopP, without sorting the whole vocabulary at every step
            top_k=config.top_k,
            logits_processor=[TopP(config.top_p)] if config.top_p < 1 else None,
            stopping_criteria=[PastMaxChars(self.tokenizer, width, partial(self._text, prompt), config.max_chars)],
        )
        return [cut(self._text(prompt, c), config.max_chars) for c in continuations]

    def _text(self, prompt: str, continuation: str) -> str:
        return collapse_whitespace(_join(prompt, continuation), self.keep_newlines)


class TopP:
    """Nucleus sampling as transformers' TopPLogitsWarper does it (keep the most likely tokens until
    their mass reaches `top_p`), found among the top 256 tokens instead of a sort of the vocabulary;
    rows whose top 256 hold less than `top_p` of the mass fall back to the full sort."""

    def __init__(self, top_p: float, k: int = 256) -> None:
        self.top_p = top_p
        self.k = k

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        k = min(self.k, scores.shape[-1])
        top_scores, top_ids = scores.topk(k, dim=-1)
        probs = (top_scores - scores.logsumexp(-1, keepdim=True)).exp()  # of the whole vocabulary
        before = probs.cumsum(-1) - probs  # the mass of the more likely tokens
        keep = before < self.top_p
        keep[:, 0] = True
        out = torch.full_like(scores, -math.inf).scatter_(1, top_ids, top_scores.masked_fill(~keep, -math.inf))
        short = (before[:, -1] + probs[:, -1]) < self.top_p
        if short.any():
            from transformers.generation.logits_process import TopPLogitsWarper

            out[short] = TopPLogitsWarper(self.top_p)(input_ids[short], scores[short])
        return out


class PastMaxChars:
    """Stops a row once its text (`to_text` of the decoded continuation) is longer than `max_chars`,
    plus a margin for a character still being spelled in bytes: `cut` would drop whatever came after."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, start: int, to_text: Callable[[str], str], max_chars: int
    ) -> None:
        self.tokenizer = tokenizer
        self.start = start
        self.to_text = to_text
        self.limit = max_chars + 4

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.start :], skip_special_tokens=True)
        return torch.tensor([len(self.to_text(t)) > self.limit for t in texts], device=input_ids.device)


def checked_prompt(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    config: GenerateConfig,
    context: int | None,
    ids: list[int] | None = None,
) -> list[int]:
    """The prompt's token ids (`ids`, the row a post is sampled after, or `prompt_ids`), or InputError
    when it cannot start a post (too long, or past the context)."""
    prompt = prompt.strip()
    if len(prompt) >= config.max_chars:
        raise InputError(f"the prompt has {len(prompt)} characters: a post has at most {config.max_chars}")
    ids = ids if ids is not None else prompt_ids(tokenizer, prompt)
    context = context or 1024
    if len(ids) + config.max_new_tokens > context:
        raise InputError(
            f"the prompt is {len(ids)} tokens; with max_new_tokens={config.max_new_tokens} that exceeds "
            f"the model's context of {context}: shorten the prompt"
        )
    return ids


def check_prompt(run_dir: Path, prompt: str, config: GenerateConfig) -> None:
    """Check a prompt with the run's tokenizer and config.json alone, before its model is loaded."""
    from tweetlm.models import load_tokenizer

    try:
        model_config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        model_config = {}
    context = model_config.get("max_position_embeddings") if isinstance(model_config, dict) else None
    checked_prompt(load_tokenizer(str(run_dir)), prompt, config, context if isinstance(context, int) else None)


def _join(prompt: str, continuation: str) -> str:
    if not prompt:
        return continuation.strip()
    return (prompt + continuation).strip()
