"""Who trains in the next round.

A holder joins the campaign's first round. It stays for the next round only if the payment it got
for the round just trained covers its reservation price *raised by the copyright loss it
suffered*: ``payment ≥ price · (1 + copyright_loss)`` (the paper's holders join a round when the
offered payment covers their price, Shi et al., arXiv 2410.20180; README, "What happens in a
round"). A holder that leaves does not come back within the campaign.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from offchain.errors import ConfigError

__all__ = ["required_payment_wei", "stays_next_round"]

_PRECISION = 10**9


def required_payment_wei(reservation_price_wei: int, copyright_loss: float) -> int:
    """The least payment (wei) that keeps a holder: ``ceil(price · (1 + copyright_loss))``.

    Args:
        reservation_price_wei: the holder's reservation price per round, wei (≥ 0).
        copyright_loss: this round's copyright loss of the holder, in [0, 1].

    Raises:
        ConfigError: negative price or a loss outside [0, 1].
    """
    if reservation_price_wei < 0:
        raise ConfigError(f"reservation price must be >= 0 wei, got {reservation_price_wei}")
    if not 0.0 <= copyright_loss <= 1.0:
        raise ConfigError(f"copyright loss must be in [0, 1], got {copyright_loss}")
    factor = _PRECISION + round(copyright_loss * _PRECISION)
    return -(-reservation_price_wei * factor // _PRECISION)


def stays_next_round(
    participating: Sequence[bool] | np.ndarray,
    payments_wei: Sequence[int],
    reservation_prices_wei: Sequence[int],
    copyright_losses: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """Participation mask for the next round, shape (H,) bool.

    Args:
        participating: shape (H,), who trained in the round just paid.
        payments_wei: shape (H,), ints, what each holder was paid for it (wei).
        reservation_prices_wei: shape (H,), ints, each holder's price per round (wei).
        copyright_losses: shape (H,), floats in [0, 1].
    """
    n = len(participating)
    if not (len(payments_wei) == len(reservation_prices_wei) == len(copyright_losses) == n):
        raise ConfigError("participation inputs must all have one entry per holder")
    return np.array(
        [
            bool(participating[i])
            and int(payments_wei[i])
            >= required_payment_wei(int(reservation_prices_wei[i]), float(copyright_losses[i]))
            for i in range(n)
        ],
        dtype=bool,
    )
