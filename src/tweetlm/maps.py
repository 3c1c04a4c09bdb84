"""`tweetlm map`: what an account writes about, and where accounts (and the posts generated for them) sit
among each other.

- Topics within an account: its posts embedded with all-MiniLM-L6-v2 (`tweetlm.evaluate.Embedder`),
  clustered by k-means (scikit-learn, seeded), each cluster labelled by its most distinctive words under
  c-TF-IDF (BERTopic's class-based TF-IDF: a word's frequency in the cluster times log(1 + average words
  per cluster / the word's frequency over all clusters)).
- A style map: every post as its embedding joined to eight standardised surface features (length, words,
  mentions, hashtags, links, emoji, capitals, punctuation), projected to 2D fitted on the real posts (by
  LDA, the plane that best tells the accounts apart, from three accounts on; by PCA for two); each
  account's centroid, and generated posts projected onto the same plane. A generated post
  "lands near its person" when its nearest centroid (in the full space) is its own account's.

Same posts, seed and embedder give the same clusters, labels and map.
"""

from __future__ import annotations

import html
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tweetlm.card import SHORT_LABEL
from tweetlm.errors import InputError
from tweetlm.evaluate import EMOJI_RE, HASHTAG_RE, MENTION_RE

if TYPE_CHECKING:
    import numpy as np

Embed = Callable[[Sequence[str]], "np.ndarray"]

URL_RE = re.compile(r"https?://\S+")
WORD_PATTERN = r"(?u)\b[^\W\d_][\w']+\b"
MAX_POSTS = 400  # per account on the style map


@dataclass(frozen=True)
class Topic:
    topic: int
    posts: int
    share: float
    words: list[str]
    examples: list[str]


@dataclass(frozen=True)
class TopicMap:
    account: str
    seed: int
    topics: list[Topic]
    labels: list[int]  # the topic of each post, in order
    points: list[tuple[float, float]]  # each post on a 2D PCA plane

    def to_dict(self) -> dict[str, Any]:
        return {"account": self.account, "seed": self.seed, "topics": [asdict(t) for t in self.topics]}


def topic_count(n_posts: int) -> int:
    """Clusters for `n_posts` when not given: about sqrt(n / 15), between 2 and 10."""
    return max(2, min(10, round(math.sqrt(n_posts / 15))))


def stop_words(texts: Sequence[str]) -> list[str]:
    """English stop words, and those of every language that at least a tenth of `texts` is written in
    (py3langid per post; lists of the `stop-words` package, 33 languages): without them "que, el, la"
    label every topic of a Spanish account."""
    from collections import Counter

    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
    from stop_words import LANGUAGE_MAPPING, get_stop_words

    from tweetlm.langid import detect

    found = Counter(detect(t) for t in texts)
    languages = sorted({lang for lang, n in found.items() if lang in LANGUAGE_MAPPING and n >= len(texts) / 10})
    words = set(ENGLISH_STOP_WORDS).union(*(get_stop_words(lang) for lang in languages))
    token = re.compile(WORD_PATTERN)
    return sorted(w.lower() for w in words if token.fullmatch(w.lower()))  # as the vectorizer splits words


def c_tf_idf(
    texts: Sequence[str], labels: Sequence[int], n_words: int = 6, ignore: Sequence[str] | None = None
) -> dict[int, list[str]]:
    """The `n_words` most distinctive words of each label's posts (class-based TF-IDF), leaving out
    `ignore` (default: the `stop_words` of the posts' languages)."""
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer

    classes = sorted(set(labels))
    documents = [
        " ".join(URL_RE.sub(" ", t) for t, lab in zip(texts, labels, strict=True) if lab == c) for c in classes
    ]
    ignore = stop_words(texts) if ignore is None else ignore
    vectorizer = CountVectorizer(stop_words=list(ignore) or None, token_pattern=WORD_PATTERN, lowercase=True)
    try:
        counts = vectorizer.fit_transform(documents).toarray().astype(float)
    except ValueError:  # no words at all (every post a link or a stop word)
        return {c: [] for c in classes}
    vocabulary = vectorizer.get_feature_names_out()
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    idf = np.log(1 + counts.sum(axis=1).mean() / np.maximum(counts.sum(axis=0), 1))
    scores = tf * idf
    out: dict[int, list[str]] = {}
    for row, c in enumerate(classes):
        order = sorted(range(len(vocabulary)), key=lambda j: (-scores[row, j], vocabulary[j]))
        out[c] = [str(vocabulary[j]) for j in order[:n_words] if counts[row, j] > 0]
    return out


def topics(
    account: str, texts: Sequence[str], embed: Embed, k: int | None = None, seed: int = 0, n_words: int = 6
) -> TopicMap:
    """Cluster an account's posts into `k` topics (default `topic_count`), largest first."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    k = k or topic_count(len(texts))
    if len(texts) < 2 * k:
        raise InputError(f"{account} has {len(texts)} posts: too few for {k} topics (at least {2 * k})")
    vectors = embed(list(texts))
    raw = KMeans(n_clusters=k, random_state=seed, n_init=10).fit_predict(vectors)
    sizes = {c: int((raw == c).sum()) for c in set(raw.tolist())}
    rank = {c: i for i, c in enumerate(sorted(sizes, key=lambda c: (-sizes[c], c)))}  # 0: the largest
    labels = [rank[int(c)] for c in raw]
    words = c_tf_idf(texts, labels, n_words)
    centres = {t: vectors[[i for i, lab in enumerate(labels) if lab == t]].mean(axis=0) for t in rank.values()}
    found = []
    for t in sorted(centres):
        members = [i for i, lab in enumerate(labels) if lab == t]
        closest = sorted(members, key=lambda i: -float(vectors[i] @ centres[t]))[:3]
        found.append(Topic(t, len(members), len(members) / len(texts), words[t], [texts[i] for i in closest]))
    points = PCA(n_components=2, random_state=seed).fit_transform(vectors)
    return TopicMap(account, seed, found, labels, [(float(x), float(y)) for x, y in points])


# ---- the style map ---------------------------------------------------------------------------


def surface_features(text: str) -> list[float]:
    """Eight numbers on how a post looks, not what it says."""
    letters = [c for c in text if c.isalpha()]
    return [
        len(text),
        len(text.split()),
        len(MENTION_RE.findall(text)),
        len(HASHTAG_RE.findall(text)),
        len(URL_RE.findall(text)),
        len(EMOJI_RE.findall(text)),
        sum(c.isupper() for c in letters) / max(1, len(letters)),
        sum(not c.isalnum() and not c.isspace() for c in text) / max(1, len(text)),
    ]


@dataclass(frozen=True)
class StyleMap:
    accounts: list[str]
    centroids: dict[str, tuple[float, float]]
    real: dict[str, list[tuple[float, float]]]
    generated: dict[str, list[tuple[float, float]]]
    lands_near: dict[str, float]  # share of each account's generated posts whose nearest centroid is its own
    nearest: dict[str, dict[str, int]]  # generated posts of each account by their nearest account
    projection: str = "PCA"  # how the plane was found: LDA (3 or more accounts) or PCA

    def to_dict(self) -> dict[str, Any]:
        return {
            "accounts": self.accounts,
            "lands_near": self.lands_near,
            "nearest": self.nearest,
            "projection": self.projection,
        }


def style_map(
    real: dict[str, Sequence[str]], generated: dict[str, Sequence[str]], embed: Embed, seed: int = 0
) -> StyleMap:
    """The accounts' real posts (at most MAX_POSTS each, seeded) and generated posts on one plane."""
    import numpy as np
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    if len(real) < 2:
        raise InputError("the style map needs at least two accounts with posts")
    rng = random.Random(seed)
    accounts = sorted(real)
    chosen = {a: list(real[a]) if len(real[a]) <= MAX_POSTS else rng.sample(list(real[a]), MAX_POSTS) for a in accounts}
    made = {a: list(generated[a]) for a in accounts if generated.get(a)}
    texts = [t for a in accounts for t in chosen[a]] + [t for a in made for t in made[a]]
    features = np.array([surface_features(t) for t in texts])
    n_real = sum(len(chosen[a]) for a in accounts)
    mean, std = features[:n_real].mean(axis=0), features[:n_real].std(axis=0) + 1e-9
    # The features weigh as much as the embedding together: each unit vector's squared norm is 1.
    style = np.hstack([embed(texts), (features - mean) / std / math.sqrt(features.shape[1])])
    spans: dict[str, tuple[int, int]] = {}
    at = 0
    for a in accounts:
        spans[a] = (at, at + len(chosen[a]))
        at += len(chosen[a])
    if len(accounts) >= 3:  # the plane that best tells the real accounts apart (2 of its n - 1 axes)
        owner = [a for a in accounts for _ in chosen[a]]
        projection = "LDA"
        fitted: Any = LinearDiscriminantAnalysis(n_components=2, solver="eigen", shrinkage="auto")
        fitted.fit(style[:n_real], owner)
    else:  # one discriminant axis only: the plane of most variance
        projection = "PCA"
        fitted = PCA(n_components=2, random_state=seed).fit(style[:n_real])
    plane = fitted.transform(style)
    centre = {a: style[slice(*spans[a])].mean(axis=0) for a in accounts}
    lands: dict[str, float] = {}
    nearest: dict[str, dict[str, int]] = {}
    generated_points: dict[str, list[tuple[float, float]]] = {}
    for a in made:
        rows = style[at : at + len(made[a])]
        points = plane[at : at + len(made[a])]
        at += len(made[a])
        closest = [min(accounts, key=lambda b: float(((row - centre[b]) ** 2).sum())) for row in rows]
        lands[a] = sum(c == a for c in closest) / len(closest)
        nearest[a] = {b: closest.count(b) for b in accounts if b in closest}
        generated_points[a] = [(float(x), float(y)) for x, y in points]
    return StyleMap(
        accounts,
        {a: tuple(float(v) for v in fitted.transform(centre[a][None])[0]) for a in accounts},  # type: ignore[misc]
        {a: [(float(x), float(y)) for x, y in plane[slice(*spans[a])]] for a in accounts},
        generated_points,
        lands,
        nearest,
        projection,
    )


# ---- pictures and the page ---------------------------------------------------------------------


def plot_topics(topic_map: TopicMap) -> bytes:
    """PNG: the account's posts on a 2D plane, coloured by topic, each topic labelled at its centre."""
    from tweetlm.plots import figure, png

    fig = figure(8.0, 5.5)
    axes = fig.add_subplot()
    colours = _colours(len(topic_map.topics))
    for topic in topic_map.topics:
        xy = [p for p, lab in zip(topic_map.points, topic_map.labels, strict=True) if lab == topic.topic]
        axes.scatter(*zip(*xy, strict=True), s=10, alpha=0.55, color=colours[topic.topic])
        cx, cy = (sum(v) / len(xy) for v in zip(*xy, strict=True))
        label = f"{topic.topic}: " + " ".join(topic.words[:3])
        axes.annotate(label, (cx, cy), fontsize=8, weight="bold", ha="center")
    axes.set_title(f"Topics of @{topic_map.account} ({len(topic_map.labels)} posts, seed {topic_map.seed})")
    axes.set_xticks([])
    axes.set_yticks([])
    return png(fig)


def plot_style(style: StyleMap) -> bytes:
    """PNG: real posts (dots), account centroids (labelled) and generated posts (crosses), one colour each."""
    from tweetlm.plots import figure, png

    fig = figure(8.0, 5.5)
    axes = fig.add_subplot()
    colours = _colours(len(style.accounts))
    for i, a in enumerate(style.accounts):
        axes.scatter(*zip(*style.real[a], strict=True), s=6, alpha=0.25, color=colours[i])
        if style.generated.get(a):
            axes.scatter(*zip(*style.generated[a], strict=True), s=28, marker="x", color=colours[i])
        axes.scatter(*style.centroids[a], s=160, marker="o", edgecolor="black", color=colours[i])
        axes.annotate(f"@{a}", style.centroids[a], fontsize=9, weight="bold", xytext=(6, 6), textcoords="offset points")
    axes.set_title(f"Accounts by style ({style.projection}): real posts (dots), centroids, generated posts (x)")
    axes.set_xticks([])
    axes.set_yticks([])
    return png(fig)


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def topic_rows(topic_map: TopicMap) -> list[tuple[str, str, str, str, str]]:
    return [
        (str(t.topic), str(t.posts), f"{100 * t.share:.0f}%", ", ".join(t.words), t.examples[0] if t.examples else "")
        for t in topic_map.topics
    ]


def maps_html(topic_maps: Sequence[TopicMap], style: StyleMap | None, notes: Sequence[str] = ()) -> str:
    """The maps as an HTML fragment (images inlined): one topic table and plot per account, the style map."""
    import base64

    def img(png: bytes, alt: str) -> str:
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'

    def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts = []
    for tm in topic_maps:
        parts.append(f"<h3>Topics of @{html.escape(tm.account)}</h3>")
        parts.append(table(topic_rows(tm), ["topic", "posts", "share", "distinctive words (c-TF-IDF)", "a post"]))
        parts.append(img(plot_topics(tm), f"topics of @{tm.account}"))
    if style is not None:
        parts.append("<h3>Accounts by style</h3>")
        if style.lands_near:
            rows = [
                (f"@{a}", f"{100 * share:.0f}%", ", ".join(f"@{b}: {n}" for b, n in style.nearest[a].items()))
                for a, share in style.lands_near.items()
            ]
            parts.append(table(rows, ["generated for", "nearest their person", f"nearest centroid ({SHORT_LABEL})"]))
        parts.append(img(plot_style(style), "accounts by style"))
    parts += [f'<p class="muted">note: {html.escape(n)}</p>' for n in notes]
    return "\n".join(parts)


def write_maps_page(path: Path, topic_maps: Sequence[TopicMap], style: StyleMap | None, notes: Sequence[str]) -> Path:
    from tweetlm import paths
    from tweetlm.plots import CSS

    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>tweetlm map</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n<h1>tweetlm map</h1>\n{maps_html(topic_maps, style, notes)}\n"
        "</body>\n</html>\n"
    )
    return paths.atomic_write(path, page)


def run_posts(runs: Sequence[str]) -> dict[str, list[str]]:
    """The fine-tuned posts `tweetlm eval` generated in each of `runs` (folders, names or accounts), by
    account; InputError for a run of several accounts, one not evaluated, or two runs of one account."""
    from tweetlm.runs import RunFolder

    out: dict[str, list[str]] = {}
    for name in runs:
        folder = RunFolder.resolve(name)
        info, result = folder.read(), folder.evaluation()
        if len(info.accounts) != 1:
            raise InputError(f"run {folder.name} was trained on {len(info.accounts)} accounts: give one-account runs")
        if not (result and result.get("generated", {}).get("fine_tuned")):
            raise InputError(f"run {folder.name} has no generated posts: run `tweetlm eval {folder.name}` first")
        if info.accounts[0] in out:
            raise InputError(f"two runs of @{info.accounts[0]} given: give one run per account")
        out[info.accounts[0]] = list(result["generated"]["fine_tuned"])
    return out


def generated_by_account(accounts: Sequence[str], given: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """The fine-tuned posts `tweetlm eval` generated for each account: `given` (`run_posts`) where it has
    the account, else from the account's latest evaluated run trained on it alone (none where there is
    no such run)."""
    from tweetlm.runs import RunFolder

    out = dict(given or {})
    for account in out:
        if account not in accounts:
            raise InputError(f"posts of @{account} given, whose real posts are not in the store: import them")
    for folder, info in RunFolder.all():  # newest first
        if len(info.accounts) != 1 or info.accounts[0] not in accounts or info.accounts[0] in out:
            continue
        result = folder.evaluation()
        if result and result.get("generated", {}).get("fine_tuned"):
            out[info.accounts[0]] = list(result["generated"]["fine_tuned"])
    return out


def account_maps(
    real: dict[str, Sequence[str]],
    generated: dict[str, Sequence[str]],
    embed: Embed,
    topics_of: Sequence[str],
    k: int | None = None,
    seed: int = 0,
) -> tuple[list[TopicMap], StyleMap | None, list[str]]:
    """The topic maps of `topics_of` and the style map of every account in `real`, with notes on
    what could not be drawn."""
    notes: list[str] = []
    topic_maps = []
    for account in topics_of:
        try:
            topic_maps.append(topics(account, real[account], embed, k, seed))
        except InputError as exc:
            notes.append(f"no topics for @{account}: {exc}")
    style = None
    try:
        style = style_map(real, generated, embed, seed)
    except InputError as exc:
        notes.append(f"no style map: {exc} (import another account)")
    if style is not None and not style.lands_near:
        notes.append("no generated posts on the style map: run `tweetlm eval RUN` on a one-account run first")
    return topic_maps, style, notes


def topic_distance(
    real: Sequence[str], generated: Sequence[str], embed: Embed, k: int | None = None, seed: int = 0
) -> float:
    """How far the generated posts' topic mix is from the real posts': the real posts clustered as
    `topics` does, each generated post given its nearest cluster, then the total variation distance
    between the two shares of posts per cluster (0: the same mix, 1: no topic in common)."""
    from sklearn.cluster import KMeans

    if not generated:
        raise InputError("no generated posts to place among the topics")
    k = k or topic_count(len(real))
    kmeans = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(embed(list(real)))
    made = kmeans.predict(embed(list(generated)))
    return 0.5 * sum(abs(float((kmeans.labels_ == c).mean()) - float((made == c).mean())) for c in range(k))
