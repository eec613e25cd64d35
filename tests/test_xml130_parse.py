"""The hospital XML reader: envelope and bare tables, 130 and 4210, streaming, hostile input."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import subprocess
import sys
from datetime import date
from pathlib import Path
from types import ModuleType

import pytest
from lxml import etree

from lienthong.ingest.xml130 import STANDARD_130, STANDARD_4210, Visit, Xml130Error, parse, scan
from lienthong.ingest.xml130.parse import (
    TABLE_ROOTS,
    TABLE_SHEETS,
    _CleanReader,
    detect_standard,
    table_name,
)
from lienthong.synth.xml130 import envelope_xml, table_xml

ROOT = Path(__file__).resolve().parents[1]

SUMMARY_130 = {
    "MA_LK": "LK130-1",
    "MA_BN": "BN1",
    "HO_TEN": "Nguyễn Văn An",
    "MA_THE_BHYT": "DN4010123456789",
    "MA_BENH_CHINH": "J06.9",
    "MA_CSKCB": "01012",
}
SUMMARY_4210 = {
    "MA_LK": "LK4210-1",
    "MA_BN": "BN2",
    "HO_TEN": "Trần Thị Bình",
    "MA_THE": "HT3790123456789",
    "MA_BENH": "I10",
    "MA_CSKCB": "79024",
}


def _drug(ma_lk: str, n: int) -> dict[str, str]:
    return {"MA_LK": ma_lk, "STT": str(n), "MA_THUOC": "40.152", "TEN_THUOC": "Paracetamol"}


def _visit_tables(summary: dict[str, str], drugs: int = 2) -> dict[str, list[dict[str, str]]]:
    ma_lk = summary["MA_LK"]
    return {
        "XML1": [summary],
        "XML2": [_drug(ma_lk, n) for n in range(1, drugs + 1)],
        "XML4": [
            {
                "MA_LK": ma_lk,
                "STT": "1",
                "MA_CHI_SO": "2345-7",
                "GIA_TRI": "5.6",
                "DON_VI_DO": "mmol/L",
            }
        ],
    }


def test_envelope_round_trip(tmp_path: Path) -> None:
    visits = [_visit_tables(SUMMARY_130), _visit_tables(SUMMARY_4210, drugs=1)]
    path = tmp_path / "export.xml"
    path.write_bytes(envelope_xml("01012", date(2025, 3, 1), visits))

    parsed = list(parse(path))

    assert [v.ma_lk for v in parsed] == ["LK130-1", "LK4210-1"]
    assert [v.index for v in parsed] == [1, 2]
    for visit, tables in zip(parsed, visits, strict=True):
        assert visit.file == "export.xml"
        assert visit.tables == tables
        assert visit.envelope == {"MACSKCB": "01012", "NGAYLAP": "20250301", "SOLUONGHOSO": "2"}
        assert visit.ma_cskcb == "01012"  # the envelope's sender wins
    assert [v.standard for v in parsed] == [STANDARD_130, STANDARD_4210]
    assert scan(path) == 2


def test_bytes_source_and_label() -> None:
    data = envelope_xml("01012", date(2025, 3, 1), [_visit_tables(SUMMARY_130)])
    (visit,) = parse(data, name="upload.xml")
    assert visit.file == "upload.xml"
    assert visit.rows("XML2")[1]["STT"] == "2"
    assert visit.rows("XML9") == []


def test_bare_tables_grouped_by_ma_lk(tmp_path: Path) -> None:
    summary_file = tmp_path / "xml1.xml"
    summary_file.write_bytes(table_xml("XML1", [SUMMARY_130]))
    (visit,) = parse(summary_file)
    assert visit.tables == {"XML1": [SUMMARY_130]}
    assert visit.envelope == {}
    assert visit.ma_cskcb == "01012"  # no envelope: XML1's MA_CSKCB

    # one detail table holding rows of two visits, interleaved
    rows = [_drug("A", 1), _drug("B", 1), _drug("A", 2)]
    (a, b) = parse(table_xml("XML2", rows))
    assert (a.ma_lk, b.ma_lk) == ("A", "B")
    assert [r["STT"] for r in a.rows("XML2")] == ["1", "2"]
    assert a.summary == {}

    # several tables under one wrapper element
    inner = b"".join(
        table_xml(t, r).split(b"?>", 1)[1] for t, r in _visit_tables(SUMMARY_4210).items()
    )
    (legacy,) = parse(b"<HOSO_XUAT>" + inner + b"</HOSO_XUAT>")
    assert legacy.standard == STANDARD_4210
    assert set(legacy.tables) == {"XML1", "XML2", "XML4"}


def test_lower_case_and_namespaced_tags_are_normalised() -> None:
    data = b'<tong_hop xmlns="urn:x"><ma_lk> LK9 </ma_lk><MA_THE_BHYT/></tong_hop>'
    (visit,) = parse(data)
    assert visit.tables == {"XML1": [{"MA_LK": "LK9", "MA_THE_BHYT": ""}]}


def test_standard_detection() -> None:
    assert detect_standard({"MA_THE_BHYT": ""}) == STANDARD_130
    assert detect_standard({"MA_BENH_CHINH": "I10"}) == STANDARD_130
    assert detect_standard({"MA_THE": "", "MA_BENH": "I10"}) == STANDARD_4210
    assert detect_standard({}) == STANDARD_130


def test_130_and_4210_files_side_by_side(tmp_path: Path) -> None:
    """An archive holds both field sets; each visit says which one it follows."""
    (tmp_path / "new.xml").write_bytes(
        envelope_xml("01012", date(2025, 1, 1), [_visit_tables(SUMMARY_130)])
    )
    (tmp_path / "old.xml").write_bytes(
        envelope_xml("79024", date(2019, 1, 1), [_visit_tables(SUMMARY_4210)])
    )
    seen = {v.file: v for f in sorted(tmp_path.glob("*.xml")) for v in parse(f)}
    assert seen["new.xml"].standard == STANDARD_130
    assert seen["new.xml"].summary["MA_THE_BHYT"] == "DN4010123456789"
    assert seen["old.xml"].standard == STANDARD_4210
    assert seen["old.xml"].summary["MA_THE"] == "HT3790123456789"


# ------------------------------------------------------------------ hostile and broken input

_EXTERNAL_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE GIAMDINHHS [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<GIAMDINHHS><THONGTINDONVI><MACSKCB>&x;</MACSKCB></THONGTINDONVI></GIAMDINHHS>"
)
_BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode()
        for i in range(1, 10)
    )
    + b"]><TONG_HOP><MA_LK>&lol9;</MA_LK></TONG_HOP>"
)
_EXTERNAL_DTD = b'<?xml version="1.0"?><!DOCTYPE TONG_HOP SYSTEM "http://example.invalid/x.dtd"><TONG_HOP><MA_LK>1</MA_LK></TONG_HOP>'


def _envelope_with(content: str) -> bytes:
    return (
        "<GIAMDINHHS><THONGTINHOSO><SOLUONGHOSO>1</SOLUONGHOSO><DANHSACHHOSO><HOSO><FILEHOSO>"
        f"<LOAIHOSO>XML1</LOAIHOSO><NOIDUNGFILE>{content}</NOIDUNGFILE></FILEHOSO></HOSO>"
        "</DANHSACHHOSO></THONGTINHOSO></GIAMDINHHS>"
    ).encode()


_GOOD = table_xml("XML1", [SUMMARY_130])
HOSTILE: dict[str, tuple[bytes, str]] = {
    "external entity": (_EXTERNAL_ENTITY, "DOCTYPE"),
    "entity bomb": (_BILLION_LAUGHS, "DOCTYPE"),
    "external DTD": (_EXTERNAL_DTD, "DOCTYPE"),
    "truncated": (
        envelope_xml("01012", date(2025, 1, 1), [_visit_tables(SUMMARY_130)])[:-40],
        "not well-formed",
    ),
    "empty file": (b"", "empty"),
    "not XML": (b"MA_LK,HO_TEN\n1,An\n", "not well-formed"),
    "unknown root": (b"<html><body><p>hi</p></body></html>", "which table"),
    "no rows": (b"<GHI_CHU/>", "no visit"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_and_broken_files_are_rejected(case: str, tmp_path: Path) -> None:
    data, reason = HOSTILE[case]
    path = tmp_path / "hostile.xml"
    path.write_bytes(data)
    with pytest.raises(Xml130Error) as excinfo:
        list(parse(path))
    message = str(excinfo.value)
    assert message.startswith("hostile.xml: ")
    assert reason in message
    assert "root:" not in message  # never echoes /etc/passwd


# A table of the envelope that cannot be read costs its visit, not the file: the visit
# comes out with the table in Visit.broken (the validator blocks that visit).
BROKEN_TABLES: dict[str, tuple[bytes, str, str]] = {
    "entity in an embedded table": (
        _envelope_with(
            base64.b64encode(_EXTERNAL_ENTITY.replace(b"GIAMDINHHS", b"TONG_HOP")).decode()
        ),
        "XML1",
        "DOCTYPE",
    ),
    "bad base64": (_envelope_with("@@not base64@@"), "XML1", "not valid base64"),
    "base64 of non-XML": (
        _envelope_with(base64.b64encode(b"hello").decode()),
        "XML1",
        "not well-formed",
    ),
    "empty NOIDUNGFILE": (_envelope_with(""), "XML1", "NOIDUNGFILE is empty"),
    "unknown LOAIHOSO over unreadable content": (
        _envelope_with("@@not base64@@").replace(b">XML1<", b">XML99<"),
        "XML99",
        "LOAIHOSO",
    ),
}


def test_a_table_under_a_wrong_loaihoso_is_read_by_its_root_element(tmp_path: Path) -> None:
    """LOAIHOSO names no table, but the content is a TONG_HOP: it is XML1, with a notice
    (a conformance matter), not a broken table that would keep the visit out."""
    path = tmp_path / "relabelled.xml"
    path.write_bytes(
        _envelope_with(base64.b64encode(_GOOD).decode()).replace(b">XML1<", b">XML99<")
    )
    (visit,) = parse(path)
    assert visit.broken == []
    assert [r["MA_LK"] for r in visit.tables["XML1"]] == ["LK130-1"]
    ((sent, what),) = visit.notices
    assert sent == "XML99" and "read as XML1" in what and "<TONG_HOP>" in what


def test_a_table_that_is_no_table_of_the_standard_is_ignored_with_a_notice(
    tmp_path: Path,
) -> None:
    own = b"<BANG_RIENG><DONG><MA_LK>LK130-1</MA_LK><GHI_CHU>x</GHI_CHU></DONG></BANG_RIENG>"
    data = _envelope_with(base64.b64encode(own).decode()).replace(b">XML1<", b">XML99<")
    path = tmp_path / "own.xml"
    path.write_bytes(data)
    (visit,) = parse(path)
    assert visit.broken == [] and visit.tables == {}
    ((sent, what),) = visit.notices
    assert sent == "XML99" and "<BANG_RIENG>" in what and "ignored" in what


@pytest.mark.parametrize("case", sorted(BROKEN_TABLES))
def test_a_broken_embedded_table_is_reported_in_its_visit(case: str, tmp_path: Path) -> None:
    data, table, reason = BROKEN_TABLES[case]
    path = tmp_path / "hostile.xml"
    path.write_bytes(data)
    (visit,) = parse(path)
    assert visit.tables == {}
    assert len(visit.broken) == 1
    sent, why = visit.broken[0]
    assert sent == table
    assert reason in why
    assert "root:" not in why  # never echoes /etc/passwd
    assert scan(path) == 1


@pytest.mark.parametrize(
    "data",
    [
        _BILLION_LAUGHS.replace(b"?>", b"?>\n<!-- exported by HIS -->\n", 1),
        b"\xef\xbb\xbf" + _EXTERNAL_DTD,
        _BILLION_LAUGHS.decode()
        .replace('version="1.0"', 'version="1.0" encoding="utf-16"')
        .encode("utf-16"),
    ],
    ids=["after a comment", "after a byte-order mark", "UTF-16"],
)
def test_a_doctype_is_named_as_such_whatever_the_parser_would_trip_on_first(
    data: bytes, tmp_path: Path
) -> None:
    """The prolog is read before libxml2 sees it: an entity bomb is refused for its DTD, not
    for the amplification limit some lxml versions hit first; in a table of an envelope too."""
    with pytest.raises(Xml130Error, match="DOCTYPE"):
        list(parse(data))
    path = tmp_path / "inner.xml"
    path.write_bytes(_envelope_with(base64.b64encode(data).decode()))
    (visit,) = parse(path)
    assert visit.tables == {} and "DOCTYPE" in visit.broken[0][1]


def test_dtd_is_refused_before_any_visit_is_produced() -> None:
    visits = parse(_EXTERNAL_ENTITY)
    with pytest.raises(Xml130Error):
        next(visits)


def test_size_limit_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "big.xml"
    path.write_bytes(_GOOD)
    assert len(list(parse(path, max_bytes=len(_GOOD)))) == 1
    with pytest.raises(Xml130Error, match="over the limit"):
        list(parse(path, max_bytes=len(_GOOD) - 1))
    with pytest.raises(Xml130Error, match="cannot read"):
        list(parse(tmp_path / "absent.xml"))
    with pytest.raises(Xml130Error, match="not a regular file"):
        list(parse(tmp_path))


def test_truncation_is_found_by_scan_before_writing() -> None:
    """A writer that must be all-or-nothing scans first: the visits before the cut are
    readable, the file as a whole is not."""
    whole = envelope_xml(
        "01012", date(2025, 1, 1), [_visit_tables(SUMMARY_130), _visit_tables(SUMMARY_4210)]
    )
    cut = whole[: whole.rindex(b"<HOSO>") + 30]
    read: list[Visit] = []
    with pytest.raises(Xml130Error):
        for visit in parse(cut):
            read.append(visit)
    assert len(read) == 1
    with pytest.raises(Xml130Error):
        scan(cut)


_RSS_PROBE = """
import json, os, sys
from lienthong.ingest.xml130 import parse

PAGE = os.sysconf("SC_PAGE_SIZE")

def rss():
    # the current resident set (the peak, ru_maxrss, is inherited from the forking parent)
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE

start = peak = rss()
n = 0
for visit in parse(sys.argv[1]):
    n += 1
    if n % 50 == 0:
        peak = max(peak, rss())
print(json.dumps({"visits": n, "grown": max(peak, rss()) - start}))
"""


def _probe(path: Path) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    """Parsing a file ten times larger must not need ten times the memory: handled visits
    are dropped from the tree. A parser that kept the tree would need about the file's size
    again (the base64 text alone)."""
    visit = _visit_tables(SUMMARY_130, drugs=40)
    small, large = tmp_path / "small.xml", tmp_path / "large.xml"
    small.write_bytes(envelope_xml("01012", date(2025, 1, 1), [visit] * 300))
    large.write_bytes(envelope_xml("01012", date(2025, 1, 1), [visit] * 3000))
    grown_bytes = large.stat().st_size - small.stat().st_size
    assert grown_bytes > 20_000_000
    a, b = _probe(small), _probe(large)
    assert (a["visits"], b["visits"]) == (300, 3000)
    grown_rss = b["grown"] - a["grown"]
    assert grown_rss < grown_bytes / 4, (grown_rss, grown_bytes)


def test_tables_6_to_15_are_read_by_their_loaihoso() -> None:
    """Tables beyond XML5 have no fixed row element in the reader: a row is any element
    whose children are plain fields, and the table is the envelope's LOAIHOSO."""
    discharge = b"<CHI_TIEU_GIAY_RA_VIEN><MA_LK>LK7</MA_LK><SO_LUU_TRU>S1</SO_LUU_TRU>" + (
        b"<!-- a comment --><PP_DIEUTRI>Kh\xc3\xa1ng sinh</PP_DIEUTRI></CHI_TIEU_GIAY_RA_VIEN>"
    )
    leave = (
        b"<CHI_TIEU_NGHI_VIEC><DSACH_GIAY><GIAY><MA_LK>LK7</MA_LK><SO_CT>1</SO_CT></GIAY>"
        b"<GIAY><MA_LK>LK7</MA_LK><SO_CT>2</SO_CT></GIAY></DSACH_GIAY></CHI_TIEU_NGHI_VIEC>"
    )
    files = "".join(
        f"<FILEHOSO><LOAIHOSO>{t}</LOAIHOSO><NOIDUNGFILE>{base64.b64encode(x).decode()}"
        "</NOIDUNGFILE></FILEHOSO>"
        for t, x in (
            ("XML1", table_xml("XML1", [{"MA_LK": "LK7"}])),
            ("XML7", discharge),
            ("XML11", leave),
        )
    )
    data = f"<GIAMDINHHS><DANHSACHHOSO><HOSO>{files}</HOSO></DANHSACHHOSO></GIAMDINHHS>"
    (visit,) = parse(data.encode())
    assert visit.rows("XML7") == [{"MA_LK": "LK7", "SO_LUU_TRU": "S1", "PP_DIEUTRI": "Kháng sinh"}]
    assert [r["SO_CT"] for r in visit.rows("XML11")] == ["1", "2"]


# ------------------------------------------------------------------ real-world exports

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "xml130"


def _make_fixtures() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MF = _make_fixtures()


def _fixture(name: str) -> Path:
    return FIXTURES / name


def _libxml2_refuses(data: bytes) -> bool:
    try:
        etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return True
    return False


def _tables_of(path: Path) -> list[bytes]:
    """The decoded NOIDUNGFILE of every FILEHOSO of an envelope fixture."""
    root = etree.fromstring(
        path.read_bytes().lstrip(b"\xef\xbb\xbf").replace(b" instance", b"-instance")
    )
    return [
        base64.b64decode(
            "".join((n.text or "").split()) + "==="[: -len("".join((n.text or "").split())) % 4]
        )
        for n in root.iter("{*}NOIDUNGFILE")
    ]


def test_committed_fixtures_are_what_the_script_writes() -> None:
    built = MF.build()
    assert set(built) == {p.name for p in FIXTURES.glob("*.xml")}
    for name, data in built.items():
        assert _fixture(name).read_bytes() == data, name


def test_tables_declaring_the_xsi_uri_with_a_space() -> None:
    path = _fixture("envelope_xsi_space.xml")
    inner = _tables_of(path)
    assert all(b'XMLSchema instance"' in t for t in inner)
    assert _libxml2_refuses(inner[0])  # what the reader has to get past
    a, b = parse(path)
    for visit, ma_lk in ((a, "14017260202000101"), (b, "14017260202000102")):
        assert visit.broken == []
        assert visit.tables == {
            "XML1": [MF.tong_hop(ma_lk)],
            "XML2": [MF.thuoc(ma_lk, 1)],
            "XML3": [MF.dvkt(ma_lk, 1)],
            "XML4": [MF.cls(ma_lk, 1, name="")],
        }
        assert visit.envelope["MACSKCB"] == "14017"


def test_bom_crlf_wrapped_base64_utf16_and_leading_whitespace() -> None:
    path = _fixture("envelope_bom_crlf_wrapped.xml")
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf<?xml") and b"\r\n" in data
    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines if line and b"<" not in line) == 76
    inner = _tables_of(path)
    assert inner[0].startswith(b"\xef\xbb\xbf") and inner[1].count(b"\xef\xbb\xbf") == 2
    assert inner[2].startswith(b"\xff\xfe") and inner[3].startswith(b"\r\n")
    assert _libxml2_refuses(inner[1]) and _libxml2_refuses(inner[3])
    (visit,) = parse(path)
    assert visit.broken == []
    ma_lk = "79031260115000007"
    summary = MF.tong_hop(ma_lk, MA_CSKCB="79031", DIA_CHI="Số 12 đường Số 7, Phường An Lạc")
    assert visit.tables == {
        "XML1": [summary],  # the stray U+FEFF is gone from DIA_CHI
        "XML2": [MF.thuoc(ma_lk, 1), MF.thuoc(ma_lk, 2)],
        "XML3": [MF.dvkt(ma_lk, 1)],
        "XML4": [MF.cls(ma_lk, 1)],
    }


def test_loaihoso_spellings_default_namespace_and_unpadded_base64() -> None:
    path = _fixture("envelope_loaihoso_spelling.xml")
    text = path.read_text(encoding="utf-8")
    assert "<LOAIHOSO>XML01</LOAIHOSO>" in text and "<LOAIHOSO>xml2</LOAIHOSO>" in text
    assert "<LOAIHOSO> XML3 </LOAIHOSO>" in text
    (visit,) = parse(path)
    ma_lk = "01012260120000033"
    assert visit.broken == []
    assert visit.tables == {
        "XML1": [MF.tong_hop(ma_lk, MA_CSKCB="01012")],
        "XML2": [MF.thuoc(ma_lk, 1)],
        "XML3": [MF.dvkt(ma_lk, 1)],
    }
    assert visit.envelope["MACSKCB"] == "01012"


@pytest.mark.parametrize(
    ("written", "table"),
    [
        ("XML1", "XML1"),
        ("xml1", "XML1"),
        (" XML1 ", "XML1"),
        ("XML01", "XML1"),
        ("Xml15", "XML15"),
        ("XML0", "XML0"),
        ("XML00", "XML0"),
        ("XML16", None),
        ("XML", None),
        ("1", None),
        ("XML1A", None),
    ],
)
def test_loaihoso_values(written: str, table: str | None) -> None:
    assert table_name(written) == table


def test_legacy_file_declaring_utf16_over_utf8() -> None:
    path = _fixture("envelope_4210_utf16_label.xml")
    assert path.read_bytes().startswith(b'<?xml version="1.0" encoding="utf-16"?>')
    assert _libxml2_refuses(path.read_bytes())
    (visit,) = parse(path)
    assert visit.standard == STANDARD_4210
    assert visit.summary["HO_TEN"] == "Hà Văn Tú"
    assert visit.summary["NGAY_SINH"] == "19610911"
    assert visit.rows("XML2") == [MF.thuoc("38002190604000151", 1)]


def test_a_broken_table_costs_only_its_visit() -> None:
    """Visit 2 has an XML2 with bad base64, visit 3 an XML3 cut short: both come out with
    their other tables and the broken one named with its reason; visit 1 is clean."""
    path = _fixture("envelope_broken_tables.xml")
    one, two, three = parse(path)
    assert [v.index for v in (one, two, three)] == [1, 2, 3]
    assert one.broken == [] and set(one.tables) == {"XML1", "XML2", "XML3"}
    assert two.ma_lk == "48003260110000002" and set(two.tables) == {"XML1", "XML3"}
    assert [(t, "not valid base64" in why) for t, why in two.broken] == [("XML2", True)]
    assert three.ma_lk == "48003260110000003" and set(three.tables) == {"XML1", "XML2"}
    assert [(t, "not well-formed" in why) for t, why in three.broken] == [("XML3", True)]
    everything = [(v.index, t) for v in (one, two, three) for t, _ in v.broken]
    assert everything == [(2, "XML2"), (3, "XML3")]
    assert scan(path) == 3


def test_every_broken_table_of_a_visit_is_listed() -> None:
    good = base64.b64encode(table_xml("XML2", [_drug("LK5", 1)])).decode()
    doctype = base64.b64encode(b"<!DOCTYPE x []><CHITIEU_CHITIET_DVKT_VTYT/>").decode()
    files = [
        ("XML1", "%%%"),
        ("XML2", good),
        ("XML3", doctype),
        ("XML4", base64.b64encode(b"<CHITIEU_CHITIET_DICHVUCANLAMSANG>").decode()),
        ("XML5", ""),
        ("BANG9", "%%%"),  # no table's name, and no content to tell which it is
        # read although the thread's libxml2 error log already holds the errors above
        ("XML7", base64.b64encode(b"<b:X><b:MA_LK>LK5</b:MA_LK><b:SO>7</b:SO></b:X>").decode()),
    ]
    body = (
        "".join(
            f"<FILEHOSO><LOAIHOSO>{t}</LOAIHOSO><NOIDUNGFILE>{c}</NOIDUNGFILE></FILEHOSO>"
            for t, c in files
        )
        + "<FILEHOSO><LOAIHOSO>XML6</LOAIHOSO></FILEHOSO>"
    )
    data = f"<GIAMDINHHS><DANHSACHHOSO><HOSO>{body}</HOSO></DANHSACHHOSO></GIAMDINHHS>"
    (visit,) = parse(data.encode())
    assert visit.ma_lk == "LK5"  # XML1 is broken: the MA_LK of another table
    assert visit.rows("XML2") == [_drug("LK5", 1)]
    assert visit.rows("XML7") == [{"MA_LK": "LK5", "SO": "7"}]
    reasons = dict(visit.broken)
    assert list(reasons) == ["XML1", "XML3", "XML4", "XML5", "BANG9", "XML6"]
    assert "base64" in reasons["XML1"] and "DOCTYPE" in reasons["XML3"]
    assert "not well-formed" in reasons["XML4"] and "empty" in reasons["XML5"]
    assert "LOAIHOSO" in reasons["BANG9"] and "missing" in reasons["XML6"]


def test_bare_xml1_with_a_default_namespace() -> None:
    path = _fixture("bare_xml1_default_namespace.xml")
    assert _libxml2_refuses(path.read_bytes())
    (visit,) = parse(path)
    row = MF.tong_hop("92006260105000077", MA_CSKCB="92006", HO_TEN="Thạch Thị Sa Ri")
    assert visit.tables == {"XML1": [row]}
    assert visit.ma_cskcb == "92006"


def test_bare_single_row_tables_and_check_in() -> None:
    (discharge,) = parse(_fixture("bare_xml7_discharge.xml"))
    assert set(discharge.tables) == {"XML7"}
    assert discharge.rows("XML7")[0]["SO_LUU_TRU"] == "LT2026/000045"
    assert discharge.ma_lk == "31011260108000045"
    (referral,) = parse(_fixture("bare_xml13_referral_lower_case.xml"))
    assert set(referral.tables) == {"XML13"}
    assert referral.rows("XML13")[0]["MA_NOI_DEN"] == "79024"
    first, second = parse(_fixture("bare_checkin_xml0.xml"))
    assert (first.ma_lk, second.ma_lk) == ("01012260203000201", "01012260203000202")
    assert set(first.tables) == {"XML0"} and set(second.tables) == {"XML0"}
    assert first.rows("XML0")[0]["HO_TEN"] == "Ngô Minh Khang"
    assert "CHUKYDONVI" not in first.rows("XML0")[0]  # the signature is no row


def test_a_wrapper_of_bare_tables_reads_on_past_a_table_it_does_not_know() -> None:
    path = _fixture("bare_wrapper_several_tables.xml")
    assert _libxml2_refuses(path.read_bytes())
    (visit,) = parse(path)
    ma_lk = "48003260111000009"
    assert visit.tables == {
        "XML1": [MF.tong_hop(ma_lk, MA_CSKCB="48003")],
        "XML2": [MF.thuoc(ma_lk, 1), MF.thuoc(ma_lk, 2)],
        "XML4": [MF.cls(ma_lk, 1)],
    }
    # a vendor's own table is ignored with a notice: the visit's standard tables are whole
    assert visit.broken == []
    assert [t for t, _ in visit.notices] == ["BANG_RIENG_HIS"]


def test_namespace_faults_other_than_the_uri_are_read_through() -> None:
    """An undeclared prefix is a namespace error, not an XML one: the table is read."""
    inner = b"<b:TONG_HOP><b:MA_LK>LK8</b:MA_LK><b:HO_TEN>An</b:HO_TEN></b:TONG_HOP>"
    assert _libxml2_refuses(inner)
    (bare,) = parse(inner)
    assert bare.tables == {"XML1": [{"MA_LK": "LK8", "HO_TEN": "An"}]}
    (visit,) = parse(_envelope_with(base64.b64encode(inner).decode()))
    assert visit.broken == [] and visit.summary == {"MA_LK": "LK8", "HO_TEN": "An"}
    # ... but not when the XML itself is broken too
    with pytest.raises(Xml130Error, match="not well-formed"):
        list(parse(inner[:-5]))
    (cut,) = parse(_envelope_with(base64.b64encode(inner[:-5]).decode()))
    assert cut.tables == {} and "not well-formed" in cut.broken[0][1]


@pytest.mark.parametrize("case", ["bom", "bom and whitespace", "xsi space"])
def test_the_mending_never_lets_a_dtd_through(case: str) -> None:
    doc = _EXTERNAL_ENTITY.replace(b"<GIAMDINHHS>", b'<GIAMDINHHS xmlns:xsi="a b">')
    data = {
        "bom": b"\xef\xbb\xbf" + _EXTERNAL_ENTITY,
        "bom and whitespace": b"\r\n \xef\xbb\xbf" + _EXTERNAL_ENTITY,
        "xsi space": doc,
    }[case]
    with pytest.raises(Xml130Error, match="DOCTYPE") as excinfo:
        list(parse(data))
    assert "root:" not in str(excinfo.value)


def test_the_cleaning_reader_is_the_same_whatever_the_chunk_size() -> None:
    """Namespace declarations and byte-order marks split across reads are mended as if
    read whole."""
    data = _fixture("envelope_bom_crlf_wrapped.xml").read_bytes()
    data = data.replace(b"<GIAMDINHHS>", b'<GIAMDINHHS xmlns:xsi="urn:a b" id="1">')
    data = data.replace(b"</THONGTINDONVI>", b"</THONGTINDONVI>\xef\xbb\xbf")
    whole = _CleanReader(io.BytesIO(data)).read(len(data) * 2)
    assert b'xmlns:xsi="urn:a%20b"' in whole and b"\xef\xbb\xbf" not in whole
    for size in (1, 2, 3, 7, 64, 4096):
        reader = _CleanReader(io.BytesIO(data))
        out = b"".join(iter(lambda: reader.read(size), b""))  # noqa: B023
        assert out == whole, size
    assert len(list(parse(data))) == 1


def test_every_table_of_the_appendix_is_known() -> None:
    """One sheet per table in the official data dictionary; the reader knows the root
    (and row) element of each, so a bare table of any of them is read with the fields the
    sheet lists."""
    appendix = ROOT.parent / "shared" / "standards" / "qd4750_appendix.xlsx"
    if not appendix.exists():
        pytest.skip(f"{appendix} is not here (official reference files)")
    import openpyxl

    book = openpyxl.load_workbook(appendix, read_only=True)
    sheets = {ws.title.strip(): ws for ws in book.worksheets}
    assert set(TABLE_SHEETS.values()) == set(sheets)
    assert set(TABLE_ROOTS.values()) == set(TABLE_SHEETS) == {f"XML{i}" for i in range(16)}
    for table, sheet in TABLE_SHEETS.items():
        rows = list(sheets[sheet].iter_rows(values_only=True))
        title = str(rows[0][0])
        assert (
            title.startswith("Bảng chỉ tiêu dữ liệu về trạng thái")
            if table == "XML0"
            else (title.startswith(f"Bảng {table[3:]}."))
        )
        fields = [r[1] for r in rows[2:] if isinstance(r[1], str) and r[1].isupper()]
        row = {f: f"v{n}" for n, f in enumerate(fields)}
        row.setdefault("MA_LK", "LK-" + table)
        (visit,) = parse(table_xml(table, [row]))
        assert visit.tables == {table: [row]}, table


_ROW_XML = "<TONG_HOP><MA_LK>LK-ENC</MA_LK><HO_TEN>Đặng Thị Ánh</HO_TEN></TONG_HOP>"


@pytest.mark.parametrize(
    "case",
    [
        "utf-8",
        "UTF-8",
        "no encoding",
        "no declaration",
        "utf-16 with BOM",
        "utf-16-be with BOM",
        "utf-16-le without BOM",
        "utf-16 label over utf-8",
        "CRLF",
    ],
)
def test_table_encodings_and_declarations(case: str) -> None:
    decl = {
        "utf-8": '<?xml version="1.0" encoding="utf-8"?>',
        "UTF-8": "<?xml version='1.0' encoding='UTF-8'?>",
        "no encoding": '<?xml version="1.0"?>',
        "no declaration": "",
        "CRLF": '<?xml version="1.0" encoding="utf-8"?>\r\n',
    }.get(case, '<?xml version="1.0" encoding="utf-16"?>')
    text = decl + (_ROW_XML.replace("><", ">\r\n<") if case == "CRLF" else _ROW_XML)
    codec = {
        "utf-16 with BOM": "utf-16",
        "utf-16-be with BOM": "utf-16-be",
        "utf-16-le without BOM": "utf-16-le",
    }.get(case, "utf-8")
    raw = text.encode(codec)
    if case == "utf-16-be with BOM":
        raw = b"\xfe\xff" + raw
    (visit,) = parse(_envelope_with(base64.b64encode(raw).decode()))
    assert visit.broken == []
    assert visit.summary == {"MA_LK": "LK-ENC", "HO_TEN": "Đặng Thị Ánh"}


def test_prefixed_tables_and_a_utf16_envelope() -> None:
    prefixed = (
        b'<p:TONG_HOP xmlns:p="urn:his:qd130" xmlns:xsi="http://www.w3.org/2001/XMLSchema '
        b'instance"><p:MA_LK>LK-P</p:MA_LK><p:HO_TEN>An</p:HO_TEN></p:TONG_HOP>'
    )
    (bare,) = parse(prefixed)
    assert bare.tables == {"XML1": [{"MA_LK": "LK-P", "HO_TEN": "An"}]}
    # a whole envelope in UTF-16, declaring the xsi URI with a space on its root
    envelope = _envelope_with(base64.b64encode(prefixed).decode()).decode()
    envelope = envelope.replace(
        "<GIAMDINHHS>", '<GIAMDINHHS xmlns:xsi="http://www.w3.org/2001/XMLSchema instance">'
    )
    data = ('<?xml version="1.0" encoding="utf-16"?>' + envelope).encode("utf-16")
    assert _libxml2_refuses(data)
    (visit,) = parse(data)
    assert visit.broken == [] and visit.summary == {"MA_LK": "LK-P", "HO_TEN": "An"}
    assert visit.envelope == {"SOLUONGHOSO": "1"}


def test_marks_and_whitespace_before_the_document() -> None:
    good = table_xml("XML1", [SUMMARY_130])
    for head in (b"\xef\xbb\xbf", b"\r\n\t ", b" " * 100_000 + b"\xef\xbb\xbf\r\n"):
        (visit,) = parse(head + good)
        assert visit.summary == SUMMARY_130
    with pytest.raises(Xml130Error):
        list(parse(b"\xef\xbb\xbf \r\n" * 3000))


def test_one_discharge_paper_per_twin() -> None:
    """The appendix (Bảng 7, Bảng 9): for twins a discharge paper and a birth certificate
    are sent for each child, so a visit may carry a single-row table twice."""
    papers = [
        table_xml("XML7", [{"MA_LK": "LK-T", "SO_LUU_TRU": f"S{n}", "HO_TEN_ME": "Lan"}])
        for n in (1, 2)
    ]
    files = "".join(
        f"<FILEHOSO><LOAIHOSO>XML7</LOAIHOSO><NOIDUNGFILE>{base64.b64encode(p).decode()}"
        "</NOIDUNGFILE></FILEHOSO>"
        for p in papers
    )
    data = f"<GIAMDINHHS><DANHSACHHOSO><HOSO>{files}</HOSO></DANHSACHHOSO></GIAMDINHHS>"
    (visit,) = parse(data.encode())
    assert [r["SO_LUU_TRU"] for r in visit.rows("XML7")] == ["S1", "S2"]
    assert visit.ma_lk == "LK-T"


# -- bare-table files of one folder read as one export --------------------------------


def _write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def _line(ma_lk: str, stt: str = "1") -> dict[str, str]:
    return {"MA_LK": ma_lk, "STT": stt, "MA_THUOC": "40.720", "SO_LUONG": "1"}


def test_root_name_tells_envelopes_from_bare_tables(tmp_path: Path) -> None:
    from lienthong.ingest.xml130.parse import root_name

    bare = _write(tmp_path, "XML1.xml", table_xml("XML1", [SUMMARY_130]))
    envelope = _write(
        tmp_path, "env.xml", envelope_xml("01012", date(2025, 1, 1), [{"XML1": [SUMMARY_130]}])
    )
    garbage = _write(tmp_path, "bad.xml", b"\x00\x01 not xml")
    assert (root_name(bare), root_name(envelope), root_name(garbage)) == (
        "TONG_HOP",
        "GIAMDINHHS",
        None,
    )


def test_a_group_joins_rows_by_facility_and_ma_lk(tmp_path: Path) -> None:
    """Two facilities may use the same MA_LK: their summaries stay two visits, and a
    detail row that cannot tell which of them it belongs to stays apart."""
    from lienthong.ingest.xml130.parse import BareGroup, GroupReader

    other = {**SUMMARY_130, "MA_CSKCB": "79024", "HO_TEN": "Lê Văn Bình"}
    files = (
        _write(tmp_path, "a_XML1.xml", table_xml("XML1", [SUMMARY_130])),
        _write(tmp_path, "b_XML1.xml", table_xml("XML1", [other])),
        _write(tmp_path, "XML2.xml", table_xml("XML2", [_line("LK130-1"), _line("LK-X")])),
    )
    group = BareGroup(str(tmp_path), tuple(str(f) for f in files))
    visits = [(v.ma_cskcb, v.ma_lk, sorted(v.tables)) for v, _ in GroupReader(group)]
    assert visits == [
        ("01012", "LK130-1", ["XML1"]),
        ("79024", "LK130-1", ["XML1"]),
        ("", "LK130-1", ["XML2"]),
        ("", "LK-X", ["XML2"]),
    ]
    one = tmp_path / "one"
    files = (
        _write(one, "XML1.xml", table_xml("XML1", [SUMMARY_130])),
        _write(one, "XML2.xml", table_xml("XML2", [_line("LK130-1"), _line("LK130-1", "2")])),
    )
    ((visit, sources),) = list(GroupReader(BareGroup(str(one), tuple(map(str, files)))))
    assert visit.ma_cskcb == "01012" and len(visit.rows("XML2")) == 2
    assert sources == {"XML1": f"{one}/XML1.xml", "XML2": f"{one}/XML2.xml"}


def test_an_unreadable_group_file_marks_the_visits_it_names(tmp_path: Path) -> None:
    from lienthong.ingest.xml130.parse import BareGroup, GroupReader

    drugs = table_xml("XML2", [_line("LK130-1"), _line("LK-ONLY")])
    doctype = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]>' + drugs.split(b"?>", 1)[1]
    files = (
        _write(tmp_path, "XML1.xml", table_xml("XML1", [SUMMARY_130])),
        _write(tmp_path, "XML2.xml", doctype),
    )
    out = {v.ma_lk: v for v, _ in GroupReader(BareGroup(str(tmp_path), tuple(map(str, files))))}
    assert set(out) == {"LK130-1", "LK-ONLY"}
    for visit in out.values():
        assert [t for t, _ in visit.broken] == ["XML2"]
        assert "DOCTYPE" in visit.broken[0][1] and f"{tmp_path}/XML2.xml" in visit.broken[0][1]
    assert out["LK-ONLY"].tables == {} and out["LK130-1"].rows("XML1")


def test_a_group_label_names_its_folder_and_files() -> None:
    from lienthong.ingest.xml130.parse import BareGroup

    assert BareGroup(
        "exports/01012", ("exports/01012/XML1.xml", "exports/01012/XML2.xml")
    ).label == ("exports/01012/{XML1.xml,XML2.xml}")
    many = BareGroup("x", tuple(f"x/{i:02d}_XML1.xml" for i in range(10)))
    assert (
        many.label
        == "x/{00_XML1.xml,01_XML1.xml,02_XML1.xml,03_XML1.xml,...,09_XML1.xml} (10 files)"
    )
