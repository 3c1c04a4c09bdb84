"""The features behind the research questions (issue 15), on the tiny models: which layers train,
few-shot prompting through the chat template, mix weights in the epoch's batches, a post-style base
that --base-model loads, and topic clusters and the style map."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import add_account, sample_posts, tiny_config
from tweetlm.dataset import EpochBatches, balance, parse_mix, split_posts
from tweetlm.errors import InputError
from tweetlm.evaluate import Embedder
from tweetlm.runs import RunFolder

# ChatML, as SmolLM2-Instruct's template writes it (without its default system message).
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|endoftext|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def short_posts() -> list[str]:
    """Sample posts short enough that a few fit the tiny model's context of 256 tokens with its 400-token vocabulary."""
    return [p for p in sample_posts(400) if len(p) < 70]


def checksums(path: Path) -> dict[str, str]:
    """sha256 of every parameter of the model saved at `path`, by name."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    return {n: hashlib.sha256(p.detach().numpy().tobytes()).hexdigest() for n, p in model.named_parameters()}


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """The parts (layers.0, layers.1, embed_tokens, norm, ...) with a parameter that changed."""
    parts = set()
    for name, digest in after.items():
        if before[name] != digest:
            pieces = name.split(".")
            parts.add(".".join(pieces[1:3]) if pieces[1] == "layers" else pieces[1])
    return parts


# ---- 1. which layers train --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "trained"),
    [("top:1", {"layers.1"}), ("bottom:1", {"layers.0"}), ("all", {"layers.0", "layers.1", "embed_tokens", "norm"})],
)
def test_train_layers_trains_exactly_those_blocks(tiny_model: Path, spec: str, trained: set[str]) -> None:
    from tweetlm.train import train

    add_account("obama", sample_posts(120))
    run = train(tiny_config(tiny_model, train_layers=spec, epochs=1, max_steps=3)).run_dir
    assert changed(checksums(tiny_model), checksums(run)) == trained


def test_freeze_layers_still_freezes_the_bottom_and_excludes_train_layers(tiny_model: Path) -> None:
    from tweetlm.train import train

    add_account("obama", sample_posts(120))
    run = train(tiny_config(tiny_model, freeze_layers=1, epochs=1, max_steps=3)).run_dir
    # The tied head keeps the embedding matrix training; the lower block stays as it was.
    assert changed(checksums(tiny_model), checksums(run)) == {"layers.1", "embed_tokens", "norm"}
    with pytest.raises(InputError, match="train_layers"):
        tiny_config(tiny_model, freeze_layers=1, train_layers="top:1")
    for bad in ("top", "middle:1", "top:0", "bottom:x"):
        with pytest.raises(InputError, match="train_layers"):
            tiny_config(tiny_model, train_layers=bad)


def test_lora_adapters_go_only_on_the_chosen_blocks(tiny_model: Path) -> None:
    from tweetlm.models import load_model
    from tweetlm.train import prepare_model

    model = prepare_model(load_model(str(tiny_model)), tiny_config(tiny_model, lora_rank=4, train_layers="bottom:1"))
    adapted = {n.split("layers.")[1].split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert adapted == {"0"}
    with pytest.raises(InputError, match="only 2 layers"):
        prepare_model(load_model(str(tiny_model)), tiny_config(tiny_model, train_layers="top:3"))


# ---- 2. few-shot ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a chat template in its tokenizer, as an instruct model ships one, and a context
    of 1024 (rotary positions: nothing to resize) for prompts its 400-token vocabulary spells out long."""
    from transformers import AutoTokenizer

    path = Path(shutil.copytree(tiny_model, tmp_path_factory.mktemp("chat") / "model"))
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 1024}))
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(path)
    return path


def test_the_few_shot_prompt_is_the_chat_template_of_real_posts(chat_model: Path) -> None:
    from transformers import AutoTokenizer

    from tweetlm.fewshot import ASK, FewShotGenerator, few_shot_messages
    from tweetlm.generate import GenerateConfig

    posts = short_posts()
    generator = FewShotGenerator(str(chat_model), "obama", posts, k=3)
    row = generator.prompt_row("Health care", random.Random(7))
    examples = random.Random(7).sample(posts, 3)
    tokenizer = AutoTokenizer.from_pretrained(chat_model)
    expected = tokenizer.apply_chat_template(
        few_shot_messages("@obama", examples), tokenize=False, add_generation_prompt=True
    )
    assert row == tokenizer(expected + "Health care", add_special_tokens=False)["input_ids"]
    text = tokenizer.decode(row)
    assert text.count(f"<|im_start|>user\n{ASK}") == 4 and text.endswith("<|im_start|>assistant\nHealth care")
    assert all(f"<|im_start|>assistant\n{post}<|endoftext|>" in text for post in examples)

    gen = generator.generate("Health care", GenerateConfig(n=3, seed=1, max_new_tokens=8))
    again = FewShotGenerator(str(chat_model), "obama", posts, k=3).generate(
        "Health care", GenerateConfig(n=3, seed=1, max_new_tokens=8)
    )
    assert gen.posts == again.posts and all(p.startswith("Health care") for p in gen.posts)
    assert gen.run == "few-shot:obama:3:random"


def test_similar_picks_the_posts_closest_to_the_prompt() -> None:
    import numpy as np

    from tweetlm.fewshot import most_similar

    def embed(texts: list[str]) -> np.ndarray:  # a word-count embedding: "cat" words and "dog" words
        rows = np.array([[t.count("cat"), t.count("dog"), 1.0] for t in texts])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    posts = ["dog dog", "cat", "cat cat cat", "dog", "a walk"]
    assert set(most_similar(posts, "my cat", 2, embed)) == {"cat", "cat cat cat"}
    with pytest.raises(InputError, match="give a prompt"):
        most_similar(posts, "", 2, embed)


def test_few_shot_needs_a_chat_template_and_enough_posts(tiny_model: Path, chat_model: Path) -> None:
    from tweetlm.fewshot import FewShotGenerator

    with pytest.raises(InputError, match="chat template"):
        FewShotGenerator(str(tiny_model), "obama", sample_posts(10), k=3)
    with pytest.raises(InputError, match="only 2 curated posts"):
        FewShotGenerator(str(chat_model), "obama", sample_posts(2), k=3)


def test_generate_few_shot_from_the_command_line(chat_model: Path) -> None:
    from tweetlm.cli import app

    add_account("obama", short_posts())
    args = ["generate", "obama", "--few-shot", "3", "--base-model", str(chat_model), "-n", "2", "--seed", "3"]
    out = CliRunner().invoke(app, [*args, "--json", "--max-chars", "60"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["run"] == "few-shot:obama:3:random" and result["seed"] == 3
    assert len(result["posts"]) + result["dropped_empty"] + result["dropped_copies"] >= 1


def test_eval_adds_a_few_shot_column(chat_model: Path, embedder: Embedder) -> None:
    from tweetlm.evaluate import EvalConfig, evaluate_run, table_header, table_rows
    from tweetlm.train import train

    add_account("obama", sample_posts(120))
    add_account("someone", [f"a completely different post number {i} about gardening" for i in range(30)])
    run = train(tiny_config(chat_model, epochs=1, max_steps=2)).run_dir
    config = EvalConfig(n=4, max_posts=30, few_shot=1, max_new_tokens=12, min_other_accounts=1)
    result = evaluate_run(run, config, embed=embedder)
    assert table_header(result) == ["", "fine-tuned", "few-shot (base model, prompted)", "base model", "real posts"]
    assert result["models"]["few_shot"]["prompt"] == {"examples": 1, "pick": "random"}
    assert all(len(row) == 5 for row in table_rows(result))
    assert "few_shot" in result["voice"]["also_attributed"]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


# ---- 3. mix weights ---------------------------------------------------------------------------


def test_mix_weights_are_the_shares_of_each_epochs_batches() -> None:
    weights = parse_mix("a=0.7,B=0.3", ["A", "b"])
    assert weights == {"A": 0.7, "b": 0.3}
    mix = balance({"A": 100, "b": 50}, weights=weights)
    assert mix.per_epoch == {"A": 140, "b": 60}  # the balanced epoch's 200 posts, shared 70/30
    sampler = EpochBatches([10] * 150, [0] * 100 + [1] * 50, [mix.per_epoch["A"], mix.per_epoch["b"]], 16, seed=0)
    for epoch in range(3):
        drawn = Counter(0 if i < 100 else 1 for batch in sampler.batches(epoch) for i in batch)
        assert drawn[0] / (drawn[0] + drawn[1]) == pytest.approx(0.7)
    assert balance({"A": 100, "b": 50}).per_epoch == {"A": 100, "b": 100}  # without weights: balanced
    for bad in ("a=0.7", "a=0.7,b=x", "a=0.7,b=0", "a=1,b=1,c=1"):
        with pytest.raises(InputError, match="mix"):
            parse_mix(bad, ["a", "b"])


def test_a_run_draws_its_epochs_by_the_mix(tiny_model: Path) -> None:
    from tweetlm.models import load_tokenizer
    from tweetlm.train import build_data

    texts = sample_posts(240)
    splits = {"alice": split_posts(texts[:120], 0), "bob": split_posts(texts[120:], 0)}
    config = tiny_config(tiny_model, accounts=("alice", "bob"), mix="alice=0.25,bob=0.75")
    data = build_data(config, splits, load_tokenizer(str(tiny_model)))
    groups = data.train_set.groups
    drawn = Counter(groups[i] for batch in data.sampler.batches(0) for i in batch)
    assert drawn[1] / (drawn[0] + drawn[1]) == pytest.approx(0.75, abs=0.01)
    assert data.mix["bob"]["weight"] == 0.75


# ---- 4. a post-style base ---------------------------------------------------------------------


def test_as_base_saves_a_base_that_base_model_loads(tiny_model: Path, tweetlm_home: Path) -> None:
    from tweetlm.cli import app

    texts = sample_posts(240)
    for name, part in (("alice", texts[:80]), ("bob", texts[80:160]), ("carol", texts[160:])):
        add_account(name, part)
    common = ["--epochs", "1", "--max-steps", "3", "--precision", "fp32", "--report-to", "none", "--lr", "3e-3"]
    made = CliRunner().invoke(app, ["train", "alice", "bob", "--as-base", "posty", "-m", str(tiny_model), *common])
    assert made.exit_code == 0, made.output
    base = tweetlm_home / "bases" / "posty"
    assert (base / "config.json").is_file() and "--base-model posty" in made.output
    assert RunFolder.all() == []  # a base is no run

    used = CliRunner().invoke(app, ["train", "carol", "--base-model", "posty", *common])
    assert used.exit_code == 0, used.output
    run = RunFolder.latest("carol").read()
    assert run.base_model.path == str(base) and run.base_model.name == "post-style base posty"
    plain = CliRunner().invoke(app, ["train", "carol", "-m", str(tiny_model), *common, "-o", str(tweetlm_home / "p")])
    assert plain.exit_code == 0, plain.output
    # The run started from the post-style base's weights, not the tiny model's.
    assert run.metrics.eval_loss_before != RunFolder(tweetlm_home / "p").read().metrics.eval_loss_before

    again = CliRunner().invoke(app, ["train", "alice", "--as-base", "posty", "-m", str(tiny_model), *common])
    assert again.exit_code != 0 and "already exists" in str(again.exception)
    bad = CliRunner().invoke(app, ["train", "alice", "--as-base", "../x", "-m", str(tiny_model), *common])
    assert bad.exit_code != 0 and isinstance(bad.exception, InputError)


# ---- 5. maps ----------------------------------------------------------------------------------


def test_c_tf_idf_labels_a_cluster_by_its_distinctive_words() -> None:
    from tweetlm.maps import c_tf_idf

    texts = ["cats purr softly", "my cats purr", "dogs bark loudly", "dogs bark at night", "the night"]
    words = c_tf_idf(texts, [0, 0, 1, 1, 1], n_words=2)
    assert words[0] == ["cats", "purr"] and words[1] == ["bark", "dogs"]


def test_topic_words_leave_out_the_stop_words_of_the_posts_language() -> None:
    from tweetlm.maps import c_tf_idf

    texts = [
        "el mapa de la ciudad que hicimos con los datos abiertos",
        "que bonito el mapa de la ciudad en la web",
        "los datos de la ciudad en el mapa que publicamos",
        "el partido de fútbol que vimos en el bar con los amigos",
        "que partido el de ayer, los amigos en el bar",
        "el fútbol de los domingos en el bar que nos gusta",
    ]
    labels = [0, 0, 0, 1, 1, 1]
    plain = c_tf_idf(texts, labels, n_words=4, ignore=["a"])
    assert {"el", "que", "la", "los", "de"} & {w for words in plain.values() for w in words}
    words = c_tf_idf(texts, labels, n_words=3)
    assert set(words[0]) == {"mapa", "ciudad", "datos"} and set(words[1]) <= {"bar", "partido", "fútbol", "amigos"}


def test_topics_are_deterministic_under_a_seed(embedder: Embedder) -> None:
    from tweetlm.maps import topics

    texts = sample_posts(120)
    first, second = topics("obama", texts, embedder, k=4, seed=1), topics("obama", texts, embedder, k=4, seed=1)
    assert first.labels == second.labels and first.topics == second.topics
    assert [t.posts for t in first.topics] == sorted((t.posts for t in first.topics), reverse=True)
    assert sum(t.posts for t in first.topics) == 120 and all(t.words for t in first.topics)
    with pytest.raises(InputError, match="too few"):
        topics("obama", texts[:5], embedder, k=4)


def test_map_command_writes_tables_plots_and_a_page(embedder: Embedder, tmp_path: Path) -> None:
    from tweetlm.cli import app

    add_account("obama", sample_posts(120))
    add_account("gardener", [f"planted {n} tomatoes and basil in the garden today #growyourown" for n in range(40)])
    out = CliRunner().invoke(app, ["map", "obama", "-k", "3", "-o", str(tmp_path)], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "topics of @obama" in out.output
    for name in ("topics-obama.png", "style-map.png", "map.html", "map.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "topics-obama.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "map.json").read_text())
    assert len(saved["topics"][0]["topics"]) == 3 and saved["style"]["accounts"] == ["gardener", "obama"]


def test_map_places_the_posts_of_the_runs_given_with_run(tiny_model: Path, embedder: Embedder, tmp_path: Path) -> None:
    from tweetlm.cli import app
    from tweetlm.runs import RunFolder
    from tweetlm.train import train

    add_account("obama", sample_posts(120))
    add_account("gardener", [f"planted {n} tomatoes and basil in the garden today #growyourown" for n in range(40)])
    older, newer = (train(tiny_config(tiny_model, epochs=1, max_steps=1)).run_dir for _ in range(2))
    RunFolder(older).write_evaluation({"generated": {"fine_tuned": ["older post one", "older post two"]}})
    RunFolder(newer).write_evaluation({"generated": {"fine_tuned": ["the newer post"]}})

    def placed(*args: str) -> int:
        out = CliRunner().invoke(app, ["map", "obama", "-k", "3", "-o", str(tmp_path), *args], terminal_width=200)
        assert out.exit_code == 0, out.output
        return sum(json.loads((tmp_path / "map.json").read_text())["style"]["nearest"]["obama"].values())

    assert placed() == 1  # the latest evaluated run
    assert placed("--run", older.name) == 2
    both = CliRunner().invoke(app, ["map", "--run", older.name, "--run", str(newer)])
    assert both.exit_code != 0 and "two runs of @obama" in str(both.exception)


def test_style_map_places_generated_posts_near_their_person(embedder: Embedder) -> None:
    from tweetlm.maps import style_map

    real = {
        "obama": sample_posts(80),
        "gardener": [f"planted {n} tomatoes and basil in the garden today #growyourown" for n in range(40)],
    }
    made = {"gardener": ["planted some basil in the garden #growyourown"], "obama": sample_posts(90)[80:]}
    style = style_map(real, made, embedder)
    assert style.lands_near["gardener"] == 1.0 and style.lands_near["obama"] >= 0.5
    assert len(style.generated["obama"]) == 10 and set(style.centroids) == {"gardener", "obama"}


def test_the_style_map_of_three_accounts_is_the_plane_that_tells_them_apart(embedder: Embedder) -> None:
    from tweetlm.maps import style_map

    real = {
        "obama": sample_posts(80),
        "gardener": [f"planted {n} tomatoes and basil in the garden today #growyourown" for n in range(40)],
        "coder": [f"fixed bug {n} in the parser and pushed it to main, the tests are green" for n in range(40)],
    }
    style = style_map(real, {}, embedder)
    assert style.projection == "LDA"
    own = [
        min(style.centroids, key=lambda b: (x - style.centroids[b][0]) ** 2 + (y - style.centroids[b][1]) ** 2) == a
        for a, points in style.real.items()
        for x, y in points
    ]
    assert sum(own) / len(own) > 0.9


def test_the_report_includes_both_maps(tiny_model: Path, embedder: Embedder) -> None:
    from tweetlm.report import build_report
    from tweetlm.train import train

    add_account("obama", sample_posts(120))
    add_account("gardener", [f"planted {n} tomatoes and basil in the garden today #growyourown" for n in range(40)])
    run = train(tiny_config(tiny_model, epochs=1, max_steps=2)).run_dir
    page = build_report(run, embed=embedder)
    assert "Topics of @obama" in page and "Accounts by style" in page
    assert page.count("data:image/png;base64,") >= 3  # the losses, the topics, the style map


def test_topic_distance_is_zero_for_the_same_mix_and_large_for_another(embedder: Embedder) -> None:
    from tweetlm.maps import topic_distance

    real = sample_posts(90)
    assert topic_distance(real, real, embedder, k=3) == pytest.approx(0.0)
    garden = [f"planted {n} tomatoes and basil in the garden today" for n in range(20)]
    assert topic_distance(real, garden, embedder, k=3) > 0.4
