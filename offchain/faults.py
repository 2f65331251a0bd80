"""Fault points: named places where a test can kill the process with SIGKILL (``kill -9``).

The reliability suite (``tests/test_kill9.py``) starts the node with ``CCOMP_FAULT_KILL`` (the
setting ``fault_kill`` of :class:`offchain.config.Settings`) set to one point name, e.g.
``stage:train:begun`` or ``write:submission.json``, and checks that a restart completes the
round exactly once. Building the settings arms the point (:func:`arm`); unarmed (always, outside
tests) :func:`fault_point` compares with None and returns.

Points the node passes (``<key>`` is a stage key of the round pipeline,
:data:`offchain.rounds.pipeline.STAGE_KEYS`):

- ``stage:<key>:begun``: the stage is recorded ``started``, its work has not begun;
- ``stage:<key>:ran``: its work and artifact are done, the database does not know yet;
- ``write:<file name>``: inside :func:`offchain.utils.atomic_write`, the temporary file is
  complete and synced, the rename has not happened;
- ``submit:recorded``: the ``postRound`` transaction is signed and recorded, not broadcast;
- ``submit:broadcast``: it is broadcast, its receipt is not awaited yet;
- ``register:aside``: a replacing holder registration has moved the old folder(s) aside, the new
  one is not renamed into place yet (:mod:`offchain.api.holders_store`);
- ``register:published``: the new folder is in place, the old one(s) not yet removed.
- ``sd-lora:step:<n>``: sd-lora training has finished optimizer step n (and written its
  resumable state if n is a multiple of ``checkpoint_every``), in every process of a launch.
- ``trak:<store>:stored``: a batch of TRAK feature rows of ``<store>`` (``train`` or
  ``target``) is written and marked done (in a sharded launch: in this process's own files).

Points may carry a round: ``CCOMP_FAULT_KILL=2/stage:sign:ran`` fires only in round 2.
"""

from __future__ import annotations

import os
import signal

__all__ = ["arm", "armed", "fault_point"]

_armed: str | None = None
"""The point this process dies at (``[<round>/]<point>``), or None."""


def arm(point: str | None) -> None:
    """Make :func:`fault_point` kill this process at ``point`` (None or "": at no point)."""
    global _armed
    _armed = point or None


def armed() -> str | None:
    """The armed point (``[<round>/]<point>``), or None: what a launched worker process must be
    armed with too (:func:`offchain.rounds.distributed.launch_stage`)."""
    return _armed


def fault_point(name: str, round_id: int | None = None) -> None:
    """SIGKILL this process if the armed point (:func:`arm`) is this one (and round, if given)."""
    wanted = _armed
    if not wanted:
        return
    where, _, point = wanted.rpartition("/")
    if point != name or (where and round_id is not None and where != str(round_id)):
        return
    if where and round_id is None:
        return
    os.kill(os.getpid(), signal.SIGKILL)
