"""Synthetic hospital XML exports (QĐ 130/4750 and legacy QĐ 4210) for the synthetic population.

Validation, ingestion, benchmarks and the demo need exports that look like what hospital
information systems send the insurance gateway: several facilities, consultations and
inpatient stays, real ICD-10 diagnoses, drugs, services, lab results with codes and units,
and money that adds up the way the standard computes it. Patients are the people of a
synthetic population register (``lienthong synth population``), so that ingested visits
can be linked back to the register.

``defects`` seeds named mistakes into a share of visits; ``defects.csv`` lists each one
with the rule the validator must report, so tests can check the validator finds them.
Everything is drawn from one ``random.Random(seed)``: a seed always gives the same files.
"""

from __future__ import annotations

import base64
import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from random import Random
from xml.sax.saxutils import escape

from lienthong.identity.identifiers import check_bhyt
from lienthong.synth.population import communes_of, reference_day
from lienthong.synth.population import generate as generate_population

# Facilities: code (legacy province prefix + 3 characters), name, province.
FACILITIES: tuple[tuple[str, str], ...] = (
    ("01012", "Bệnh viện Đa khoa Hà Đông"),
    ("79024", "Bệnh viện Quận Bình Thạnh"),
    ("48003", "Bệnh viện Đa khoa Đà Nẵng"),
    ("31011", "Bệnh viện Hữu nghị Việt Tiệp"),
    ("38002", "Bệnh viện Đa khoa tỉnh Thanh Hóa"),
    ("92006", "Bệnh viện Đa khoa Cần Thơ"),
)


def province_facilities(province: str) -> tuple[tuple[str, str], ...]:
    """Facilities of one current province: its general hospital and an obstetrics and
    paediatrics hospital, coded under the legacy province most of its communes come
    from, and a regional health centre for each of up to three other legacy provinces
    merged into it (or, when it merged none, for its two largest communes)."""
    communes = communes_of(province)
    name = communes[0].province_name
    weight: dict[str, float] = {}
    for c in communes:
        weight[c.legacy_province_code] = weight.get(c.legacy_province_code, 0.0) + c.weight
    legacy = sorted(weight, key=lambda code: (-weight[code], code))
    out = [
        (f"{legacy[0]}001", f"Bệnh viện Đa khoa {name}"),
        (f"{legacy[0]}002", f"Bệnh viện Sản - Nhi {name}"),
    ]
    others = legacy[1:4]
    if others:
        for i, code in enumerate(others):
            largest = max((c for c in communes if c.legacy_province_code == code),
                          key=lambda c: c.weight)  # fmt: skip
            out.append((f"{code}{101 + i}", f"Trung tâm Y tế khu vực {largest.name}"))
    else:
        for i, c in enumerate(sorted(communes, key=lambda c: -c.weight)[:2]):
            out.append((f"{legacy[0]}{101 + i}", f"Trung tâm Y tế khu vực {c.name}"))
    return tuple(out)


LEGACY_SHARE = 0.15  # visits exported in the QĐ 4210 field set (archives)
INPATIENT_SHARE = 0.3
VISITS_PER_FILE = 500

# (ICD-10 code, Vietnamese name, inpatient weight, outpatient weight)
DIAGNOSES: tuple[tuple[str, str, float, float], ...] = (
    ("J06.9", "Nhiễm trùng đường hô hấp trên cấp", 0.5, 10),
    ("I10", "Tăng huyết áp vô căn", 2, 12),
    ("E11.9", "Đái tháo đường type 2 không biến chứng", 2, 8),
    ("K29.7", "Viêm dạ dày", 1, 7),
    ("J18.9", "Viêm phổi", 8, 1),
    ("A09", "Viêm dạ dày ruột nhiễm khuẩn", 5, 3),
    ("M54.5", "Đau thắt lưng", 1, 5),
    ("N39.0", "Nhiễm khuẩn đường tiết niệu", 3, 3),
    ("J20.9", "Viêm phế quản cấp", 2, 5),
    ("K35.8", "Viêm ruột thừa cấp", 5, 0.2),
    ("S52.5", "Gãy đầu dưới xương quay", 3, 1),
    ("O80", "Đẻ thường một thai", 6, 0),
    ("I63.9", "Nhồi máu não", 5, 0.2),
    ("J44.9", "Bệnh phổi tắc nghẽn mạn tính", 4, 2),
    ("E78.5", "Rối loạn lipid máu", 0.5, 5),
    ("K21.9", "Trào ngược dạ dày thực quản", 0.5, 4),
    ("B34.9", "Nhiễm virus", 2, 4),
    ("I50.9", "Suy tim", 4, 1),
    ("J45.9", "Hen phế quản", 2, 2),
    ("K80.2", "Sỏi túi mật", 3, 1),
)
# (MA_THUOC, name, strength, unit, route code, unit price đồng)
DRUGS: tuple[tuple[str, str, str, str, str, float], ...] = (
    ("40.152", "Paracetamol", "500mg", "Viên", "1.01", 450),
    ("40.178", "Amoxicilin", "500mg", "Viên", "1.01", 1200),
    ("40.677", "Metformin", "850mg", "Viên", "1.01", 650),
    ("40.483", "Amlodipin", "5mg", "Viên", "1.01", 380),
    ("40.696", "Omeprazol", "20mg", "Viên", "1.01", 900),
    ("40.215", "Ceftriaxon", "1g", "Lọ", "2.10", 18500),
    ("40.1011", "Natri clorid 0,9%", "500ml", "Chai", "2.15", 9800),
    ("40.581", "Atorvastatin", "20mg", "Viên", "1.01", 1450),
    ("40.994", "Salbutamol", "100mcg/liều", "Bình", "4.01", 78000),
    ("40.32", "Ibuprofen", "400mg", "Viên", "1.01", 700),
)
# Lab services and their results: (MA_DICH_VU, name, price, [(code, name, unit, low, high)])
LAB_TESTS: tuple[tuple[str, str, float, tuple[tuple[str, str, str, float, float], ...]], ...] = (
    ("23.0075.1494", "Định lượng Glucose", 21500, (("2345-7", "Glucose", "mmol/L", 3.9, 11),)),
    ("23.0083.1523", "Định lượng HbA1c", 101000, (("4548-4", "HbA1c", "%", 4.5, 9.5),)),
    ("23.0051.1494", "Định lượng Creatinin", 21500, (("2160-0", "Creatinin", "µmol/L", 50, 140),)),
    (
        "23.0019.1493",
        "Đo hoạt độ ALT, AST",
        43000,
        (("1742-6", "ALT (GPT)", "U/L", 8, 80), ("1920-8", "AST (GOT)", "U/L", 8, 70)),
    ),
    (
        "22.0120.1370",
        "Tổng phân tích tế bào máu ngoại vi",
        46200,
        (
            ("6690-2", "Số lượng bạch cầu (WBC)", "G/L", 3.5, 15),
            ("718-7", "Huyết sắc tố (HGB)", "g/L", 95, 165),
            ("777-3", "Số lượng tiểu cầu (PLT)", "G/L", 120, 420),
        ),
    ),
    ("23.0058.1487", "Định lượng CRP", 53800, (("1988-5", "CRP", "mg/L", 0.5, 60),)),
    (
        "23.0041.1506",
        "Định lượng Cholesterol toàn phần",
        26900,
        (("2093-3", "Cholesterol", "mmol/L", 3.2, 7.5),),
    ),
)
EXAM = ("02.1896", "Khám Nội", 45000.0)  # consultation fee, cost group 13
BED_DAY = ("K01.1911", "Giường Nội khoa loại 1 hạng II", 249000.0)  # cost group 15
SUPPLY = ("N03.05.070", "Bơm tiêm nhựa 5ml", 1100.0)  # medical supply, cost group 10
DEPARTMENTS = ("K01", "K02", "K03", "K19", "K26")
BENEFIT_RATE = {1: 100, 2: 100, 3: 95, 4: 80, 5: 100}  # MUC_HUONG by card benefit level

DEFECT_KINDS: dict[str, str] = {
    "missing_name": "required",
    "bad_sex": "code",
    "bad_admission_time": "date.format",
    "discharge_before_admission": "date.order",
    "bad_cccd": "cccd",
    "bad_card": "bhyt",
    "unknown_icd10": "icd10",
    "wrong_line_amount": "money.line",
    "wrong_total": "money.total",
    "orphan_row": "link",
    "name_too_long": "max_size",
    "quantity_not_a_number": "type.number",
}
"""Seeded defect -> the rule the validator reports for it."""


@dataclass
class Xml130Summary:
    """What ``generate_xml130`` wrote."""

    visits: int = 0
    files: int = 0
    visits_by_standard: dict[str, int] = field(default_factory=dict)
    visits_by_facility: dict[str, int] = field(default_factory=dict)
    defects: int = 0
    quirky_files: int = 0  # files written in a vendor style
    quirks: int = 0  # rows of quirks.csv
    seconds: float = 0.0
    paths: dict[str, Path] = field(default_factory=dict)


@dataclass
class _Person:
    cccd: str
    name: str
    birth: date
    sex: str  # M / F
    province: str
    commune: str
    address: str
    card: str  # 15-character health-insurance card code, "" when uninsured
    phone: str


def _load_people(population: Path) -> list[_Person]:
    cards: dict[str, tuple[str, str]] = {}
    truth: dict[str, str] = {}
    truth_path, records_path = population / "truth.csv", population / "records.csv"
    if truth_path.exists() and records_path.exists():
        with truth_path.open(encoding="utf-8", newline="") as fh:
            truth = {r["record_id"]: r["person_id"] for r in csv.DictReader(fh)}
        with records_path.open(encoding="utf-8", newline="") as fh:
            for r in csv.DictReader(fh):
                person = truth.get(r["record_id"])
                card = (r.get("bhyt") or "").upper()
                # source records carry keying errors; a hospital checks the card at the
                # gateway on admission, so only well-formed cards reach its export
                if person and card and person not in cards and not check_bhyt(card):
                    cards[person] = (card, r.get("phone", ""))
    people = []
    with (population / "register.csv").open(encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            card, phone = cards.get(r["cccd"], ("", ""))
            people.append(
                _Person(
                    cccd=r["cccd"],
                    name=r["full_name"],
                    birth=date.fromisoformat(r["birth_date"]),
                    sex=r["sex"],
                    province=r["province_code"],
                    commune=r["commune_code"],
                    address=r["address"],
                    card=card,
                    phone=phone,
                )
            )
    if not people:
        raise ValueError(f"{population / 'register.csv'}: the register is empty")
    return people


def _t(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M")


def _money(x: float) -> str:
    """Amounts as the standard writes them: rounded to 2 decimals, no trailing zeros."""
    text = f"{round(x, 2):.2f}".rstrip("0").rstrip(".")
    return text or "0"


class _Builder:
    def __init__(self, rng: Random, people: list[_Person], today: date) -> None:
        self.rng = rng
        self.today = today
        self.people = people
        self.in_weights = [d[2] for d in DIAGNOSES]
        self.out_weights = [d[3] for d in DIAGNOSES]
        self.seq = 0

    def visit(self, facility: str, legacy: bool) -> dict[str, list[dict[str, str]]]:
        """One visit in the QĐ 130 field set (converted to 4210 by the caller)."""
        rng = self.rng
        self.seq += 1
        person = rng.choice(self.people)
        for _ in range(20):  # a newborn of the last two days has no visit over yet
            if person.birth < self.today - timedelta(days=2):
                break
            person = rng.choice(self.people)
        inpatient = rng.random() < INPATIENT_SHARE
        diag = rng.choices(DIAGNOSES, self.in_weights if inpatient else self.out_weights)[0]
        others = rng.sample([d for d in DIAGNOSES if d is not diag], rng.choice((0, 0, 1, 2)))
        if legacy:  # QĐ 4210 files: before QĐ 130 replaced it
            day = date(2021, 1, 4) + timedelta(days=rng.randrange(540))
        else:  # the recent months before today, none before QĐ 130 came into force
            back = timedelta(days=1 + rng.randrange(RECENT_DAYS))
            day = max(QD130_IN_FORCE, self.today - back)
        admitted = datetime(day.year, day.month, day.day, rng.randrange(7, 17), rng.randrange(60))
        if admitted.date() < person.birth:
            admitted = datetime.combine(person.birth + timedelta(days=1), admitted.time())
        stay = rng.choice((2, 3, 4, 5, 6, 8, 11)) if inpatient else 0
        discharged = (
            admitted + timedelta(days=stay, hours=rng.randrange(1, 5))
            if inpatient
            else admitted + timedelta(minutes=rng.randrange(30, 180))
        )
        last = datetime.combine(self.today, datetime.min.time())
        if not legacy and discharged >= last:  # would still be in hospital: admitted earlier
            early = discharged - last + timedelta(hours=1)
            admitted, discharged = admitted - early, discharged - early
            born = datetime.combine(person.birth, datetime.min.time())
            if admitted < born:  # a newborn of the last days: the stay is shorter
                admitted = born
                discharged = max(discharged, born + timedelta(minutes=30))
        dept = rng.choice(DEPARTMENTS)
        doctor = f"{facility}-BS{rng.randrange(1, 40):03d}"
        ma_lk = f"{facility}{admitted:%y%m%d}{self.seq:07d}"
        level = int(person.card[2]) if person.card else 0
        rate_bh = 100 if person.card else 0
        muc = BENEFIT_RATE.get(level, 0)

        def split(bv: float, bh: float) -> dict[str, str]:
            bhtt = round(bh * muc / 100, 2)
            return {
                "THANH_TIEN_BV": _money(bv),
                "THANH_TIEN_BH": _money(bh),
                "T_NGUONKHAC_NSNN": "0",
                "T_NGUONKHAC_VTNN": "0",
                "T_NGUONKHAC_VTTN": "0",
                "T_NGUONKHAC_CL": "0",
                "T_NGUONKHAC": "0",
                "MUC_HUONG": str(muc),
                "T_BNTT": _money(round(bv, 2) - round(bh, 2)),
                "T_BNCCT": _money(round(bh, 2) - bhtt),
                "T_BHTT": _money(bhtt),
            }

        drugs: list[dict[str, str]] = []
        for n, (code, name, strength, unit, route, price) in enumerate(
            rng.sample(DRUGS, rng.randint(1, 4)), start=1
        ):
            qty = rng.choice((6, 10, 14, 20, 28, 30)) if not inpatient else rng.randint(2, 12)
            ordered = admitted + timedelta(minutes=rng.randrange(10, 60))
            bv = qty * price
            drugs.append(
                {
                    "MA_LK": ma_lk,
                    "STT": str(n),
                    "MA_THUOC": code,
                    "MA_NHOM": "4",
                    "TEN_THUOC": name,
                    "DON_VI_TINH": unit,
                    "HAM_LUONG": strength,
                    "DUONG_DUNG": route,
                    "LIEU_DUNG": f"1 {unit.lower()}/lần x 2 lần/ngày",
                    "SO_DANG_KY": f"VD-{rng.randrange(10000, 40000)}-{rng.randrange(17, 24)}",
                    "TT_THAU": f"G1;N{rng.randint(1, 5)};{day.year - 1};{rng.randint(1, 30)}",
                    "PHAM_VI": "1",
                    "TYLE_TT_BH": str(rate_bh),
                    "SO_LUONG": str(qty),
                    "DON_GIA": _money(price),
                    **split(bv, bv * rate_bh / 100),
                    "MA_KHOA": dept,
                    "MA_BAC_SI": doctor,
                    "NGAY_YL": _t(ordered),
                    "NGAY_TH_YL": _t(ordered + timedelta(minutes=30)),
                    "MA_PTTT": "1",
                    "NGUON_CTRA": "1",
                }
            )
        services: list[dict[str, str]] = []
        results: list[dict[str, str]] = []

        def service(code: str, name: str, group: str, qty: int, price: float, unit: str) -> None:
            ordered = admitted + timedelta(minutes=rng.randrange(5, 40))
            bv = qty * price
            row = {
                "MA_LK": ma_lk,
                "STT": str(len(services) + 1),
                "MA_DICH_VU": code if group != "10" else "",
                "MA_VAT_TU": code if group == "10" else "",
                "MA_NHOM": group,
                "TEN_DICH_VU": name if group != "10" else "",
                "TEN_VAT_TU": name if group == "10" else "",
                "DON_VI_TINH": unit,
                "PHAM_VI": "1",
                "SO_LUONG": str(qty),
                "DON_GIA_BV": _money(price),
                "DON_GIA_BH": _money(price),
                "TYLE_TT_DV": "100",
                "TYLE_TT_BH": str(rate_bh),
                **split(bv, bv * rate_bh / 100),
                "MA_KHOA": dept,
                "MA_BAC_SI": doctor,
                "NGAY_YL": _t(ordered),
                "MA_PTTT": "1",
            }
            if group == "10":
                row["TT_THAU"] = f"G1;N1;{day.year - 1};{rng.randint(1, 30)}"
            if group in ("1", "2", "3", "8", "18"):
                row["NGUOI_THUC_HIEN"] = f"{facility}-KTV{rng.randrange(1, 20):02d}"
                row["NGAY_TH_YL"] = _t(ordered + timedelta(minutes=15))
                row["NGAY_KQ"] = _t(ordered + timedelta(minutes=rng.randrange(45, 180)))
            services.append(row)

        service(EXAM[0], EXAM[1], "13", 1, EXAM[2], "Lần")
        if inpatient:
            service(BED_DAY[0], BED_DAY[1], "15", stay, BED_DAY[2], "Ngày")
            service(SUPPLY[0], SUPPLY[1], "10", rng.randint(2, 10), SUPPLY[2], "Cái")
        for code, name, price, indicators in rng.sample(LAB_TESTS, rng.choice((0, 1, 1, 2, 3))):
            service(code, name, "1", 1, price, "Lần")
            done = services[-1]["NGAY_KQ"]
            for ind_code, ind_name, unit, low, high in indicators:
                value = round(rng.uniform(low, high), 1)
                results.append(
                    {
                        "MA_LK": ma_lk,
                        "STT": str(len(results) + 1),
                        "MA_DICH_VU": code,
                        "MA_CHI_SO": ind_code,
                        "TEN_CHI_SO": ind_name,
                        "GIA_TRI": f"{value:g}",
                        "DON_VI_DO": unit,
                        "NGAY_KQ": done,
                        "MA_BS_DOC_KQ": doctor,
                    }
                )
        notes: list[dict[str, str]] = []
        if inpatient:
            for d in range(stay + 1):
                moment = admitted + timedelta(days=d, hours=1)
                pulse, temp = rng.randint(64, 104), rng.choice((36.6, 37.0, 37.5, 38.2))
                notes.append(
                    {
                        "MA_LK": ma_lk,
                        "STT": str(d + 1),
                        "DIEN_BIEN_LS": f"Ngày {d + 1}: tỉnh, tiếp xúc tốt. "
                        f"CSST<M{pulse}_T{temp:g}_HA{rng.randint(100, 150)}/"
                        f"{rng.randint(60, 95)}_NT{rng.randint(16, 24)}>",
                        "THOI_DIEM_DBLS": _t(moment),
                        "NGUOI_THUC_HIEN": doctor,
                    }
                )

        def total(rows: list[dict[str, str]], name: str, groups: set[str] | None = None) -> float:
            return sum(float(r[name]) for r in rows if groups is None or r.get("MA_NHOM") in groups)

        lines = drugs + services
        kind = "03" if inpatient else "01"
        days = (discharged.date() - admitted.date()).days + 1 if inpatient else 0
        summary = {
            "MA_LK": ma_lk,
            "STT": str(self.seq),
            "MA_BN": f"BN{self.rng.randrange(10**8):08d}",
            "HO_TEN": person.name,
            "SO_CCCD": person.cccd,
            "NGAY_SINH": person.birth.strftime("%Y%m%d") + "0000",
            "GIOI_TINH": "1" if person.sex == "M" else "2",
            "MA_QUOCTICH": "000",
            "MA_DANTOC": "01",
            "MA_NGHE_NGHIEP": "00000",
            "DIA_CHI": person.address,
            "MATINH_CU_TRU": person.province,
            "MAHUYEN_CU_TRU": "000",
            "MAXA_CU_TRU": person.commune,
            "DIEN_THOAI": person.phone,
            "MA_THE_BHYT": person.card,
            "MA_DKBD": facility if person.card else "",
            "GT_THE_TU": f"{day.year}0101" if person.card else "",
            "GT_THE_DEN": f"{day.year}1231" if person.card else "",
            "LY_DO_VV": "Đau, sốt" if not inpatient else "Nhập viện điều trị",
            "CHAN_DOAN_VAO": diag[1],
            "CHAN_DOAN_RV": "; ".join([diag[1]] + [o[1] for o in others]),
            "MA_BENH_CHINH": diag[0],
            "MA_BENH_KT": ";".join(o[0] for o in others),
            "MA_DOITUONG_KCB": "1" if person.card else "3",
            "NGAY_VAO": _t(admitted),
            "NGAY_RA": _t(discharged),
            "SO_NGAY_DTRI": str(days),
            "KET_QUA_DTRI": rng.choice("1122") if inpatient else "1",
            "MA_LOAI_RV": "1",
            "NGAY_TTOAN": _t(discharged + timedelta(minutes=20)),
            "T_THUOC": _money(total(drugs, "THANH_TIEN_BV")),
            "T_VTYT": _money(total(services, "THANH_TIEN_BV", {"10", "11"})),
            "T_TONGCHI_BV": _money(total(lines, "THANH_TIEN_BV")),
            "T_TONGCHI_BH": _money(total(lines, "THANH_TIEN_BH")),
            "T_BNTT": _money(total(lines, "T_BNTT")),
            "T_BNCCT": _money(total(lines, "T_BNCCT")),
            "T_BHTT": _money(total(lines, "T_BHTT")),
            "T_NGUONKHAC": "0",
            "T_BHTT_GDV": "0",
            "NAM_QT": str(discharged.year),
            "THANG_QT": str(discharged.month),
            "MA_LOAI_KCB": kind,
            "MA_KHOA": dept,
            "MA_CSKCB": facility,
            "CAN_NANG": f"{rng.randint(45, 75)}",
            "MA_HSBA": f"HS{self.seq:09d}",
        }
        if inpatient:
            summary["NGAY_VAO_NOI_TRU"] = _t(admitted + timedelta(minutes=45))
        tables = {"XML1": [summary], "XML2": drugs, "XML3": services}
        if results:
            tables["XML4"] = results
        if notes:
            tables["XML5"] = notes
        return tables


_FIELDS_4210_XML1 = {
    "MA_THE_BHYT": "MA_THE",
    "MA_BENH_CHINH": "MA_BENH",
    "MA_BENH_KT": "MA_BENHKHAC",
    "T_TONGCHI_BV": "T_TONGCHI",
}


def to_4210(tables: dict[str, list[dict[str, str]]]) -> dict[str, list[dict[str, str]]]:
    """The same visit in the legacy QĐ 4210 field set (as older archives hold it)."""
    s = tables["XML1"][0]
    summary = {
        k: s.get(k, "")
        for k in [
            "MA_LK",
            "STT",
            "MA_BN",
            "HO_TEN",
            "GIOI_TINH",
            "DIA_CHI",
            "MA_DKBD",
            "GT_THE_TU",
            "GT_THE_DEN",
            "NGAY_VAO",
            "NGAY_RA",
            "SO_NGAY_DTRI",
            "KET_QUA_DTRI",
            "NGAY_TTOAN",
            "T_THUOC",
            "T_VTYT",
            "T_BNTT",
            "T_BNCCT",
            "T_BHTT",
            "T_NGUONKHAC",
            "NAM_QT",
            "THANG_QT",
            "MA_KHOA",
            "MA_CSKCB",
            "CAN_NANG",
        ]
    }
    for new, old in _FIELDS_4210_XML1.items():
        summary[old] = s.get(new, "")
    summary["NGAY_SINH"] = s["NGAY_SINH"][:8]
    summary["TEN_BENH"] = s["CHAN_DOAN_RV"]
    summary["MA_LYDO_VVIEN"] = "1"
    summary["TINH_TRANG_RV"] = "1"
    summary["T_NGOAIDS"] = "0"
    summary["MA_LOAI_KCB"] = "3" if s["MA_LOAI_KCB"] == "03" else "1"
    out: dict[str, list[dict[str, str]]] = {"XML1": [summary]}
    keep2 = [
        "MA_LK",
        "STT",
        "MA_THUOC",
        "MA_NHOM",
        "TEN_THUOC",
        "DON_VI_TINH",
        "HAM_LUONG",
        "DUONG_DUNG",
        "LIEU_DUNG",
        "SO_DANG_KY",
        "TT_THAU",
        "PHAM_VI",
        "SO_LUONG",
        "DON_GIA",
        "MUC_HUONG",
        "T_NGUONKHAC",
        "T_BNTT",
        "T_BHTT",
        "T_BNCCT",
        "MA_KHOA",
        "MA_BAC_SI",
        "NGAY_YL",
        "MA_PTTT",
    ]
    out["XML2"] = [
        {
            **{k: r.get(k, "") for k in keep2},
            "TYLE_TT": "100",
            "THANH_TIEN": r["THANH_TIEN_BV"],
            "T_NGOAIDS": "0",
        }
        for r in tables.get("XML2", [])
    ]
    keep3 = [
        "MA_LK",
        "STT",
        "MA_DICH_VU",
        "MA_VAT_TU",
        "MA_NHOM",
        "TEN_VAT_TU",
        "TEN_DICH_VU",
        "DON_VI_TINH",
        "PHAM_VI",
        "SO_LUONG",
        "MUC_HUONG",
        "T_NGUONKHAC",
        "T_BNTT",
        "T_BHTT",
        "T_BNCCT",
        "MA_KHOA",
        "MA_BAC_SI",
        "NGAY_YL",
        "NGAY_KQ",
        "MA_PTTT",
    ]
    out["XML3"] = [
        {
            **{k: r.get(k, "") for k in keep3},
            "DON_GIA": r["DON_GIA_BV"],
            "TYLE_TT": "100",
            "THANH_TIEN": r["THANH_TIEN_BV"],
            "T_NGOAIDS": "0",
        }
        for r in tables.get("XML3", [])
    ]
    if "XML4" in tables:
        out["XML4"] = [
            {
                k: r.get(k, "")
                for k in (
                    "MA_LK",
                    "STT",
                    "MA_DICH_VU",
                    "MA_CHI_SO",
                    "TEN_CHI_SO",
                    "GIA_TRI",
                    "NGAY_KQ",
                )
            }
            for r in tables["XML4"]
        ]
    if "XML5" in tables:
        out["XML5"] = [
            {
                "MA_LK": r["MA_LK"],
                "STT": r["STT"],
                "DIEN_BIEN": r["DIEN_BIEN_LS"],
                "NGAY_YL": r["THOI_DIEM_DBLS"],
            }
            for r in tables["XML5"]
        ]
    return out


def seed_defect(tables: dict[str, list[dict[str, str]]], kind: str, legacy: bool) -> None:
    """Introduce one named mistake (see ``DEFECT_KINDS``) into a visit."""
    s = tables["XML1"][0]
    if kind == "missing_name":
        del s["HO_TEN"]
    elif kind == "bad_sex":
        s["GIOI_TINH"] = "9"
    elif kind == "bad_admission_time":
        s["NGAY_VAO"] = s["NGAY_VAO"][:4] + "13" + s["NGAY_VAO"][6:]
    elif kind == "discharge_before_admission":
        s["NGAY_RA"] = str(int(s["NGAY_VAO"][:4]) - 1) + s["NGAY_VAO"][4:]
    elif kind == "bad_cccd":
        s["SO_CCCD"] = s.get("SO_CCCD", "")[:7] or "1234567"
    elif kind == "bad_card":
        s["MA_THE" if legacy else "MA_THE_BHYT"] = "ZZ9" + "0" * 12
    elif kind == "unknown_icd10":
        s["MA_BENH" if legacy else "MA_BENH_CHINH"] = "K99.9"
    elif kind == "wrong_line_amount":
        line = tables["XML2"][0]
        name = "THANH_TIEN" if legacy else "THANH_TIEN_BV"
        line[name] = _money(float(line[name]) + 1000)
    elif kind == "wrong_total":
        name = "T_TONGCHI" if legacy else "T_TONGCHI_BV"
        s[name] = _money(float(s[name]) + 5000)
    elif kind == "orphan_row":
        tables["XML2"][0]["MA_LK"] = s["MA_LK"] + "X"
    elif kind == "name_too_long":
        s["HO_TEN"] = (s["HO_TEN"] + " ") * 40
    elif kind == "quantity_not_a_number":
        tables["XML2"][0]["SO_LUONG"] = "hai"
    else:
        raise ValueError(f"unknown defect kind {kind!r}")


# Root, list and row element of each table's document (the names the reader knows, in
# lienthong.ingest.xml130.parse); a single-row table has no list and its root is its row.
TABLE_LAYOUT: dict[str, tuple[str, str | None, str]] = {
    "XML0": ("CHI_TIEU_TRANG_THAI_KCB", "DSACH_TRANG_THAI_KCB", "TRANG_THAI_KCB"),
    "XML1": ("TONG_HOP", None, "TONG_HOP"),
    "XML2": ("CHITIEU_CHITIET_THUOC", "DSACH_CHI_TIET_THUOC", "CHI_TIET_THUOC"),
    "XML3": ("CHITIEU_CHITIET_DVKT_VTYT", "DSACH_CHI_TIET_DVKT", "CHI_TIET_DVKT"),
    "XML4": ("CHITIEU_CHITIET_DICHVUCANLAMSANG", "DSACH_CHI_TIET_CLS", "CHI_TIET_CLS"),
    "XML5": (
        "CHITIEU_CHITIET_DIENBIENLAMSANG",
        "DSACH_CHI_TIET_DIEN_BIEN_BENH",
        "CHI_TIET_DIEN_BIEN_BENH",
    ),
    "XML6": (
        "CHI_TIEU_HO_SO_BENH_AN_CHAM_SOC_VA_DIEU_TRI_HIV_AIDS",
        "DSACH_HO_SO_BENH_AN_CHAM_SOC_VA_DIEU_TRI_HIV_AIDS",
        "HO_SO_BENH_AN_CHAM_SOC_VA_DIEU_TRI_HIV_AIDS",
    ),
    "XML7": ("CHI_TIEU_DU_LIEU_GIAY_RA_VIEN", None, "CHI_TIEU_DU_LIEU_GIAY_RA_VIEN"),
    "XML8": (
        "CHI_TIEU_DU_LIEU_TOM_TAT_HO_SO_BENH_AN",
        None,
        "CHI_TIEU_DU_LIEU_TOM_TAT_HO_SO_BENH_AN",
    ),
    "XML9": (
        "CHI_TIEU_DU_LIEU_GIAY_CHUNG_SINH",
        "DSACH_GIAYCHUNGSINH",
        "DU_LIEU_GIAY_CHUNG_SINH",
    ),
    "XML10": (
        "CHI_TIEU_DU_LIEU_GIAY_NGHI_DUONG_THAI",
        None,
        "CHI_TIEU_DU_LIEU_GIAY_NGHI_DUONG_THAI",
    ),
    "XML11": (
        "CHI_TIEU_DU_LIEU_GIAY_CHUNG_NHAN_NGHI_VIEC_HUONG_BAO_HIEM_XA_HOI",
        None,
        "CHI_TIEU_DU_LIEU_GIAY_CHUNG_NHAN_NGHI_VIEC_HUONG_BAO_HIEM_XA_HOI",
    ),
    "XML12": ("CHI_TIEU_DU_LIEU_GIAM_DINH_YKHOA", None, "CHI_TIEU_DU_LIEU_GIAM_DINH_YKHOA"),
    "XML13": ("CHI_TIEU_GIAYCHUYENTUYEN", None, "CHI_TIEU_GIAYCHUYENTUYEN"),
    "XML14": ("CHI_TIEU_GIAYHEN_KHAMLAI", None, "CHI_TIEU_GIAYHEN_KHAMLAI"),
    "XML15": (
        "CHI_TIEU_DIEUTRI_BENHLAO",
        "DSACH_CHITIET_DIEUTRI_BENHLAO",
        "CHITIET_DIEUTRI_BENHLAO",
    ),
}

# xsd and xsi declared the way .NET serialisers of some HIS products write them on every
# table root, with a space in the xsi URI (libxml2 refuses that URI; the reader mends it)
XSI_SPACE = (
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema instance"'
)


@dataclass(frozen=True)
class VendorStyle:
    """How one HIS product writes its files. The default writes the plain form. Every
    choice here is legal for the reader (it is how real exports look), none is a defect."""

    name: str = "plain"
    xsi_space: bool = False  # XSI_SPACE on the envelope and every table root
    bom: bool = False  # a UTF-8 byte-order mark before the file and before each table
    crlf: bool = False  # one element a line, CRLF line ends
    wrap: int = 0  # base64 of NOIDUNGFILE in lines of this width (76, 64), 0: one line
    loaihoso: str = "XML{n}"  # how LOAIHOSO is spelled: "XML{n}", "xml{n}", "XML{n:02d}"

    def table_type(self, table: str) -> str:
        return self.loaihoso.format(n=int(table[3:]))


# Three families of HIS products, as their exports look
VENDOR_STYLES: tuple[VendorStyle, ...] = (
    VendorStyle("dotnet", xsi_space=True, bom=True, crlf=True, wrap=76),
    VendorStyle("java", xsi_space=True, wrap=64, loaihoso="xml{n}"),
    VendorStyle("legacy", bom=True, crlf=True, loaihoso="XML{n:02d}"),
)

QUIRK_KINDS: dict[str, str] = {
    # how the file is written: all legal, the reader takes them as they come
    "xsi_namespace_space": "legal",
    "bom": "legal",
    "crlf": "legal",
    "wrapped_base64": "legal",
    "loaihoso_spelling": "legal",
    # what it holds. A decimal comma ("12500,5") is a conformance problem: the standard
    # writes numbers with a decimal point, so the validator reports the field; real files
    # carry it, so it is listed here and not among the seeded defects.
    "decimal_comma": "conformance",
    # Legal: districts were abolished on 1 July 2025, so a later visit has no district
    # code beside its commune code (the field is left empty, or "000" as by default).
    "empty_mahuyen": "legal",
    # Legal: QĐ 4750 amended Bảng 4: "Trường hợp chưa có tên chỉ số thì để trống trường
    # thông tin này" (the gateway's field list still marks it required; we follow the
    # amendment, as the validator's data dictionary does).
    "empty_ten_chi_so": "legal",
}
"""Vendor quirk -> "legal" (real files are like this and nothing is wrong) or
"conformance" (a departure from the standard the validator reports)."""

_DISTRICTS_ABOLISHED = "202507010000"
QD130_IN_FORCE = date(2024, 7, 1)
"""QĐ 130/QĐ-BYT (as amended by QĐ 4750) applies to visits from this day."""
RECENT_DAYS = 90
"""QĐ 130 visits are of the last three months: what hospitals send is recent, so a demo's
clinicians, who read the records of the last weeks' visits, have patients to see."""


def _row_xml(tag: str, row: dict[str, str], nl: str = "", attrs: str = "") -> str:
    head = f"<{tag} {attrs}>" if attrs else f"<{tag}>"
    return head + nl + "".join(f"<{k}>{escape(v)}</{k}>{nl}" for k, v in row.items()) + f"</{tag}>"


def table_xml(table: str, rows: list[dict[str, str]], style: VendorStyle | None = None) -> bytes:
    """A table's own XML document, as packed into NOIDUNGFILE or written bare. A
    single-row table (XML1, XML7, XML8, XML10-XML14) takes exactly one row."""
    root, lst, row_tag = TABLE_LAYOUT[table]
    style = style or VendorStyle()
    nl = "\r\n" if style.crlf else ""
    attrs = XSI_SPACE if style.xsi_space else ""
    head = ("\ufeff" if style.bom else "") + '<?xml version="1.0" encoding="utf-8"?>' + nl
    if lst is None:
        if len(rows) != 1:
            raise ValueError(f"{table} holds one row, not {len(rows)}")
        return (head + _row_xml(root, rows[0], nl, attrs)).encode("utf-8")
    body = "".join(_row_xml(row_tag, r, nl) + nl for r in rows)
    open_root = f"<{root} {attrs}>" if attrs else f"<{root}>"
    return f"{head}{open_root}{nl}<{lst}>{nl}{body}</{lst}>{nl}</{root}>".encode()


def _base64(data: bytes, style: VendorStyle) -> str:
    text = base64.b64encode(data).decode("ascii")
    if not style.wrap:
        return text
    nl = "\r\n" if style.crlf else "\n"
    lines = [text[i : i + style.wrap] for i in range(0, len(text), style.wrap)]
    return nl + nl.join(lines) + nl


def envelope_xml(
    facility: str,
    made: date,
    visits: list[dict[str, list[dict[str, str]]]],
    style: VendorStyle | None = None,
) -> bytes:
    """The gateway envelope (GIAMDINHHS) around visits, one HOSO each, written in
    ``style`` (default: the plain form)."""
    style = style or VendorStyle()
    nl = "\r\n" if style.crlf else ""
    attrs = f" {XSI_SPACE}" if style.xsi_space else ""
    parts = [
        ("\ufeff" if style.bom else "") + '<?xml version="1.0" encoding="utf-8"?>' + nl,
        f"<GIAMDINHHS{attrs}>{nl}<THONGTINDONVI>{nl}"
        f"<MACSKCB>{facility}</MACSKCB>{nl}</THONGTINDONVI>{nl}<THONGTINHOSO>{nl}"
        f"<NGAYLAP>{made:%Y%m%d}</NGAYLAP>{nl}<SOLUONGHOSO>{len(visits)}</SOLUONGHOSO>{nl}"
        f"<DANHSACHHOSO>{nl}",
    ]
    for tables in visits:
        parts.append(f"<HOSO>{nl}")
        for table, rows in tables.items():
            if not rows:
                continue
            content = _base64(table_xml(table, rows, style), style)
            parts.append(
                f"<FILEHOSO>{nl}<LOAIHOSO>{style.table_type(table)}</LOAIHOSO>{nl}"
                f"<NOIDUNGFILE>{content}</NOIDUNGFILE>{nl}</FILEHOSO>{nl}"
            )
        parts.append(f"</HOSO>{nl}")
    parts.append(f"</DANHSACHHOSO>{nl}</THONGTINHOSO>{nl}<CHUKYDONVI/>{nl}</GIAMDINHHS>{nl}")
    return "".join(parts).encode("utf-8")


def _file_quirks(style: VendorStyle) -> list[str]:
    out = []
    if style.xsi_space:
        out.append("xsi_namespace_space")
    if style.bom:
        out.append("bom")
    if style.crlf:
        out.append("crlf")
    if style.wrap:
        out.append("wrapped_base64")
    if style.loaihoso != "XML{n}":
        out.append("loaihoso_spelling")
    return out


_NUMBER_FIELDS = ("DON_GIA", "DON_GIA_BV", "SO_LUONG", "THANH_TIEN_BV", "THANH_TIEN", "T_BNCCT")


def content_quirks(tables: dict[str, list[dict[str, str]]], rng: Random) -> list[str]:
    """Give one visit of a vendor-styled file the content quirks of real 2025-26 files
    (see ``QUIRK_KINDS``), each by chance; returns the ones given."""
    given = []
    summary = tables["XML1"][0]
    if (
        "MAHUYEN_CU_TRU" in summary
        and summary.get("NGAY_VAO", "") >= _DISTRICTS_ABOLISHED
        and rng.random() < 0.5
    ):
        summary["MAHUYEN_CU_TRU"] = ""
        given.append("empty_mahuyen")
    results = tables.get("XML4", [])
    if results and rng.random() < 0.3:
        rng.choice(results)["TEN_CHI_SO"] = ""
        given.append("empty_ten_chi_so")
    lines = tables.get("XML2", []) + tables.get("XML3", [])
    if lines and rng.random() < 0.2:
        line = rng.choice(lines)
        name = next((f for f in _NUMBER_FIELDS if "." in line.get(f, "")), None)
        if name is not None:
            line[name] = line[name].replace(".", ",")
        else:
            name = next(f for f in _NUMBER_FIELDS if f in line)
            line[name] = line[name] + ",0"
        given.append("decimal_comma")
    return given


def generate_xml130(
    visits: int,
    out_dir: Path,
    *,
    seed: int = 0,
    defects: float = 0.0,
    population: Path | None = None,
    visits_per_file: int = VISITS_PER_FILE,
    progress: Callable[[int], None] | None = None,
    province: str | None = None,
    quirks: float = 0.0,
    today: date | None = None,
) -> Xml130Summary:
    """Write ``visits`` visits as envelope files under ``out_dir/<facility>/`` plus
    ``defects.csv``. Patients come from ``population`` (a ``synth population`` folder);
    without it a population is generated into ``out_dir/population``. With
    ``province`` the visits are to that province's facilities
    (:func:`province_facilities`), and a generated population lives there.

    ``quirks`` is the share of files written the way HIS products write them (one of
    ``VENDOR_STYLES``), their visits given the content quirks of real files
    (:func:`content_quirks`); ``quirks.csv`` lists every quirk with its kind
    (``QUIRK_KINDS``). Quirks draw from their own random stream, so the visits of a seed
    are the same with or without them.

    QĐ 130 visits fall in the ``RECENT_DAYS`` before ``today`` (default: :func:`reference_day`),
    QĐ 4210 ones in 2021-22."""
    if visits < 0:
        raise ValueError("visits must be >= 0")
    if not 0.0 <= defects <= 1.0:
        raise ValueError("defects must be a rate between 0 and 1")
    if not 0.0 <= quirks <= 1.0:
        raise ValueError("quirks must be a rate between 0 and 1")
    started = time.perf_counter()
    day = reference_day(today)
    out_dir.mkdir(parents=True, exist_ok=True)
    if population is None:
        population = out_dir / "population"
        generate_population(
            max(50, visits // 3),
            seed,
            population,
            records_per_person=1.5,
            province=province,
            today=day,
        )
    facilities = FACILITIES if province is None else province_facilities(province)
    rng = Random(seed)
    builder = _Builder(rng, _load_people(population), day)
    summary = Xml130Summary(paths={"population": population})
    defects_path = out_dir / "defects.csv"
    summary.paths["defects"] = defects_path
    pending: dict[tuple[str, bool], list[dict[str, list[dict[str, str]]]]] = {}
    counters: dict[tuple[str, bool], int] = {}
    kinds = sorted(DEFECT_KINDS)
    quirk_rng = Random(f"{seed}-vendor-quirks")
    styles: dict[tuple[str, bool], VendorStyle | None] = {}
    quirk_rows: list[tuple[str, str, str, str]] = []

    def _next_name(key: tuple[str, bool]) -> str:
        """The name of the file the pending visits of ``key`` go to."""
        facility, legacy = key
        return f"{facility}_{'4210' if legacy else '130'}_{counters.get(key, 0) + 1:04d}.xml"

    def flush(key: tuple[str, bool]) -> None:
        batch = pending.pop(key, [])
        if not batch:
            return
        facility, legacy = key
        counters[key] = counters.get(key, 0) + 1
        folder = out_dir / facility
        folder.mkdir(exist_ok=True)
        std = "4210" if legacy else "130"
        path = folder / f"{facility}_{std}_{counters[key]:04d}.xml"
        style = styles.pop(key, None)
        path.write_bytes(envelope_xml(facility, day, batch, style))
        summary.files += 1
        if style is not None:
            summary.quirky_files += 1

    with defects_path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("file", "ma_lk", "defect", "rule"))
        for n in range(visits):
            facility = rng.choice(facilities)[0]
            legacy = rng.random() < LEGACY_SHARE
            tables = builder.visit(facility, legacy)
            if legacy:
                tables = to_4210(tables)
            if defects and rng.random() < defects:
                kind = rng.choice(kinds)
                seed_defect(tables, kind, legacy)
                key = (facility, legacy)
                std = "4210" if legacy else "130"
                name = f"{facility}_{std}_{counters.get(key, 0) + 1:04d}.xml"
                writer.writerow((name, tables["XML1"][0]["MA_LK"], kind, DEFECT_KINDS[kind]))
                summary.defects += 1
            key = (facility, legacy)
            if quirks and key not in pending:  # a new file: which product writes it
                style = quirk_rng.choice(VENDOR_STYLES) if quirk_rng.random() < quirks else None
                styles[key] = style
                if style is not None:
                    quirk_rows.extend(
                        (_next_name(key), "", q, QUIRK_KINDS[q]) for q in _file_quirks(style)
                    )
            if styles.get(key) is not None:
                for q in content_quirks(tables, quirk_rng):
                    quirk_rows.append(
                        (_next_name(key), tables["XML1"][0]["MA_LK"], q, QUIRK_KINDS[q])
                    )
            pending.setdefault(key, []).append(tables)
            std = "4210" if legacy else "130"
            summary.visits_by_standard[std] = summary.visits_by_standard.get(std, 0) + 1
            summary.visits_by_facility[facility] = summary.visits_by_facility.get(facility, 0) + 1
            if len(pending[key]) >= visits_per_file:
                flush(key)
            if progress is not None and (n + 1) % 1000 == 0:
                progress(n + 1)
        for key in list(pending):
            flush(key)
    if quirks:
        quirks_path = out_dir / "quirks.csv"
        summary.paths["quirks"] = quirks_path
        with quirks_path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(("file", "ma_lk", "quirk", "kind"))
            writer.writerows(quirk_rows)
        summary.quirks = len(quirk_rows)
    summary.visits = visits
    summary.seconds = time.perf_counter() - started
    if progress is not None:
        progress(visits)
    return summary
