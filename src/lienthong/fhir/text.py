"""Text normalisation shared by the search index (write side) and the query side.

FHIR string search is "case- and accent-insensitive" by default
(https://hl7.org/fhir/R4/search.html#string): both the stored value and the search
value are folded with :func:`fold` and compared with a prefix match. Vietnamese needs
one rule beyond stripping combining marks: ``đ``/``Đ`` (U+0111/U+0110) is a letter in
its own right, not ``d`` plus a combining mark, so NFD leaves it intact and we map it
explicitly. Without that, "Đức" would never match a user typing "duc".
"""

from __future__ import annotations

import unicodedata

__all__ = ["fold"]

# đ/Đ have no canonical decomposition, so they survive NFD; map them by hand.
_EXTRA = str.maketrans({"đ": "d", "Đ": "d"})


def fold(s: str) -> str:
    """Fold ``s`` for accent/case-insensitive comparison.

    NFC -> NFD, drop combining marks, map đ/Đ to ``d``, casefold, collapse runs of
    whitespace to one space and strip. ``fold("Nguyễn  Văn Đức") == "nguyen van duc"``
    and both "hoà" and "hòa" (the two Vietnamese tone-mark placements) fold to "hoa".
    """
    if s.isascii():
        # Fast path (most codes, displays, English text): for ASCII, casefold() is
        # lower() and there are no combining marks to remove.
        return " ".join(s.lower().split())
    decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFC", s))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    # casefold() can itself produce combining marks for a few characters (e.g. "İ"
    # -> "i̇"), so strip once more after it.
    folded = stripped.translate(_EXTRA).casefold()
    if not folded.isascii():
        folded = "".join(
            ch for ch in unicodedata.normalize("NFD", folded) if not unicodedata.combining(ch)
        )
    return " ".join(folded.split())
