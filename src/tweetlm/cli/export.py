"""Share commands: export (GGUF for llama.cpp and Ollama, or a clean HF folder) and push (to the Hub)."""

from __future__ import annotations

from pathlib import Path

import typer

from tweetlm.cli.app import app, console

SHARE_PANEL = "Share"


@app.command("export", rich_help_panel=SHARE_PANEL)
def export_cmd(
    run: str = typer.Argument(..., help="A run folder, its name, or an account (its latest run)."),
    format: str = typer.Option("gguf", "--format", "-f", help="gguf (llama.cpp, Ollama) or hf (transformers)."),
    gguf_type: str = typer.Option("q8_0", "--type", "-t", help="GGUF tensor type: f16, bf16 or q8_0."),
    dtype: str | None = typer.Option(None, "--dtype", help="HF weights: bf16, fp16 or fp32 (default: as saved)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Folder to write (default: TWEETLM_HOME/exports/<run>-<type>)."
    ),
    include_posts: bool = typer.Option(False, "--include-posts", help="HF: copy the training posts too."),
    verify: bool = typer.Option(
        False, "--verify", help="GGUF: load it back with transformers and compare logits on validation posts."
    ),
) -> None:
    """Write a run for other tools: a GGUF file with an Ollama Modelfile, or a clean HF folder.

    The GGUF holds the tokenizer, tweetlm's separator as EOS and a template that starts every post
    with it; the Modelfile beside it runs in Ollama as is. The HF folder has the weights, tokenizer,
    generation config and card, and leaves out the training posts (posts.json) and evaluations.

    Examples:

      tweetlm export BarackObama --format gguf --type q8_0

      ollama create obama -f ~/.local/share/tweetlm/exports/BarackObama-...-q8_0/Modelfile

      tweetlm export BarackObama --format hf --dtype bf16 -o obama-hf
    """
    from tweetlm.errors import InputError
    from tweetlm.export import check_gguf_type, check_hf_dtype, export_gguf, export_hf
    from tweetlm.runs import RunFolder

    format = format.lower()
    if format not in ("gguf", "hf"):
        raise InputError(f"--format {format!r}: choose gguf or hf")
    gguf_type = check_gguf_type(gguf_type)
    dtype = check_hf_dtype(dtype)
    run_dir = RunFolder.resolve(run).path
    if format == "hf":
        dest = export_hf(run_dir, output, dtype, include_posts)
        console.print(f"HF folder: [bold]{dest}[/]")
        return
    dest = export_gguf(run_dir, output, gguf_type)
    console.print(f"GGUF: [bold]{dest / 'model.gguf'}[/] and its Ollama Modelfile")
    if verify:
        from tweetlm.export import verify_gguf

        diff = verify_gguf(run_dir, dest / "model.gguf")
        console.print(
            f"transformers reads it back: on {diff['posts']} validation posts its logits differ from the run's by at "
            f"most {diff['max_abs']:.2e} ({diff['max_rel_std']:.2%} of their spread), KL {diff['mean_kl']:.2e} nats "
            f"a token; the most likely token agrees at {diff['argmax_agreement']:.1%} of positions"
        )
    console.print(f"next: cd {dest} && ollama create {dest.name.lower()} -f Modelfile")


@app.command("push", rich_help_panel=SHARE_PANEL)
def push_cmd(
    run: str = typer.Argument(..., help="A run folder, its name, or an account (its latest run)."),
    repo: str = typer.Option(..., "--repo", "-r", help="The Hub repository, USER/NAME (created if missing)."),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
    include_posts: bool = typer.Option(
        False, "--include-posts", help="Upload the person's training posts too (posts.json); the card says so."
    ),
    gguf: bool = typer.Option(False, "--gguf", help="Upload a GGUF and its Ollama Modelfile too."),
    gguf_type: str = typer.Option("q8_0", "--type", "-t", help="The GGUF's tensor type: f16, bf16 or q8_0."),
    dtype: str | None = typer.Option(None, "--dtype", help="Weights: bf16, fp16 or fp32 (default: as saved)."),
) -> None:
    """Upload a run to the Hugging Face Hub: model card, weights, tokenizer, generation config.

    The training posts are not uploaded unless --include-posts. The token comes from HF_TOKEN or
    the HF login (`hf auth login`) and is never printed. HF_ENDPOINT points at another Hub.

    Examples:

      HF_TOKEN=hf_... tweetlm push BarackObama --repo alice/obama-tweetlm

      tweetlm push BarackObama --repo alice/obama-tweetlm --private --gguf --type q8_0
    """
    from tweetlm.hub import check_repo, push
    from tweetlm.runs import RunFolder

    check_repo(repo)
    run_dir = RunFolder.resolve(run).path
    url = push(
        run_dir,
        repo,
        private=private,
        include_posts=include_posts,
        gguf_type=gguf_type if gguf else None,
        dtype=dtype,
    )
    console.print(f"pushed {run_dir.name} to [bold]{repo}[/]: {url}")
