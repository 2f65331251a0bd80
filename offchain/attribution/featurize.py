"""TRAK featurization: per-example gradients, random projection, a resumable feature store.

For one checkpoint θ and an output function f (:mod:`offchain.attribution.model_output`), the
TRAK feature of an example z is (Park et al., "TRAK: Attributing Model Behavior at Scale",
ICML 2023, arXiv 2303.14186, §3)::

    φ(z) = Pᵀ ∇_θ f(z; θ) / sqrt(p)        float32 (proj_dim,)

with p = the number of parameters and P a fixed random (p, proj_dim) matrix. The 1/sqrt(p)
factor is traker's ``normalize_factor`` (it keeps ΦᵀΦ well scaled); it does not change the
scores, see :mod:`offchain.attribution.kernel`.

Pieces, one role each:

- :class:`GradientFeaturizer`: per-example gradients of f with ``torch.func`` (``vmap`` over
  ``grad`` of a ``functional_call``) for one batch at a time, flattened in
  ``named_parameters`` order (traker's ``vectorize`` order) and projected. Only one batch of
  full gradients (B × p float32) is alive at a time ("chunked in memory").
- Projectors (traker's classes, ``trak.projectors``): :func:`select_projector`.

  * CPU (and CUDA without ``fast_jl``): :class:`MatrixProjector` generates P **once** and
    keeps it; each batch is projected with a matmul per block. P is bit-for-bit the matrix of
    traker 0.3.2's default CPU path (``TRAKer.init_projector`` with ``device="cpu"``: a
    ``BasicProjector`` with ``ProjectionType.normal``, ``block_size=100``, block i drawn from a
    CPU generator seeded ``seed + 1000·i + 100000·model_id``; the last block is drawn full and
    truncated). traker's multi-block ``BasicProjector`` regenerates every block for every
    batch; we pay that once. Memory: ``4 · p · proj_dim`` bytes (651k-parameter UNet: 1.3 GB at
    proj_dim 512, 5.3 GB at 2048; half with ``dtype=torch.bfloat16``).
  * CUDA with ``fast_jl`` importable: traker's ``CudaProjector`` (Rademacher, as traker's GPU
    default), provided ``max_batch_size · p`` fits its uint32 indexing. **Untested here** (no
    GPU and no ``fast_jl`` on the development machines); only the choice
    (:func:`choose_projector_kind`) is unit-tested.

- :class:`FeatureStore`: features Φ (n, proj_dim) float32 in an ``np.lib.format.open_memmap``
  file plus a done-mask, so an interrupted run recomputes only the missing rows. See the class
  docstring for the crash-consistency argument and the identity check.
- :func:`featurize_into`: the batch loop (progress bar, fixed batch grid, per-example noise from
  the example's *global* index, so a resumed run reproduces the same rows bit for bit).

Attention: the demo UNet's mid-block attention uses ``scaled_dot_product_attention``, which has
no vmap batching rule on CPU; torch falls back to a per-example loop and warns ("There is a
performance drop"). :func:`use_classic_attention` swaps in diffusers' ``AttnProcessor``
(explicit bmm + softmax, which vmap batches). Measured (1 thread, 651k-parameter demo UNet, K = 4):
0.37–0.48 s per 32-example gradient batch with either processor, gradients equal to 1e-6
relative, and 13.1–13.7 s (default) vs 13.0–13.3 s (classic) to featurize 512 images in three
alternating runs of ``bench/featurize.py --paths ours [--classic-attention]``: the 8×8
single-head attention is too small for the loop to matter. We keep the model's own processor
and silence the warning; the helper stays for models with heavier attention.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm
from trak.projectors import AbstractProjector, BasicProjector, CudaProjector, ProjectionType
from trak.utils import vectorize

from offchain.attribution.model_output import DiffusionModelOutput, make_noise
from offchain.errors import ConfigError, DataError, StageError
from offchain.faults import fault_point
from offchain.utils import read_json, write_json, write_npy

__all__ = [
    "TRAKER_CPU_BLOCK_SIZE",
    "FeatureStore",
    "GradientFeaturizer",
    "MatrixProjector",
    "ProjectorKind",
    "choose_projector_kind",
    "fast_jl_available",
    "featurize_into",
    "select_projector",
    "use_classic_attention",
]

ProjectorKind = Literal["matrix", "cuda"]
"""``"matrix"``: :class:`MatrixProjector` (normal entries, generated once; any device).
``"cuda"``: traker's ``CudaProjector`` (Rademacher, ``fast_jl`` kernel; CUDA only)."""

TRAKER_CPU_BLOCK_SIZE = 100
"""traker 0.3.2's ``BasicProjector`` default ``block_size`` (what ``TRAKer`` uses on CPU)."""

_UINT32_MAX = int(np.iinfo(np.uint32).max)


# --------------------------------------------------------------------------------- projectors


class MatrixProjector(AbstractProjector):
    """P (grad_dim, proj_dim), generated once and kept; ``project`` is a matmul per block.

    P is the concatenation of the blocks traker's ``BasicProjector`` draws with the same
    ``seed`` / ``proj_type`` / ``block_size`` / ``model_id`` (its own
    ``generate_sketch_matrix`` draws them on a CPU generator; the last block is drawn full and
    truncated, as traker does), so features equal those of traker's default CPU path (measured
    bit-identical). The blocks are kept as drawn, contiguous (grad_dim, block_size) tensors —
    assembling one (grad_dim, proj_dim) matrix would cost a strided copy 1.6× the drawing time,
    and a matmul per 100-column block runs as fast as one large matmul. They are drawn on the
    CPU (so P is the same whatever ``device``) and then moved to ``device``.

    Args:
        grad_dim: p ≥ 1, the number of gradient entries.
        proj_dim: ≥ 1.
        seed: projection seed ≥ 0.
        proj_type: ``ProjectionType.normal`` (traker's CPU default) or ``rademacher``.
        device: where P lives and the matmul runs.
        block_size: traker's block width (default 100, traker's CPU default).
        model_id: traker's checkpoint id (≥ 0); shifts the block seeds by 100000·model_id.
        dtype: ``torch.float32`` (default; traker's numbers) or ``torch.bfloat16``: the same
            matrix rounded to bfloat16, and each batch of gradients rounded too before the
            matmul (half the memory; ~2× faster matmul on CPUs with AVX512-BF16/AMX, much
            slower on CPUs without native bf16; ~3e-3 relative error per feature, well under
            the JL error ~1/sqrt(proj_dim)). Projections are returned as float32.

    Raises:
        ConfigError: bad dtype, non-positive sizes, negative seed or model_id.
    """

    def __init__(
        self,
        grad_dim: int,
        proj_dim: int,
        seed: int,
        proj_type: ProjectionType | str = ProjectionType.normal,
        device: str | torch.device = "cpu",
        block_size: int = TRAKER_CPU_BLOCK_SIZE,
        model_id: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if dtype not in (torch.float32, torch.bfloat16):
            raise ConfigError(f"projection dtype must be float32 or bfloat16, got {dtype}")
        if grad_dim < 1 or proj_dim < 1 or block_size < 1:
            raise ConfigError(
                f"grad_dim, proj_dim and block_size must be ≥ 1, got {grad_dim}, {proj_dim}, "
                f"{block_size}"
            )
        if seed < 0 or model_id < 0:
            raise ConfigError(f"seed and model_id must be ≥ 0, got {seed}, {model_id}")
        super().__init__(grad_dim, proj_dim, seed, ProjectionType(proj_type), device)
        self.model_id = int(model_id)
        self.block_size = min(int(block_size), int(proj_dim))
        self.dtype = dtype
        self.blocks: list[Tensor] = self._generate()

    def _generate(self) -> list[Tensor]:
        drawer = BasicProjector(  # traker's own block generator, on the CPU
            grad_dim=self.grad_dim,
            proj_dim=self.proj_dim,
            seed=self.seed,
            proj_type=self.proj_type,
            device="cpu",
            block_size=self.block_size,
            dtype=torch.float32,
            model_id=self.model_id,
        )
        blocks = []
        for i in range(drawer.num_blocks):
            if i > 0:  # the constructor drew block 0; free_memory() makes it allocate anew
                drawer.generate_sketch_matrix(drawer.generator_states[i])
            width = min(self.block_size, self.proj_dim - i * self.block_size)
            block = drawer.proj_matrix
            drawer.free_memory()  # hand the tensor over instead of copying it
            if width < self.block_size:
                block = block[:, :width].contiguous()
            blocks.append(block.to(self.device, self.dtype))
        return blocks

    @property
    def proj_matrix(self) -> Tensor:
        """P assembled as one (grad_dim, proj_dim) tensor (a copy: for inspection and tests)."""
        return torch.cat(self.blocks, dim=1)

    def project(self, grads: Tensor | dict[str, Tensor], model_id: int) -> Tensor:
        """(B, grad_dim) → float32 (B, proj_dim); ``model_id`` must be the constructor's."""
        if model_id != self.model_id:
            raise ConfigError(
                f"MatrixProjector was built for model_id {self.model_id}, got {model_id}"
            )
        if not self.blocks:
            raise ConfigError("the projection matrix was freed (free_memory())")
        if isinstance(grads, dict):
            grads = vectorize(grads, device=self.blocks[0].device)
        grads = grads.to(self.dtype)
        out = torch.empty(grads.shape[0], self.proj_dim, dtype=torch.float32, device=grads.device)
        start = 0
        for block in self.blocks:
            stop = start + block.shape[1]
            out[:, start:stop] = grads @ block
            start = stop
        return out

    def free_memory(self) -> None:
        self.blocks = []


def fast_jl_available() -> bool:
    """Whether traker's CUDA projection kernel (``fast_jl``) imports."""
    try:
        import fast_jl  # noqa: F401
    except ImportError:
        return False
    return True


def choose_projector_kind(
    device: str | torch.device, grad_dim: int, max_batch_size: int = 32
) -> ProjectorKind:
    """Which projector :func:`select_projector` builds (pure; no matrix is drawn).

    ``"cuda"`` when ``device`` is a CUDA device, ``torch.cuda.is_available()``, ``fast_jl``
    imports and ``max_batch_size · grad_dim`` fits fast_jl's uint32 indexing; ``"matrix"``
    otherwise (always on CPU).
    """
    if torch.device(device).type != "cuda":
        return "matrix"
    if not torch.cuda.is_available() or not fast_jl_available():
        return "matrix"
    if max_batch_size * grad_dim >= _UINT32_MAX:
        return "matrix"  # traker would need its ChunkedCudaProjector; not worth it here
    return "cuda"


def select_projector(
    grad_dim: int,
    proj_dim: int,
    seed: int,
    device: str | torch.device,
    model_id: int = 0,
    max_batch_size: int = 32,
    kind: ProjectorKind | None = None,
    dtype: torch.dtype = torch.float32,
) -> AbstractProjector:
    """The projector for this device: see :func:`choose_projector_kind` and the module doc.

    ``kind`` forces a choice (``None``: :func:`choose_projector_kind`); ``dtype`` is the
    :class:`MatrixProjector`'s (float32 or bfloat16; ignored by the CUDA branch). The CUDA branch
    (traker's ``CudaProjector``, Rademacher, ``max_batch_size`` ∈ {8, 16, 32}) is untested on
    a GPU.

    Raises:
        ConfigError: ``kind`` unknown.
    """
    kind = kind or choose_projector_kind(device, grad_dim, max_batch_size)
    if kind == "matrix":
        return MatrixProjector(
            grad_dim, proj_dim, seed, ProjectionType.normal, device, model_id=model_id, dtype=dtype
        )
    if kind == "cuda":  # pragma: no cover - needs a GPU and fast_jl
        projector = CudaProjector(
            grad_dim=grad_dim,
            proj_dim=proj_dim,
            seed=seed,
            proj_type=ProjectionType.rademacher,
            device=device,
            max_batch_size=max_batch_size,
        )
        projector.model_id = model_id
        return projector
    raise ConfigError(f"unknown projector kind {kind!r}")


def projector_proj_type(kind: ProjectorKind) -> str:
    """The entry distribution of ``kind``'s matrix (``"normal"`` or ``"rademacher"``)."""
    return "normal" if kind == "matrix" else "rademacher"


# ------------------------------------------------------------------------------- gradients


def use_classic_attention(model: torch.nn.Module) -> int:
    """Swap every diffusers attention processor of ``model`` to ``AttnProcessor`` (explicit
    bmm + softmax, batched by vmap); returns how many were swapped. Modifies ``model``."""
    from diffusers.models.attention_processor import AttnProcessor

    swapped = 0
    for module in model.modules():
        if hasattr(module, "processor") and hasattr(module, "set_processor"):
            module.set_processor(AttnProcessor())
            swapped += 1
    return swapped


@contextmanager
def _quiet_vmap_fallback() -> Iterator[None]:
    with warnings.catch_warnings():
        # SDPA has no vmap batching rule on CPU: torch loops and warns; the result is right.
        warnings.filterwarnings("ignore", message="There is a performance drop because")
        yield


def _flatten(grads: dict[str, Tensor], out: Tensor) -> Tensor:
    """Per-example grads {name: (B, *shape)} → (B, p) in dict order, freeing each entry as it
    is copied (traker's ``vectorize`` order). ``out`` is reused when it has the right shape."""
    first = next(iter(grads.values()))
    batch = first.shape[0]
    total = sum(int(g[0].numel()) for g in grads.values())
    if out.shape != (batch, total) or out.dtype != first.dtype or out.device != first.device:
        out = torch.empty(batch, total, dtype=first.dtype, device=first.device)
    offset = 0
    for name in list(grads):
        g = grads.pop(name)
        n = int(g[0].numel())
        out[:, offset : offset + n] = g.reshape(batch, n)
        offset += n
    return out


class GradientFeaturizer:
    """φ for a batch: per-example ∇_θ f via ``torch.func``, flattened, projected, / sqrt(p).

    Args:
        model: the UNet, already on ``device``, float32, eval mode (not modified).
        output: the output function (its ``get_output`` is vmapped).
        projector: from :func:`select_projector`, built for ``model_id``.
        model_id: traker's checkpoint id the projector was built for.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        output: DiffusionModelOutput,
        projector: AbstractProjector,
        model_id: int = 0,
    ) -> None:
        self.model = model
        self.output = output
        self.projector = projector
        self.model_id = int(model_id)
        self.device = next(model.parameters()).device
        self.weights = {k: v.detach() for k, v in model.named_parameters()}
        self.buffers = {k: v.detach() for k, v in model.named_buffers()}
        self.grad_dim = sum(int(v.numel()) for v in self.weights.values())
        # traker's normalize_factor, computed the same way (float32)
        self.normalize = torch.sqrt(torch.tensor(self.grad_dim, dtype=torch.float32))
        grad = torch.func.grad(output.get_output, argnums=1)
        self._grad_fn = torch.func.vmap(grad, in_dims=(None, None, None, 0, 0))
        # Conditional models: the caption ids are mapped over the batch like the images.
        self._grad_fn_captioned = torch.func.vmap(grad, in_dims=(None, None, None, 0, 0, 0))
        self._buffer = torch.empty(0)

    def __call__(
        self, images: Tensor, noise: Tensor, caption_ids: Tensor | None = None
    ) -> np.ndarray:
        """Features of one batch.

        Args:
            images: float32 (B, C, S, S).
            noise: float32 (B, K, C, S, S) from :func:`make_noise`.
            caption_ids: int64 (B, L) token ids of each example's caption for a conditional
                model, or None (the model is called without captions).

        Returns:
            float32 (B, proj_dim) on the CPU.
        """
        images = images.to(self.device, torch.float32)
        noise = noise.to(self.device, torch.float32)
        with _quiet_vmap_fallback():
            if caption_ids is None:
                grads = self._grad_fn(self.model, self.weights, self.buffers, images, noise)
            else:
                ids = caption_ids.to(self.device, torch.int64)
                grads = self._grad_fn_captioned(
                    self.model, self.weights, self.buffers, images, noise, ids
                )
        flat = _flatten(grads, self._buffer)  # (B, p); the dict is emptied on the way
        self._buffer = flat
        projected = self.projector.project(flat, model_id=self.model_id)
        projected = projected.float() / self.normalize.to(projected.device)
        return projected.detach().cpu().numpy().astype(np.float32, copy=False)

    def release(self) -> None:
        """Free the reusable gradient buffer and the projector's matrix."""
        self._buffer = torch.empty(0)
        self.projector.free_memory()


# ------------------------------------------------------------------------------------ store


class FeatureStore:
    """Resumable features Φ (n_rows, proj_dim) float32 on disk.

    Files in ``folder`` (``<name>`` = ``train`` or ``target``)::

        <name>.npy          Φ, an np.lib.format.open_memmap float32 (n_rows, proj_dim)
        <name>.done.npy     bool (n_rows,): rows written and flushed
        <name>.json         the identity the rows are of (written last when the store is made)

    Crash consistency: :meth:`write` puts the rows into the memmap, flushes it, and only then
    replaces the done-mask atomically (:func:`offchain.utils.write_npy`). A crash at any point
    leaves every row marked done fully on disk; rows not yet marked are recomputed. The
    identity file is written after both arrays exist, so its presence means the store is
    well-formed; without it the store is (re)created from scratch.

    Identity: the caller's dict (model fingerprint, data hash, output function, K, seeds,
    projector kind, shapes, ...). Opening a store whose identity differs raises
    :class:`StageError` (we never silently discard rows that may have cost hours; remove the
    folder to start over).

    Several processes (sharded featurization, :func:`featurize_into` with ``shard``): process
    r opens the store with ``writer=r`` after the main process (``writer=0``) has created or
    opened it, and the processes compute disjoint rows. The main process writes the store's own
    files as above; process r ≥ 1 writes only files of its own: its rows into
    ``<name>.rank<r>.npy`` (a sparse memmap of Φ's shape) and then the mask of the rows it
    wrote to ``<name>.done.rank<r>.npy`` (atomically). No file has two writers, so this holds
    on a filesystem shared by several machines too (where two hosts writing rows of one page
    of a shared memmap could lose one's). After a barrier the main process :meth:`merge` s
    them: copies each rank's marked rows into Φ, flushes, ORs the masks into
    ``<name>.done.npy`` and then removes the rank files (a crash before that repeats the
    merge). Opening with ``writer`` None or 0 also merges rank files a killed run left, so
    their rows are not recomputed.

    Args:
        folder, name: where the files are and their stem.
        n_rows, proj_dim: Φ's shape, ≥ 1.
        identity: what the rows are of (JSON-serialisable).
        writer: None (one process) or this process's rank r ≥ 0 in a sharded run.

    Raises:
        DataError: n_rows or proj_dim < 1.
        StageError: identity mismatch, or a store whose arrays are missing or malformed.
    """

    def __init__(
        self,
        folder: str | Path,
        name: str,
        n_rows: int,
        proj_dim: int,
        identity: dict,
        writer: int | None = None,
    ) -> None:
        if n_rows < 1 or proj_dim < 1:
            raise DataError(f"a feature store needs n_rows, proj_dim ≥ 1, got {n_rows}, {proj_dim}")
        self.folder = Path(folder)
        self.name = name
        self.n_rows, self.proj_dim = int(n_rows), int(proj_dim)
        self.identity = dict(identity, n_rows=self.n_rows, proj_dim=self.proj_dim)
        self.features_path = self.folder / f"{name}.npy"
        self.done_path = self.folder / f"{name}.done.npy"
        self.identity_path = self.folder / f"{name}.json"
        self.writer = writer
        self.features: np.memmap
        self.done: np.ndarray
        self._shard: np.memmap | None = None  # process r ≥ 1: its own rows
        self._written = np.zeros(self.n_rows, dtype=np.bool_)  # rows this process wrote
        self._open()

    def _open(self) -> None:
        if not self.identity_path.exists():
            self._create()
            return
        saved = read_json(self.identity_path)
        canonical = json.loads(json.dumps(self.identity, default=str))
        if saved != canonical:
            differs = sorted(
                k for k in set(saved) | set(canonical) if saved.get(k) != canonical.get(k)
            )
            raise StageError(
                f"feature store {self.features_path} was made for a different request "
                f"(differs in {differs}); remove {self.folder} to recompute"
            )
        try:
            self.features = np.load(self.features_path, mmap_mode="r+", allow_pickle=False)
            done = np.load(self.done_path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise StageError(f"feature store {self.folder} is damaged: {exc}") from exc
        expected = (self.n_rows, self.proj_dim)
        if self.features.shape != expected or self.features.dtype != np.float32:
            raise StageError(
                f"{self.features_path} has shape {self.features.shape} / dtype "
                f"{self.features.dtype}, expected {expected} float32"
            )
        if done.shape != (self.n_rows,) or done.dtype != np.bool_:
            raise StageError(f"{self.done_path} has shape {done.shape} / dtype {done.dtype}")
        self.done = done.copy()
        if self.writer is None or self.writer == 0:
            self.merge()

    def _rank_path(self, rank: int, done: bool) -> Path:
        return self.folder / f"{self.name}{'.done' if done else ''}.rank{rank}.npy"

    def merge(self) -> int:
        """Main process: copy the rows of every ``<name>.rank<r>.npy`` marked in its
        ``<name>.done.rank<r>.npy`` into Φ, flush, OR the masks into ``<name>.done.npy`` (and
        this object's mask), then remove the rank files; returns how many rank masks were
        merged. Call it only while no other process writes this store (after a barrier).

        Raises:
            StageError: a rank file that does not load or has the wrong shape or dtype."""
        masks = sorted(self.folder.glob(f"{self.name}.done.rank*.npy"))
        done = self.done.copy()
        for mask_path in masks:
            rank = int(mask_path.name.rsplit(".rank", 1)[1].split(".")[0])
            try:
                mask = np.load(mask_path, allow_pickle=False)
                rows = np.load(self._rank_path(rank, False), mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise StageError(f"feature store {self.folder} is damaged: {exc}") from exc
            if mask.shape != (self.n_rows,) or mask.dtype != np.bool_ or rows.shape != (
                self.n_rows, self.proj_dim
            ):
                raise StageError(f"{mask_path} or its rows have the wrong shape or dtype")
            self.features[mask] = rows[mask]
            done |= mask
        if masks:
            self.features.flush()
            write_npy(self.done_path, done)
            self.done = done
        for leftover in self.folder.glob(f"{self.name}.*rank*.npy"):
            leftover.unlink()  # merged masks and rows, and rows whose mask was never written
        return len(masks)

    def _create(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.features = np.lib.format.open_memmap(
            self.features_path, mode="w+", dtype=np.float32, shape=(self.n_rows, self.proj_dim)
        )
        self.features.flush()
        self.done = np.zeros(self.n_rows, dtype=np.bool_)
        write_npy(self.done_path, self.done)
        write_json(self.identity_path, self.identity)

    @property
    def complete(self) -> bool:
        """All rows are done."""
        return bool(self.done.all())

    @property
    def n_done(self) -> int:
        return int(self.done.sum())

    def write(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Store ``values`` float32 (len(rows), proj_dim) at ``rows`` and mark them done."""
        if not self.writer:  # one process, or the main one: the store's own files
            self.features[rows] = values
            self.features.flush()
            self.done[rows] = True
            write_npy(self.done_path, self.done)
            return
        if self._shard is None:
            self._shard = np.lib.format.open_memmap(
                self._rank_path(self.writer, False), mode="w+", dtype=np.float32,
                shape=(self.n_rows, self.proj_dim),
            )
        self._shard[rows] = values
        self._shard.flush()
        self._written[rows] = True
        self.done[rows] = True
        write_npy(self._rank_path(self.writer, True), self._written)

    def array(self) -> np.ndarray:
        """Φ as a read-only float32 (n_rows, proj_dim) memmap view; :class:`StageError` if
        rows are missing."""
        if not self.complete:
            raise StageError(
                f"feature store {self.features_path} has {self.n_done}/{self.n_rows} rows"
            )
        view = self.features.view()
        view.flags.writeable = False
        return view


# ----------------------------------------------------------------------------------- driver

BatchHook = Callable[[str, int, int], None]
"""``hook(name, rows_done, n_rows)``, called after every stored batch (e.g. to stop a run)."""


def featurize_into(
    store: FeatureStore,
    featurizer: Callable[[], GradientFeaturizer] | GradientFeaturizer,
    images: Tensor,
    *,
    batch_size: int,
    num_timesteps: int,
    seed: int,
    stream: int,
    progress: bool = True,
    on_batch: BatchHook | None = None,
    caption_ids: Tensor | None = None,
    shard: tuple[int, int] = (0, 1),
) -> int:
    """Featurize the rows of ``store`` that are not done; returns how many were computed.

    Batches follow the fixed grid ``[b·batch_size, (b+1)·batch_size)`` and batches whose rows
    are all done are skipped, so a resumed run computes exactly the batches it lacks, with the
    same composition as an uninterrupted run (bit-identical rows). Example i's noise is
    ``make_noise([i], K, shape, seed, stream)`` (global index). With ``shard = (r, n)`` this
    process computes every n-th of the missing batches, starting at the r-th: n processes that
    see the same done-mask split the work without overlap, each batch as one process would
    compute it.

    Args:
        store: the :class:`FeatureStore` to fill (``store.n_rows == len(images)``).
        featurizer: a :class:`GradientFeaturizer`, or a zero-argument factory called only if
            some row is missing (so a finished store never draws a projection matrix).
        images: float32 (n_rows, C, S, S) on the CPU.
        batch_size: rows per vmapped batch (≥ 1).
        num_timesteps: K of the output function.
        seed, stream: noise seed and stream id.
        progress: show a tqdm bar.
        on_batch: optional :data:`BatchHook`.
        caption_ids: int64 (n_rows, L), row i the token ids of example i's caption (a
            conditional model), or None.
        shard: ``(rank, world_size)``, 0 ≤ rank < world_size (default: all batches).

    Raises:
        DataError: ``len(images) != store.n_rows``, or ``caption_ids`` not int64 (n_rows, L).
        ConfigError: ``batch_size`` < 1 or a bad ``shard``.
        StageError: non-finite features (the batch is not stored).
    """
    if images.shape[0] != store.n_rows:
        raise DataError(f"{len(images)} images for a store of {store.n_rows} rows")
    if caption_ids is not None and (
        caption_ids.dtype != torch.int64
        or caption_ids.ndim != 2
        or caption_ids.shape[0] != store.n_rows
    ):
        raise DataError(
            f"caption_ids must be int64 ({store.n_rows}, L), got {caption_ids.dtype} "
            f"{tuple(caption_ids.shape)}"
        )
    if batch_size < 1:
        raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
    rank, world = shard
    if not 0 <= rank < world:
        raise ConfigError(f"shard must be (rank, world_size) with 0 ≤ rank < world_size, got {shard}")
    n = store.n_rows
    todo = [s for s in range(0, n, batch_size) if not store.done[s : s + batch_size].all()]
    todo = todo[rank::world]
    if not todo:
        return 0
    fz = featurizer if isinstance(featurizer, GradientFeaturizer) else featurizer()
    sample_shape = tuple(int(s) for s in images.shape[1:])
    computed = 0
    bar = tqdm(todo, desc=f"TRAK featurize {store.name}", disable=not progress, unit="batch")
    for start in bar:
        rows = np.arange(start, min(start + batch_size, n))
        rows = rows[~store.done[rows]]
        noise = make_noise(rows, num_timesteps, sample_shape, seed, stream)
        picked = torch.from_numpy(rows)
        ids = None if caption_ids is None else caption_ids[picked]
        values = fz(images[picked], noise, ids)
        if not np.isfinite(values).all():
            raise StageError(
                f"non-finite TRAK features for {store.name} rows {rows[0]}..{rows[-1]}: the "
                "output function's gradients overflow for this model"
            )
        store.write(rows, values)
        fault_point(f"trak:{store.name}:stored")
        computed += len(rows)
        if on_batch is not None:
            on_batch(store.name, store.n_done, n)
    return computed
