"""`tweetlm push`: upload a run's clean folder to the Hugging Face Hub with `huggingface_hub`.

What is uploaded is what `tweetlm export --format hf` writes (weights, tokenizer, generation config,
card, a `run.json` without post examples or local paths), plus a GGUF and its Modelfile on request.
The person's training posts stay home unless `include_posts`. The token comes from `HF_TOKEN` or the
HF login (`hf auth login`), is passed only to `huggingface_hub`, and never printed.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from tweetlm.card import write_card
from tweetlm.errors import HubError, InputError
from tweetlm.export import GGUF_NAME, MODELFILE, check_gguf_type, modelfile, public_run, write_gguf, write_hf_folder

# The Hub's rule for a name: letters, digits, '-', '_', '.'; no '--' or '..'; not starting or ending in '-' or '.'.
_NAME = r"(?!.*(?:--|\.\.))[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_PATTERN = re.compile(rf"{_NAME}/{_NAME}")


def check_repo(repo: str) -> str:
    if not REPO_PATTERN.fullmatch(repo):
        raise InputError(
            f"--repo {repo!r}: give USER/NAME (letters, digits, '-', '_', '.'), e.g. --repo alice/obama-tweetlm"
        )
    return repo


def hub_token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise InputError("push needs a Hugging Face token: set HF_TOKEN, or log in once with `hf auth login`")
    return token


def push(
    run_dir: Path,
    repo: str,
    *,
    private: bool = False,
    include_posts: bool = False,
    gguf_type: str | None = None,
    dtype: str | None = None,
) -> str:
    """Create the repo if needed and upload the folder in one commit; returns the commit's URL."""
    check_repo(repo)
    gguf_type = check_gguf_type(gguf_type) if gguf_type else None
    token = hub_token()
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    with tempfile.TemporaryDirectory(prefix="tweetlm-push-") as tmp:
        folder = Path(tmp)
        write_hf_folder(run_dir, folder, dtype, include_posts)
        if gguf_type:
            tokenizer = write_gguf(run_dir, folder / GGUF_NAME, gguf_type)
            (folder / MODELFILE).write_text(modelfile(run_dir, tokenizer), encoding="utf-8")
        write_card(folder, public_run(run_dir), name=repo)
        api = HfApi(token=token)
        try:
            api.create_repo(repo, private=private, exist_ok=True)
            commit = api.upload_folder(repo_id=repo, folder_path=folder, commit_message=f"tweetlm: {run_dir.name}")
        except (HfHubHTTPError, OSError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].replace(token, "***")
            raise HubError(f"the upload to {repo} failed: {first[:200]}") from exc
    return str(commit.commit_url)
