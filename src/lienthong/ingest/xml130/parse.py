"""Streaming, hostile-input-safe reader for hospital XML exports (QĐ 130/4750 and QĐ 4210).

Two shapes reach us:

* the gateway envelope ``GIAMDINHHS`` > ``THONGTINDONVI``/``THONGTINHOSO`` >
  ``DANHSACHHOSO`` > ``HOSO`` > ``FILEHOSO`` (``LOAIHOSO`` = XML1 ..., ``NOIDUNGFILE`` = the
  table's XML in base64), one ``HOSO`` per visit, followed by the facility's signature;
* bare table files (``TONG_HOP``, ``CHITIEU_CHITIET_THUOC`` ...), as HIS products write them
  before packing, alone or several under one wrapper element.

Files come from outside the platform, so the reader trusts nothing: no DTD is accepted
(which rules out entity expansion and external references), the network is never touched,
the file size is capped, and a file that cannot be read safely or completely raises an
:class:`Xml130Error` naming the file and the reason. The envelope is read with
``iterparse`` and each ``HOSO`` is dropped from the tree once handed out, so memory holds
one visit, not the file.

Real exports are well-formed XML written in several vendor dialects, and the reader takes
them as they come (see :class:`_CleanReader` and :func:`_clean_table`):

* namespace declarations are irrelevant to the standard (tags are matched by local name,
  upper-cased), so a declaration whose URI libxml2 refuses, such as
  ``xmlns:xsi="http://www.w3.org/2001/XMLSchema instance"`` (a space in the URI), is
  percent-encoded before parsing; a document whose only faults are namespace faults is
  still read;
* byte-order marks at the start, after the XML declaration or inside text, whitespace
  before the declaration, CRLF line ends, a UTF-16 table, a declaration saying ``utf-16``
  over UTF-8 bytes, and base64 wrapped at any width or without its padding.

A broken table costs only its visit: in the envelope, a ``FILEHOSO`` whose content cannot
be read (bad base64, not well-formed, a DOCTYPE inside the table) is recorded in
:attr:`Visit.broken` with its reason, and the visit's other tables and the following
visits are read on. A table under a ``LOAIHOSO`` that names no table is read by its root
element when that is a table's (``TONG_HOP`` ...), else ignored as a vendor's own addition;
either way with a notice in :attr:`Visit.notices` (a conformance matter, since the visit's
standard content is whole). The whole file is refused for a DOCTYPE in the outer
document, a file over the size limit, an empty file, or an outer document that is not
well-formed (truncated).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lxml import etree

from lienthong.ingest.xml130.model import STANDARD_130, STANDARD_4210, Visit, Xml130Error

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
"""Largest export accepted (bytes); ``LIENTHONG_XML130_MAX_BYTES`` overrides it."""

# Root element of each table's own XML document, and the repeated row element of the
# tables that hold a list. The official data dictionary (QĐ 130 as amended by QĐ 4750,
# ``qd4750_appendix.xlsx``) has one sheet per table, named below, listing the table's
# fields; it does not name the XML elements around them, and the gateway's XSD is not
# published. The names here are the ones the gateway takes and HIS products write (the
# names of tables 1-5 are the same under QĐ 4210). A single-row table's root element is
# its row. Sheet names are given without the stray spaces some have in the workbook.
TABLE_SHEETS: dict[str, str] = {
    "XML0": "Bang Check-in",  # check-in message sent at admission
    "XML1": "Bang 1_Tong hop",
    "XML2": "Bang 2_Thuoc",
    "XML3": "Bang 3_DVKT, VTYT",
    "XML4": "Bang 4_Dich vu CLS",
    "XML5": "Bang 5_Dien bien lam sang",
    "XML6": "Bang 6_HIV.AIDS",
    "XML7": "Bang 7_Giay ra vien",
    "XML8": "Bang 8_Tom tat HSBA",
    "XML9": "Bang 9_Giay chung sinh",
    "XML10": "Bang 10_Giay nghi duong thai",
    "XML11": "Bang 11_Giay nghi huong BHXH",
    "XML12": "Bang 12_GDYK",
    "XML13": "Bang 13_Giay chuyen tuyen BHYT",
    "XML14": "Bang 14_Giay hen kham lai",
    "XML15": "Bang 15_Lao",
}
TABLE_ROOTS: dict[str, str] = {
    "CHI_TIEU_TRANG_THAI_KCB": "XML0",
    "TONG_HOP": "XML1",  # single row
    "CHITIEU_CHITIET_THUOC": "XML2",
    "CHITIEU_CHITIET_DVKT_VTYT": "XML3",
    "CHITIEU_CHITIET_DICHVUCANLAMSANG": "XML4",
    "CHITIEU_CHITIET_DIENBIENLAMSANG": "XML5",
    "CHI_TIEU_HO_SO_BENH_AN_CHAM_SOC_VA_DIEU_TRI_HIV_AIDS": "XML6",
    "CHI_TIEU_DU_LIEU_GIAY_RA_VIEN": "XML7",  # single row
    "CHI_TIEU_DU_LIEU_TOM_TAT_HO_SO_BENH_AN": "XML8",  # single row
    "CHI_TIEU_DU_LIEU_GIAY_CHUNG_SINH": "XML9",
    "CHI_TIEU_DU_LIEU_GIAY_NGHI_DUONG_THAI": "XML10",  # single row
    "CHI_TIEU_DU_LIEU_GIAY_CHUNG_NHAN_NGHI_VIEC_HUONG_BAO_HIEM_XA_HOI": "XML11",  # single row
    "CHI_TIEU_DU_LIEU_GIAM_DINH_YKHOA": "XML12",  # single row
    "CHI_TIEU_GIAYCHUYENTUYEN": "XML13",  # single row
    "CHI_TIEU_GIAYHEN_KHAMLAI": "XML14",  # single row
    "CHI_TIEU_DIEUTRI_BENHLAO": "XML15",
}
ROW_TAGS: dict[str, str] = {
    "TRANG_THAI_KCB": "XML0",
    "CHI_TIET_THUOC": "XML2",
    "CHI_TIET_DVKT": "XML3",
    "CHI_TIET_CLS": "XML4",
    "CHI_TIET_DIEN_BIEN_BENH": "XML5",
    "HO_SO_BENH_AN_CHAM_SOC_VA_DIEU_TRI_HIV_AIDS": "XML6",
    "DU_LIEU_GIAY_CHUNG_SINH": "XML9",
    "CHITIET_DIEUTRI_BENHLAO": "XML15",
}
_ENVELOPE_FIELDS = {"MACSKCB", "NGAYLAP", "SOLUONGHOSO"}
_TABLE_NAMES = {f"XML{i}" for i in range(0, 16)}
_SIGNATURE_TAGS = {"CHUKYDONVI", "SIGNATURE"}
# LOAIHOSO as written: "XML1", "xml1", " XML1 ", "XML01"
_LOAIHOSO = re.compile(r"XML0*(\d{1,2})")


def _parser_options() -> dict[str, Any]:
    return {
        "resolve_entities": False,
        "no_network": True,
        "load_dtd": False,
        "dtd_validation": False,
        "huge_tree": False,
        "remove_comments": True,
        "remove_pis": True,
    }


_parsers = threading.local()


def _inner_parser(recover: bool = False) -> etree.XMLParser:
    """The parser for embedded tables, one per thread (an lxml parser is not thread-safe,
    and building one per table costs more than parsing a small table)."""
    name = "recover" if recover else "strict"
    parser: etree.XMLParser | None = getattr(_parsers, name, None)
    if parser is None:
        parser = etree.XMLParser(recover=recover, **_parser_options())
        setattr(_parsers, name, parser)
    return parser


def detect_standard(summary: dict[str, str]) -> str:
    """QĐ 4210 named the card ``MA_THE`` and the diagnosis ``MA_BENH``; QĐ 130 renamed them
    ``MA_THE_BHYT`` and ``MA_BENH_CHINH``. A visit without XML1 is taken as 130."""
    if "MA_THE_BHYT" in summary or "MA_BENH_CHINH" in summary:
        return STANDARD_130
    if "MA_THE" in summary or "MA_BENH" in summary:
        return STANDARD_4210
    return STANDARD_130


def table_name(loaihoso: str) -> str | None:
    """The table a ``LOAIHOSO`` value names ("XML0" ... "XML15"), however it is written
    ("XML1", "xml1", " XML1 ", "XML01"); None when it names none."""
    match = _LOAIHOSO.fullmatch(loaihoso.strip().upper())
    if match is None:
        return None
    name = f"XML{int(match.group(1))}"
    return name if name in _TABLE_NAMES else None


def _local(tag: object) -> str:
    """Tag without namespace, upper-cased (some HIS products write lower-case tags)."""
    if tag.__class__ is not str:
        return ""
    text: str = tag  # type: ignore[assignment]
    if "}" in text:
        text = text.rsplit("}", 1)[1]
    elif ":" in text:  # a prefix nothing declares, read on after the namespace error
        text = text.rsplit(":", 1)[1]
    return text if text.isupper() else text.upper()


# tag as parsed -> _local(tag): a field's name is looked up once, not worked out per row
_NAMES: dict[str, str] = {}
_MAX_NAMES = 10_000  # bounded: a hostile file may invent any number of tags


def _row(element: etree._Element) -> dict[str, str] | None:
    """The fields of ``element`` when it is a row: an element whose children are all plain
    fields (no grandchildren; a signature inside a single-row table is skipped). List
    containers (``DSACH_...``) are never rows, even when empty. One pass over the children:
    element proxies are the cost of parsing here."""
    if len(element) == 0:
        return None
    fields: dict[str, str] = {}
    names = _NAMES
    for child in element:
        tag = child.tag
        name = names.get(tag)
        if name is None:
            if tag.__class__ is not str:
                continue
            name = _local(tag)
            if len(names) < _MAX_NAMES:
                names[tag] = name
        if len(child):
            if name in _SIGNATURE_TAGS:
                continue
            return None
        if name.startswith("DSACH"):
            return None
        text = child.text
        fields[name] = text.strip() if text else ""
    return fields or None


def _rows_of(root: etree._Element) -> list[dict[str, str]]:
    """All rows of one table document, in document order."""
    rows: list[dict[str, str]] = []

    def walk(element: etree._Element) -> None:
        fields = _row(element)
        if fields is not None:
            rows.append(fields)
            return
        for child in element:
            if len(child) and _local(child.tag) not in _SIGNATURE_TAGS:
                walk(child)

    walk(root)
    return rows


_DOCTYPE_REFUSED = (
    "a DOCTYPE declaration is not allowed (DTDs, entities and external references are refused)"
)


def _reject_doctype(element: etree._Element, where: str) -> None:
    if element.getroottree().docinfo.doctype:
        raise Xml130Error(f"{where}: {_DOCTYPE_REFUSED}")


# ------------------------------------------------------------------ vendor dialects

_BOM = b"\xef\xbb\xbf"  # U+FEFF in UTF-8; these three bytes mean nothing else in UTF-8
_WHITESPACE = b" \t\r\n"
# a start tag that declares a namespace (no "<" or ">" can occur inside a tag)
_XMLNS_TAG = re.compile(rb"<[A-Za-z_][^<>]*?\sxmlns[^<>]*>")
_XMLNS_ATTR = re.compile(rb"""(\sxmlns(?::[^\s=<>]+)?\s*=\s*)("[^"]*"|'[^']*')""")
# characters allowed in a URI (RFC 3986 unreserved, reserved and "%")
_URI_CHARS = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%"
)
_DECLARATION = re.compile(rb"<\?xml\s[^>]*?\?>")
_ENCODING = re.compile(rb"""(\sencoding\s*=\s*)(["'])([A-Za-z0-9._-]*)(["'])""")
_UTF16_NAMES = {b"utf-16", b"utf16", b"ucs-2", b"unicode", b"utf-16le", b"utf-16be"}
_UTF8_NAMES = {b"utf-8", b"utf8"}
_MAX_CARRY = 1 << 20  # a start tag longer than this is passed on unexamined


def _percent_encode(match: re.Match[bytes]) -> bytes:
    quoted = match.group(2)
    value = quoted[1:-1]
    if not value.translate(None, _URI_CHARS):
        return match.group(0)
    fixed = b"".join(
        bytes((c,)) if c in _URI_CHARS else b"%%%02X" % c for c in value
    )  # only bad URIs get here
    return match.group(1) + quoted[:1] + fixed + quoted[:1]


# start tag as written -> mended: the tables of one product all open the same way
_MENDED_TAGS: dict[bytes, bytes] = {}


def _mend_tag(tag: bytes) -> bytes:
    fixed = _MENDED_TAGS.get(tag)
    if fixed is None:
        fixed = _XMLNS_ATTR.sub(_percent_encode, tag)
        if len(_MENDED_TAGS) < 1000 and len(tag) < 4096:
            _MENDED_TAGS[tag] = fixed
    return fixed


def _fix_namespaces(data: bytes) -> bytes:
    """Percent-encode the characters of namespace URIs that are not allowed in a URI (the
    space of ``.../XMLSchema instance``), so libxml2 takes the declaration. Namespaces do
    not matter to the reader; the document keeps every declaration and prefix. Only the
    start tags around an ``xmlns`` are looked at (usually the root's alone)."""
    i = data.find(b"xmlns")
    if i < 0:
        return data
    out: list[bytes] = []
    pos = 0
    while i >= 0:
        gt = data.find(b">", i)
        if gt < 0:
            break
        lt = data.rfind(b"<", pos, i)
        if lt >= 0:
            tag = data[lt : gt + 1]
            if _XMLNS_TAG.fullmatch(tag) is not None:
                fixed = _mend_tag(tag)
                if fixed != tag:
                    out.append(data[pos:lt])
                    out.append(fixed)
                    pos = gt + 1
        i = data.find(b"xmlns", gt + 1)
    if not out:
        return data
    out.append(data[pos:])
    return b"".join(out)


def _looks_utf16(head: bytes) -> bool:
    return head[:2] in (b"\xff\xfe", b"\xfe\xff") or (
        len(head) >= 2 and (head[0] == 0) != (head[1] == 0)
    )


_PROLOG_DOCTYPE = re.compile(r"\A(?:\s|<\?.*?\?>|<!--.*?-->)*<!DOCTYPE", re.DOTALL)


def _declares_doctype(head: bytes) -> bool:
    """Whether the prolog at the start of a document (its first bytes, any encoding)
    declares a DOCTYPE. Checked before libxml2 reads it, so that a DTD is refused as one
    whatever the parser's own limits would have said first (an entity bomb trips lxml's
    amplification limit before the tree shows its DOCTYPE)."""
    if _looks_utf16(head):
        text = head.decode("utf-16", errors="ignore")
    else:
        text = head.decode("utf-8", errors="ignore")
    return _PROLOG_DOCTYPE.match(text.lstrip("\ufeff")) is not None


def _clean_head(data: bytes) -> tuple[bytes, bool]:
    """The start of an ASCII-compatible document with leading byte-order marks and
    whitespace removed, and a declaration saying ``utf-16`` over bytes that are not
    UTF-16 corrected to ``utf-8`` (a common writer mistake). Also says whether the
    document is UTF-8, where a stray byte-order mark can be removed anywhere."""
    while True:
        stripped = data.lstrip(_WHITESPACE)
        if stripped.startswith(_BOM):
            stripped = stripped[3:]
        if stripped == data:
            break
        data = stripped
    utf8 = True
    declaration = _DECLARATION.match(data)
    if declaration is not None:
        encoding = _ENCODING.search(declaration.group(0))
        if encoding is not None:
            name = encoding.group(3).lower()
            if name in _UTF16_NAMES:
                fixed = _ENCODING.sub(rb'\1"utf-8"', declaration.group(0), count=1)
                data = fixed + data[declaration.end() :]
            elif name not in _UTF8_NAMES:
                utf8 = False
    return data, utf8


class _CleanReader:
    """The export as ``iterparse`` reads it: the bytes of the file with the dialects of HIS
    writers neutralised (:func:`_clean_head` at the start; namespace URIs fixed and, in
    UTF-8, byte-order marks removed throughout). Works chunk by chunk: a chunk is cut
    before an unfinished start tag or byte-order mark, which then starts the next one.
    UTF-16 documents go to libxml2 unchanged (it reads them itself)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._carry = b""
        self._started = False
        self._active = True
        self._utf8 = True
        self.doctype = False  # the prolog declares a DOCTYPE: nothing was handed on

    def read(self, size: int = -1) -> bytes:
        size = size if size and size > 0 else 1 << 16
        while True:
            chunk = self._raw.read(size)
            if not self._started:
                while chunk and len(chunk) < 4096:
                    more = self._raw.read(4096)
                    if not more:
                        break
                    chunk += more
                self._started = True
                if _declares_doctype(chunk):
                    self.doctype = True
                    return b""
                if _looks_utf16(chunk):
                    self._active = False
                else:
                    chunk, self._utf8 = _clean_head(chunk)
                    while not chunk:  # nothing but marks and whitespace so far
                        chunk = self._raw.read(size)
                        if not chunk:
                            break
                        chunk, self._utf8 = _clean_head(chunk)
            if not self._active:
                return chunk
            data = self._carry + chunk if self._carry else chunk
            if not chunk:
                self._carry = b""
                return self._clean(data)
            cut = len(data)
            lt = data.rfind(b"<")
            if lt >= 0 and data.find(b">", lt) < 0 and cut - lt < _MAX_CARRY:
                cut = lt
            if data.endswith(b"\xef"):
                cut = min(cut, len(data) - 1)
            elif data.endswith(b"\xef\xbb"):
                cut = min(cut, len(data) - 2)
            self._carry = data[cut:]
            out = self._clean(data[:cut])
            if out:
                return out

    def _clean(self, data: bytes) -> bytes:
        if self._utf8 and _BOM in data:
            data = data.replace(_BOM, b"")
        return _fix_namespaces(data)


def _namespace_only(log: Any) -> bool:
    """Whether every error of one document's error log (its parser's, not the exception's,
    which gathers the errors of every document the thread parsed) is a namespace error:
    the XML itself is well-formed (libxml2 reads on after such an error), only a
    namespace declaration or prefix is wrong, which does not matter to the reader."""
    errors = [e for e in log if e.level >= etree.ErrorLevels.ERROR]
    return bool(errors) and all(e.domain == etree.ErrorDomains.NAMESPACE for e in errors)


class _BrokenTable(Exception):
    """One embedded table that cannot be read; the message is the reason."""


def _clean_table(raw: bytes) -> bytes:
    """A decoded table's bytes, ready for libxml2: UTF-16 re-encoded as UTF-8 without its
    declaration, then the same cleaning as the outer document."""
    if raw[:1] == b"<" and _BOM not in raw:
        # the common case, checked cheaply: no byte-order mark, nothing before the
        # declaration; only the encoding it names needs a look
        end = raw.find(b"?>", 0, 512) if raw[:5] == b"<?xml" else 0
        if b"16" not in raw[:end]:
            return _fix_namespaces(raw)
    if _looks_utf16(raw):
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            codec = "utf-16"
        else:
            codec = "utf-16-be" if raw[0] == 0 else "utf-16-le"
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError as exc:
            raise _BrokenTable(f"the table in NOIDUNGFILE is not valid UTF-16 ({exc})") from None
        text = text.replace("\ufeff", "").lstrip()
        if text.startswith("<?xml"):
            end = text.find("?>")
            text = text[end + 2 :] if end >= 0 else text
        raw = text.encode("utf-8")
    raw, utf8 = _clean_head(raw)
    if utf8 and _BOM in raw:
        raw = raw.replace(_BOM, b"")
    return _fix_namespaces(raw)


def _decode_base64(content: str) -> bytes:
    compact = "".join(content.split())
    if not compact:
        raise _BrokenTable("NOIDUNGFILE is empty")
    missing = -len(compact) % 4
    if missing in (1, 2) and not compact.endswith("="):
        compact += "=" * missing  # padding left out by some writers
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _BrokenTable(f"NOIDUNGFILE is not valid base64 ({exc})") from None


def _table_rows(content: str) -> list[dict[str, str]]:
    """Decode one FILEHOSO: base64 text -> table XML -> rows; :class:`_BrokenTable` says
    why it cannot be read."""
    return _table_document(content)[1]


def _table_document(content: str) -> tuple[str, list[dict[str, str]]]:
    """The root element's local name and the rows of one FILEHOSO's table."""
    raw = _decode_base64(content)
    if not raw.strip():
        raise _BrokenTable("NOIDUNGFILE decodes to nothing")
    raw = _clean_table(raw)
    if _declares_doctype(raw[:4096]):
        raise _BrokenTable(
            "a DOCTYPE declaration is not allowed in the table (DTDs, entities and external "
            "references are refused)"
        )
    parser = _inner_parser()
    try:
        root = etree.fromstring(raw, parser)
    except etree.XMLSyntaxError as exc:
        if not _namespace_only(parser.error_log):
            raise _BrokenTable(
                f"the table in NOIDUNGFILE is not well-formed XML ({exc.msg})"
            ) from None
        # well-formed, only a namespace is wrong: libxml2 builds the same tree when told
        # to go on (it never has to repair anything)
        root = etree.fromstring(raw, _inner_parser(recover=True))
    if root.getroottree().docinfo.doctype:
        raise _BrokenTable(
            "a DOCTYPE declaration is not allowed in the table (DTDs, entities and external "
            "references are refused)"
        )
    return _local(root.tag), _rows_of(root)


def _visit(
    name: str,
    index: int,
    tables: dict[str, list[dict[str, str]]],
    envelope: dict[str, str],
    broken: list[tuple[str, str]] | None = None,
    notices: list[tuple[str, str]] | None = None,
) -> Visit:
    summary = tables.get("XML1", [{}])
    first = summary[0] if summary else {}
    ma_lk = first.get("MA_LK", "")
    if not ma_lk:
        ma_lk = next((r["MA_LK"] for rows in tables.values() for r in rows if r.get("MA_LK")), "")
    return Visit(
        file=name,
        ma_lk=ma_lk,
        standard=detect_standard(first),
        tables=tables,
        envelope=dict(envelope),
        index=index,
        broken=broken or [],
        notices=notices or [],
    )


def _open(source: str | Path | bytes, name: str | None, max_bytes: int) -> tuple[IO[bytes], str]:
    if isinstance(source, bytes | bytearray):
        label = name or "<upload>"
        size = len(source)
        stream: IO[bytes] = io.BytesIO(bytes(source))
    else:
        path = Path(source)
        label = name or path.name
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise Xml130Error(f"{label}: cannot read the file ({exc.strerror})") from None
        if not path.is_file():
            raise Xml130Error(f"{label}: not a regular file")
        stream = path.open("rb")
    if size == 0:
        stream.close()
        raise Xml130Error(f"{label}: the file is empty")
    if size > max_bytes:
        stream.close()
        raise Xml130Error(
            f"{label}: the file is {size:,} bytes, over the limit of {max_bytes:,} "
            "(LIENTHONG_XML130_MAX_BYTES)"
        )
    return stream, label


def parse(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[Visit]:
    """Stream the visits of one export (envelope or bare tables).

    ``source`` is a path or the file's bytes (``name`` labels bytes in messages). Raises
    :class:`Xml130Error` for hostile or broken input; a DTD is refused before any visit is
    produced, but truncation can only show at the point it happens, so a caller that must
    write all-or-nothing reads the whole file first (see :func:`scan`). A table of the
    envelope that cannot be read is not an error of the file: its visit comes out with the
    table in :attr:`Visit.broken`.
    """
    stream, label = _open(source, name, max_bytes)
    try:
        yield from _parse_stream(stream, label)
    finally:
        stream.close()


def scan(
    source: str | Path | bytes, *, name: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> int:
    """Read a whole export without keeping it; returns the number of visits or raises
    :class:`Xml130Error`. Lets a writer refuse a broken file before writing anything."""
    return sum(1 for _ in parse(source, name=name, max_bytes=max_bytes))


@dataclass
class _State:
    events: Any  # the iterparse, whose error log is the document's
    closed: bool = False  # the root element's end was read: the document is complete


def _parse_stream(stream: IO[bytes], label: str) -> Iterator[Visit]:
    reader = _CleanReader(stream)
    events = etree.iterparse(reader, events=("start", "end"), **_parser_options())
    it = iter(events)
    state = _State(events)
    try:
        try:
            _event, root = next(it)
        except (StopIteration, etree.XMLSyntaxError) as exc:
            if reader.doctype:
                raise Xml130Error(f"{label}: {_DOCTYPE_REFUSED}") from None
            if isinstance(exc, StopIteration):
                raise Xml130Error(f"{label}: no XML element found") from None
            raise
        _reject_doctype(root, label)
        if _local(root.tag) == "GIAMDINHHS":
            yield from _envelope(it, root, label, state)
        else:
            yield from _bare(it, root, label, state)
    except etree.XMLSyntaxError as exc:
        raise Xml130Error(f"{label}: not well-formed XML ({exc})") from None


def _read_on(state: _State) -> bool:
    """libxml2 reports namespace faults when the document ends; a complete document whose
    only faults they are has been read whole."""
    return state.closed and _namespace_only(state.events.error_log)


def _envelope(
    it: Iterator[tuple[str, Any]], root: etree._Element, label: str, state: _State
) -> Iterator[Visit]:
    envelope: dict[str, str] = {}
    index = 0
    try:
        for event, element in it:
            if event != "end":
                continue
            tag = _local(element.tag)
            if tag in _ENVELOPE_FIELDS and len(element) == 0:
                envelope[tag] = (element.text or "").strip()
            elif tag == "HOSO":
                index += 1
                tables, broken, notices = _hoso(element)
                _drop(element)
                yield _visit(label, index, tables, envelope, broken, notices)
            elif tag in _SIGNATURE_TAGS:
                _drop(element)
            elif element is root:
                state.closed = True
    except etree.XMLSyntaxError:
        if not _read_on(state):
            raise


def _hoso(
    element: etree._Element,
) -> tuple[dict[str, list[dict[str, str]]], list[tuple[str, str]], list[tuple[str, str]]]:
    """The tables of one HOSO, those of them that cannot be read with the reason, and the
    notices of what was read all the same.

    A FILEHOSO whose LOAIHOSO names no table of the standard is still decoded: when its
    root element is a table's (``TONG_HOP`` ...), it is read as that table, with a notice;
    when it is no table of the standard (a vendor's own addition), it is ignored, with a
    notice, since the visit's standard content is whole without it. It is broken only
    when it cannot be read, because then nobody can tell what it held."""
    tables: dict[str, list[dict[str, str]]] = {}
    broken: list[tuple[str, str]] = []
    notices: list[tuple[str, str]] = []
    for file_hoso in element:
        if _local(file_hoso.tag) != "FILEHOSO":
            continue
        parts = {_local(c.tag): (c.text or "") for c in file_hoso}
        sent = parts.get("LOAIHOSO", "").strip()
        loai = table_name(sent)
        if "NOIDUNGFILE" not in parts:
            broken.append((sent, "NOIDUNGFILE is missing"))
            continue
        try:
            root_tag, rows = _table_document(parts["NOIDUNGFILE"])
        except _BrokenTable as exc:
            if loai is None:
                broken.append((sent, f"LOAIHOSO {sent!r} is not one of XML0 ... XML15 and {exc}"))
            else:
                broken.append((sent, str(exc)))
            continue
        if loai is None:
            loai = TABLE_ROOTS.get(root_tag)
            if loai is None:
                notices.append(
                    (
                        sent,
                        f"LOAIHOSO {sent!r} is not one of XML0 ... XML15 and its root element "
                        f"<{root_tag}> is no table of the standard: ignored",
                    )
                )
                continue
            notices.append(
                (
                    sent,
                    f"LOAIHOSO {sent!r} is not one of XML0 ... XML15; its root element "
                    f"<{root_tag}> is {loai}'s, so it is read as {loai}",
                )
            )
        tables.setdefault(loai, []).extend(rows)
    return tables, broken, notices


def _drop(element: etree._Element) -> None:
    """Free a handled subtree and its already-handled preceding siblings."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


def _bare(
    it: Iterator[tuple[str, Any]], root: etree._Element, label: str, state: _State
) -> Iterator[Visit]:
    """Bare tables: rows of any table, grouped into visits by MA_LK in order of first
    appearance. Rows are freed as read; only their field dictionaries are kept, because a
    detail table may list a visit's rows after other visits. Under a wrapper holding
    several tables, rows of an element that is no table of the standard are ignored with a
    notice in their visit (when they carry a MA_LK) and the other tables are read on."""
    visits: dict[str, dict[str, list[dict[str, str]]]] = {}
    notices: dict[str, list[tuple[str, str]]] = {}
    unknown: str | None = None  # first element no table claims, for the message
    open_tables: list[str | None] = [TABLE_ROOTS.get(_local(root.tag))]
    skip = 0  # depth inside a signature
    try:
        for event, element in it:
            if event == "start":
                tag = _local(element.tag)
                if skip or tag in _SIGNATURE_TAGS:
                    skip += 1
                    open_tables.append(None)
                else:
                    open_tables.append(TABLE_ROOTS.get(tag))
                continue
            table_here = open_tables.pop() if open_tables else None
            if not open_tables:
                state.closed = True
            if skip:
                skip -= 1
                if skip == 0:
                    _remove(element)
                continue
            fields = _row(element)
            if fields is None:
                continue
            tag = _local(element.tag)
            table = (
                table_here
                or ROW_TAGS.get(tag)
                or next((t for t in reversed(open_tables) if t is not None), None)
            )
            if table is None:
                parent = element.getparent()
                sent = tag if parent is None or parent is root else _local(parent.tag)
                unknown = unknown or sent
                ma_lk = fields.get("MA_LK", "")
                if ma_lk:
                    reason = f"<{sent}> is no table of the standard: ignored"
                    entries = notices.setdefault(ma_lk, [])
                    if (sent, reason) not in entries:
                        entries.append((sent, reason))
                    visits.setdefault(ma_lk, {})
            else:
                visits.setdefault(fields.get("MA_LK", ""), {}).setdefault(table, []).append(fields)
            _remove(element)
    except etree.XMLSyntaxError:
        if not _read_on(state):
            raise
    if not any(visits.values()):
        if unknown is not None:
            raise Xml130Error(
                f"{label}: cannot tell which table <{unknown}> belongs to (expected a gateway "
                f"envelope GIAMDINHHS or a table such as {', '.join(TABLE_ROOTS)})"
            )
        raise Xml130Error(
            f"{label}: no visit found (root element <{_local(root.tag)}> is neither the gateway "
            "envelope GIAMDINHHS nor a table of the standard)"
        )
    for index, (ma_lk, tables) in enumerate(visits.items(), start=1):
        yield _visit(label, index, tables, {}, None, notices.get(ma_lk))


def _remove(element: etree._Element) -> None:
    parent = element.getparent()
    element.clear(keep_tail=False)
    if parent is not None:
        parent.remove(element)


# ------------------------------------------------------------ bare tables as separate files
#
# HIS products often write the tables of one batch as separate files in one folder
# (``XML1.xml``, ``XML2.xml`` ... or ``<MA_LK>_XML1.xml`` ...). Read one by one, the XML2
# file's visits have no XML1 and the XML1 file's visits have no lines; read as one group,
# the rows of every file are joined into visits by facility and MA_LK.


@dataclass(frozen=True)
class BareGroup:
    """The bare-table files of one folder among one run's inputs, read as one export."""

    folder: str  # the folder as given
    files: tuple[str, ...]  # the files' paths, in the order given

    @property
    def label(self) -> str:
        """``folder/{XML1.xml,XML2.xml,...}``: the folder and its files (the first few and
        the last, with the count, when there are many)."""
        names = [Path(f).name for f in self.files]
        if len(names) > 6:
            shown = ",".join([*names[:4], "...", names[-1]])
            return f"{self.folder}/{{{shown}}} ({len(names)} files)"
        return f"{self.folder}/{{{','.join(names)}}}"

    def file_label(self, path: str) -> str:
        """How one file of the group is named in problems: ``folder/XML2.xml``."""
        return f"{self.folder}/{Path(path).name}"


def root_name(path: str | Path) -> str | None:
    """The upper-cased local name of a file's root element (``GIAMDINHHS``, ``TONG_HOP``
    ...), read from its first bytes; None when it cannot be read."""
    try:
        with Path(path).open("rb") as stream:
            events = etree.iterparse(_CleanReader(stream), events=("start",), **_parser_options())
            _event, root = next(iter(events))
            return _local(root.tag)
    except (OSError, StopIteration, etree.XMLSyntaxError):
        return None


def group_inputs(
    paths: list[Path], max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[list[Path | BareGroup], list[str]]:
    """The jobs of one run, in the order of the inputs: a gateway envelope is a job of its
    own; bare-table files (root other than ``GIAMDINHHS``, or unreadable) of one folder
    are one :class:`BareGroup` when there are several and their sizes add up to no more
    than ``max_bytes`` (``LIENTHONG_XML130_MAX_BYTES``: a group is held in memory whole,
    as one bare file of that size is); over it each file is a job alone and a note says
    so. Files of different folders are never grouped. Also returns those notes."""
    folders: dict[Path, list[Path]] = {}
    kind: list[tuple[Path, Path | None]] = []  # (path, folder key when bare)
    for path in paths:
        if not path.is_file() or root_name(path) == "GIAMDINHHS":
            kind.append((path, None))
            continue
        key = path.parent.resolve()
        folders.setdefault(key, []).append(path)
        kind.append((path, key))
    groups: dict[Path, BareGroup] = {}
    notes: list[str] = []
    for key, members in folders.items():
        if len(members) < 2:
            continue
        size = 0
        for member in members:
            with contextlib.suppress(OSError):
                size += member.stat().st_size
        if size > max_bytes:
            notes.append(
                f"{members[0].parent}: its {len(members)} bare-table files add up to "
                f"{size:,} bytes, over the limit of {max_bytes:,} for reading them as one "
                "export (LIENTHONG_XML130_MAX_BYTES); each file is read alone, so a visit "
                "whose tables are in different files is not joined"
            )
            continue
        groups[key] = BareGroup(str(members[0].parent), tuple(str(m) for m in members))
    jobs: list[Path | BareGroup] = []
    placed: set[Path] = set()
    for path, folder in kind:
        if folder is None or folder not in groups:
            jobs.append(path)
        elif folder not in placed:
            placed.add(folder)
            jobs.append(groups[folder])
    return jobs, notes


_MA_LK_ELEMENT = re.compile(rb"<\s*(?:[\w.-]+:)?MA_LK\s*>\s*([^<]{1,100}?)\s*<", re.IGNORECASE)
_FIRST_ELEMENT = re.compile(rb"<\s*([A-Za-z_][\w.:-]*)")
_MAX_KEYS = 1_000_000  # MA_LK values taken from one unreadable file


def _bytes_of(path: str, max_bytes: int) -> bytes:
    """A file's bytes as UTF-8 (a UTF-16 file decoded), empty when it cannot be read or is
    over the limit."""
    try:
        if Path(path).stat().st_size > max_bytes:
            return b""
        data = Path(path).read_bytes()
    except OSError:
        return b""
    if _looks_utf16(data[:4]):
        codec = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-16-le"
        if data[:1] == b"\x00":
            codec = "utf-16-be"
        data = data.decode(codec, errors="replace").encode("utf-8")
    return data


def _unreadable_table(data: bytes, name: str) -> tuple[str, set[str]]:
    """What an unreadable bare file was: the table its root names (else the file name),
    and the MA_LK values written in it, found in the bytes (the XML is not parsed)."""
    table = name
    for match in _FIRST_ELEMENT.finditer(data[:8192]):
        local = match.group(1).decode("ascii", "replace").rsplit(":", 1)[-1].upper()
        table = TABLE_ROOTS.get(local, name)
        break
    keys: set[str] = set()
    for match in _MA_LK_ELEMENT.finditer(data):
        keys.add(match.group(1).decode("utf-8", "replace").strip())
        if len(keys) >= _MAX_KEYS:
            break
    keys.discard("")
    return table, keys


class GroupReader:
    """The visits of a :class:`BareGroup`: iterate for ``(visit, sources)``, where
    ``sources`` maps each table of the visit to the file its rows came from (the first,
    when several files hold rows of one table), so problems can point there.

    Rows are joined into visits by (facility ``MA_CSKCB`` of the visit's XML1, ``MA_LK``):
    a detail row, which carries no facility, joins the visit of its MA_LK when one
    facility has it, else stays apart (and is reported without XML1). A file that cannot
    be read (not well-formed, a DOCTYPE, empty) costs only what was in it: every visit
    whose MA_LK it names gets a broken entry for the table the file holds (so it is
    blocking and nothing of it is written); a MA_LK found nowhere else becomes a visit of
    its own with only that entry. A file that cannot be read and names no MA_LK is left
    in ``file_errors`` (it held no visit that can be told). The group is held in memory
    whole; its size is bounded by :func:`group_inputs`."""

    def __init__(self, group: BareGroup, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.group = group
        self.max_bytes = max_bytes
        self.file_errors: list[Xml130Error] = []

    def __iter__(self) -> Iterator[tuple[Visit, dict[str, str]]]:
        self.file_errors = []
        group = self.group
        read: list[tuple[str, list[Visit]]] = []
        unreadable: list[tuple[str, str, str, set[str]]] = []  # label, table, reason, keys
        for path in group.files:
            label = group.file_label(path)
            try:
                read.append((label, list(parse(path, name=label, max_bytes=self.max_bytes))))
            except Xml130Error as exc:
                table, keys = _unreadable_table(_bytes_of(path, self.max_bytes), Path(path).name)
                if keys:
                    unreadable.append((label, table, str(exc), keys))
                else:
                    self.file_errors.append(exc)
        facilities: dict[str, set[str]] = {}
        for _label, visits in read:
            for visit in visits:
                if visit.tables.get("XML1"):
                    code = visit.summary.get("MA_CSKCB", "").strip()
                    facilities.setdefault(visit.ma_lk, set()).add(code)

        def key(visit: Visit) -> tuple[str, str]:
            if visit.tables.get("XML1"):
                return visit.summary.get("MA_CSKCB", "").strip(), visit.ma_lk
            codes = facilities.get(visit.ma_lk, set())
            return (next(iter(codes)) if len(codes) == 1 else ""), visit.ma_lk

        tables: dict[tuple[str, str], dict[str, list[dict[str, str]]]] = {}
        broken: dict[tuple[str, str], list[tuple[str, str]]] = {}
        notices: dict[tuple[str, str], list[tuple[str, str]]] = {}
        sources: dict[tuple[str, str], dict[str, str]] = {}
        for label, visits in read:
            for visit in visits:
                k = key(visit)
                merged = tables.setdefault(k, {})
                where = sources.setdefault(k, {})
                for table, rows in visit.tables.items():
                    merged.setdefault(table, []).extend(rows)
                    where.setdefault(table, label)
                if visit.broken:
                    broken.setdefault(k, []).extend(visit.broken)
                    for table, _reason in visit.broken:
                        where.setdefault(table, label)
                if visit.notices:
                    notices.setdefault(k, []).extend(visit.notices)
                    for table, _reason in visit.notices:
                        where.setdefault(table, label)
        by_ma_lk: dict[str, list[tuple[str, str]]] = {}
        for k in tables:
            by_ma_lk.setdefault(k[1], []).append(k)
        for label, table, reason, keys in unreadable:
            for ma_lk in sorted(keys):
                targets = by_ma_lk.get(ma_lk)
                if not targets:
                    targets = by_ma_lk[ma_lk] = [("", ma_lk)]
                    tables[("", ma_lk)] = {}
                for k in targets:
                    broken.setdefault(k, []).append((table, reason))
                    sources.setdefault(k, {}).setdefault(table, label)
        name = group.label
        for index, (k, visit_tables) in enumerate(tables.items(), start=1):
            visit = _visit(name, index, visit_tables, {}, broken.get(k), notices.get(k))
            if not visit.ma_lk:
                visit.ma_lk = k[1]
            yield visit, sources.get(k, {})
