"""Normalisation of the identity fields found in Vietnamese health records.

Records reach the platform from hospital XML exports (QĐ 130/QĐ-BYT), insurance files and
hand-typed forms, so the same person shows up with different tone-mark placement, name
order, date formats, sex codes, phone prefixes and pre-2025 addresses. Every function here
is pure (apart from reading the data bundled with `vietnamadminunits`) and either returns a
canonical form or says plainly that it could not (None fields or ValueError), never a guess.

Names, as data entry really writes them, go through these steps (in `normalize_name` for
display and in the keys for comparison, so every caller gets them):

* `clean_text`: NFC (decomposed input composed), zero-width characters, soft hyphens,
  direction marks and U+FEFF dropped, Đ look-alikes (Ð U+00D0, Ɖ U+0189) read as Đ; white
  space of any kind (NBSP, doubled spaces) collapses when words are split.
* `decode_keystrokes`: Telex ("Nguyeenx Thij Thawngs"), VNI ("Nguye6n4") and VIQR
  ("Nguye^~n") left by an input method that was off become diacritics, but only for a word
  that is not already a plausible syllable (`is_syllable`: onset + rhyme + tone, from
  Vietnamese orthography) and whose decoded form is a valid one; signs that are also
  letters or punctuation in real names (a final "r" as in Ksor or Ea Bar, a final "." or
  "?") count only when another word of the same name shows keystrokes.
* Tone marks in the new placement (hoà for hòa, thuỷ for thủy).

Comparison keys, never displayed: `name_key(full_name)` (diacritics and case folded, đ ->
d, keystrokes decoded, the i/y spelling of open syllables folded to y: Mĩ/Mỹ, Lí/Lý,
Quí/Quý, Kì/Kỳ, Tí/Tý, Hi/Hy, Si/Sy, Vi/Vy), `token_key(word)` (the same for one word),
`name_keys(full_name)` (family, middle, given and whole, cached), `order_free_key`
(word order set aside) and `is_form_difference(a, b)`: two names that differ only by
diacritics, case, spacing, Unicode form, tone placement, word order, keystrokes or i/y.
Place names are compared with `fold_key`, which folds diacritics and case only.
"""

from __future__ import annotations

import calendar
import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

import phonenumbers

# --------------------------------------------------------------------------- names

# Characters that carry nothing in a name but break comparisons: zero-width space and
# joiners, word joiner, soft hyphen, direction marks, the byte-order mark U+FEFF (left by
# editors saving "UTF-8 with BOM"). Removed before anything else. No-break and other
# Unicode spaces need nothing: `str.split()` treats them as white space.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\u00ad\ufeff\u180e\u200e\u200f"))
# Letters that look like Đ/đ but are others (Icelandic eth U+00D0/U+00F0, African D
# U+0189/U+0256), from the wrong keyboard or legacy-font converters: read as Đ/đ.
_LOOKALIKES = {0xD0: "\u0110", 0xF0: "\u0111", 0x189: "\u0110", 0x256: "\u0111"}
_CLEAN: dict[int, str | None] = {**_INVISIBLE, **_LOOKALIKES}


def clean_text(raw: str) -> str:
    """NFC, invisible characters dropped, Đ look-alikes read as Đ; white space kept."""
    return unicodedata.normalize("NFC", raw.translate(_CLEAN))


# Combining tone marks (NFD): grave (huyền), acute (sắc), hook above (hỏi), tilde (ngã),
# dot below (nặng). The other combining marks (breve, circumflex, horn) change the vowel.
_TONES = frozenset("\u0300\u0301\u0309\u0303\u0323")
_GRAVE, _ACUTE, _HOOK, _TILDE, _DOT = "\u0300", "\u0301", "\u0309", "\u0303", "\u0323"
_VOWELS = frozenset("aăâeêioôơuưy")
_MARKED_VOWELS = frozenset("ăâêôơư")


def _split_tone(word: str) -> tuple[str, str | None]:
    """Return the word without its tone mark (NFC) and the tone mark (None if absent).

    Raises ValueError when the word carries more than one tone mark."""
    tones = [c for c in unicodedata.normalize("NFD", word) if c in _TONES]
    if len(tones) > 1:
        raise ValueError(f"more than one tone mark in {word!r}")
    base = "".join(c for c in unicodedata.normalize("NFD", word) if c not in _TONES)
    return unicodedata.normalize("NFC", base), (tones[0] if tones else None)


def _tone_index(base: str) -> int | None:
    """Index in the lower-case, toneless syllable `base` of the vowel that carries the tone,
    in the "new" placement (kiểu mới): in the open syllables oa, oe, uy the mark goes on
    the second vowel (hoà, khoẻ, thuỷ), as in the closed ones (hoàng, khoét, huyết).
    None when the syllable has no vowel (not a Vietnamese syllable)."""
    start = 0
    if base.startswith("qu") and len(base) > 2 and base[2] in _VOWELS:
        start = 2  # "u" of "qu" belongs to the consonant: quý, quà
    elif base.startswith("gi") and len(base) > 2 and base[2] in _VOWELS:
        start = 2  # "i" of "gi" belongs to the consonant: giá, giường
    i = start
    while i < len(base) and base[i] not in _VOWELS:
        i += 1
    j = i
    while j < len(base) and base[j] in _VOWELS:
        j += 1
    if i == j:
        return None
    nucleus = range(i, j)
    marked = [k for k in nucleus if base[k] in _MARKED_VOWELS]
    if marked:
        return marked[-1]  # thuyền, người, muốn: the vowel with a quality mark
    n = j - i
    if n == 1:
        return i
    if n == 3:
        return i + 1  # ngoài, khuỷu, ngoẹo
    has_final = j < len(base)
    if has_final or base[i : i + 2] in ("oa", "oe", "uy"):
        return i + 1  # hoàng, hoà, khoẻ, thuỷ
    return i  # mái, mùa, mía, tối


def _place_tone(word: str) -> str:
    """Re-place the tone mark of one lower-case syllable; unchanged if it cannot be parsed."""
    try:
        base, tone = _split_tone(word)
    except ValueError:
        return word
    if tone is None:
        return base
    idx = _tone_index(base)
    if idx is None:
        return unicodedata.normalize("NFC", word)
    decomposed = unicodedata.normalize("NFD", base[idx]) + tone
    return unicodedata.normalize("NFC", base[:idx] + decomposed + base[idx + 1 :])


def _capitalise(word: str) -> str:
    # Capitalise after apostrophes and hyphens too: ethnic-minority names such as H'Hen.
    return re.sub(r"(^|['\-])(\w)", lambda m: m.group(1) + m.group(2).upper(), word)


# --------------------------------------------------------------------------- syllables
#
# Vietnamese phonotactics, written from the orthography rather than from any name list:
# a syllable is an onset (possibly empty), a rhyme (optional medial o/u, a nucleus, an
# optional final consonant or semivowel) and a tone; a rhyme closed by a stop (c, ch, p,
# t) takes only the sắc or nặng tone. Used to tell a real syllable ("Thuy", "Quang")
# from keystrokes left in it when the input method was off ("Thuyr", "Quangf").

_ONSETS = (
    "ngh", "ng", "nh", "ch", "gh", "gi", "kh", "ph", "qu", "th", "tr",
    "b", "c", "d", "đ", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "x", "",
)  # fmt: skip
# Nucleus (with its medial) -> the endings it takes; "-" is the open syllable. The
# endings i, o, u, y, a make the diphthongs and triphthongs (ai, ươi, iêu, oay, uya, ...).
# The "oo" of a few loanwords (xoong, boong) is left out: in a name, "oong" is Telex "ông".
_NUCLEI = {
    "a": "- c ch m n ng nh p t i o u y", "ă": "c m n ng p t", "â": "c m n ng p t u y",
    "e": "- c m n ng p t o", "ê": "- ch m n nh p t u", "i": "- ch m n nh p t u a",
    "y": "- ch n nh p t u", "o": "- c m n ng p t i", "ô": "- c m n ng p t i",
    "ơ": "- m n p t i", "u": "- c m n ng p t i a", "ư": "- c m n ng t i u a",
    "iê": "c m n ng p t u", "yê": "c m n ng p t u", "uô": "c m n ng t i",
    "ươ": "c m n ng p t i u", "oa": "- c ch m n ng nh p t i y o", "oă": "c m n ng t",
    "oe": "- n t o", "uâ": "n ng t y", "uê": "- ch n nh t", "uy": "- ch n nh p t u a",
    "uyê": "n t", "uơ": "-",
}  # fmt: skip
_STOPS = frozenset(("c", "ch", "p", "t"))
#: Rhyme (no tone mark) -> whether it ends in a stop.
_RHYMES: dict[str, bool] = {
    nucleus + ("" if end == "-" else end): end in _STOPS
    for nucleus, ends in _NUCLEI.items()
    for end in ends.split()
}
_FRONT = frozenset("iyeê")


def _fold(text: str) -> str:
    """Strip every diacritic and map đ to d (đ has no decomposition in Unicode)."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


_FOLDED_RHYMES = frozenset(_fold(r) for r in _RHYMES)


def _onset_allows(onset: str, rhyme: str) -> bool:
    first = rhyme[0]
    if onset in ("k", "gh", "ngh"):
        return first in _FRONT
    if onset == "c":
        return first not in _FRONT
    if onset == "qu":  # quốc, quơ but not quo: only ô and ơ follow it among the o's
        return first not in "uưo" or (first == "o" and rhyme.isascii())
    return True


def _valid_syllable(base: str, tone: str | None) -> bool:
    """Whether the lower-case, toneless `base` with `tone` is a Vietnamese syllable; a base
    without any diacritic is checked against the rhymes with their diacritics removed."""
    folded = base.isascii()
    for onset in _ONSETS:
        if not base.startswith(onset) or len(base) == len(onset):
            continue
        rhyme = base[len(onset) :]
        if not _onset_allows(onset, rhyme):
            continue
        stop_ok = tone in (None, _ACUTE, _DOT)
        if folded:
            if rhyme in _FOLDED_RHYMES and (stop_ok or not rhyme.endswith(("c", "ch", "p", "t"))):
                return True
        elif rhyme in _RHYMES and (stop_ok or not _RHYMES[rhyme]):
            return True
    return False


def is_syllable(word: str) -> bool:
    """Whether `word` is a plausible Vietnamese syllable (any case, NFC or not).

    Letters without diacritics are plausible when some choice of diacritics makes a
    syllable ("Nguyen", "Thuy", "Quang"); letters with diacritics must be one as written.
    """
    try:
        base, tone = _split_tone(unicodedata.normalize("NFC", word).lower())
    except ValueError:
        return False
    return _valid_syllable(base, tone)


# --------------------------------------------------------------------------- keystrokes
#
# With the input method switched off, what the clerk typed for the diacritics stays in the
# text. Three conventions are in use: Telex (tones s f r x j, aa ee oo for â ê ô, aw ow uw
# for ă ơ ư, dd for đ), VNI (digits: 1-5 tones, 6 â ê ô, 7 ơ ư, 8 ă, 9 đ) and VIQR
# (marks after the vowel: ' ` ? ~ . for the tones, ^ ( + for â ê ô / ă / ơ ư, dd for đ).
# The bogo IME library decodes Telex and VNI, but it was last released in 2014, installs
# only from a distutils setup script and has no VIQR; the decoder below is small and is
# bound by the syllable check above.

_TELEX_TONES = {"s": _ACUTE, "f": _GRAVE, "r": _HOOK, "x": _TILDE, "j": _DOT}
_VNI_TONES = {"1": _ACUTE, "2": _GRAVE, "3": _HOOK, "4": _TILDE, "5": _DOT}
_VIQR_TONES = {"'": _ACUTE, "`": _GRAVE, "?": _HOOK, "~": _TILDE, ".": _DOT}
_CIRCUMFLEX = {"a": "â", "e": "ê", "o": "ô"}
_HORN = {"o": "ơ", "u": "ư"}
_TELEX_KEYS = frozenset("sfrxjwz")
VIQR_MARKS = frozenset("^(+'`?~.")
"""The marks of VIQR typing ("Nguye^~n"): a name with any may be VIQR throughout."""
_VIQR_CLEAR = frozenset("^(+`~")  # never punctuation in a name


def _vowel_group(buf: list[str]) -> list[int]:
    """Indices of the last run of vowels in `buf`."""
    end = len(buf)
    while end and buf[end - 1] not in _VOWELS:
        end -= 1
    start = end
    while start and buf[start - 1] in _VOWELS:
        start -= 1
    return list(range(start, end))


def _horn(buf: list[str], group: list[int]) -> bool:
    """Put the horn on the last vowel group (uo -> ươ, o -> ơ, u -> ư); False if none."""
    letters = "".join(buf[i] for i in group)
    for pair in ("uo", "ưo", "uơ"):
        if (k := letters.find(pair)) >= 0:
            buf[group[k]], buf[group[k + 1]] = "ư", "ơ"
            return True
    for i in reversed(group):
        if buf[i] in _HORN:
            buf[i] = _HORN[buf[i]]
            return True
    return False


def _set_quality(buf: list[str], group: list[int], table: dict[str, str]) -> bool:
    for i in reversed(group):
        if buf[i] in table:
            buf[i] = table[buf[i]]
            return True
    return False


def _telex(word: str) -> tuple[str, str | None] | None:
    buf: list[str] = []
    tone: str | None = None
    tone_at = -1
    for ch in word:
        group = _vowel_group(buf)
        if ch in _TELEX_TONES and any(c in _VOWELS for c in buf):
            if tone == _TELEX_TONES[ch]:
                return None  # the key typed twice cancels the tone: a literal letter
            tone, tone_at = _TELEX_TONES[ch], len(buf)
        elif ch == "z" and tone is not None:
            tone = None
        elif ch == "w":
            letters = "".join(buf[i] for i in group)
            if not group:
                return None  # a leading "w" is a letter of another language (Y Wơn)
            if letters in ("ua", "uai"):
                buf[group[0]] = "ư"  # muwa / muaw: mưa
            elif not (_set_quality(buf, group, {"a": "ă"}) or _horn(buf, group)):
                return None
        elif ch in _CIRCUMFLEX and buf and buf[-1] == ch:
            buf[-1] = _CIRCUMFLEX[ch]
        elif ch == "d" and buf and buf[-1] == "d":
            buf[-1] = "đ"
        else:
            buf.append(ch)
    if tone_at >= 0 and any(c in _VOWELS for c in buf[tone_at:]):
        return None  # a tone key inside the vowels ("mary"): not typed as Telex
    return "".join(buf), tone


def _vni(word: str) -> tuple[str, str | None] | None:
    buf: list[str] = []
    tone: str | None = None
    for ch in word:
        group = _vowel_group(buf)
        if ch in _VNI_TONES:
            if not group:
                return None
            tone = _VNI_TONES[ch]
        elif ch == "0":
            tone = None
        elif ch == "6":
            if not _set_quality(buf, group, _CIRCUMFLEX):
                return None
        elif ch == "7":
            if not _horn(buf, group):
                return None
        elif ch == "8":
            if not _set_quality(buf, group, {"a": "ă"}):
                return None
        elif ch == "9":
            if "d" not in buf:
                return None
            buf[buf.index("d")] = "đ"
        else:
            buf.append(ch)
    return "".join(buf), tone  # digits are never letters: a tone anywhere is one


def _viqr(word: str) -> tuple[str, str | None] | None:
    buf: list[str] = []
    tone: str | None = None
    for ch in word:
        last = buf[-1] if buf else ""
        if ch == "^":
            if last not in _CIRCUMFLEX:
                return None
            buf[-1] = _CIRCUMFLEX[last]
        elif ch == "(":
            if last != "a":
                return None
            buf[-1] = "ă"
        elif ch == "+":
            if last not in _HORN and last != "ơ":
                return None
            buf[-1] = _HORN.get(last, last)
            if len(buf) > 1 and buf[-2] == "u" and buf[-1] == "ơ":
                buf[-2] = "ư"  # uo+ is written for ươ
        elif ch in _VIQR_TONES:
            if last not in _VOWELS or tone is not None:
                return None
            tone = _VIQR_TONES[ch]
        elif ch == "d" and last == "d":
            buf[-1] = "đ"
        else:
            buf.append(ch)
    return "".join(buf), tone


def _viqr_clear(word: str) -> bool:
    """Whether `word` carries a VIQR mark that cannot be anything else: ^ ( + ` ~ after a
    vowel, or ' . ? between a vowel and a letter ("Ha?i"). A final "." or "?" may be
    punctuation ("Văn A."), an apostrophe after a consonant is part of the name (H'Hen)."""
    after_vowel = _VOWELS | VIQR_MARKS
    return any(
        c in VIQR_MARKS
        and word[i - 1] in after_vowel
        and (c in _VIQR_CLEAR or (i + 1 < len(word) and word[i + 1].isalpha()))
        for i, c in enumerate(word[1:], 1)
    )


def _compose(base: str, tone: str | None) -> str:
    base = unicodedata.normalize("NFC", base)
    if tone is None:
        return base
    idx = _tone_index(base)
    if idx is None:
        return base
    marked = unicodedata.normalize("NFD", base[idx]) + tone
    return unicodedata.normalize("NFC", base[:idx] + marked + base[idx + 1 :])


def _telex_weak(word: str) -> bool:
    """Whether the only Telex sign in `word` is a final "r" (hỏi): that is also how
    Central Highlands names end (Ksor, Ea Bar, Y Mơr), so it is read as a tone only when
    another word of the name shows keystrokes."""
    first = next((i for i, c in enumerate(word) if c in _VOWELS), len(word))
    inner = word[first:-1]
    return (
        word.endswith("r")
        and not any(c in _TELEX_KEYS for c in inner)
        and not re.search(r"aa|ee|oo|dd", word)
    )


@functools.lru_cache(maxsize=1 << 16)
def _decode(word: str, context: bool = False) -> str:
    """`word` (lower case) with Telex, VNI or VIQR keystrokes turned into diacritics, or
    unchanged. Decoded only when the word is plain ASCII, is not itself a plausible
    syllable, and the decoded form is a valid one. `context`: another word of the same
    name shows keystrokes, so the ambiguous signs (a final VIQR "." or "?", a final Telex
    "r") count too."""
    if not word.isascii() or not any(c.isalpha() for c in word) or is_syllable(word):
        return word
    if any(c in VIQR_MARKS for c in word):
        if not (context or _viqr_clear(word)):
            return word
        decoded = _viqr(word)
    elif any(c.isdigit() for c in word):
        decoded = _vni(word)
    elif any(c in _TELEX_KEYS for c in word) or re.search(r"aa|ee|oo|dd", word):
        if _telex_weak(word) and not context:
            return word
        decoded = _telex(word)
    else:
        return word
    if decoded is None or not decoded[0].isalpha() or not _valid_syllable(*decoded):
        if any(c.isdigit() for c in word) and word[0].isalpha():
            # VNI keys on a mistyped syllable ("hi6ng2" for "hồng"): digits are never
            # letters of a name, so the letters alone are the word without its marks
            # (unless they read as keystrokes themselves: normalising stays idempotent)
            letters = "".join(c for c in word if not c.isdigit())
            return letters if _decode(letters) == letters else word
        return word
    return _compose(*decoded)


_TYPED_TONES = {"\u0301": "s1'", "\u0300": "f2`", "\u0309": "r3?", "\u0303": "x4~", "\u0323": "j5."}
_TYPED_LETTERS = {
    "â": ("aa", "a6", "a^"), "ê": ("ee", "e6", "e^"), "ô": ("oo", "o6", "o^"),
    "ă": ("aw", "a8", "a("), "ơ": ("ow", "o7", "o+"), "ư": ("uw", "u7", "u+"),
    "đ": ("dd", "d9", "dd"),
}  # fmt: skip
KEYSTROKE_SCHEMES = ("telex", "vni", "viqr")


@functools.lru_cache(maxsize=8192)
def keystrokes(text: str, scheme: str) -> str:
    """``text`` as typed with the input method switched off, the inverse of
    :func:`decode_keystrokes`: what the keys for the diacritics leave behind. Telex and
    VNI put the tone key at the end of the word (the usual habit), VIQR right after the
    vowel it marks: "Nguyễn Thị" -> "Nguyeenx Thij" (telex), "Nguye6n4 Thi5" (vni),
    "Nguye^~n Thi." (viqr). Case is kept."""
    k = KEYSTROKE_SCHEMES.index(scheme)
    words = []
    for word in text.split(" "):
        typed, tone = "", ""
        for ch in unicodedata.normalize("NFC", word):
            parts = unicodedata.normalize("NFD", ch)
            mark = "".join(c for c in parts if c in _TYPED_TONES)
            base = "".join(c for c in parts if c not in _TYPED_TONES)
            letter = unicodedata.normalize("NFC", base)
            if letter.lower() in _TYPED_LETTERS:
                keys = _TYPED_LETTERS[letter.lower()][k]
                letter = keys.upper() if letter.isupper() else keys
            typed += letter
            if mark:
                tone = _TYPED_TONES[mark][k]
                if scheme == "viqr":
                    typed += tone
        words.append(typed if scheme == "viqr" or not tone else typed + tone)
    return " ".join(words)


def decode_keystrokes(word: str) -> str:
    """One word with the keystrokes of an input method that was switched off turned into
    diacritics, in lower case: Telex "Nguyeenx" / VNI "Nguye6n4" / VIQR "Nguye^~n" ->
    "nguyễn", "dduwowngf" -> "đường". A word that is already a plausible Vietnamese
    syllable ("Thuy", "Hoa", "Quang"), that does not decode to a valid one, or whose only
    sign is ambiguous (`_decode`), comes back unchanged (original case)."""
    text = clean_text(word).lower()
    decoded = _decode(text)
    return decoded if decoded != text else word


def _keystroke_context(words: list[str]) -> bool:
    """Whether some word of a name shows keystrokes beyond doubt."""
    return any(_viqr_clear(w) or _decode(w) != w for w in words)


def _decode_words(words: list[str]) -> list[str]:
    """Decode each lower-case word of one name (see `_decode` for the context)."""
    context = _keystroke_context(words)
    return [_decode(w, context) for w in words]


def normalize_name(raw: str) -> str:
    """Canonical display form of a person's name.

    Invisible characters dropped and Đ look-alikes read as Đ (`clean_text`); Unicode NFC;
    keystrokes of an input method that was off decoded ("Nguyeenx Thij" -> "Nguyễn
    Thị", `decode_keystrokes`); tone marks moved to the "new" placement (hoà, thuỷ, khoẻ
    rather than hòa, thủy, khỏe: both are in use, and records must compare equal
    whichever a clerk typed); runs of white space collapsed; each syllable title-cased
    with its Vietnamese letters kept ("nguyễn THỊ hòa" -> "Nguyễn Thị Hoà"). The i/y
    spelling a clerk chose (Mĩ, Mỹ) is kept: only the keys fold it.
    """
    words = _decode_words(clean_text(raw).lower().split())
    return " ".join(_capitalise(_place_tone(w)) for w in words)


# The orthographic i/y alternation of open syllables: Mĩ/Mỹ, Lí/Lý, Kì/Kỳ, Quí/Quý, Tí/Tý,
# Hi/Hy, Si/Sy, Vi/Vy are one name spelt two ways (the 1984 and 2018 spelling rules
# disagree on it); keys use y. "Thi", "Chi", "Nghi" and the like have no y spelling.
_I_Y = re.compile(r"(?<![a-z])(k|l|m|qu|t|h|s|v)i(?![a-z])")


@functools.lru_cache(maxsize=1 << 18)
def _word_key(word: str, context: bool) -> str:
    folded = _fold(_decode(word, context)).replace("'", "")
    out = []
    for token in re.sub(r"[^0-9a-z]+", " ", folded).split():
        decoded = _decode(token)  # Telex in a part of a hyphenated or dotted word
        out.append(_fold(decoded) if decoded != token else token)
    return _I_Y.sub(r"\1y", " ".join(out))


def fold_key(text: str) -> str:
    """Diacritics, case and punctuation folded, nothing else: "Phường Vị Thanh" ->
    "phuong vi thanh". For place names, compared with the keys of the administrative-unit
    tables: no keystroke decoding and no i/y folding, which are for person names."""
    folded = _fold(clean_text(text)).lower().replace("'", "")
    return " ".join(re.sub(r"[^0-9a-z]+", " ", folded).split())


def name_key(raw: str) -> str:
    """Accent-folded matching key: "Nguyễn Văn Đức" -> "nguyen van duc".

    Lower case, no diacritics, đ -> d, apostrophes dropped, other punctuation treated as a
    space, single spaces; invisible characters and Đ look-alikes as in `clean_text`;
    Telex/VNI/VIQR keystrokes decoded first ("Nguyeenx" -> "nguyen"); the i/y spelling
    of open syllables folded to y ("Mĩ", "Mỹ" -> "my"; "Quí" -> "quy"). Idempotent.
    Used for blocking and comparing candidate matches, never for display."""
    words = clean_text(raw).lower().split()
    context = _keystroke_context(words)
    return " ".join(k for w in words if (k := _word_key(w, context)))


def token_key(word: str) -> str:
    """The comparison key of one name word (`name_key` of it): "Mĩ", "Mỹ", "MY" -> "my",
    "Thawngs" -> "thang"."""
    return name_key(word)


def order_free_key(full_name: str) -> str:
    """`name_key` with its words sorted: equal for "Nguyễn Văn An" and "An Nguyễn Văn"."""
    return " ".join(sorted(name_key(full_name).split()))


def is_form_difference(a: str, b: str) -> bool:
    """Whether two full names are the same name written differently: they differ at most
    by diacritics, case, spacing, invisible characters, Unicode form, tone-mark placement,
    word order, Telex/VNI/VIQR keystrokes and the i/y spelling. False when either has no
    letters at all. A letter added, lost or changed, or a word missing, is not a form
    difference."""
    ka, kb = order_free_key(a), order_free_key(b)
    return bool(ka) and ka == kb


# Common Vietnamese family names (họ), by approximate frequency; Hoàng/Huỳnh and Vũ/Võ are
# regional variants kept as separate entries. Names that are also frequent middle names
# (Văn, Thị, Đức, ...) are deliberately absent so that they never trigger re-ordering.
SURNAMES: tuple[str, ...] = (
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng",
    "Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý", "Đào", "Đoàn", "Vương", "Trịnh",
    "Trương", "Đinh", "Lâm", "Phùng", "Mai", "Tô", "Hà", "Tạ", "Lương", "Lưu",
    "Cao", "Châu", "Chu", "Quách", "Tăng", "Triệu", "Thái", "Kiều", "Khúc", "Kim",
    "La", "Lã", "Lại", "Lò", "Lục", "Mạc", "Nghiêm", "Nông", "Ông", "Phí",
    "Phó", "Quan", "Tôn", "Từ", "Ung", "Vi", "Viên", "Âu", "Bạch", "Bế",
    "Cù", "Cung", "Diệp", "Doãn", "Đàm", "Đồng", "Giang", "Giáp", "Hàn", "Hầu",
    "Hứa", "Khổng", "Khương", "Lạc", "Lăng", "Liêu", "Lỗ", "Mẫn", "Ninh", "Nhan",
    "Phương", "Quản", "Sầm", "Tiêu", "Tống", "Trình", "Thân", "Thạch", "Thiều", "Tiết",
    "Cấn", "Cam", "Chung", "Chử", "Điền", "Đường", "Khuất", "Mã", "Nhữ", "Tào",
    "Vy", "Xa", "Hạ", "Kha", "Lều", "Ôn", "Mông", "Lữ",
)  # fmt: skip
#: Folded keys of the single-word surnames, for order detection.
SURNAME_KEYS: frozenset[str] = frozenset(name_key(s) for s in SURNAMES)


@dataclass(frozen=True)
class NameParts:
    """A Vietnamese name in its three parts; empty strings for absent parts."""

    family: str
    middle: str
    given: str


_MIDDLE_MARKERS = frozenset(("van", "thi"))
"""Keys of Văn and Thị, the middle names that mark a man's or a woman's name and are
hardly ever a given name: a reversed name shows them just before the surname."""


def split_name(raw: str) -> NameParts:
    """Split a name into family, middle and given names.

    Vietnamese order is family-middle-given ("Nguyễn Văn An"). Forms filled in under a
    Western "first name / last name" layout yield "Văn An Nguyễn" (family moved last) or
    "An Nguyễn Văn" (given name first), or the whole name reversed, "An Văn Nguyễn" (told
    from the first by Văn or Thị before the surname). The order is changed only when the
    first word is not a known surname and the last (or the second) is; otherwise
    Vietnamese order is assumed. Comparison uses folded keys, so "Nguyen" counts as "Nguyễn".
    """
    words = normalize_name(raw).split()
    if not words:
        return NameParts("", "", "")
    if len(words) == 1:
        return NameParts("", "", words[0])
    keys = [name_key(w) for w in words]
    if keys[0] not in SURNAME_KEYS:
        if keys[-1] in SURNAME_KEYS:
            if len(words) > 2 and keys[-2] in _MIDDLE_MARKERS and keys[0] not in _MIDDLE_MARKERS:
                # "An Văn Nguyễn": the whole name reversed (Văn and Thị are middle names)
                return NameParts(words[-1], " ".join(reversed(words[1:-1])), words[0])
            # "Văn An Nguyễn"
            return NameParts(words[-1], " ".join(words[:-2]), words[-2])
        if keys[1] in SURNAME_KEYS:  # "An Nguyễn Văn"
            return NameParts(words[1], " ".join(words[2:]), words[0])
    return NameParts(words[0], " ".join(words[1:-1]), words[-1])


@functools.lru_cache(maxsize=1 << 20)
def name_keys(full_name: str) -> tuple[str | None, str | None, str | None, str | None]:
    """Matching keys of a name: family, middle, given and whole name (None when empty).

    Record linkage and the person index compare names by these keys; cached because a
    population holds far fewer distinct names than records, and splitting is costly.
    """
    parts = split_name(full_name)
    return (
        name_key(parts.family) or None,
        name_key(parts.middle) or None,
        name_key(parts.given) or None,
        name_key(full_name) or None,
    )


# --------------------------------------------------------------------------- dates


@dataclass(frozen=True)
class PartialDate:
    """A date known to the year, the month or the day (birth dates often are partial)."""

    year: int
    month: int | None = None
    day: int | None = None

    def iso(self) -> str:
        """FHIR `date` at the known precision: YYYY, YYYY-MM or YYYY-MM-DD."""
        if self.month is None:
            return f"{self.year:04d}"
        if self.day is None:
            return f"{self.year:04d}-{self.month:02d}"
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"


_MIN_YEAR, _MAX_YEAR = 1800, 2999


def _make_date(raw: str, year: int, month: int | None, day: int | None) -> PartialDate:
    if not _MIN_YEAR <= year <= _MAX_YEAR:
        raise ValueError(f"{raw!r}: year {year} is outside {_MIN_YEAR}-{_MAX_YEAR}")
    if month is None:
        if day is not None:
            raise ValueError(f"{raw!r}: a day is given without a month")
        return PartialDate(year)
    if not 1 <= month <= 12:
        raise ValueError(f"{raw!r}: month {month} does not exist")
    if day is not None:
        last = calendar.monthrange(year, month)[1]
        if not 1 <= day <= last:
            raise ValueError(f"{raw!r}: day {day} does not exist in {month:02d}/{year}")
    return PartialDate(year, month, day)


def _unknown_zero(value: int) -> int | None:
    return None if value == 0 else value


_ISO = re.compile(r"(\d{4})-(\d{1,2})(?:-(\d{1,2}))?")
_DMY = re.compile(r"(\d{1,2})([/.\-])(\d{1,2})\2(\d{4})")
_MY = re.compile(r"(\d{1,2})[/.\-](\d{4})")


def parse_date(raw: str) -> PartialDate:
    """Parse the date forms found in Vietnamese records; raise ValueError otherwise.

    Accepted: YYYY-MM-DD and YYYY-MM (ISO); DD/MM/YYYY, D/M/YYYY, DD-MM-YYYY, DD.MM.YYYY
    (day first, as written in Vietnam); YYYYMMDD; the 12-character yyyymmddHHMM of the
    hospital XML standard (QĐ 130/QĐ-BYT, e.g. NGAY_SINH), where 00 stands for an unknown
    month or day and the time is checked but dropped; YYYY; MM/YYYY. Impossible dates
    (31/02, month 13) are rejected rather than adjusted.
    """
    text = raw.strip()
    if m := _ISO.fullmatch(text):
        day = int(m.group(3)) if m.group(3) else None
        return _make_date(raw, int(m.group(1)), int(m.group(2)), day)
    if m := _DMY.fullmatch(text):
        return _make_date(raw, int(m.group(4)), int(m.group(3)), int(m.group(1)))
    if m := _MY.fullmatch(text):
        return _make_date(raw, int(m.group(2)), int(m.group(1)), None)
    if text.isascii() and text.isdigit():
        if len(text) == 4:
            return _make_date(raw, int(text), None, None)
        if len(text) in (8, 12):
            if len(text) == 12:
                hh, mi = int(text[8:10]), int(text[10:12])
                if hh > 23 or mi > 59:
                    raise ValueError(f"{raw!r}: time {text[8:10]}:{text[10:12]} does not exist")
            month, day = _unknown_zero(int(text[4:6])), _unknown_zero(int(text[6:8]))
            return _make_date(raw, int(text[:4]), month, day)
    raise ValueError(
        f"{raw!r} is not a recognised date (expected YYYY-MM-DD, DD/MM/YYYY, YYYYMMDD, "
        "yyyymmddHHMM, MM/YYYY or YYYY)"
    )


# --------------------------------------------------------------------------- sex

Sex = Literal["M", "F", "O"]

_SEX_CODES: dict[str, Sex] = {
    "m": "M",
    "male": "M",
    "nam": "M",
    "1": "M",
    "f": "F",
    "female": "F",
    "nữ": "F",
    "nu": "F",
    "2": "F",
    "o": "O",
    "other": "O",
    "khác": "O",
    "3": "O",
}


@functools.lru_cache(maxsize=1 << 16)
def birth_parts(raw: str) -> tuple[int | None, int | None, int | None]:
    """Year, month and day of a birth date as far as known; all None when unreadable
    (a matching feature, not a check: a bad date must not stop the comparison)."""
    try:
        born = parse_date(raw)
    except ValueError:
        return None, None, None
    return born.year, born.month, born.day


def normalize_sex(raw: str | int | None) -> Sex | None:
    """Map a sex code to "M", "F" or "O" (other / undetermined).

    Accepts M/F, male/female, Nam/Nữ/Nu and the hospital XML codes 1 male, 2 female,
    3 undetermined (QĐ 130/QĐ-BYT, GIOI_TINH), in any case. Returns None when the value
    is absent or not recognised (including "unknown"): an unknown sex is not a sex."""
    if raw is None:
        return None
    key = unicodedata.normalize("NFC", str(raw)).strip().lower()
    return _SEX_CODES.get(key)


# --------------------------------------------------------------------------- phones

# Mobile prefixes moved from 11 to 10 digits between 15 September and 15 November 2018
# (Ministry of Information and Communications, Circular 22/2014/TT-BTTTT as amended; the
# operators' published conversion table). Key: old national prefix without the 0.
OLD_MOBILE_PREFIXES: dict[str, str] = {
    # Viettel
    "162": "32", "163": "33", "164": "34", "165": "35",
    "166": "36", "167": "37", "168": "38", "169": "39",
    # MobiFone
    "120": "70", "121": "79", "122": "77", "126": "76", "128": "78",
    # VinaPhone
    "123": "83", "124": "84", "125": "85", "127": "81", "129": "82",
    # Vietnamobile
    "186": "56", "188": "58",
    # Gmobile
    "199": "59",
}  # fmt: skip


def normalize_phone(raw: str) -> str | None:
    """Normalise a phone number to E.164 ("+84912345678"); None if it is not a valid number.

    Accepts national (0912 345 678), international (+84 912 345 678, 0084...) and bare
    84912345678 forms with spaces, dots, dashes or parentheses; pre-2018 11-digit mobile
    numbers (0166...) are converted to their current 10-digit form. Foreign numbers
    written with "+" are returned in E.164 when valid. Validation is `phonenumbers`'.
    """
    text = raw.strip()
    if not text:
        return None
    plus = text.startswith("+")
    digits = re.sub(r"[\s.\-()/]", "", text.lstrip("+"))
    if not digits.isascii() or not digits.isdigit():
        return None
    if digits.startswith("00"):
        digits, plus = digits[2:], True
    if plus and not digits.startswith("84"):
        return _e164("+" + digits)
    if digits.startswith("84") and (plus or len(digits) in (11, 12)):
        national = digits[2:]
    elif digits.startswith("0"):
        national = digits[1:]
    else:
        national = digits
    national = national.removeprefix("0")  # "+84 (0) 912..."
    if len(national) == 10 and national[:3] in OLD_MOBILE_PREFIXES:
        national = OLD_MOBILE_PREFIXES[national[:3]] + national[3:]
    return _e164("+84" + national)


def _e164(number: str) -> str | None:
    try:
        parsed = phonenumbers.parse(number, "VN")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


# --------------------------------------------------------------------------- addresses


@dataclass(frozen=True)
class Address:
    """An address resolved to the CURRENT units (34 provinces, 2 tiers, from 1 July 2025).

    Fields the data cannot determine are None: `commune_code` is None when no commune was
    recognised, or when the old ward was split between several new communes and nothing
    in the address says which (their codes are then in `commune_candidates`, sorted).
    `legacy` tells whether the input was recognised as a pre-2025 (3-tier) address.
    """

    province_code: str | None
    province_name: str | None
    commune_code: str | None
    commune_name: str | None
    street: str | None
    legacy: bool = False
    commune_candidates: tuple[str, ...] = ()


_EMPTY = Address(None, None, None, None, None)


@functools.cache
def _lib() -> Any:
    """Import the admin-unit library lazily: it loads several MB of data on import."""
    import vietnamadminunits
    from vietnamadminunits.converter import converter_2025

    return vietnamadminunits, converter_2025


def _current_ward(ward_key: str, province_key: str) -> Any:
    lib, _ = _lib()
    return lib.parse_address(f"{ward_key}, {province_key}", mode="FROM_2025", level=2)


def _convert_legacy(
    province_key: str, district_key: str | None, ward_key: str | None, street: str | None
) -> Address:
    """Map a legacy unit to the current ones with the library's conversion tables.

    The library's own `convert_address` geocodes split wards over the network (ArcGIS); we
    do not, and report the candidates instead."""
    lib, conv = _lib()
    new_province = next((k for k, v in conv.DICT_PROVINCE.items() if province_key in v), None)
    if new_province is None:
        return _EMPTY
    prov = lib.parse_address(new_province, mode="FROM_2025", level=1)
    base = Address(prov.province_code, prov.province, None, None, street, legacy=True)
    if not (district_key and ward_key):
        return base
    old_key = f"{province_key}_{district_key}_{ward_key}"
    wards: dict[str, list[str]] = conv.DICT_PROVINCE_WARD_NO_DIVIDED.get(new_province, {})
    new_ward = next((k for k, v in wards.items() if old_key in v), None)
    if new_ward is not None:
        unit = _current_ward(new_ward, new_province)
        if unit.ward_code:
            return Address(
                prov.province_code, prov.province, unit.ward_code, unit.ward, street, True
            )
        return base
    parts = conv.DICT_PROVINCE_WARD_DIVIDED.get(new_province, {}).get(old_key, [])
    codes = {_current_ward(p["newWardKey"], new_province).ward_code for p in parts}
    return Address(
        prov.province_code,
        prov.province,
        None,
        None,
        street,
        legacy=True,
        commune_candidates=tuple(sorted(c for c in codes if c)),
    )


_WARD_WORDS = ("phuong", "xa", "thi tran", "dac khu")
_DISTRICT_WORDS = ("quan", "huyen", "thi xa", "thanh pho")


def _mentioned(text: str, district: str) -> bool:
    """Whether the legacy parser's district name is written in ``text`` as whole words
    (folded; without the parser's "(Thị xã)" note or a "Quận" before a number)."""
    name = re.sub(r"\(.*?\)", " ", district)
    key = fold_key(name)
    for word in ("quan ", "huyen ", "thi xa ", "thanh pho "):
        if key.startswith(word) and key[len(word) :].isdigit():
            key = key[len(word) :]
    return bool(key) and f" {key} " in f" {fold_key(text)} "


def _named_as_ward(text: str, district: str) -> bool:
    """Whether the district name the legacy parser found is written, in `text`, after a
    ward word (Phường, Xã, Thị trấn, Đặc khu) and never after a district word."""
    name = fold_key(district)
    if not name:
        return False
    key = f" {fold_key(text)} "
    after = [key[: m.start()].split() for m in re.finditer(rf"(?<= ){re.escape(name)}(?= )", key)]
    # "thi xa" ends in "xa": look at two words before the name, then one
    last_two = [" ".join(words[-2:]) for words in after]
    last_one = [words[-1] if words else "" for words in after]
    district_word = any(w2 in _DISTRICT_WORDS or w1 in _DISTRICT_WORDS
                        for w1, w2 in zip(last_one, last_two, strict=True))  # fmt: skip
    ward_word = any(w1 in _WARD_WORDS or w2 in _WARD_WORDS
                    for w1, w2 in zip(last_one, last_two, strict=True))  # fmt: skip
    return ward_word and not district_word


# An explicit district-tier word: only pre-2025 addresses have one.
_DISTRICT_WORD = re.compile(r"(?<!\w)(quận|huyện|thị xã)(?!\w)", re.IGNORECASE)


def normalize_address(raw: str) -> Address:
    """Resolve a free-text address, old or new, to the current province and commune codes.

    A pre-1 July 2025 address (63 provinces; street, ward, district, province) is
    recognised when it names a district and a ward of that district, an explicit district
    ("Quận ...", "Huyện ...", "Thị xã ..."; the result then stops at the province), or an
    abolished province; it is converted with the conversion tables of `vietnamadminunits`. Otherwise
    the address is read as a current one (street, commune, province). Unrecognised parts
    are None, never guessed; an address with no recognisable province gives an Address whose
    fields are all None (the street too: without units, nothing says which part it is).
    Accent-free legacy addresses without a ward ("Quan 3, TP HCM") may resolve to the
    province only.
    """
    text = raw.strip()
    if not text:
        return _EMPTY
    lib, conv = _lib()
    old = lib.parse_address(text, mode="LEGACY", level=3)
    if old.district_key and not _mentioned(text, old.short_district or ""):
        # "Số 207 Quang Trung, Phường An Dương, Thành phố Hải Phòng": the legacy parser
        # took the street for a former ward (Phường Quang Trung) and inferred its district;
        # an address that names no district is a current one.
        old = None
    elif old.district_key and _named_as_ward(text, old.short_district or ""):
        # "Số 1 Lê Lợi, Phường An Dương, Thành phố Hải Phòng": a current address whose
        # ward is named like an old district (Quận An Dương), its street like an old ward
        # (Phường Lê Lợi). The unit word says which reading the writer meant.
        old = None
    if old is not None and old.province_key and old.district_key and old.ward_key:
        return _convert_legacy(old.province_key, old.district_key, old.ward_key, old.street)
    if old is None:
        old = lib.parse_address(text, mode="LEGACY", level=1)
    if old.province_key and old.province_key not in conv.DICT_PROVINCE:
        # An abolished province such as "Tỉnh Hải Dương": the current parser would read its
        # name as a commune ("Phường Hải Dương"), so resolve the province only.
        return _convert_legacy(old.province_key, None, None, old.street)
    if old.province_key and old.district_key and _DISTRICT_WORD.search(text):
        # "Quận Hoàn Kiếm, Hà Nội": a district (abolished tier) without a ward. The current
        # parser would take the district's name for a commune of the same name: a guess.
        return _convert_legacy(old.province_key, None, None, None)
    new = lib.parse_address(text, mode="FROM_2025", level=2)
    if not new.province_code:
        return _EMPTY
    return Address(new.province_code, new.province, new.ward_code, new.ward, new.street)


@functools.cache
def _legacy_units() -> dict[tuple[str, str | None], tuple[str, str | None, str | None]]:
    _lib()
    from vietnamadminunits.database.main import get_data

    rows = get_data(
        fields=["provinceCode", "wardCode", "provinceKey", "districtKey", "wardKey"],
        table="admin_units_legacy",
    )
    table: dict[tuple[str, str | None], tuple[str, str | None, str | None]] = {}
    for r in rows:
        table[(r["provinceCode"], r["wardCode"])] = (
            r["provinceKey"],
            r["districtKey"],
            r["wardKey"],
        )
        table[(r["provinceCode"], None)] = (r["provinceKey"], None, None)
    return table


def current_units(province_code: str, commune_code: str | None = None) -> Address:
    """Map a legacy (pre-2025) province code and ward/commune code to the current units.

    `province_code` is the 2-digit legacy code ("30" Hải Dương), `commune_code` the 5-digit
    legacy ward code. Returns an Address with `legacy=True` and no street; all fields None
    when the pair is unknown to the library; province only when the commune code is absent
    or unknown for that province, or the ward was split (candidates then listed).
    """
    table = _legacy_units()
    hit = table.get((province_code, commune_code)) if commune_code else None
    if hit is None:
        hit = table.get((province_code, None))
        if hit is None:
            return _EMPTY
    province_key, district_key, ward_key = hit
    return _convert_legacy(province_key, district_key, ward_key, None)
