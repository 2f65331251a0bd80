"""Copyright-aware compensation of data holders for diffusion models.

Data flows ``data → rounds → diffusion → attribution → copyright → policy → allocation →
oracle (merkle/sign) → chain → claim``; each subpackage is one of those stages. Only
:mod:`offchain.chain` imports web3; the ML stages never touch the chain.

Science: Shi et al., "Copyright-Aware Incentive Scheme for Generative Art Models Using
Hierarchical Reinforcement Learning", arXiv 2410.20180.
"""

from offchain.errors import OffchainError

__all__ = ["OffchainError"]
__version__ = "0.1.0"
