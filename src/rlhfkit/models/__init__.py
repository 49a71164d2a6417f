"""Models: loading by name or path (``loading``), LoRA (``lora``), value heads and critics (``value``),
the built-in tiny base model (``builtin``) and reward models (``reward_model``).

Submodules are imported explicitly (``from rlhfkit.models.loading import load_causal_lm``) so that
importing this package stays free of torch/transformers start-up cost.
"""
