#!/usr/bin/env python
"""Language identification on short posts: py3langid against lingua-language-detector.

Curates the six X archives of ../shared/data/archives with the default rules and scores each detector
against X's own `lang` field on the kept posts that have one (X's field is itself a classifier: this is
agreement, not ground truth). Prints load time, time per post and agreement, overall and per language.

  pip install lingua-language-detector   # only for this comparison; tweetlm uses py3langid
  python benchmarks/language_id.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def labelled_posts() -> list[tuple[str, str]]:
    from curation_table import ACCOUNTS, import_all

    from tweetlm.curate import CurateConfig, curate_posts
    from tweetlm.langid import NO_LANGUAGE
    from tweetlm.store import Store

    pairs = []
    with Store() as store:
        accounts = import_all(store)
        for account, (relative, _) in zip(accounts, ACCOUNTS, strict=True):
            if not relative.startswith("archives/"):
                continue
            posts = list(store.iter_posts(account))
            lang = {p.post_id: p.lang for p in posts}
            for kept in curate_posts(posts, CurateConfig()).posts:
                if lang[kept.post_id] and lang[kept.post_id] not in NO_LANGUAGE:
                    pairs.append((kept.text, str(lang[kept.post_id])))
    return pairs


def py3langid_detector() -> Callable[[str], str | None]:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return lambda text: str(identifier.classify(text)[0])


def lingua_detector() -> Callable[[str], str | None]:
    from lingua import LanguageDetectorBuilder

    detector = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()

    def detect(text: str) -> str | None:
        found = detector.detect_language_of(text)
        return found.iso_code_639_1.name.lower() if found else None

    return detect


def measure(name: str, build: Callable[[], Callable[[str], str | None]], pairs: list[tuple[str, str]]) -> None:
    start = time.perf_counter()
    try:
        detect = build()
    except ImportError as exc:
        print(f"{name}: not installed ({exc.name})")
        return
    detect("warm up")
    loaded = time.perf_counter()
    predicted = [detect(text) for text, _ in pairs]
    done = time.perf_counter()
    right, total = Counter(), Counter()
    for (_, gold), guess in zip(pairs, predicted, strict=True):
        total[gold] += 1
        right[gold] += gold == guess
    per = ", ".join(f"{lang} {right[lang] / n:.2f} ({n})" for lang, n in total.most_common(4))
    print(
        f"{name}: load {loaded - start:.1f} s, {1e3 * (done - loaded) / len(pairs):.3f} ms/post, "
        f"agreement {sum(right.values()) / len(pairs):.3f}; {per}"
    )


def main() -> int:
    with tempfile.TemporaryDirectory() as home:
        os.environ["TWEETLM_HOME"] = home
        pairs = labelled_posts()
    print(f"{len(pairs)} kept posts with X's lang field: {Counter(g for _, g in pairs).most_common(5)}")
    measure("py3langid", py3langid_detector, pairs)
    measure("lingua (all languages, preloaded)", lingua_detector, pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
