"""rlhfkit: the whole RLHF loop."""

import os

# libgomp reads its wait policy once, when torch loads it, so this must happen before any rlhfkit module
# imports torch: on a loaded machine its default spin-wait made generation ~20x slower (a value the user
# set is kept; see rlhfkit.utils.runtime.configure_threads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
