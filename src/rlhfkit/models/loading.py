"""Load tokenizers and causal LMs by name or local path, with clear errors instead of hub tracebacks.

Names: ``"builtin"`` is the tiny built-in GPT-2 (built on first use); an existing directory is a
saved model (full weights, or a peft adapter directory whose base is loaded first); anything else
is a Hugging Face hub id, which works offline (``HF_HUB_OFFLINE=1``) when it is already cached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from torch import nn

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from rlhfkit.models.lora import LoraSettings

logger = logging.getLogger(__name__)

BUILTIN_NAME = "builtin"
ADAPTER_CONFIG = "adapter_config.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelError(ValueError):
    """A model or tokenizer that cannot be found or loaded; the message names what and where."""


def resolve_model_path(name: str | os.PathLike[str]) -> str:
    """Map a model name to what ``from_pretrained`` accepts: ``builtin`` -> its cache dir, a path -> absolute.

    A name that looks like a filesystem path (absolute, ``./``, ``~``, or with more than one ``/``)
    but does not exist raises :class:`ModelError` naming it, before transformers is asked.
    """
    text = str(name).strip()
    if not text:
        raise ModelError("model name is empty: pass a hub id, a local directory, or 'builtin'")
    if text == BUILTIN_NAME:
        from rlhfkit.models.builtin import ensure_builtin_model

        return str(ensure_builtin_model())
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"model path {path} is a file; expected a directory written by save_pretrained")
        return str(path.resolve())
    if path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1 or "\\" in text or not _HUB_ID.match(text):
        raise ModelError(f"model path does not exist: {path}")
    return text


def _is_local(resolved: str) -> bool:
    return Path(resolved).is_dir()


def _adapter_base(resolved: str) -> str | None:
    """The base model of a peft adapter directory, or None when ``resolved`` is not one."""
    config_path = Path(resolved) / ADAPTER_CONFIG
    if not _is_local(resolved) or not config_path.is_file():
        return None
    try:
        base = json.loads(config_path.read_text()).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{config_path}: unreadable adapter config ({exc})") from exc
    if not base:
        raise ModelError(f"{config_path}: field 'base_model_name_or_path' is missing; cannot find the base model")
    return str(base)


def _check_model_dir(resolved: str) -> None:
    if _is_local(resolved) and not (Path(resolved) / "config.json").is_file() and _adapter_base(resolved) is None:
        raise ModelError(f"{resolved} has no config.json (nor {ADAPTER_CONFIG}): not a directory written by save_pretrained")


def _load_error(what: str, name: str, exc: BaseException) -> ModelError:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = "" if Path(name).expanduser().is_dir() else " (no local directory of that name; tried it as a hub id)"
    offline = ""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        offline = " [HF_HUB_OFFLINE=1: only local directories and cached hub models load]"
    return ModelError(f"could not load {what} from {name!r}{where}{offline}: {first_line}")


def load_tokenizer(name_or_path: str | os.PathLike[str], padding_side: str = "left",
                   trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer ready for batched generation: left padding by default and a pad token.

    A tokenizer without a pad token gets ``pad = eos`` (logged); without an eos either it raises
    :class:`ModelError`, because batched generation and response masks need one of them.
    """
    from transformers import AutoTokenizer

    if padding_side not in ("left", "right"):
        raise ModelError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    resolved = resolve_model_path(name_or_path)
    source = resolved
    if _is_local(resolved) and not _has_tokenizer_files(Path(resolved)):
        base = _adapter_base(resolved)
        if base is None:
            raise ModelError(f"{resolved} has no tokenizer files (tokenizer.json / tokenizer_config.json); "
                             "save the tokenizer next to the model with tokenizer.save_pretrained")
        source = resolve_model_path(base)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error("tokenizer", str(name_or_path), exc) from exc
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"tokenizer of {name_or_path!r} has neither a pad token nor an eos token; "
                             "add one (tokenizer.add_special_tokens({'pad_token': ...})) and save it")
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("tokenizer of %s has no pad token: using its eos token %r for padding", name_or_path, tokenizer.eos_token)
    return tokenizer


def _has_tokenizer_files(directory: Path) -> bool:
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")
    return any((directory / name).is_file() for name in names)


def _dtype_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    """``dtype=`` for transformers >= 4.56, ``torch_dtype=`` before (it was renamed)."""
    import transformers
    from packaging.version import Version

    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {key: dtype}


def _placement(device: str | torch.device | None, dtype: str | torch.dtype | None) -> tuple[torch.device, torch.dtype]:
    import torch

    from rlhfkit.utils.runtime import pick_device, pick_dtype

    torch_device = device if isinstance(device, torch.device) else pick_device(device)
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else pick_dtype(torch_device, dtype)
    return torch_device, torch_dtype


@contextlib.contextmanager
def _quiet_local_load(resolved: str) -> Iterator[None]:
    """Hide transformers' per-tensor "Loading weights" bar for local directories (downloads keep theirs)."""
    from transformers.utils import logging as hf_logging

    if not _is_local(resolved) or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def _from_pretrained(auto_class: Any, resolved: str, name: str, what: str, device: torch.device,
                     dtype: torch.dtype, trust_remote_code: bool) -> PreTrainedModel:
    try:
        with _quiet_local_load(resolved):
            model = auto_class.from_pretrained(resolved, trust_remote_code=trust_remote_code, **_dtype_kwargs(dtype))
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error(what, name, exc) from exc
    return model.to(device).eval()


def load_causal_lm(name_or_path: str | os.PathLike[str], *, device: str | torch.device | None = None,
                   dtype: str | torch.dtype | None = None, trust_remote_code: bool = False,
                   adapter_trainable: bool = False) -> PreTrainedModel:
    """Load an ``AutoModelForCausalLM`` (or a peft adapter dir over its base) on the chosen device/dtype.

    Device defaults to CUDA when present, else CPU; dtype to bf16 on capable GPUs, else float32
    (``rlhfkit.utils.runtime``). The model is returned in eval mode.
    """
    from transformers import AutoModelForCausalLM

    resolved = resolve_model_path(name_or_path)
    _check_model_dir(resolved)
    torch_device, torch_dtype = _placement(device, dtype)
    base = _adapter_base(resolved)
    if base is not None:
        model = load_causal_lm(base, device=torch_device, dtype=torch_dtype, trust_remote_code=trust_remote_code)
        return _load_adapter(model, resolved, adapter_trainable)
    return _from_pretrained(AutoModelForCausalLM, resolved, str(name_or_path), "causal LM", torch_device, torch_dtype,
                            trust_remote_code)


def load_trunk(name_or_path: str | os.PathLike[str], *, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None, trust_remote_code: bool = False) -> PreTrainedModel:
    """Load the transformer trunk (``AutoModel``, no LM head) of any checkpoint, e.g. to start a critic."""
    from transformers import AutoModel

    resolved = resolve_model_path(name_or_path)
    _check_model_dir(resolved)
    if _adapter_base(resolved) is not None:
        raise ModelError(f"{resolved} holds a LoRA adapter; a trunk needs full weights (merge the adapter first)")
    torch_device, torch_dtype = _placement(device, dtype)
    return _from_pretrained(AutoModel, resolved, str(name_or_path), "model trunk", torch_device, torch_dtype,
                            trust_remote_code)


def _load_adapter(model: PreTrainedModel, adapter_dir: str, trainable: bool) -> PreTrainedModel:
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error("LoRA adapter", adapter_dir, exc) from exc


ValueKind = Literal["none", "head", "critic"]


@dataclasses.dataclass
class PolicyBundle:
    """Everything an RL trainer needs about its models, with a cheap reference policy.

    ``policy`` is the causal LM being trained (a peft model with LoRA). ``value_model`` is None, a
    :class:`~rlhfkit.models.value.PolicyWithValueHead` sharing the policy's trunk, or a separate
    :class:`~rlhfkit.models.value.CriticModel`. The reference is the same weights with adapters
    switched off (LoRA: no second copy) or a frozen copy (``frozen_reference``) otherwise.
    """

    policy: nn.Module
    tokenizer: PreTrainedTokenizerBase
    value_model: nn.Module | None = None
    frozen_reference: nn.Module | None = None

    def __post_init__(self) -> None:
        from rlhfkit.models.lora import is_peft_model

        if not is_peft_model(self.policy) and self.frozen_reference is None:
            raise ValueError("a policy without LoRA adapters needs a frozen_reference (see make_frozen_reference)")

    @property
    def uses_lora(self) -> bool:
        """Whether the reference is the policy with its adapters disabled."""
        from rlhfkit.models.lora import is_peft_model

        return is_peft_model(self.policy)

    @contextlib.contextmanager
    def reference(self) -> Iterator[nn.Module]:
        """Yield the reference model, in eval mode and under ``no_grad``, for the ``with`` block only.

        With LoRA this is ``policy`` inside peft's ``disable_adapter()``: do not train inside the block.
        """
        import torch

        if not self.uses_lora:
            assert self.frozen_reference is not None
            with torch.no_grad():
                yield self.frozen_reference
            return
        was_training = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad(), self.policy.disable_adapter():
                yield self.policy
        finally:
            self.policy.train(was_training)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters to optimize: policy (adapters only with LoRA) and value model, each once."""
        seen: set[int] = set()
        params = []
        modules = [self.policy] + ([self.value_model] if self.value_model is not None else [])
        for module in modules:
            for param in module.parameters():
                if param.requires_grad and id(param) not in seen:
                    seen.add(id(param))
                    params.append(param)
        return params

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Save policy (adapters only with LoRA) and tokenizer; a value head beside them, a critic in ``critic/``."""
        from rlhfkit.models.value import CriticModel, PolicyWithValueHead

        directory = Path(directory)
        self.policy.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        if isinstance(self.value_model, PolicyWithValueHead):
            self.value_model.value_head.save(directory)
        elif isinstance(self.value_model, CriticModel):
            self.value_model.save_pretrained(directory / CRITIC_SUBDIR)
        return directory


CRITIC_SUBDIR = "critic"


def make_frozen_reference(policy: nn.Module) -> nn.Module:
    """A deep copy of ``policy`` in eval mode with every parameter frozen."""
    import copy

    reference = copy.deepcopy(policy).eval()
    reference.requires_grad_(False)
    return reference


def load_policy_bundle(name_or_path: str | os.PathLike[str], *, lora: LoraSettings | None = None,
                       value: ValueKind = "none", device: str | torch.device | None = None,
                       dtype: str | torch.dtype | None = None, critic: str | os.PathLike[str] | None = None,
                       reference: str | os.PathLike[str] | None = None) -> PolicyBundle:
    """Load policy, tokenizer, optional value model and reference in one call.

    ``name_or_path`` may be a directory written by :meth:`PolicyBundle.save_pretrained`: a LoRA
    adapter directory resumes with trainable adapters (its base is the reference), and a saved value
    head or ``critic/`` is picked up. ``critic`` starts the critic from another checkpoint (e.g. the
    reward model); ``reference`` loads the frozen reference from another checkpoint instead of
    copying the policy (e.g. the SFT model when resuming a full fine-tune).
    """
    from rlhfkit.models.lora import apply_lora, is_peft_model
    from rlhfkit.models.value import VALUE_HEAD_FILE, CriticModel, PolicyWithValueHead, ValueHead, hidden_size_of

    if value not in ("none", "head", "critic"):
        raise ModelError(f"value must be 'none', 'head' or 'critic', got {value!r}")
    resolved = resolve_model_path(name_or_path)
    torch_device, torch_dtype = _placement(device, dtype)
    tokenizer = load_tokenizer(resolved)
    policy = load_causal_lm(resolved, device=torch_device, dtype=torch_dtype, adapter_trainable=True)
    if lora is not None and not is_peft_model(policy):
        policy = apply_lora(policy, lora)
    frozen = None
    if not is_peft_model(policy):
        frozen = (load_causal_lm(reference, device=torch_device, dtype=torch_dtype) if reference is not None
                  else make_frozen_reference(policy))
        frozen.requires_grad_(False)
    elif reference is not None:
        raise ModelError("with LoRA the reference is the base model with adapters off; do not pass reference")
    value_model: nn.Module | None = None
    local = Path(resolved) if _is_local(resolved) else None
    if value == "head":
        head = None
        if local is not None and (local / VALUE_HEAD_FILE).is_file():
            head = ValueHead.load(local, hidden_size_of(policy.config))
        value_model = PolicyWithValueHead(policy, head)
    elif value == "critic":
        source = critic
        if source is None:
            saved = local / CRITIC_SUBDIR if local is not None else None
            source = saved if saved is not None and saved.is_dir() else (_adapter_base(resolved) or resolved)
        value_model = CriticModel.from_pretrained(source, device=torch_device, dtype=torch_dtype)
        if value_model.config.vocab_size != policy.config.vocab_size:
            raise ModelError(f"critic {source} has vocab size {value_model.config.vocab_size}, the policy "
                             f"{policy.config.vocab_size}: they must share the tokenizer")
    return PolicyBundle(policy=policy, tokenizer=tokenizer, value_model=value_model, frozen_reference=frozen)
