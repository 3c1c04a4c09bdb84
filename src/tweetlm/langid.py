"""Language of a post: the platform's `lang` field when it names one, else py3langid on the cleaned text.

py3langid (a maintained fork of langid.py, 97 languages, ISO 639-1 codes) was chosen over
lingua-language-detector on the six shared X archives, scored against X's own `lang` field on 7,306
curated posts: 95.9% agreement against lingua's 93.4%, 40-100 times faster per post and quicker to load
(docs/curation.md; `benchmarks/language_id.py` measures both).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from tweetlm.errors import InputError

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

# X's codes for posts without a language: undetermined, no linguistic content, media, hashtags,
# mentions, cashtags or links only, short text, translation.
NO_LANGUAGE = frozenset({"und", "zxx", "qme", "qht", "qam", "qct", "qst", "qtr", "qlk", "art"})
ALIASES = {"in": "id", "iw": "he", "ji": "yi"}  # older codes platforms still send
MIN_CONFIDENCE = 0.5  # below this (normalised probability) a detection is "unknown"
INSTALL_HINT = "pip install py3langid"


@lru_cache(maxsize=1)
def _identifier() -> LanguageIdentifier:
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as exc:
        raise InputError(f"language identification needs py3langid: {INSTALL_HINT}") from exc
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def known() -> frozenset[str]:
    """The language codes the detector knows."""
    return frozenset(_identifier().nb_classes)


def check(code: str) -> str:
    """`code` in the detector's spelling, or an InputError naming some it knows."""
    lang = ALIASES.get(code.strip().lower(), code.strip().lower())
    if lang not in known():
        raise InputError(
            f"unknown language code {code!r}: use an ISO 639-1 code the detector knows, e.g. "
            f"en, de, es, fr, ja, zh, th ({len(known())} in all)"
        )
    return lang


def detect(text: str) -> str | None:
    """The language of `text`, or None when it has no letters or the detector is unsure."""
    if not any(c.isalpha() for c in text):
        return None
    lang, probability = _identifier().classify(text)
    return str(lang) if probability >= MIN_CONFIDENCE else None


def language(platform_lang: str | None, text: str) -> str | None:
    """The platform's language when it names one, else the detected language of `text`."""
    if platform_lang:
        code = platform_lang.strip().lower().split("-")[0]
        if code not in NO_LANGUAGE:
            return ALIASES.get(code, code)
    return detect(text)
