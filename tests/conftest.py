"""Shared test set-up: offline hub, deterministic seeds, quiet torch threads."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
