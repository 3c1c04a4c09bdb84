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
from tweetlm.train import POSTS_FILE, read_run, resolve_precision

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

LABEL = SHORT_LABEL


@dataclass(frozen=True)
class GenerateConfig:
    n: int = field(default=10, metadata={"help": "posts to generate"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling"})
    top_k: int = field(default=0, metadata={"help": "top-k sampling (0: off)"})
    max_chars: int = field(default=280, metadata={"help": "cut posts to this many characters"})
    max_new_tokens: int = field(default=96, metadata={"help": "tokens to sample at most"})
    seed: int | None = field(default=None, metadata={"help": "seed (random if not given; always recorded)"})
    allow_copies: bool = field(default=False, metadata={"help": "keep outputs that copy a training post"})
    copy_run: int = field(default=DEFAULT_RUN, metadata={"help": "shared words that make a near copy"})
    max_rounds: int = field(default=4, metadata={"help": "sampling rounds to replace dropped outputs"})

    def __post_init__(self) -> None:
        if not 1 <= self.n <= 500:
            raise InputError(f"-n {self.n}: generate between 1 and 500 posts")
        if self.temperature <= 0:
            raise InputError(f"--temperature {self.temperature}: must be > 0")
        if not 0 < self.top_p <= 1:
            raise InputError(f"--top-p {self.top_p}: must be in (0, 1]")
        if self.top_k < 0 or self.max_chars < 1 or self.max_new_tokens < 1:
            raise InputError("--top-k must be >= 0, --max-chars and --max-new-tokens >= 1")


@dataclass
class Generation:
    run: str
    prompt: str
    posts: list[str]
    seed: int
    settings: dict[str, Any]
    dropped_copies: int = 0
    dropped_empty: int = 0
    label: str = LABEL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Generator:
    """A loaded run, ready to sample from. Load once, generate many times."""

    def __init__(self, run_dir: Path, precision: str = "auto", model_path: str | None = None) -> None:
        """`model_path`: sample another model with the run's tokenizer (the base model, for `tweetlm eval`)."""
        import torch

        from tweetlm.models import load_model, load_tokenizer

        self.run_dir = run_dir
        self.run = read_run(run_dir)
        self.precision = resolve_precision(precision)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self.tokenizer: PreTrainedTokenizerBase = load_tokenizer(str(run_dir))
        self.model: PreTrainedModel = load_model(model_path or str(run_dir), dtype=dtype)
        self.model.eval()
        self.training_posts = training_posts(run_dir)
        # Posts keep line breaks only if the model was trained on posts that kept them.
        datasets = self.run.get("data", {}).get("datasets", {}).values()
        self.keep_newlines = any(d.get("rules", {}).get("keep_newlines") for d in datasets)

    def generate(self, prompt: str, config: GenerateConfig) -> Generation:
        import torch

        prompt = prompt.strip()
        ids = prompt_ids(self.tokenizer, prompt, config, getattr(self.model.config, "max_position_embeddings", None))
        seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
        torch.manual_seed(seed)
        index = None if config.allow_copies else CopyIndex(self.training_posts, config.copy_run)
        kept: list[str] = []
        copies = empties = 0
        for round_ in range(config.max_rounds):
            want = config.n - len(kept)
            if want <= 0:
                break
            # Later rounds replace dropped outputs; ask for twice as many, as drops tend to recur.
            for text in self._sample(ids, prompt, want if round_ == 0 else 2 * want, config):
                if len(kept) >= config.n:
                    break
                if not text or text == prompt:
                    empties += 1
                elif index is not None and index.is_copy(text):
                    copies += 1
                else:
                    kept.append(text)
        settings = {k: v for k, v in asdict(config).items() if k not in ("seed", "n")}
        return Generation(str(self.run_dir), prompt, kept, seed, settings, copies, empties)

    def _sample(self, ids: list[int], prompt: str, batch: int, config: GenerateConfig) -> list[str]:
        import torch

        input_ids = torch.tensor([ids] * batch, dtype=torch.long)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=True,
                temperature=config.temperature,
                top_p=1.0,  # applied by TopP, without sorting the whole vocabulary at every step
                top_k=config.top_k,
                max_new_tokens=config.max_new_tokens,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                use_cache=True,
                logits_processor=[TopP(config.top_p)] if config.top_p < 1 else None,
                stopping_criteria=[
                    PastMaxChars(self.tokenizer, len(ids), partial(self._text, prompt), config.max_chars)
                ],
            )
        texts = []
        for row in out[:, len(ids) :]:
            tokens = row.tolist()
            eos = self.tokenizer.eos_token_id
            if eos in tokens:
                tokens = tokens[: tokens.index(eos)]
            continuation = self.tokenizer.decode(tokens, skip_special_tokens=True)
            texts.append(cut(self._text(prompt, continuation), config.max_chars))
        return texts

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


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: str, config: GenerateConfig, context: int | None
) -> list[int]:
    """The prompt's token ids after the separator, or InputError if it cannot start a post."""
    prompt = prompt.strip()
    if len(prompt) >= config.max_chars:
        raise InputError(f"the prompt has {len(prompt)} characters: a post has at most {config.max_chars}")
    eos = tokenizer.eos_token_id
    ids = [eos, *tokenizer(prompt, add_special_tokens=False)["input_ids"]] if prompt else [eos]
    context = context or 1024
    if len(ids) + config.max_new_tokens > context:
        raise InputError(
            f"the prompt is {len(ids)} tokens; with --max-new-tokens {config.max_new_tokens} that exceeds "
            f"the model's context of {context}: shorten the prompt"
        )
    return ids


def check_prompt(run_dir: Path, prompt: str, config: GenerateConfig) -> None:
    """Check a prompt with the run's tokenizer and config alone, before its model is loaded."""
    from tweetlm.models import load_tokenizer

    try:
        model_config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        model_config = {}
    context = model_config.get("max_position_embeddings") if isinstance(model_config, dict) else None
    prompt_ids(load_tokenizer(str(run_dir)), prompt, config, context if isinstance(context, int) else None)


def _join(prompt: str, continuation: str) -> str:
    if not prompt:
        return continuation.strip()
    return (prompt + continuation).strip()


def cut(text: str, max_chars: int) -> str:
    """Cut to at most `max_chars`, at a word boundary when one is near, without trailing space."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    space = head.rfind(" ")
    return (head[:space] if space > max_chars * 0.6 else head).rstrip()


def training_posts(run_dir: Path) -> list[str]:
    path = run_dir / POSTS_FILE
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    return [text for texts in data["train"].values() for text in texts]
