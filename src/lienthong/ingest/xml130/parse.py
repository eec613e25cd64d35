"""Streaming, hostile-input-safe reader for hospital XML exports (QĐ 130/4750 and QĐ 4210).

Two shapes reach us:

* the gateway envelope ``GIAMDINHHS`` > ``THONGTINDONVI``/``THONGTINHOSO`` >
  ``DANHSACHHOSO`` > ``HOSO`` > ``FILEHOSO`` (``LOAIHOSO`` = XML1 ..., ``NOIDUNGFILE`` = the
  table's XML in base64), one ``HOSO`` per visit, followed by the facility's signature;
* bare table files (``TONG_HOP``, ``CHITIEU_CHITIET_THUOC`` ...), as HIS products write them
  before packing, alone or several under one wrapper element.

Files come from outside the platform, so the reader trusts nothing: no DTD is accepted
(which rules out entity expansion and external references), the network is never touched,
the file size is capped, and every failure becomes an :class:`Xml130Error` naming the file
and the reason. The envelope is read with ``iterparse`` and each ``HOSO`` is dropped from
the tree once handed out, so memory holds one visit, not the file.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from lxml import etree

from lienthong.ingest.xml130.model import STANDARD_130, STANDARD_4210, Visit, Xml130Error

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
"""Largest export accepted (bytes); ``LIENTHONG_XML130_MAX_BYTES`` overrides it."""

# Root element of each table's own XML document (QĐ 130 appendix, tables 1-5; the same
# names as QĐ 4210). Tables 6-15 are recognised through LOAIHOSO inside the envelope.
TABLE_ROOTS: dict[str, str] = {
    "TONG_HOP": "XML1",
    "CHITIEU_CHITIET_THUOC": "XML2",
    "CHITIEU_CHITIET_DVKT_VTYT": "XML3",
    "CHITIEU_CHITIET_DICHVUCANLAMSANG": "XML4",
    "CHITIEU_CHITIET_DIENBIENLAMSANG": "XML5",
}
# Repeated row element of the detail tables.
ROW_TAGS: dict[str, str] = {
    "CHI_TIET_THUOC": "XML2",
    "CHI_TIET_DVKT": "XML3",
    "CHI_TIET_CLS": "XML4",
    "CHI_TIET_DIEN_BIEN_BENH": "XML5",
}
_ENVELOPE_FIELDS = {"MACSKCB", "NGAYLAP", "SOLUONGHOSO"}
_TABLE_NAMES = {f"XML{i}" for i in range(0, 16)}


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


def _inner_parser() -> etree.XMLParser:
    return etree.XMLParser(**_parser_options())


def detect_standard(summary: dict[str, str]) -> str:
    """QĐ 4210 named the card ``MA_THE`` and the diagnosis ``MA_BENH``; QĐ 130 renamed them
    ``MA_THE_BHYT`` and ``MA_BENH_CHINH``. A visit without XML1 is taken as 130."""
    if "MA_THE_BHYT" in summary or "MA_BENH_CHINH" in summary:
        return STANDARD_130
    if "MA_THE" in summary or "MA_BENH" in summary:
        return STANDARD_4210
    return STANDARD_130


def _local(tag: object) -> str:
    """Tag without namespace, upper-cased (some HIS products write lower-case tags)."""
    if tag.__class__ is not str:
        return ""
    text: str = tag  # type: ignore[assignment]
    if "}" in text:
        text = text.rsplit("}", 1)[1]
    return text if text.isupper() else text.upper()


def _row(element: etree._Element) -> dict[str, str] | None:
    """The fields of ``element`` when it is a row: an element whose children are all plain
    fields (no grandchildren). List containers (``DSACH_...``) are never rows, even when
    empty. One pass over the children: element proxies are the cost of parsing here."""
    if len(element) == 0:
        return None
    fields: dict[str, str] = {}
    for child in element:
        if len(child):
            return None
        tag = child.tag
        if tag.__class__ is not str:
            continue
        name = _local(tag)
        if name.startswith("DSACH"):
            return None
        text = child.text
        fields[name] = text.strip() if text else ""
    return fields


def _rows_of(root: etree._Element) -> list[dict[str, str]]:
    """All rows of one table document, in document order."""
    rows: list[dict[str, str]] = []

    def walk(element: etree._Element) -> None:
        fields = _row(element)
        if fields is not None:
            rows.append(fields)
            return
        for child in element:
            if len(child):
                walk(child)

    walk(root)
    return rows


def _reject_doctype(element: etree._Element, where: str) -> None:
    if element.getroottree().docinfo.doctype:
        raise Xml130Error(
            f"{where}: a DOCTYPE declaration is not allowed (DTDs, entities and external "
            "references are refused)"
        )


def _table_rows(name: str, loai: str, content: str, index: int) -> list[dict[str, str]]:
    """Decode one FILEHOSO: base64 text -> table XML -> rows."""
    where = f"{name}: visit {index} ({loai})"
    compact = "".join(content.split())
    if not compact:
        raise Xml130Error(f"{where}: NOIDUNGFILE is empty")
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Xml130Error(f"{where}: NOIDUNGFILE is not valid base64 ({exc})") from None
    if not raw.strip():
        raise Xml130Error(f"{where}: NOIDUNGFILE decodes to nothing")
    try:
        root = etree.fromstring(raw, _inner_parser())
    except etree.XMLSyntaxError as exc:
        raise Xml130Error(
            f"{where}: the table in NOIDUNGFILE is not well-formed XML ({exc})"
        ) from None
    _reject_doctype(root, where)
    return _rows_of(root)


def _visit(
    name: str, index: int, tables: dict[str, list[dict[str, str]]], envelope: dict[str, str]
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
    write all-or-nothing reads the whole file first (see :func:`scan`).
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


def _parse_stream(stream: IO[bytes], label: str) -> Iterator[Visit]:
    events = etree.iterparse(stream, events=("start", "end"), **_parser_options())
    it = iter(events)
    try:
        try:
            _event, root = next(it)
        except StopIteration:
            raise Xml130Error(f"{label}: no XML element found") from None
        _reject_doctype(root, label)
        if _local(root.tag) == "GIAMDINHHS":
            yield from _envelope(it, root, label)
        else:
            yield from _bare(it, root, label)
    except etree.XMLSyntaxError as exc:
        raise Xml130Error(f"{label}: not well-formed XML ({exc})") from None


def _envelope(it: Iterator[tuple[str, Any]], root: etree._Element, label: str) -> Iterator[Visit]:
    envelope: dict[str, str] = {}
    index = 0
    for event, element in it:
        if event != "end":
            continue
        tag = _local(element.tag)
        if tag in _ENVELOPE_FIELDS and len(element) == 0:
            envelope[tag] = (element.text or "").strip()
        elif tag == "HOSO":
            index += 1
            tables: dict[str, list[dict[str, str]]] = {}
            for file_hoso in element:
                if _local(file_hoso.tag) != "FILEHOSO":
                    continue
                parts = {_local(c.tag): (c.text or "") for c in file_hoso}
                loai = parts.get("LOAIHOSO", "").strip().upper()
                if loai not in _TABLE_NAMES:
                    raise Xml130Error(
                        f"{label}: visit {index}: LOAIHOSO {loai!r} is not one of XML0 ... XML15"
                    )
                if "NOIDUNGFILE" not in parts:
                    raise Xml130Error(f"{label}: visit {index} ({loai}): NOIDUNGFILE is missing")
                rows = _table_rows(label, loai, parts["NOIDUNGFILE"], index)
                tables.setdefault(loai, []).extend(rows)
            _drop(element)
            yield _visit(label, index, tables, envelope)
        elif tag in ("CHUKYDONVI", "SIGNATURE"):
            _drop(element)


def _drop(element: etree._Element) -> None:
    """Free a handled subtree and its already-handled preceding siblings."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


def _bare(it: Iterator[tuple[str, Any]], root: etree._Element, label: str) -> Iterator[Visit]:
    """Bare tables: rows of any table, grouped into visits by MA_LK in order of first
    appearance. Rows are freed as read; only their field dictionaries are kept, because a
    detail table may list a visit's rows after other visits."""
    visits: dict[str, dict[str, list[dict[str, str]]]] = {}
    open_tables: list[str | None] = [TABLE_ROOTS.get(_local(root.tag))]
    for event, element in it:
        tag = _local(element.tag)
        if event == "start":
            open_tables.append(TABLE_ROOTS.get(tag))
            continue
        table_here = open_tables.pop() if open_tables else None
        fields = _row(element)
        if fields is None:
            continue
        table = (
            table_here
            or ROW_TAGS.get(tag)
            or next((t for t in reversed(open_tables) if t is not None), None)
        )
        if table is None:
            raise Xml130Error(
                f"{label}: cannot tell which table <{tag}> belongs to (expected a gateway "
                f"envelope GIAMDINHHS or a table such as {', '.join(TABLE_ROOTS)})"
            )
        visits.setdefault(fields.get("MA_LK", ""), {}).setdefault(table, []).append(fields)
        parent = element.getparent()
        element.clear(keep_tail=False)
        if parent is not None:
            parent.remove(element)
    if not visits:
        raise Xml130Error(
            f"{label}: no visit found (root element <{_local(root.tag)}> is neither the gateway "
            "envelope GIAMDINHHS nor a table of the standard)"
        )
    for index, tables in enumerate(visits.values(), start=1):
        yield _visit(label, index, tables, {})
