"""The caption side of the ``text-unet`` backend: a word-level tokenizer and a small caption encoder.

* :class:`WordTokenizer` — lower-cased words (runs of letters and digits; everything else
  separates them) mapped to ids from a vocabulary built once, from the first round's captions,
  and saved with every checkpoint (``tokenizer.json``); later rounds reuse it, so a word first
  seen in a later round is ``<unk>``. Every sequence starts with ``<bos>``, so the empty (null)
  caption is ``[<bos>, <pad>, …]``, a sequence the encoder learns like any other (caption
  dropout trains it).
* :class:`CaptionEncoder` — token embeddings plus learned position embeddings through one
  pre-norm transformer encoder layer: a sequence (B, L, D) for cross-attention, and its mean
  over the caption's tokens through a two-layer MLP: a vector (B, E) that is added to the UNet's
  timestep embedding.

No pretrained weights: the encoder trains with the UNet.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from offchain.errors import ConfigError, DataError

__all__ = [
    "BOS",
    "PAD",
    "SPECIAL_TOKENS",
    "UNK",
    "CaptionEncoder",
    "CaptionEncoderConfig",
    "WordTokenizer",
    "words",
]

PAD, UNK, BOS = "<pad>", "<unk>", "<bos>"
SPECIAL_TOKENS = (PAD, UNK, BOS)
"""Ids 0, 1, 2 of every vocabulary: padding (0, ignored by the encoder), unknown word, start."""

_WORD = re.compile(r"[^\W_]+")


def words(caption: str) -> list[str]:
    """The words of ``caption``: lower-cased maximal runs of Unicode letters and digits
    (``"Red apple: 1st!"`` → ``["red", "apple", "1st"]``)."""
    return _WORD.findall(caption.lower())


class WordTokenizer:
    """Captions → fixed-length int64 token ids (B, L) over a word vocabulary.

    Args:
        vocab: the tokens in id order; must start with :data:`SPECIAL_TOKENS`, no duplicates.
        max_tokens: L, the sequence length (``<bos>`` + up to L − 1 words; longer captions are
            cut, shorter ones padded with ``<pad>`` = 0).

    Raises:
        ConfigError: a malformed vocabulary or ``max_tokens`` < 2.
    """

    def __init__(self, vocab: Sequence[str], max_tokens: int) -> None:
        vocab = list(vocab)
        if vocab[: len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS):
            raise ConfigError(f"a vocabulary must start with {list(SPECIAL_TOKENS)}")
        if len(set(vocab)) != len(vocab) or not all(isinstance(w, str) and w for w in vocab):
            raise ConfigError("a vocabulary must hold distinct non-empty strings")
        if max_tokens < 2:
            raise ConfigError(f"max_tokens must be >= 2, got {max_tokens}")
        self.vocab = vocab
        self.max_tokens = int(max_tokens)
        self._ids = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def build(
        cls, captions: Iterable[str], max_tokens: int, max_vocab: int | None = None
    ) -> WordTokenizer:
        """The vocabulary of ``captions``' words, most frequent first (ties alphabetical), after
        the special tokens; at most ``max_vocab`` entries in all (None: every word)."""
        counts = Counter(w for caption in captions for w in words(_text(caption)))
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        if max_vocab is not None:
            if max_vocab < len(SPECIAL_TOKENS):
                raise ConfigError(f"max_vocab must be >= {len(SPECIAL_TOKENS)}, got {max_vocab}")
            ranked = ranked[: max_vocab - len(SPECIAL_TOKENS)]
        return cls([*SPECIAL_TOKENS, *ranked], max_tokens)

    def __len__(self) -> int:
        return len(self.vocab)

    def __call__(self, captions: Sequence[str]) -> Tensor:
        """:meth:`encode` (a tokenizer is a ``DenoisingModel.encode_captions``)."""
        return self.encode(captions)

    def ids(self, caption: str) -> list[int]:
        """``caption``'s ids, length ``max_tokens``: ``<bos>``, its words (``<unk>`` where not in
        the vocabulary), ``<pad>``."""
        unk = self._ids[UNK]
        body = [self._ids.get(w, unk) for w in words(_text(caption))][: self.max_tokens - 1]
        return [self._ids[BOS], *body] + [0] * (self.max_tokens - 1 - len(body))

    def encode(self, captions: Sequence[str]) -> Tensor:
        """int64 (B, L) token ids of B captions ("" → the null caption ``[<bos>, <pad>, …]``).

        Raises:
            DataError: ``captions`` is a single string or holds a non-string.
        """
        if isinstance(captions, str):
            raise DataError("captions must be a sequence of strings, not one string")
        return torch.tensor([self.ids(c) for c in captions], dtype=torch.int64).reshape(
            -1, self.max_tokens
        )

    def unknown_fraction(self, captions: Sequence[str]) -> float:
        """Share of the words of ``captions`` outside the vocabulary (0 when there are none)."""
        all_words = [w for c in captions for w in words(_text(c))]
        if not all_words:
            return 0.0
        return sum(w not in self._ids for w in all_words) / len(all_words)

    def to_json(self) -> str:
        """``{"max_tokens": L, "vocab": [...]}`` as JSON text (the checkpoint's tokenizer.json)."""
        return json.dumps({"max_tokens": self.max_tokens, "vocab": self.vocab}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> WordTokenizer:
        """The tokenizer :meth:`to_json` wrote.

        Raises:
            ConfigError: not such a JSON object.
        """
        try:
            data = json.loads(text)
            return cls(data["vocab"], int(data["max_tokens"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"not a tokenizer.json: {exc}") from exc


def _text(caption: Any) -> str:
    if not isinstance(caption, str):
        raise DataError(f"a caption must be a string, got {type(caption).__name__}")
    return caption


@dataclass(frozen=True)
class CaptionEncoderConfig:
    """Shape of a :class:`CaptionEncoder` (saved with its weights)."""

    vocab_size: int
    """Token ids 0 … vocab_size − 1 (0 = padding)."""
    max_tokens: int
    """L, the sequence length (learned positions)."""
    dim: int = 64
    """D, token embedding width and the transformer's model width."""
    heads: int = 4
    """Attention heads of the transformer layer (must divide ``dim``)."""
    layers: int = 1
    """Transformer encoder layers (0: embeddings only)."""
    pooled_dim: int = 128
    """E, width of the pooled caption vector (the UNet's timestep-embedding width)."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_tokens", "dim", "heads", "pooled_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"caption encoder {name} must be >= 1, got {getattr(self, name)}")
        if self.layers < 0 or self.dim % self.heads:
            raise ConfigError(
                f"caption encoder: heads ({self.heads}) must divide dim ({self.dim}) and "
                f"layers ({self.layers}) be >= 0"
            )


class CaptionEncoder(nn.Module):
    """Token ids int64 (B, L) → ``(sequence float32 (B, L, D), pooled float32 (B, E))``.

    ``sequence`` is the transformer's output, zero at padding positions (cross-attention masks
    them out); ``pooled`` is the MLP of the mean of ``sequence`` over the non-padding positions
    (``<bos>`` always counts, so the null caption has one). Attention ignores padding keys.
    """

    def __init__(self, config: CaptionEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.dim, padding_idx=0)
        self.position_embedding = nn.Parameter(torch.randn(config.max_tokens, config.dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                config.dim,
                config.heads,
                dim_feedforward=2 * config.dim,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.dim)
        self.pool = nn.Sequential(
            nn.Linear(config.dim, config.pooled_dim),
            nn.SiLU(),
            nn.Linear(config.pooled_dim, config.pooled_dim),
        )

    def forward(self, caption_ids: Tensor) -> tuple[Tensor, Tensor]:
        if caption_ids.ndim != 2 or caption_ids.shape[1] != self.config.max_tokens:
            raise DataError(
                f"caption_ids must have shape (B, {self.config.max_tokens}), got "
                f"{tuple(caption_ids.shape)}"
            )
        padding = caption_ids == 0  # (B, L) True where padded
        h = self.token_embedding(caption_ids) + self.position_embedding
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=padding)
        keep = (~padding).unsqueeze(-1).to(h.dtype)  # (B, L, 1)
        # Padding positions are zeroed: torch's eval fast path (nested tensors) zeroes them too.
        h = self.norm(h) * keep
        mean = h.sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)
        return h, self.pool(mean)

    def config_dict(self) -> dict[str, int]:
        """The config as a JSON object (saved next to the weights)."""
        return asdict(self.config)
