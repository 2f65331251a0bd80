"""Shared test set-up: offline hub, deterministic seeds, quiet torch threads, and the Solidity
compiler's version asked once per session."""

import functools
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:  # one intra-op thread: on a shared 2-core machine two threads ran up to 100x slower
    import torch

    torch.set_num_threads(1)
except ImportError:
    pass


def _ask_solc_version_once() -> None:
    """Every ``compile_contracts()`` asks the compiler for its version before it reads the
    compile cache; where solc is the solcjs wrapper (node) that takes ≈ 0.4 s a call, and the
    tests make hundreds of calls in-process. Within this test session the answer is kept per
    executable (and its size and modification time); other processes still ask."""
    try:
        from offchain.chain import compiler
    except ImportError:  # the chain extra is not installed
        return
    ask = getattr(compiler, "_solc_version", None)
    if ask is None:  # the compiler module keeps the answer itself now: nothing to add
        return

    @functools.cache
    def version_of(executable: str, stamp: tuple[int, int]) -> str:
        return ask(executable)

    def solc_version(executable: str) -> str:
        try:
            stat = os.stat(executable)
        except OSError:
            return ask(executable)  # raises the compiler module's own error
        return version_of(executable, (stat.st_mtime_ns, stat.st_size))

    compiler._solc_version = solc_version


_ask_solc_version_once()
