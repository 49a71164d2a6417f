"""rlhfkit: the whole RLHF loop."""

import os

# libgomp reads its wait policy once, when torch loads it, so this must happen before any rlhfkit module
# imports torch: on a loaded machine its default spin-wait made generation ~20x slower (a value the user
# set is kept; see rlhfkit.utils.runtime.configure_threads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# MKL's memory manager keeps the packing buffers of every GEMM shape it has run, for the life of the process
# (56 MiB after one PPO step on the bench workload, 3x its live tensors); without it MKL mallocs them per call,
# at no measured speed cost. MKL reads this when torch loads it; any non-empty value disables the manager, so a
# user keeps it with MKL_DISABLE_FAST_MM set empty.
os.environ.setdefault("MKL_DISABLE_FAST_MM", "1")

__version__ = "0.1.0"
