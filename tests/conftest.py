"""Shared test set-up: offline hub, deterministic seeds, quiet torch threads."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:  # one intra-op thread: on a shared 2-core machine two threads ran up to 100x slower
    import torch

    torch.set_num_threads(1)
except ImportError:
    pass
