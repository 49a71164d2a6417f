"""Suite-wide settings: offline hub, passive OpenMP waits, few threads, a private cache dir."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RLHFKIT_THREADS", "2")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["RLHFKIT_THREADS"]))
