"""Training data: a seeded split per account, each post framed by the EOS token, a balanced mix of
accounts, and batches of posts of similar length re-drawn every epoch (little padding, no cross-post
attention, no two epochs alike). Batches hold a number of posts or a budget of tokens; a batch can be
packed into rows with no padding to speak of, attention and positions still kept within each post.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tweetlm.errors import InputError, TrainingError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

MIN_POSTS = 20  # below this a split is meaningless
MIN_VALIDATION = 30  # "at least a few dozen" held-out posts when the account allows
VALIDATION_FRACTION = 0.1


@dataclass(frozen=True)
class Split:
    train: list[str]
    validation: list[str]


def check_enough_posts(n_posts: int) -> None:
    if n_posts < MIN_POSTS:
        raise TrainingError(
            f"only {n_posts} curated posts: at least {MIN_POSTS} are needed to train "
            "(import more posts, or relax curation, e.g. --min-words 1 --keep-replies)"
        )


def split_posts(texts: Sequence[str], seed: int, fraction: float = VALIDATION_FRACTION) -> Split:
    """A seeded train/validation split: 10%, but at least MIN_VALIDATION (and at most a third)."""
    check_enough_posts(len(texts))
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_val = max(round(len(texts) * fraction), min(MIN_VALIDATION, len(texts) // 3))
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return Split([texts[i] for i in train], [texts[i] for i in val])


def encode_posts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """EOS + post + EOS, token ids, no spaces around the separators (as HuggingTweets does), tokenized in
    one fast batch call and truncated to max_length tokens."""
    if not texts:
        return []
    eos = tokenizer.eos_token_id
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [([eos, *seq, eos])[:max_length] for seq in ids]


def data_hash(accounts: dict[str, Split]) -> str:
    digest = hashlib.sha256()
    for account in sorted(accounts):
        digest.update(account.encode() + b"\x01")
        for text in accounts[account].train:
            digest.update(text.encode() + b"\x00")
        digest.update(b"\x02")
        for text in accounts[account].validation:
            digest.update(text.encode() + b"\x00")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Mix:
    """How several accounts are balanced: each epoch draws `per_epoch[a]` posts of account `a`."""

    posts: dict[str, int]
    per_epoch: dict[str, int]
    weights: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            a: {"train_posts": self.posts[a], "drawn_per_epoch": self.per_epoch[a]}
            | ({"weight": self.weights[a]} if self.weights else {})
            for a in self.posts
        }


def balance(sizes: dict[str, int], max_upsample: float = 4.0, weights: dict[str, float] | None = None) -> Mix:
    """Upsample smaller accounts towards the largest (at most `max_upsample` times their size). With
    `weights`, the same number of posts per epoch is shared out in those proportions instead."""
    largest = max(sizes.values())
    per_epoch = {a: min(largest, int(n * max_upsample)) if len(sizes) > 1 else n for a, n in sizes.items()}
    if weights:
        total, scale = sum(per_epoch.values()), sum(weights.values())
        per_epoch = {a: max(1, round(total * weights[a] / scale)) for a in sizes}
    return Mix(dict(sizes), per_epoch, weights)


def parse_mix(spec: str, accounts: Sequence[str]) -> dict[str, float] | None:
    """`alice=0.7,bob=0.3` -> {"alice": 0.7, "bob": 0.3}, keyed by the names in `accounts` (matched
    ignoring case; every account once, weights > 0); "" -> None (balanced)."""
    if not spec:
        return None
    weights: dict[str, float] = {}
    for part in spec.split(","):
        name, _, value = part.partition("=")
        name = name.strip().lstrip("@")
        try:
            weights[name] = float(value)
        except ValueError:
            raise InputError(f"mix={spec!r}: write it as ACCOUNT=WEIGHT,... e.g. alice=0.7,bob=0.3") from None
        if not weights[name] > 0:
            raise InputError(f"mix={spec!r}: the weight of {name} must be > 0")
    by_name = {a.lower(): w for a, w in weights.items()}
    if set(by_name) != {a.lower() for a in accounts} or len(weights) != len(accounts):
        raise InputError(f"mix={spec!r}: give one weight for each trained account ({', '.join(accounts)})")
    return {a: by_name[a.lower()] for a in accounts}


class EpochBatches:
    """Batch sampler: each epoch reshuffles (seed + epoch), draws the account mix, groups posts of
    similar length into batches (sorting within chunks of 50 batches), then shuffles the batch order.

    A batch holds `batch_size` posts or, with `batch_tokens`, about that many tokens: the epoch is cut
    into a fixed number of batches of equal token counts (the Trainer needs the same count every epoch).
    `set_epoch` is called by the Trainer (through accelerate) before every epoch, so a resumed run
    sees the same order as an uninterrupted one.

    Under several processes (`world` > 1) the epoch is cut into a multiple of `world` batches and
    process `rank` iterates over every `world`-th of them: the shares are disjoint, cover the epoch's
    draw exactly (the same draw as one process), and have the same length, so epochs stay comparable.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        groups: Sequence[int],
        per_epoch: Sequence[int],
        batch_size: int,
        seed: int,
        group_by_length: bool = True,
        batch_tokens: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.rank, self.world = rank, world
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.batch_tokens = batch_tokens
        self.epoch = 0
        self.by_group: list[list[int]] = [[] for _ in per_epoch]
        for index, group in enumerate(groups):
            self.by_group[group].append(index)
        self.per_epoch = list(per_epoch)
        posts = sum(self.per_epoch)
        if batch_tokens:
            tokens = sum(self.lengths[i] for i in self._draw(random.Random(seed)))
            self.n_batches = min(posts, max(1, -(-tokens // batch_tokens)))
        else:
            self.n_batches = -(-posts // batch_size)
        if world > 1:
            if posts < world:
                raise TrainingError(f"{posts} training posts cannot be shared among {world} processes")
            rounded = -(-self.n_batches // world) * world
            self.n_batches = rounded if rounded <= posts else self.n_batches // world * world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _draw(self, rng: random.Random) -> list[int]:
        drawn: list[int] = []
        for members, want in zip(self.by_group, self.per_epoch, strict=True):
            full, rest = divmod(want, len(members))
            drawn += members * full + rng.sample(members, rest)
        rng.shuffle(drawn)
        return drawn

    def batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = self._draw(rng)
        if self.group_by_length:
            chunk = -(-len(order) // self.n_batches) * 50
            order = [
                i
                for start in range(0, len(order), chunk)
                for i in sorted(order[start : start + chunk], key=self.lengths.__getitem__)
            ]
        if self.batch_tokens:
            batches = self._cut_by_tokens(order)
        else:
            batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            if len(batches) != self.n_batches:  # several processes: as many batches as they need
                n = self.n_batches
                batches = [order[k * len(order) // n : (k + 1) * len(order) // n] for k in range(n)]
        rng.shuffle(batches)
        return batches

    def _cut_by_tokens(self, order: list[int]) -> list[list[int]]:
        """`n_batches` consecutive slices of `order` with (nearly) equal token counts, none empty."""
        cumulative = list(itertools.accumulate(self.lengths[i] for i in order))
        total = cumulative[-1]
        cuts = [0]
        for k in range(1, self.n_batches):
            at = bisect.bisect_left(cumulative, total * k / self.n_batches) + 1
            # Leave at least one post for each batch still to come.
            cuts.append(min(max(at, cuts[-1] + 1), len(order) - (self.n_batches - k)))
        cuts.append(len(order))
        return [order[a:b] for a, b in itertools.pairwise(cuts)]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self.epoch)[self.rank :: self.world]

    def __len__(self) -> int:
        return self.n_batches // self.world


class PostDataset:
    """A list of framed posts; items are dicts the collator pads."""

    def __init__(self, sequences: list[list[int]], groups: list[int] | None = None) -> None:
        self.sequences = sequences
        self.groups = groups or [0] * len(sequences)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return {"input_ids": self.sequences[index]}


def collate(batch: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest post in the batch. Labels come from the mask, not the pad id, so a
    tokenizer whose pad token is its EOS still learns to end posts.
    """
    import torch

    width = max(len(item["input_ids"]) for item in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, item in enumerate(batch):
        seq = item["input_ids"]
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[row, : len(seq)] = 1
    labels = input_ids.masked_fill(attention == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def pack(batch: list[dict[str, list[int]]], pad_id: int, row_length: int) -> dict[str, torch.Tensor]:
    """Pack posts into rows of at most `row_length` tokens (first fit, longest first), with no attention
    mask: position ids restart at every post, which transformers turns into a block-diagonal causal mask,
    so a post never sees another. The first token of each post is no target (nothing precedes it).
    """
    import torch

    rows: list[list[list[int]]] = []
    room: list[int] = []
    for seq in sorted((item["input_ids"][:row_length] for item in batch), key=len, reverse=True):
        for r, free in enumerate(room):
            if len(seq) <= free:
                rows[r].append(seq)
                room[r] -= len(seq)
                break
        else:
            rows.append([seq])
            room.append(row_length - len(seq))
    width = max(row_length - free for free in room)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, posts in enumerate(rows):
        at = 0
        for seq in posts:
            end = at + len(seq)
            input_ids[r, at:end] = torch.tensor(seq, dtype=torch.long)
            labels[r, at + 1 : end] = input_ids[r, at + 1 : end]
            positions[r, at:end] = torch.arange(len(seq))
            at = end
        positions[r, at:] = torch.arange(width - at)  # the padding is a "post" of its own, never a target
    return {"input_ids": input_ids, "labels": labels, "position_ids": positions}
