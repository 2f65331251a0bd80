"""Captions of training images: one validation rule for datasets, holder folders and the API.

A caption is a short text describing one image ("red apple", "a cat in the rain"). Every
caption that a holder stores passes :func:`validate_caption`: it is NFC-normalised and stripped
of surrounding whitespace, and refused (:class:`~offchain.errors.DataError` naming where it came
from) when it is not text, is not valid UTF-8 (bytes), is empty after stripping, is longer than
:data:`MAX_CAPTION_CHARS` characters, or contains a control character (Unicode category ``Cc``,
which includes newlines and tabs) or a lone surrogate (``Cs``).

The empty string is never a stored caption: a round's caption list uses ``""`` only for an
image whose holder has no captions at all, and a text-conditioned backend trains such an image
on the unconditional (null) caption.
"""

from __future__ import annotations

import unicodedata

from offchain.errors import DataError

__all__ = ["MAX_CAPTION_CHARS", "validate_caption"]

MAX_CAPTION_CHARS = 200
"""Longest caption, in Unicode code points after NFC normalisation and stripping."""

_REFUSED_CATEGORIES = frozenset({"Cc", "Cs"})
"""Unicode categories a caption may not contain: control characters and lone surrogates."""


def validate_caption(text: str | bytes, where: str) -> str:
    """The normalised caption ``text``, or a DataError naming ``where``.

    Args:
        text: the caption, as ``str`` or as UTF-8 ``bytes`` (e.g. a sidecar file's content).
        where: what the caption belongs to, for the error message (a file path, a field name).

    Returns:
        ``text`` decoded (bytes), NFC-normalised and stripped: 1 … :data:`MAX_CAPTION_CHARS`
        characters without control characters.

    Raises:
        DataError: ``text`` is neither str nor bytes, is not valid UTF-8, is empty after
            stripping, is too long, or contains a control character or a lone surrogate
            (naming its position and code point).
    """
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{where}: caption is not valid UTF-8 (byte {exc.start}: {exc.reason})"
            ) from None
    if not isinstance(text, str):
        raise DataError(f"{where}: caption must be text, got {type(text).__name__}")
    caption = unicodedata.normalize("NFC", text).strip()
    for position, char in enumerate(caption):
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise DataError(
                f"{where}: caption contains U+{ord(char):04X} (a control character or a lone "
                f"surrogate) at position {position}; a caption is one line of printable text"
            )
    if not caption:
        raise DataError(f"{where}: caption is empty")
    if len(caption) > MAX_CAPTION_CHARS:
        raise DataError(
            f"{where}: caption has {len(caption)} characters; at most {MAX_CAPTION_CHARS}"
        )
    return caption
