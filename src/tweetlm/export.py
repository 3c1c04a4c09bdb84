"""Take a run elsewhere: a clean HF folder (no training posts, optionally bf16) or a GGUF file for
llama.cpp and Ollama, with an Ollama `Modelfile` beside it.

The GGUF is written with the `gguf` package the way llama.cpp's `convert_hf_to_gguf.py` writes it:
its tensor names (`gguf.TensorNameMap`), Llama's q/k rows permuted into the interleaved rotary layout
llama.cpp computes with, GPT-2's Conv1D weights transposed, norms and biases in F32, the tokenizer
(byte-level BPE: tokens, types, merges, pre-tokenizer name) and tweetlm's separator as EOS. tweetlm
frames every post as EOS + post + EOS, so the file says not to add a BOS, and its template and the
Modelfile's put the separator before the prompt, as `tweetlm generate` does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tweetlm import __version__, paths
from tweetlm.card import NOTICE, write_card
from tweetlm.errors import InputError, ModelError
from tweetlm.runs import POSTS_FILE, RunFolder, RunInfo

if TYPE_CHECKING:
    import numpy as np
    from gguf import GGUFWriter
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

log = logging.getLogger("tweetlm")

GGUF_TYPES = ("f16", "bf16", "q8_0")
HF_DTYPES = ("bf16", "fp16", "fp32")
GGUF_NAME = "model.gguf"
MODELFILE = "Modelfile"
# What a clean folder keeps of a run folder (the weights come separately).
_HF_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
)
# A completion model behind a chat interface: the separator, then the user's words as the start of a post.
CHAT_TEMPLATE = (
    "{{ eos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ message['content'] | trim }}{% endif %}{% endfor %}"
)


def check_gguf_type(value: str) -> str:
    if value.lower() not in GGUF_TYPES:
        raise InputError(f"--type {value!r}: choose one of {', '.join(GGUF_TYPES)}")
    return value.lower()


def check_hf_dtype(value: str | None) -> str | None:
    if value is not None and value.lower() not in HF_DTYPES:
        raise InputError(f"--dtype {value!r}: choose one of {', '.join(HF_DTYPES)}")
    return value.lower() if value else None


def default_dest(run_dir: Path, suffix: str) -> Path:
    return paths.home() / "exports" / f"{run_dir.name}-{suffix}"


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `dest` that replaces `dest` when the block succeeds; on failure
    `dest` is left as it was."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}") if dest.exists() else None
        if old is not None:
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- the clean HF folder -------------------------------------------------------------------------


def export_hf(run_dir: Path, dest: Path | None = None, dtype: str | None = None, include_posts: bool = False) -> Path:
    """A folder with the model, tokenizer, generation config, card and a `run.json` without post
    examples or local paths; the training posts only with `include_posts`. `dtype` converts the
    weights (default: as saved)."""
    dtype = check_hf_dtype(dtype)
    dest = dest or default_dest(run_dir, f"hf-{dtype or 'saved'}")
    with atomic_dir(dest) as tmp:
        write_hf_folder(run_dir, tmp, dtype, include_posts)
        write_card(tmp, public_run(run_dir), name=dest.name)
    return dest


def write_hf_folder(run_dir: Path, folder: Path, dtype: str | None, include_posts: bool) -> None:
    for name in _HF_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, folder / name)
    if dtype is None:
        for weights in sorted(run_dir.glob("model*.safetensors*")):
            shutil.copy2(weights, folder / weights.name)
    else:
        _save_converted(run_dir, folder, dtype)
    if include_posts:
        if not (run_dir / POSTS_FILE).is_file():
            raise InputError(f"{run_dir} has no {POSTS_FILE} to include")
        shutil.copy2(run_dir / POSTS_FILE, folder / POSTS_FILE)
    RunFolder(folder).write(public_run(run_dir))


def _save_converted(run_dir: Path, folder: Path, dtype: str) -> None:
    import torch

    from tweetlm.models import load_model, quiet_progress

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    model = load_model(str(run_dir), dtype=torch_dtype)
    with quiet_progress():
        model.save_pretrained(folder)


def public_run(run_dir: Path) -> RunInfo:
    """`run.json` as it may leave the machine: no curation examples (they quote posts), no local paths
    (a base model given as a folder is named by the folder's name)."""
    public = RunFolder(run_dir).read().to_dict()
    base = public["base_model"]
    base["path"] = ""
    if Path(base["name"]).is_absolute():
        base["name"] = Path(base["name"]).name
    for dataset in public.get("data", {}).get("datasets", {}).values():
        dataset.get("report", {}).pop("examples", None)
    return RunInfo.from_dict(public)


# ---- GGUF ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GgufArch:
    """How one transformers architecture becomes one llama.cpp architecture."""

    name: str  # llama.cpp's
    hf_class: str
    hparams: Callable[[GGUFWriter, PretrainedConfig], None]
    tensor: Callable[[str, np.ndarray, PretrainedConfig], np.ndarray | None]  # None: not written


def _llama_hparams(writer: GGUFWriter, config: PretrainedConfig) -> None:
    rope = dict(getattr(config, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise ModelError(f"rope scaling {rope.get('rope_type')!r} is not supported by tweetlm's GGUF writer")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)


def permute_qk(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute`: HF keeps each head's rotary pairs in two halves, llama.cpp
    interleaves them; the rows of q_proj (n_head heads) and k_proj (n_head_kv heads) are reordered."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    shape = weights.shape
    return weights.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _llama_tensor(name: str, data: np.ndarray, config: PretrainedConfig) -> np.ndarray | None:
    if name == "lm_head.weight" and config.tie_word_embeddings:
        return None
    heads = config.num_attention_heads
    if name.endswith(("q_proj.weight", "q_proj.bias")):
        return permute_qk(data, heads, heads)
    if name.endswith(("k_proj.weight", "k_proj.bias")):
        return permute_qk(data, heads, config.num_key_value_heads or heads)
    return data


def _gpt2_hparams(writer: GGUFWriter, config: PretrainedConfig) -> None:
    writer.add_context_length(config.n_positions)
    writer.add_embedding_length(config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_feed_forward_length(config.n_inner or 4 * config.n_embd)
    writer.add_head_count(config.n_head)
    writer.add_layer_norm_eps(config.layer_norm_epsilon)


def _gpt2_tensor(name: str, data: np.ndarray, config: PretrainedConfig) -> np.ndarray | None:
    if name.endswith((".attn.bias", ".attn.masked_bias")) or (name == "lm_head.weight" and config.tie_word_embeddings):
        return None
    if name.endswith((".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")):
        return data.T.copy()  # Conv1D stores (in, out); llama.cpp wants (out, in), as nn.Linear does
    return data


ARCHITECTURES = {
    "llama": GgufArch("llama", "LlamaForCausalLM", _llama_hparams, _llama_tensor),
    "gpt2": GgufArch("gpt2", "GPT2LMHeadModel", _gpt2_hparams, _gpt2_tensor),
}


def gguf_arch(config: PretrainedConfig, run_dir: Path) -> GgufArch:
    arch = ARCHITECTURES.get(config.model_type)
    if arch is None:
        supported = ", ".join(f"{a.hf_class} ({a.name})" for a in ARCHITECTURES.values())
        raise ModelError(
            f"{run_dir.name} is a {config.model_type} model ({', '.join(config.architectures or [])}): the GGUF "
            f"writer knows {supported}; export it with --format hf instead"
        )
    return arch


def export_gguf(run_dir: Path, dest: Path | None = None, gguf_type: str = "q8_0") -> Path:
    """A folder with `model.gguf`, an Ollama `Modelfile` and the card; returns the folder."""
    gguf_type = check_gguf_type(gguf_type)
    dest = dest or default_dest(run_dir, gguf_type)
    with atomic_dir(dest) as tmp:
        tokenizer = write_gguf(run_dir, tmp / GGUF_NAME, gguf_type)
        (tmp / MODELFILE).write_text(modelfile(run_dir, tokenizer), encoding="utf-8")
        write_card(tmp, public_run(run_dir), name=dest.name)
    return dest


def write_gguf(run_dir: Path, path: Path, gguf_type: str) -> PreTrainedTokenizerBase:
    """Write the run as one GGUF file; returns the run's tokenizer."""
    import gguf
    from transformers import AutoConfig

    from tweetlm.models import load_tokenizer

    config = AutoConfig.from_pretrained(run_dir)
    arch = gguf_arch(config, run_dir)
    tokenizer = load_tokenizer(str(run_dir))
    writer = gguf.GGUFWriter(path, arch.name)
    _write_metadata(writer, run_dir, gguf_type)
    arch.hparams(writer, config)
    _write_vocab(writer, tokenizer, config.vocab_size)
    _write_sampling(writer, run_dir)
    tensors = gguf.TensorNameMap(gguf.MODEL_ARCH[arch.name.upper()], _block_count(config))
    for name, data in _read_tensors(run_dir):
        data = arch.tensor(name, data, config)
        if data is None:
            continue
        gguf_name = tensors.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ModelError(f"{run_dir.name}: no GGUF name for tensor {name!r}")
        qtype = _tensor_type(gguf_name, data, gguf_type)
        writer.add_tensor(gguf_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tokenizer


def _block_count(config: PretrainedConfig) -> int:
    return int(getattr(config, "num_hidden_layers", None) or config.n_layer)


def _write_metadata(writer: GGUFWriter, run_dir: Path, gguf_type: str) -> None:
    import gguf

    run = public_run(run_dir)
    embedded = run.base_model.embedded
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(f"tweetlm {run_dir.name}")
    writer.add_description(f"Writes like {', '.join('@' + a for a in run.accounts)}. {NOTICE}")
    writer.add_finetune("tweetlm")
    writer.add_tags(["tweetlm", "machine-generated"])
    writer.add_base_model_count(1)
    writer.add_base_model_name(0, "SmolLM2-135M-Instruct" if embedded else run.base_model.name)
    if embedded:
        writer.add_license("apache-2.0")
    file_types = {
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }
    writer.add_file_type(file_types[gguf_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _write_vocab(writer: GGUFWriter, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> None:
    """llama.cpp's `_set_vocab_gpt2`: every id's token (byte-level spelling), its type, the merges."""
    import gguf

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    if state["model"]["type"] != "BPE" or state.get("normalizer"):
        raise ModelError(
            f"the tokenizer is {state['model']['type']} with a normalizer: tweetlm's GGUF writer handles byte-level "
            "BPE without one (GPT-2, SmolLM, Llama 3 style)"
        )
    added = {t["content"]: t for t in state.get("added_tokens", [])}
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    tokens, types = [], []
    for i in range(max(vocab_size, len(by_id))):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if added[token]["special"] else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(state.get("pre_tokenizer")))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    eos = tokenizer.eos_token_id
    writer.add_eos_token_id(eos)
    writer.add_bos_token_id(eos)  # tweetlm's separator starts a post too
    writer.add_pad_token_id(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)
    if tokenizer.unk_token_id is not None:
        writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)


def pre_tokenizer_name(pre: dict[str, Any] | None) -> str:
    """llama.cpp's name for a byte-level pre-tokenizer (`tokenizer.ggml.pre`)."""

    def byte_level(p: dict[str, Any]) -> bool:
        return p.get("type") == "ByteLevel" and p.get("use_regex", True) and not p.get("add_prefix_space", False)

    if pre and byte_level(pre):
        return "gpt-2"
    steps = (pre or {}).get("pretokenizers", [])
    if (
        len(steps) == 2
        and steps[0].get("type") == "Digits"
        and steps[0].get("individual_digits")
        and byte_level(steps[1])
    ):
        return "smollm"
    raise ModelError(
        f"the tokenizer's pre-tokenizer ({json.dumps(pre)[:120]}) has no llama.cpp name that tweetlm knows: "
        "it handles GPT-2's and SmolLM's"
    )


def _write_sampling(writer: GGUFWriter, run_dir: Path) -> None:
    sampling = generation_settings(run_dir)
    writer.add_sampling_temp(sampling["temperature"])
    writer.add_sampling_top_p(sampling["top_p"])
    writer.add_sampling_top_k(sampling["top_k"])


def generation_settings(run_dir: Path) -> dict[str, Any]:
    """The run's sampling defaults (its generation_config.json), those of `tweetlm generate` otherwise."""
    from tweetlm import sampling

    saved: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads((run_dir / "generation_config.json").read_text(encoding="utf-8"))
    return {
        "temperature": float(saved.get("temperature", sampling.TEMPERATURE)),
        "top_p": float(saved.get("top_p", sampling.TOP_P)),
        "top_k": int(saved.get("top_k", sampling.TOP_K)),
        "max_new_tokens": int(saved.get("max_new_tokens", sampling.MAX_NEW_TOKENS)),
    }


def _read_tensors(run_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Every saved tensor as float32 numpy (bf16 included, which numpy lacks)."""
    from safetensors import safe_open

    files = sorted(run_dir.glob("model*.safetensors"))
    if not files:
        raise ModelError(f"{run_dir} has no model*.safetensors")
    for file in files:
        with safe_open(file, framework="pt") as weights:
            for name in weights.keys():  # noqa: SIM118 (a safetensors handle is not a dict)
                yield name, weights.get_tensor(name).float().numpy()


def _tensor_type(gguf_name: str, data: np.ndarray, gguf_type: str) -> Any:
    """As llama.cpp's converter: 1-D tensors, norms, biases and position embeddings in F32; the rest in
    the chosen type, F16 where a row does not split into Q8_0's blocks of 32."""
    from gguf import GGMLQuantizationType as Q

    if data.ndim <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight"):
        return Q.F32
    if gguf_name.startswith("position_embd"):
        return Q.F32
    if gguf_type == "q8_0":
        if data.shape[-1] % 32:
            log.info("%s: rows of %d do not split into Q8_0 blocks; written as F16", gguf_name, data.shape[-1])
            return Q.F16
        return Q.Q8_0
    return {"f16": Q.F16, "bf16": Q.BF16}[gguf_type]


def modelfile(run_dir: Path, tokenizer: PreTrainedTokenizerBase) -> str:
    """Ollama's Modelfile: the GGUF beside it, a template that starts with the separator (as `tweetlm
    generate` does), the separator as a stop, and the run's sampling defaults."""
    run = RunFolder(run_dir).read()
    sampling = generation_settings(run_dir)
    eos = tokenizer.eos_token
    who = ", ".join(f"@{a}" for a in run.accounts)
    tag = run_dir.name.lower().replace("+", "-")
    return f"""# Ollama Modelfile written by tweetlm {__version__} for the run {run_dir.name}.
# A model that writes like {who}. Its outputs are machine-generated: label them so wherever you show them.
#   ollama create {tag} -f Modelfile
#   ollama run {tag} "I don't like"
FROM ./{GGUF_NAME}
TEMPLATE \"\"\"{eos}{{{{ .Prompt }}}}\"\"\"
PARAMETER stop "{eos}"
PARAMETER temperature {sampling["temperature"]:g}
PARAMETER top_p {sampling["top_p"]:g}
PARAMETER top_k {sampling["top_k"]}
PARAMETER num_predict {sampling["max_new_tokens"]}
PARAMETER repeat_penalty 1
"""


VERIFY_POSTS = 8


def verify_gguf(run_dir: Path, gguf_path: Path) -> dict[str, float]:
    """`compare_logits` on the run's first validation posts (its training posts if it kept none)."""
    posts = RunFolder(run_dir).posts()
    texts = [t for part in (posts.validation, posts.train) for ts in part.values() for t in ts]
    if not texts:
        raise InputError(f"{run_dir} keeps no posts ({POSTS_FILE}) to compare the logits on")
    return {**compare_logits(run_dir, gguf_path, texts[:VERIFY_POSTS]), "posts": min(len(texts), VERIFY_POSTS)}


@contextlib.contextmanager
def _no_gguf_bar() -> Iterator[None]:
    """transformers' GGUF reader draws a plain tqdm bar ("Converting and de-quantizing GGUF tensors...")
    that its progress-bar switch does not reach."""
    from transformers import modeling_gguf_pytorch_utils as reader

    shown = getattr(reader, "tqdm", None)
    if shown is None:
        yield
        return
    reader.tqdm = lambda items, *args, **kwargs: items
    try:
        yield
    finally:
        reader.tqdm = shown


def compare_logits(run_dir: Path, gguf_path: Path, texts: list[str]) -> dict[str, float]:
    """Load the GGUF with transformers (a reader tweetlm did not write) and compare its logits with the
    run folder's on `texts`, framed as in training: the largest absolute difference (also relative to the
    logits' standard deviation), the mean KL divergence of the next-token distributions (nats), and the
    share of positions whose most likely token agrees."""
    import torch
    from transformers import AutoModelForCausalLM

    from tweetlm.dataset import encode_posts
    from tweetlm.models import load_model, load_tokenizer, quiet_progress

    tokenizer = load_tokenizer(str(run_dir))
    reference = load_model(str(run_dir), dtype=torch.float32).eval()
    with quiet_progress(), _no_gguf_bar():
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        ).eval()
    worst = worst_relative = kl = 0.0
    agree = total = 0
    with torch.inference_mode():
        for ids in encode_posts(tokenizer, texts, 128):
            batch = torch.tensor([ids])
            a, b = reference(batch).logits[0], loaded(batch).logits[0]
            diff = (a - b).abs().max().item()
            worst = max(worst, diff)
            worst_relative = max(worst_relative, diff / a.std().item())
            kl += torch.nn.functional.kl_div(
                b.log_softmax(-1), a.log_softmax(-1), log_target=True, reduction="sum"
            ).item()
            agree += int((a.argmax(-1) == b.argmax(-1)).sum())
            total += len(ids)
    return {
        "max_abs": worst,
        "max_rel_std": worst_relative,
        "mean_kl": kl / max(total, 1),
        "argmax_agreement": agree / max(total, 1),
    }
