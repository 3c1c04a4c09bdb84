"""The curation rules for every account: length by script, posts written by apps, manual retweets, what
removed links leave behind, the mojibake family, languages; and the curate command on a Japanese sample."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import ftfy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import store_digest, tweetlm
from tweetlm import langid
from tweetlm.curate import (
    AUTOMATED_APPS,
    CurateConfig,
    clean_text,
    curate_posts,
    cut_quoted,
    mixed_languages,
    strip_leftovers,
    word_count,
)
from tweetlm.errors import InputError
from tweetlm.mojibake import LOST_MARK, PASSED, UNDEFINED, readings, repair, undecided
from tweetlm.records import Post
from tweetlm.store import Dataset

DEFAULT = CurateConfig()

# Written for these tests, in the manner of a Japanese account: sentences without spaces, a few short
# replies and scores, retweets.
JAPANESE = [
    "教えていただきました ありがとうございました",
    "今日は朝から雨でしたが、午後は晴れて散歩に行けました。",
    "新しいカメラを買ったので週末は写真を撮りに行く予定です",
    "会議が長引いて昼ごはんを食べ損ねた",
    "このラーメン屋さん、本当においしいのでおすすめです！",
    "明日の発表の準備がまだ終わらない…",
    "電車が遅れていて会社に遅刻しそう",
    "久しぶりに友達と会って楽しかった",
    "桜がきれいに咲いていました",
    "週末は家で本を読んでゆっくり過ごします",
    "猫が膝の上で寝てしまって動けない",
    "プログラミングの勉強を始めて一か月になりました",
    "駅前に新しいカフェができたらしい",
    "風邪をひいてしまったので今日は早く寝ます",
    "おはようございます",
    "了解です",
    "57点",
    "88点",
    "w",
    "RT @friend: 今日のイベントに来てくれた皆さん、ありがとうございました",
    "RT @news: 東京で初雪を観測しました",
]
CHINESE = ["今天天气很好，我们去公园散步了", "谢谢大家的支持", "好", "这本书非常有意思，推荐给大家"]
THAI = ["วันนี้อากาศดีมากเลยครับ", "ขอบคุณครับ", "ไป", "กินข้าวหรือยัง"]
MIXED = ["今日は good day だった", "Thanks 谢谢", "新しい MacBook を買った", "OK 了"]


def post(text: str, i: int = 0, **kw: object) -> Post:
    return Post(platform="x", account="me", post_id=str(i), text=text, **kw)  # type: ignore[arg-type]


def kept(texts: list[str], config: CurateConfig = DEFAULT) -> list[str]:
    return [p.text for p in curate_posts([post(t, i) for i, t in enumerate(texts)], config).posts]


# ---- length by script ----------------------------------------------------------------------------


def test_scripts_without_spaces_count_letters_not_whitespace_words() -> None:
    assert word_count("教えていただきました ありがとうございました") == 21
    assert word_count("57点") == 1  # digits are not letters
    assert word_count("ขอบคุณครับ") == 8  # Thai vowel marks are not letters of their own
    assert word_count("Thanks 谢谢") == 3 and word_count("新しい MacBook を買った") == 8
    assert word_count("#拡散希望 @someone") == 0
    assert word_count("three plain words") == 3 == word_count("three plain words", by_script=False)
    assert word_count("教えていただきました ありがとうございました", by_script=False) == 2


def test_japanese_posts_are_kept_and_scores_still_go() -> None:
    originals = [t for t in JAPANESE if not t.startswith("RT @")]
    result = curate_posts([post(t, i) for i, t in enumerate(JAPANESE)], DEFAULT)
    texts = [p.text for p in result.posts]
    assert len(texts) / len(originals) >= 0.7
    assert "57点" not in texts and "88点" not in texts and "w" not in texts
    assert "了解です" in texts  # four letters: a short but real reply
    assert result.report.dropped["retweets"] == 2 and result.report.dropped["short"] == 3
    assert result.report.languages == {"ja": len(texts)}
    # Counting whitespace words, as before, keeps almost nothing.
    assert len(kept(JAPANESE, CurateConfig(count_by_script=False))) / len(originals) < 0.3


def test_chinese_thai_and_mixed_posts() -> None:
    assert kept(CHINESE) == ["今天天气很好，我们去公园散步了", "谢谢大家的支持", "这本书非常有意思，推荐给大家"]
    assert kept(THAI) == ["วันนี้อากาศดีมากเลยครับ", "ขอบคุณครับ", "กินข้าวหรือยัง"]
    assert kept(MIXED) == ["今日は good day だった", "Thanks 谢谢", "新しい MacBook を買った"]
    assert kept(MIXED, CurateConfig(min_words=4)) == ["今日は good day だった", "新しい MacBook を買った"]


# ---- posts written by apps -----------------------------------------------------------------------


def from_app(text: str, i: int, app: str) -> Post:
    source = f'<a href="https://example.com" rel="nofollow">{app}</a>'
    return post(text, i, raw={"source": source, "full_text": text})


def test_posts_of_auto_posters_go_with_the_app_named_and_human_tools_stay() -> None:
    posts = [
        from_app("The House is scheduled to vote on H.R. 1036 this week via https://t.co/x", 0, "IFTTT"),
        from_app("On the Border https://t.co/DYEotH3p", 1, "Instagram"),
        from_app("ACID versus BASE for database transactions: https://t.co/rS6", 2, "Pearltrees Connect"),
        from_app("Common Sentse is out! https://t.co/5X Stories via @a @b", 3, "Paper.li"),
        from_app("Typed this myself on the train home", 4, "Twitter for iPhone"),
        from_app("Scheduled but written by me for the launch", 5, "Buffer"),
        from_app("A thread I wrote in the browser today", 6, "Twitter Web App"),
        from_app("Column view makes this easy to follow", 7, "TweetDeck"),
        from_app("Planned this post last week myself", 8, "Hootsuite"),
    ]
    result = curate_posts(posts, DEFAULT, examples=5)
    assert [p.post_id for p in result.posts] == ["4", "5", "6", "7", "8"]
    assert result.report.dropped["automated"] == 4
    assert result.report.examples["automated"][0].startswith("[IFTTT] The House")
    assert result.report.examples["automated"][2].startswith("[Pearltrees Connect] ")
    assert curate_posts(posts, CurateConfig(drop_automated=False)).report.kept == 9
    assert all(reason for reason in AUTOMATED_APPS.values())


def test_app_text_patterns_go_even_without_a_source_field() -> None:
    texts = [
        "Just posted a photo https://t.co/lMl9tc5Y",
        "I'm at Blue Bottle Coffee in Oakland, CA https://t.co/abc",
        "I'm at Starbucks (123 Main St) http://4sq.com/xyz",
        "I liked a @YouTube video https://t.co/x Some talk",
        "The Daily Widget is out! https://t.co/x Stories via @a",
        "I'm at home and not going anywhere tonight",  # a person, no link: stays
        "Just posted a long answer to my own question, thanks all",  # not "a photo": stays
    ]
    posts = [Post(platform="csv", account="me", post_id=str(i), text=t) for i, t in enumerate(texts)]
    result = curate_posts(posts, DEFAULT, examples=5)
    assert [p.text for p in result.posts] == [
        "I'm at home and not going anywhere tonight",
        "Just posted a long answer to my own question, thanks all",
    ]
    assert result.report.examples["automated"][0] == "[text pattern] Just posted a photo https://t.co/lMl9tc5Y"


# ---- manual retweets and link leftovers ----------------------------------------------------------


def test_a_manual_retweet_keeps_only_the_persons_comment() -> None:
    assert cut_quoted("Nice! RT @paul_irish: Quite attractive deck about CSS") == "Nice!"
    assert cut_quoted("So true, everyone should read this MT @someone: long quote") == (
        "So true, everyone should read this"
    )
    assert cut_quoted("After A Four Year Run, Firefox Is No Longer The Top Browser via @techcrunch") == (
        "After A Four Year Run, Firefox Is No Longer The Top Browser"
    )
    assert cut_quoted("Worth keeping in mind. (graphic via @WhiteHouse)") == "Worth keeping in mind."
    assert cut_quoted("She said it via @x on stage yesterday") == "She said it via @x on stage yesterday"
    posts = [
        post("Great point about the budget RT @other: the budget is wrong", 0),
        post("@friend RT @other: nothing of mine in here at all", 1),
        post("RT @other: a plain retweet", 2),
    ]
    result = curate_posts(posts, DEFAULT)
    assert [p.text for p in result.posts] == ["Great point about the budget"]
    assert result.report.dropped["retweets"] == 2
    assert kept(["Great point about the budget RT @other: the budget is wrong"], CurateConfig(cut_quoted=False)) == [
        "Great point about the budget RT @other: the budget is wrong"
    ]


STRIPPED = {  # what a removed link leaves, and what remains of the post
    "Today marks 50 years since the march. Read more: https://t.co/a": "Today marks 50 years since the march.",
    "The President on climate change. Watch: https://t.co/a": "The President on climate change.",
    "Add your name to support the new overtime rule: https://t.co/a": "Add your name to support the new overtime rule",
    "Give Judge Garland a fair hearing: https://t.co/a #DoYourJob": "Give Judge Garland a fair hearing #DoYourJob",
    "New post on the blog - https://t.co/a": "New post on the blog",
    "Interesting piece on the economy via https://t.co/a": "Interesting piece on the economy",
    "Big news today. Learn more https://t.co/a": "Big news today.",
    "Check this out → https://t.co/a": "Check this out",
    "The slides of my talk. Details: https://t.co/a": "The slides of my talk.",
}
KEPT = {  # the same words without a removed link, or in the middle of a post, stay
    "I love to read https://t.co/a": "I love to read",
    "Watch the speech live: https://t.co/a": "Watch the speech live",
    "Read more: the report is out and it is good https://t.co/a": "Read more: the report is out and it is good",
    "Two things: bread and butter": "Two things: bread and butter",
    "Note to self - ": "Note to self -",
    "Ends with a colon on purpose:": "Ends with a colon on purpose:",
    "Join us here: https://t.co/a": "Join us here",
}


@pytest.mark.parametrize("text", list(STRIPPED) + list(KEPT))
def test_what_removed_links_leave_is_stripped_and_the_rest_kept(text: str) -> None:
    expected = {**STRIPPED, **KEPT}[text]
    assert clean_text(text, DEFAULT) == expected
    if text in STRIPPED:
        assert clean_text(text, CurateConfig(strip_leftovers=False)) != expected


def test_leftover_stripping_leaves_closing_hashtags_and_mentions() -> None:
    assert strip_leftovers("A good one: #econ @someone") == "A good one #econ @someone"
    assert strip_leftovers("via") == ""


# ---- mojibake: the family, not the instances ---------------------------------------------------------


def _layer(data: bytes) -> bytes:
    """One layer of the FiveThirtyEight damage: bytes read as Windows-1252, written as Mac Roman; undefined
    bytes pass through, characters Mac Roman lacks become "_"."""
    out = bytearray()
    for byte in data:
        if byte < 0x80 or byte in UNDEFINED:
            out.append(byte)
            continue
        try:
            out += bytes([byte]).decode("cp1252").encode("mac_roman")
        except UnicodeEncodeError:
            out += LOST_MARK.encode()
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(st.characters(min_codepoint=0x80, max_codepoint=0x1FAFF, exclude_categories=("Cs", "Co", "Cn", "Cc")))
def test_any_character_damaged_by_one_or_two_layers_is_repaired_or_reported(char: str) -> None:
    for layers in (1, 2):
        damaged = char.encode("utf-8")
        for _ in range(layers):
            damaged = _layer(damaged)
        text = f"a {damaged.decode('mac_roman')} b"
        repaired = repair(text)
        chunk = damaged.decode("mac_roman")
        meanings = readings(chunk, 1) | readings(chunk, 2)
        if chunk.startswith(LOST_MARK):
            continue  # the lead byte itself was lost: nothing tells it from an underscore
        if layers == 1 and not any(c == LOST_MARK or c in PASSED for c in chunk):
            assert repaired == ftfy.fix_text(text)  # plain one-layer mojibake: ftfy's call, as before
            continue
        # Repaired, or reported as undecidable (3-4 bytes), or a 2-byte reading left alone (it could be a name).
        assert repaired == ftfy.fix_text(f"a {char} b") or undecided(text) or (len(meanings) > 1 and len(chunk) == 2)


def test_most_symbols_and_punctuation_damaged_twice_come_back() -> None:
    chars = [chr(c) for c in range(0x2000, 0x2C00) if unicodedata.category(chr(c))[0] in "PS"]
    back = sum(repair(_layer(_layer(c.encode())).decode("mac_roman")) == ftfy.fix_text(c) for c in chars)
    assert back / len(chars) >= 0.5, back / len(chars)


def test_the_sequences_of_the_issue_and_the_obama_file() -> None:
    assert repair("Coffee: â€ù please") == 'Coffee: " please'  # one layer, the ” byte passed through
    assert repair("insured ‰ÏÓ•üè 15 million") == "insured ✔\ufe0f 15 million"
    assert repair("Join us a‰Û_") == "Join us a…"
    assert repair("cafÃ© dÃ©jÃ  vu") == "café déjà vu"
    assert repair("ção, José_, 45€, ありがとう！") == "ção, José_, 45€, ありがとう！"  # text as it should be stays
    assert undecided("Coffee: ‰ö_Fall sweater") == 1  # √, ∞, ∼ ...: cannot be told apart
    result = curate_posts([post("Coffee: ‰ö_Fall sweater: ‰ö_Meeting the President: ?", 0)], DEFAULT)
    assert result.report.dropped["garbled"] == 1


# ---- languages ------------------------------------------------------------------------------------


def test_language_is_detected_where_the_platform_gives_none() -> None:
    texts = [
        "The weather is lovely today and we went for a walk",
        "Das Wetter ist heute schön und wir sind spazieren gegangen",
        "El tiempo está precioso hoy y fuimos a dar un paseo",
        "今日は天気が良かったので散歩に行きました",
    ]
    posts = [Post(platform="csv", account="me", post_id=str(i), text=t) for i, t in enumerate(texts)]
    assert [langid.detect(t) for t in texts] == ["en", "de", "es", "ja"]
    result = curate_posts(posts, CurateConfig(lang="de"))
    assert [p.text for p in result.posts] == [texts[1]] and result.report.dropped["language"] == 3
    assert result.report.languages == {"de": 1}
    # The platform's field wins where it names a language; X's "und"/"qme" do not.
    assert langid.language("pt", texts[0]) == "pt" and langid.language("und", texts[0]) == "en"
    assert langid.language(None, "12:30 😀") is None


def test_a_mixed_account_is_reported_and_warned_about() -> None:
    texts = ["The weather is lovely today and we went for a walk"] * 1 + [
        f"Heute gehen wir wieder in den Park spazieren, Tag {i}" for i in range(3)
    ]
    texts += [f"We are going back to the park for a walk, day {i}" for i in range(4)]
    result = curate_posts(
        [Post(platform="csv", account="me", post_id=str(i), text=t) for i, t in enumerate(texts)], DEFAULT
    )
    assert result.report.languages == {"en": 5, "de": 3}
    assert result.report.language_mix() == "en 62%, de 38%" and result.report.is_mixed()
    dataset = Dataset(1, "me", "h", "now", {"lang": None}, result.report.to_dict(), 8, ())
    warning = mixed_languages(dataset)
    assert warning and "--lang en" in warning and "en 62%, de 38%" in warning
    assert mixed_languages(Dataset(1, "me", "h", "now", {"lang": "en"}, result.report.to_dict(), 8, ())) is None


def test_bad_rule_names_and_language_codes_are_refused() -> None:
    with pytest.raises(InputError, match="unknown language code 'xx'"):
        CurateConfig(lang="xx")
    with pytest.raises(InputError, match="unknown rule 'shrot': choose from retweets, automated"):
        DEFAULT.without(["shrot"])
    assert DEFAULT.without(["automated", "short"]) == CurateConfig(drop_automated=False, min_words=0)
    assert CurateConfig(lang="JA").lang == "ja"


# ---- the curate command on a Japanese sample -------------------------------------------------------


def test_curate_command_on_a_japanese_sample(tmp_path: Path) -> None:
    sample = tmp_path / "japanese.jsonl"
    sample.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in JAPANESE), encoding="utf-8")
    assert tweetlm("import", sample, "--account", "nihongo").returncode == 0
    out = tweetlm("curate", "nihongo", "--show-dropped", "3")
    assert out.returncode == 0, out.stderr
    kept_row = next(line for line in out.stdout.splitlines() if "kept for training" in line)
    assert int(kept_row.split("│")[2]) >= 0.7 * 19
    assert "57点" in out.stdout  # shown among what the short rule dropped
    assert "languages kept: ja 100%" in out.stdout

    before = store_digest()
    for args, message in (
        (["--off", "short,nosuchrule"], "unknown rule 'nosuchrule'"),
        (["--lang", "xx"], "unknown language code 'xx'"),
        (["--lang", "de"], "rule 'language' removed 16"),
    ):
        bad = tweetlm("curate", "nihongo", *args)
        assert bad.returncode != 0 and message in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    assert store_digest() == before
