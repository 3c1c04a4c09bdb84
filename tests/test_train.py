"""The spine on a tiny random model: real training steps, a real run folder, real sampling."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import add_account, sample_posts, tiny_config
from tweetlm.dataset import EpochBatches, balance, collate, encode_posts, split_posts
from tweetlm.errors import InputError, TrainingError
from tweetlm.events import Evaluated, Event, Started, Step
from tweetlm.runs import RUN_FILE, RunFolder
from tweetlm.train import TrainConfig, train, train_trial


def test_eos_framing_is_exact(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    [ids] = encode_posts(tok, ["Hello world"], 64)
    body = tok("Hello world", add_special_tokens=False)["input_ids"]
    assert ids == [tok.eos_token_id, *body, tok.eos_token_id]
    assert tok.decode(ids) == "<|endoftext|>Hello world<|endoftext|>"
    assert encode_posts(tok, ["Hello world"], 3) == [ids[:3]]


def test_collate_learns_eos_even_when_pad_is_eos() -> None:
    batch = collate([{"input_ids": [0, 5, 6, 0]}, {"input_ids": [0, 7, 0]}], pad_id=0)
    assert batch["labels"].tolist() == [[0, 5, 6, 0], [0, 7, 0, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_split_is_seeded_and_keeps_a_few_dozen_for_small_accounts() -> None:
    texts = [f"post number {i}" for i in range(100)]
    a, b = split_posts(texts, seed=1), split_posts(texts, seed=1)
    assert a == b
    assert len(a.validation) == 30 and len(a.train) == 70
    assert not set(a.train) & set(a.validation)
    big = split_posts([f"p {i}" for i in range(3000)], seed=1)
    assert len(big.validation) == 300
    with pytest.raises(TrainingError, match="at least 20"):
        split_posts(texts[:5], seed=1)


def test_epoch_order_differs_and_batches_group_lengths() -> None:
    lengths = [5 + (i * 7) % 40 for i in range(200)]
    sampler = EpochBatches(lengths, [0] * 200, [200], batch_size=8, seed=3)
    first, second = sampler.batches(0), sampler.batches(1)
    assert first != second
    assert sorted(i for b in first for i in b) == list(range(200)) == sorted(i for b in second for i in b)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first) / len(first)
    assert spread < 5  # random batches would spread over ~35 tokens
    sampler.set_epoch(1)
    assert list(sampler) == second


def test_balance_upsamples_the_smaller_account() -> None:
    mix = balance({"big": 1000, "small": 100})
    assert mix.per_epoch == {"big": 1000, "small": 400}
    sampler = EpochBatches([10] * 1100, [0] * 1000 + [1] * 100, [1000, 400], batch_size=10, seed=0)
    drawn = [i for b in sampler.batches(0) for i in b]
    assert sum(i >= 1000 for i in drawn) == 400


def test_train_writes_a_run_folder_that_pipeline_loads(tiny_model: Path) -> None:
    add_account("obama", sample_posts(200))
    events: list[Event] = []
    result = train(tiny_config(tiny_model), on_event=events.append)
    run = result.run_dir
    for name in ("model.safetensors", "config.json", "generation_config.json", "README.md", RUN_FILE, "posts.json"):
        assert (run / name).is_file(), name
    assert not (run / "checkpoints").exists()
    assert not list(run.parent.glob(".*.partial"))
    meta = RunFolder(run).read()
    m = meta.metrics
    assert m.eval_loss_after < m.eval_loss_before - 0.5  # a random model learns fast
    evals = [e for e in events if isinstance(e, Evaluated)]
    assert evals[0].step == 0 and [round(e.epoch * 2) for e in evals[1:]] == [1, 2, 3, 4]  # then every half epoch
    assert m.stopping is not None and m.stopping.reason == "schedule" and m.stopping.patience == 2
    assert m.stopping.message.startswith("ran the full schedule (2 epochs, ")
    assert meta.config["learning_rate"] == 3e-3 and meta.data["hash"]
    card = (run / "README.md").read_text()
    assert (
        "Machine-generated text" in card
        and "| kept for training |" in card
        and "| languages kept | " in card
        and "pipeline(" in card
        and "Training ran the full schedule" in card
    )
    assert f'model="{run.name}"' in card and ".partial" not in card

    from transformers import pipeline

    generator = pipeline("text-generation", model=str(run))
    out = generator("<|endoftext|>Today", max_new_tokens=10)[0]["generated_text"]
    assert out.startswith("<|endoftext|>Today") and len(out) > len("<|endoftext|>Today")
    assert RunFolder.resolve("obama").path == run


def test_generate_stops_at_eos_cuts_and_filters_copies(tiny_model: Path) -> None:
    from tweetlm.generate import GenerateConfig, Generator

    add_account("obama", sample_posts(200))
    result = train(tiny_config(tiny_model))
    gen = Generator(result.run_dir, precision="fp32")
    config = GenerateConfig(n=6, seed=0, max_chars=60, max_rounds=1, allow_copies=True)
    out = gen.generate("We will", config)
    assert len(out.posts) == 6
    assert all(p.startswith("We will") and 0 < len(p) <= 60 for p in out.posts)
    assert all("<|endoftext|>" not in p and "\n" not in p and "  " not in p for p in out.posts)
    assert out.label == "machine-generated, not written by the person"
    assert gen.generate("We will", config).posts == out.posts  # a seed reproduces a batch

    # Pretend two of those outputs were training posts, one exactly and one inside a longer post (a run
    # of 8+ shared words): the same seed now drops both as copies.
    from tweetlm.copies import words

    near = max(range(1, 6), key=lambda i: len(words(out.posts[i])))
    assert len(words(out.posts[near])) >= 8
    gen.training_posts = [out.posts[0], "Earlier words, then " + out.posts[near] + " and more words after it"]
    filtered = gen.generate("We will", GenerateConfig(n=6, seed=0, max_chars=60, max_rounds=1))
    assert filtered.dropped_copies == 2
    assert filtered.posts == [p for i, p in enumerate(out.posts) if i not in (0, near)]
    with pytest.raises(InputError, match="characters"):
        gen.generate("x" * 300, GenerateConfig())


def test_ctrl_c_saves_a_checkpoint_and_resume_continues_from_it(tiny_model: Path) -> None:
    import os
    import signal

    from tweetlm.train import TrainingInterrupted

    add_account("obama", sample_posts(200))

    def press_ctrl_c(event: Event) -> None:
        if isinstance(event, Step) and event.step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="--resume") as stopped:
        train(tiny_config(tiny_model), on_event=press_ctrl_c)
    partial = stopped.value.partial_dir
    assert [p.name for p in (partial / "checkpoints").glob("checkpoint-*")] == ["checkpoint-4"]
    assert (partial / "checkpoints" / "checkpoint-4" / "optimizer.pt").is_file()  # stopped to resume: full state

    events: list[Event] = []
    result = train(tiny_config(tiny_model), resume=True, on_event=events.append)
    start = next(e for e in events if isinstance(e, Started))
    steps = [e.step for e in events if isinstance(e, Step)]
    assert start.step == 4 and steps[0] == 5  # continues, does not start over
    assert result.metrics.steps == start.total_steps
    assert not partial.exists() and (result.run_dir / RUN_FILE).is_file()
    assert result.metrics.eval_loss_before > result.metrics.eval_loss_after


def test_max_steps_caps_a_run_and_still_evaluates(tiny_model: Path) -> None:
    add_account("obama", sample_posts(200))
    result = train(tiny_config(tiny_model, max_steps=3))
    assert result.metrics.steps == 3
    assert [h["step"] for h in result.metrics.history if "eval_loss" in h] == [0, 3]


def test_the_validation_loss_does_not_depend_on_the_training_batch_size(tiny_model: Path) -> None:
    """The Trainer's validation loss is a mean of batch means: validation batches have a fixed size."""
    add_account("obama", sample_posts(200))
    base = [
        train(tiny_config(tiny_model, max_steps=1, batch_size=size)).metrics.evaluations()[0]["eval_loss"]
        for size in (4, 32)
    ]
    assert base[0] == base[1]


def test_bad_config_names_the_field() -> None:
    with pytest.raises(InputError, match="scheduler"):
        TrainConfig(accounts=("a",), scheduler="exotic")
    with pytest.raises(InputError, match="learning_rate"):
        TrainConfig(accounts=("a",), learning_rate=0)


def test_too_few_posts_says_how_many_are_needed(tiny_model: Path) -> None:
    add_account("tiny", [f"this is post number {i} of a small account" for i in range(10)])
    with pytest.raises(TrainingError, match="at least 20"):
        train(tiny_config(tiny_model, accounts=("tiny",)))


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a tweetlm run"):
        RunFolder.resolve(str(tmp_path))


def test_a_trial_writes_nothing_lasting(tiny_model: Path) -> None:
    import os

    add_account("obama", sample_posts(200))
    metrics = train_trial(tiny_config(tiny_model, epochs=1))
    assert metrics.eval_loss_after < metrics.eval_loss_before
    runs = Path(os.environ["TWEETLM_HOME"]) / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_stop_event_stops_like_ctrl_c(tiny_model: Path) -> None:
    import threading

    from tweetlm.train import TrainingInterrupted

    add_account("obama", sample_posts(200))
    stop = threading.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, Step) and event.step == 2:
            stop.set()

    with pytest.raises(TrainingInterrupted):
        train(tiny_config(tiny_model), on_event=on_event, stop=stop)


def test_runs_started_in_the_same_second_get_their_own_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    import tweetlm.runs

    monkeypatch.setattr(tweetlm.runs, "run_name", lambda accounts: "obama-20260101-000000")
    first = RunFolder.new(("obama",)).path
    first.mkdir(parents=True)
    second = RunFolder.new(("obama",))
    second.partial_path.mkdir()  # still training
    third = RunFolder.new(("obama",)).path
    second = second.path
    assert [p.name for p in (first, second, third)] == [
        "obama-20260101-000000",
        "obama-20260101-000000-2",
        "obama-20260101-000000-3",
    ]
