"""Curation rules: each one on known inputs, and properties that hold for any text."""

from __future__ import annotations

import html
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tweetlm.curate import (
    PLAIN_RE,
    URL_RE,
    CurateConfig,
    CurationReport,
    _repair,
    clean_text,
    curate_posts,
    repair_text,
    word_count,
)
from tweetlm.records import Kind, Post

DEFAULT = CurateConfig()


def post(text: str, i: int = 0, **kw: object) -> Post:
    return Post(platform="x", account="me", post_id=str(i), text=text, **kw)  # type: ignore[arg-type]


def test_every_html_entity_is_unescaped_even_twice_escaped() -> None:
    assert clean_text("Michelle &amp; I &lt;3 &quot;this&quot; &#8212; &hellip; &amp;amp;", DEFAULT) == (
        'Michelle & I <3 "this" — … &'
    )


def test_fivethirtyeight_mojibake_is_repaired() -> None:
    # As the FiveThirtyEight CSV reads when decoded as Mac Roman.
    assert repair_text("we‰Ûªre changing the climate ‰ÛÓPresident Obama") == (
        "we're changing the climate —President Obama"
    )
    assert repair_text("Join us a‰Û_") == "Join us a…"
    assert repair_text("cafÃ© dÃ©jÃ  vu") == "café déjà vu"  # ordinary UTF-8-as-Latin-1 damage


def test_urls_and_picture_links_go_without_double_spaces() -> None:
    text = "Look at this https://t.co/abc123 and pic.twitter.com/xyz and www.example.com/a?b=c  now http://x.y"
    assert clean_text(text, DEFAULT) == "Look at this and and now"
    assert clean_text("t.co/abc trailing", DEFAULT) == "trailing"


def test_newlines_become_spaces_unless_kept() -> None:
    assert clean_text("line one\n\nline   two\n", DEFAULT) == "line one line two"
    assert clean_text("line one\n\n\n\nline   two\n", CurateConfig(keep_newlines=True)) == "line one\n\nline two"


def test_leading_mentions_stripped_only_when_asked() -> None:
    assert clean_text("@a @b_c: thanks for this", DEFAULT) == "@a @b_c: thanks for this"
    assert clean_text("@a @b_c: thanks for @d this", CurateConfig(strip_mentions=True)) == "thanks for @d this"


def test_boring_posts_count_words_that_are_not_mentions_hashtags_or_links() -> None:
    assert word_count("@someone #tag https://t.co/x ok") == 1
    result = curate_posts(
        [post("@someone yes!", 0), post("#Tag #Other", 1), post("three real words", 2), post("two words", 3)], DEFAULT
    )
    assert [p.text for p in result.posts] == ["three real words"]
    assert result.report.dropped["short"] == 3


def test_report_counts_add_up_and_keep_examples() -> None:
    posts = [
        post("RT @other: something they said long enough", 0, kind=Kind.RETWEET),
        post("RT @other: detected by the prefix alone here", 1),
        post("@friend I agree with you there", 2, kind=Kind.REPLY, reply_to="friend"),
        post("An original thought worth keeping", 3),
        post("An original thought worth keeping", 4),
        post("https://t.co/onlyalink", 5),
        post("En français cette fois ci", 6, lang="fr"),
    ]
    result = curate_posts(posts, CurateConfig(drop_replies=True, lang="en"))
    r = result.report
    assert r.downloaded == 7 and r.kept == 1
    assert r.dropped == {
        "retweets": 2,
        "replies": 1,
        "quotes": 0,
        "automated": 0,
        "language": 1,
        "empty": 1,
        "garbled": 0,
        "short": 0,
        "duplicates": 1,
    }
    assert r.downloaded == r.kept + sum(r.dropped.values())
    assert r.examples["retweets"][0].startswith("RT @other")
    assert CurationReport.from_dict(r.to_dict()).to_dict() == r.to_dict()


def test_switching_a_rule_off_keeps_what_it_dropped() -> None:
    posts = [
        post("RT @x: a retweet with words", 0),
        post("a reply to myself in a thread", 1, kind=Kind.REPLY, reply_to="me"),
    ]
    assert curate_posts(posts, CurateConfig(drop_retweets=False)).report.kept == 2
    assert curate_posts(posts, CurateConfig(drop_replies=True)).report.kept == 1  # self-replies are threads


ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[A-Za-z]+\d*);?")


PIECES = st.sampled_from(
    [
        "&amp;",
        "&lt;",
        "&#39;",
        "&",
        ";",
        "#",
        "http://",
        "https://t.co/",
        "pic.twitter.com/",
        "www.",
        " ",
        "  ",
        "\n",
        "\t",
        "\u00a0",
        "@",
        "‰Ûª",
        "â€",
        "Ã©",
        "amp",
        "nbsp",
        "t.co/",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(PIECES, st.text(max_size=8)), max_size=40).map("".join), st.booleans())
def test_curation_never_crashes_nor_leaves_urls_entities_or_double_spaces(text: str, keep_newlines: bool) -> None:
    config = CurateConfig(keep_newlines=keep_newlines)
    out = clean_text(text, config)
    assert not URL_RE.search(out)
    assert html.unescape(out) == out, "an HTML entity survived"
    assert "  " not in out and out == out.strip()
    if not keep_newlines:
        assert "\n" not in out
    assert clean_text(out, config) == out  # idempotent
    curate_posts([post(text)], config)


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=60))
def test_the_plain_text_fast_path_skips_only_text_the_full_repair_leaves_alone(text: str) -> None:
    # repair_text skips ftfy for printable ASCII without entities; that must change no output.
    if PLAIN_RE.fullmatch(text):
        assert _repair(text) == text
    assert repair_text(text) == _repair(text)


def test_curating_an_account_streams_into_the_store_and_a_failure_leaves_it_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tweetlm.curate as curate
    from tweetlm.errors import NoDataError
    from tweetlm.store import Store

    texts = ["a post with enough words", "RT @x: a retweet of words", "a post with enough words", "too short"]
    with Store() as store:
        store.import_posts([post(t, i) for i, t in enumerate(texts * 3)], source="t", path="p", file_hash="h")
        dataset, report = curate.curate_account(store, "me", DEFAULT, with_posts=False)
        expected = curate_posts(store.iter_posts("me"), DEFAULT)
        assert dataset.posts == () and dataset.n_posts == report.kept == len(expected.posts) == 1
        assert report.to_dict() == expected.report.to_dict() == dataset.report
        assert store.dataset("me") is not None and store.dataset("me").texts == ["a post with enough words"]
        snapshot = [list(map(tuple, store.db.execute(f"SELECT * FROM {t}"))) for t in ("datasets", "dataset_posts")]

        calls = iter(range(100))

        def breaks_on_the_fifth(text: str, config: CurateConfig) -> str:
            if next(calls) == 5:
                raise RuntimeError("boom")
            return clean_text(text, config)

        monkeypatch.setattr(curate, "clean_text", breaks_on_the_fifth)
        with pytest.raises(RuntimeError, match="boom"):
            curate.curate_account(store, "me", CurateConfig(min_words=1))
        monkeypatch.undo()
        with pytest.raises(NoDataError, match="rule 'short' removed"):
            curate.curate_account(store, "me", CurateConfig(min_words=50))
        after = [list(map(tuple, store.db.execute(f"SELECT * FROM {t}"))) for t in ("datasets", "dataset_posts")]
        assert after == snapshot
