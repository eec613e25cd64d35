"""The hospital XML reader: envelope and bare tables, 130 and 4210, streaming, hostile input."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from lienthong.ingest.xml130 import STANDARD_130, STANDARD_4210, Visit, Xml130Error, parse, scan
from lienthong.ingest.xml130.parse import detect_standard
from lienthong.synth.xml130 import envelope_xml, table_xml

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
    "unknown LOAIHOSO": (
        _envelope_with(base64.b64encode(_GOOD).decode()).replace(b">XML1<", b">XML99<"),
        "XML99",
        "LOAIHOSO",
    ),
}


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
