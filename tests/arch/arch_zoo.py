"""Tiny random-weight models of nineteen architectures, built from their real config classes, with a
tokenizer per family (its special tokens, BOS rule and, for most, a chat template in the family's
style), saved with ``save_pretrained`` so tests load them by path like a user's checkpoint. Among them:
query/key norms (Qwen3, OLMo 2, Gemma 3), mixtures of experts (Qwen3-MoE, gpt-oss with attention
sinks), layers without positions (SmolLM3), sliding-window layers shorter than the rows (Gemma 2
and 3, gpt-oss) and hybrids whose layers keep a recurrent state (LFM2's convolutions, Qwen3-Next's and
Qwen3.5's linear attention, Falcon-H1's state-space heads beside attention).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

CORPUS = [
    "The movie was great and the actors were wonderful.",
    "The food was bad and the service was slow.",
    "I loved the story. It was funny, warm and kind.",
    "This product is terrible; it broke after one day.",
    "What a lovely day! The sun is bright and the sky is blue.",
    "Please explain why the sky is blue in one short sentence.",
    "user assistant system model",
]

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + eos_token }}"
    "{% else %}{{ m['content'] + '\n\n' }}{% endif %}{% endfor %}"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + m['content'] + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
PHI3_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
         "max_position_embeddings": 256, "initializer_range": 0.2}


@dataclass(frozen=True)
class Family:
    """One architecture: its config builder and its tokenizer's special tokens and conventions."""

    name: str
    make_config: Callable[[dict[str, Any]], Any]
    eos: str
    bos: str | None = None
    pad: str | None = None
    adds_bos: bool = False
    template: str | None = None
    extra_tokens: tuple[str, ...] = ()
    end_of_turn: str | None = None  # a second stop token in generation_config (Gemma's <end_of_turn>)
    special: tuple[str, ...] = ()
    short_window: bool = False  # sliding-window layers of 4 positions: shorter than the test rows
    recurrent: bool = False  # layers with recurrent state (linear attention, convolutions, state-space heads)


    def specials(self) -> list[str]:
        """Every special token in vocabulary order (ids 0, 1, ...)."""
        out = []
        for token in (*self.special, self.pad, self.bos, self.eos, *self.extra_tokens):
            if token is not None and token not in out:
                out.append(token)
        return out


def _transformers(name: str) -> Any:
    import transformers

    return getattr(transformers, name)


def _gpt2(ids: dict[str, Any]) -> Any:
    return _transformers("GPT2Config")(n_embd=32, n_layer=2, n_head=4, n_positions=256, initializer_range=0.2, **ids)


def _llama_like(config_class: str, **extra: Any) -> Callable[[dict[str, Any]], Any]:
    def make(ids: dict[str, Any]) -> Any:
        return _transformers(config_class)(**SMALL, num_key_value_heads=2, **extra, **ids)
    return make


def _neox(ids: dict[str, Any]) -> Any:
    return _transformers("GPTNeoXConfig")(**SMALL, **ids)


def _opt(ids: dict[str, Any]) -> Any:
    # word_embed_proj_dim != hidden_size, as in OPT-350m: the LM head reads a projected hidden state
    return _transformers("OPTConfig")(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                                      max_position_embeddings=256, word_embed_proj_dim=16, init_std=0.2,
                                      do_layer_norm_before=False, **ids)


FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("gpt2", _gpt2, eos="<|endoftext|>", bos="<|endoftext|>"),
    Family("llama", _llama_like("LlamaConfig"), eos="<|eot_id|>", bos="<|begin_of_text|>", adds_bos=True,
           template=LLAMA3_TEMPLATE, extra_tokens=("<|start_header_id|>", "<|end_header_id|>")),
    Family("qwen2", _llama_like("Qwen2Config"), eos="<|im_end|>", pad="<|endoftext|>", template=CHATML_TEMPLATE,
           extra_tokens=("<|im_start|>",)),
    Family("mistral", _llama_like("MistralConfig", head_dim=8), eos="</s>", bos="<s>", adds_bos=True,
           template=MISTRAL_TEMPLATE, special=("<unk>",)),
    Family("gemma", _llama_like("GemmaConfig", head_dim=8), eos="<eos>", bos="<bos>", pad="<pad>", adds_bos=True,
           template=GEMMA_TEMPLATE, extra_tokens=("<start_of_turn>", "<end_of_turn>"), end_of_turn="<end_of_turn>"),
    Family("gemma2", _llama_like("Gemma2Config", head_dim=8, sliding_window=4, query_pre_attn_scalar=8),
           eos="<eos>", bos="<bos>", pad="<pad>", adds_bos=True, template=GEMMA_TEMPLATE,
           extra_tokens=("<start_of_turn>", "<end_of_turn>"), end_of_turn="<end_of_turn>", short_window=True),
    Family("phi3", _llama_like("Phi3Config"), eos="<|endoftext|>", bos="<s>", pad="<|endoftext|>",
           template=PHI3_TEMPLATE, extra_tokens=("<|user|>", "<|assistant|>", "<|system|>", "<|end|>"),
           end_of_turn="<|end|>"),
    Family("qwen3", _llama_like("Qwen3Config", head_dim=8), eos="<|im_end|>", pad="<|endoftext|>",
           template=CHATML_TEMPLATE, extra_tokens=("<|im_start|>",)),
    Family("qwen3_moe", _llama_like("Qwen3MoeConfig", head_dim=8, num_experts=4, num_experts_per_tok=2,
                                    moe_intermediate_size=32), eos="<|im_end|>", pad="<|endoftext|>",
           template=CHATML_TEMPLATE, extra_tokens=("<|im_start|>",)),
    Family("gemma3", _llama_like("Gemma3TextConfig", head_dim=8, sliding_window=4, query_pre_attn_scalar=8,
                                 layer_types=["sliding_attention", "full_attention"]),
           eos="<eos>", bos="<bos>", pad="<pad>", adds_bos=True, template=GEMMA_TEMPLATE,
           extra_tokens=("<start_of_turn>", "<end_of_turn>"), end_of_turn="<end_of_turn>", short_window=True),
    Family("olmo2", _llama_like("Olmo2Config"), eos="<|endoftext|>", pad="<|pad|>"),
    Family("smollm3", _llama_like("SmolLM3Config", no_rope_layers=[1, 0]), eos="<|im_end|>", pad="<|endoftext|>",
           template=CHATML_TEMPLATE, extra_tokens=("<|im_start|>",)),
    Family("gpt_oss", _llama_like("GptOssConfig", head_dim=8, num_local_experts=4, num_experts_per_tok=2,
                                  sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                                  rope_parameters={"rope_type": "default", "rope_theta": 150000.0}),
           eos="<|return|>", pad="<|endoftext|>", short_window=True),
    Family("lfm2", _llama_like("Lfm2Config", layer_types=["conv", "full_attention"], block_ff_dim=64),
           eos="<|im_end|>", bos="<|startoftext|>", pad="<|pad|>", adds_bos=True, recurrent=True),
    Family("qwen3_next", _llama_like("Qwen3NextConfig", head_dim=8, layer_types=["linear_attention", "full_attention"],
                                     linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=8,
                                     linear_value_head_dim=8, num_experts=4, num_experts_per_tok=2,
                                     moe_intermediate_size=32, shared_expert_intermediate_size=32),
           eos="<|im_end|>", pad="<|endoftext|>", template=CHATML_TEMPLATE, extra_tokens=("<|im_start|>",),
           recurrent=True),
    Family("qwen3_5", _llama_like("Qwen3_5TextConfig", head_dim=8, layer_types=["linear_attention", "full_attention"],
                                  linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=8,
                                  linear_value_head_dim=8),
           eos="<|im_end|>", pad="<|endoftext|>", template=CHATML_TEMPLATE, extra_tokens=("<|im_start|>",),
           recurrent=True),
    Family("falcon_h1", _llama_like("FalconH1Config", head_dim=8, mamba_d_ssm=32, mamba_n_heads=4, mamba_d_head=8,
                                    mamba_d_state=8, mamba_n_groups=1, mamba_chunk_size=16),
           eos="<|end_of_text|>", pad="<|pad|>", recurrent=True),
    Family("gpt_neox", _neox, eos="<|endoftext|>", bos="<|endoftext|>"),
    Family("opt", _opt, eos="</s>", bos="</s>", pad="<pad>", adds_bos=True),
]}

ARCHITECTURES = tuple(FAMILIES)
CHAT_ARCHITECTURES = tuple(name for name, family in FAMILIES.items() if family.template)


@functools.lru_cache(maxsize=None)
def _tokenizer_json(specials: tuple[str, ...], bos: str | None, adds_bos: bool) -> str:
    """A byte-level BPE trained on CORPUS with ``specials`` first; BOS prepended when the family does."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=list(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    if adds_bos and bos is not None:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    return tok.to_str()


def make_tokenizer(family: Family) -> Any:
    """The family's tokenizer (left padding, as the samplers load it)."""
    from transformers import PreTrainedTokenizerFast

    specials = family.specials()
    backend = Tokenizer.from_str(_tokenizer_json(tuple(specials), family.bos, family.adds_bos))
    kwargs = {name: token for name, token in (("eos_token", family.eos), ("bos_token", family.bos),
                                              ("pad_token", family.pad)) if token is not None}
    if "<unk>" in specials:
        kwargs["unk_token"] = "<unk>"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, padding_side="left",
                                        additional_special_tokens=list(family.extra_tokens), **kwargs)
    if family.template is not None:
        tokenizer.chat_template = family.template
    return tokenizer


def make_model(family: Family, tokenizer: Any, seed: int = 0) -> Any:
    """A random causal LM of the family sized for tests (float32, eval mode)."""
    from transformers import AutoModelForCausalLM

    ids = {"vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id,
           "bos_token_id": tokenizer.bos_token_id,
           "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id}
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(family.make_config(ids))
    if family.end_of_turn is not None:
        model.generation_config.eos_token_id = [tokenizer.eos_token_id,
                                                tokenizer.convert_tokens_to_ids(family.end_of_turn)]
    return model.eval()


@dataclass(frozen=True)
class Built:
    """Directories of one architecture: the policy (causal LM + tokenizer) and a sequence classifier (None when
    transformers has no sequence-classification class for the family)."""

    name: str
    policy: Path
    classifier: Path | None

    @property
    def family(self) -> Family:
        """The family this was built from."""
        return FAMILIES[self.name]


def build(name: str, directory: Path) -> Built:
    """Save the causal LM, its tokenizer and, where transformers has the class, a one-label sequence classifier on
    its trunk under ``directory``."""
    from transformers import AutoModelForSequenceClassification

    family = FAMILIES[name]
    tokenizer = make_tokenizer(family)
    policy_dir, classifier_dir = directory / "policy", directory / "classifier"
    make_model(family, tokenizer).save_pretrained(policy_dir)
    tokenizer.save_pretrained(policy_dir)
    try:
        classifier = AutoModelForSequenceClassification.from_pretrained(policy_dir, num_labels=1)
    except ValueError:  # "Unrecognized configuration class": no classifier head for this family
        return Built(name, policy_dir, None)
    classifier.save_pretrained(classifier_dir)
    tokenizer.save_pretrained(classifier_dir)
    return Built(name, policy_dir, classifier_dir)
