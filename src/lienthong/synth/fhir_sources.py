"""Synthetic FHIR exports of two sources beside the hospitals: the immunization registry
and the commune health stations.

The demo and the person index need more than hospital visits: a province's record of a
child is mostly vaccinations, and of an elderly person mostly visits to the commune
health station. Both systems export FHIR here, each with its own Patient records in its
own habits - exactly the rows ``records.csv`` of ``lienthong synth population`` gives for
sources ``immunization`` and ``commune_station`` (spelling, missing diacritics, day-first
dates, a mother's CCCD on a child's record...). What the records are *about* (age, home
commune) comes from the person behind them (``truth.csv`` and the register), so a child
gets the doses of the national schedule due by then and an adult a blood pressure.

Files are NDJSON in the order they must be loaded: ``organizations``, ``patients``, then
the events (``immunizations``; ``encounters`` and ``observations``), one folder per
source. Everything is drawn from ``random.Random(seed)``: a seed gives the same files.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from random import Random
from typing import Any

import orjson

from lienthong.identity.normalize import normalize_sex, parse_date
from lienthong.identity.scoring import BHXH_SYSTEM, BHYT_SYSTEM, CCCD_SYSTEM
from lienthong.synth.population import Commune, load_communes, reference_day

LT = "http://fhir.lienthong.vn"
CVX = "http://hl7.org/fhir/sid/cvx"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CMND_SYSTEM = f"{LT}/sid/cmnd"
COMMUNE_STATION_CODE = f"{LT}/sid/commune-health-station"
SOURCE_URI = {
    "immunization": f"{LT}/source/immunization-registry",
    "commune_station": f"{LT}/source/commune-health-station",
}
RECORD_SYSTEM = {
    "immunization": f"{LT}/sid/immunization-registry/record",
    "commune_station": f"{LT}/sid/commune-health-station/record",
}
MISSED_DOSE_RATE = 0.06  # a dose not given (or not recorded) at all

# The Expanded Programme on Immunization (Tiêm chủng mở rộng) schedule of mandatory
# vaccinations, Thông tư 38/2017/TT-BYT (Phụ lục), with CVX codes
# (https://www2a.cdc.gov/vaccines/iis/iisstandards/vaccines.asp?rpt=cvx):
# (CVX, CVX display, Vietnamese name, dose number, age in days when due)
CHILD_SCHEDULE: tuple[tuple[str, str, str, int, int], ...] = (
    ("19", "BCG", "Vắc xin phòng lao (BCG)", 1, 0),
    ("08", "Hep B, adolescent or pediatric", "Vắc xin viêm gan B sơ sinh", 1, 0),
    ("102", "DTP-Hib-Hep B", "Vắc xin 5 trong 1 DPT-VGB-Hib", 1, 60),
    ("02", "OPV", "Vắc xin bại liệt uống (OPV)", 1, 60),
    ("102", "DTP-Hib-Hep B", "Vắc xin 5 trong 1 DPT-VGB-Hib", 2, 90),
    ("02", "OPV", "Vắc xin bại liệt uống (OPV)", 2, 90),
    ("102", "DTP-Hib-Hep B", "Vắc xin 5 trong 1 DPT-VGB-Hib", 3, 120),
    ("02", "OPV", "Vắc xin bại liệt uống (OPV)", 3, 120),
    ("10", "IPV", "Vắc xin bại liệt tiêm (IPV)", 1, 150),
    ("05", "measles", "Vắc xin sởi", 1, 270),
    ("39", "Japanese Encephalitis SC", "Vắc xin viêm não Nhật Bản", 1, 365),
    ("39", "Japanese Encephalitis SC", "Vắc xin viêm não Nhật Bản", 2, 380),
    ("04", "M/R", "Vắc xin sởi - rubella (MR)", 1, 540),
    ("01", "DTP", "Vắc xin DPT nhắc lại", 4, 540),
    ("39", "Japanese Encephalitis SC", "Vắc xin viêm não Nhật Bản", 3, 730),
)
# Adults: tetanus toxoid for women of child-bearing age (EPI), COVID-19 (2021-2022
# campaign), seasonal influenza (paid service, mostly the elderly).
TETANUS = ("35", "tetanus toxoid, adsorbed", "Vắc xin uốn ván (VAT)")
COVID = ("213", "SARS-COV-2 (COVID-19) vaccine, UNSPECIFIED FORMULATION", "Vắc xin COVID-19")
INFLUENZA = ("141", "Influenza, seasonal, injectable", "Vắc xin cúm mùa")


@dataclass
class FhirSourcesSummary:
    """What :func:`generate_fhir_sources` wrote: resources by source and type, and the
    files of each source in load order."""

    resources: dict[str, Counter[str]] = field(default_factory=dict)
    files: dict[str, list[Path]] = field(default_factory=dict)


@dataclass
class _Person:
    birth: date | None
    sex: str | None
    commune: str


def _people(population: Path) -> dict[str, _Person]:
    """The person behind each record id (register values where the person is in it)."""
    register: dict[str, tuple[str, str, str]] = {}
    with (population / "register.csv").open(encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            register[r["cccd"]] = (r["birth_date"], r["sex"], r["commune_code"])
    people: dict[str, _Person] = {}
    with (population / "truth.csv").open(encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            found = register.get(r["person_id"])
            if found is not None:
                people[r["record_id"]] = _Person(date.fromisoformat(found[0]), found[1], found[2])
    return people


def _fhir_date(raw: str) -> str | None:
    try:
        return parse_date(raw).iso() if raw.strip() else None
    except ValueError:
        return None  # the source holds something no date parser reads: left out


def _patient(row: dict[str, str], source: str) -> dict[str, Any]:
    """A source's Patient as that source writes it (its noise kept, not corrected)."""
    identifiers: list[dict[str, Any]] = [
        {"system": RECORD_SYSTEM[source], "value": row["record_id"]}
    ]
    number = row["cccd"]
    if number:
        system = CMND_SYSTEM if len(number) == 9 else CCCD_SYSTEM
        identifiers.append({"use": "official", "system": system, "value": number})
    if row["bhxh"]:
        identifiers.append({"system": BHXH_SYSTEM, "value": row["bhxh"]})
    if row["bhyt"]:
        identifiers.append({"system": BHYT_SYSTEM, "value": row["bhyt"]})
    words = row["full_name"].split()
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": row["record_id"],
        "meta": {"source": SOURCE_URI[source]},
        "identifier": identifiers,
        "name": [
            {
                "use": "official",
                "text": " ".join(words),
                **({"family": words[0], "given": words[1:]} if len(words) > 1 else {}),
            }
        ],
    }
    sex = normalize_sex(row["sex"] or None)
    if sex is not None:
        patient["gender"] = {"M": "male", "F": "female", "O": "other"}[sex]
    birth = _fhir_date(row["birth_date"])
    if birth:
        patient["birthDate"] = birth
    if row["phone"]:
        patient["telecom"] = [{"system": "phone", "value": row["phone"], "use": "mobile"}]
    address: dict[str, Any] = {}
    if row["address"]:
        address["text"] = row["address"]
    if row["province_code"]:
        address["state"] = row["province_code"]
    if row["commune_code"]:
        address["city"] = row["commune_code"]
    if address:
        patient["address"] = [{"use": "home", **address}]
    return patient


def _age_days(person: _Person | None, patient: dict[str, Any], today: date) -> tuple[date, int]:
    """Birth date and age in days on ``today``, from the person when known,
    else from what the record says, else an adult."""
    birth = person.birth if person is not None else None
    if birth is None:
        text = str(patient.get("birthDate") or "")
        try:
            birth = date.fromisoformat(text if len(text) == 10 else f"{text[:4]}-07-01")
        except ValueError:
            birth = date(1985, 7, 1)
    return birth, (today - birth).days


class _Writer:
    def __init__(self, folder: Path, names: tuple[str, ...]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = [folder / f"{i + 1}-{name}.ndjson" for i, name in enumerate(names)]
        self.files = {name: p.open("wb") for name, p in zip(names, self.paths, strict=True)}
        self.counts: Counter[str] = Counter()

    def write(self, name: str, resource: dict[str, Any]) -> None:
        self.files[name].write(orjson.dumps(resource) + b"\n")
        self.counts[resource["resourceType"]] += 1

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()


def _station(commune: Commune) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": f"tyt-{commune.code}",
        "identifier": [{"system": COMMUNE_STATION_CODE, "value": commune.code}],
        "active": True,
        "type": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                        "code": "prov",
                        "display": "Healthcare Provider",
                    }
                ]
            }
        ],
        "name": f"Trạm Y tế {commune.name}",
        "address": [{"city": commune.code, "state": commune.province_code,
                     "text": f"{commune.name}, {commune.province_name}"}],
    }  # fmt: skip


def _when(rng: Random, not_after: date, days_back: int) -> date:
    return not_after - timedelta(days=rng.randrange(max(1, days_back)))


def generate_fhir_sources(
    population: Path, out_dir: Path, seed: int = 0, today: date | None = None
) -> FhirSourcesSummary:
    """Write the immunization registry's and the commune stations' FHIR exports of the
    records of ``population`` (a ``synth population`` folder) under ``out_dir``, dated
    back from ``today`` (default: :func:`reference_day`)."""
    day = reference_day(today)
    rng = Random(seed)
    communes = {c.code: c for c in load_communes()}
    people = _people(population)
    writers = {
        "immunization": _Writer(
            out_dir / "immunization", ("organizations", "patients", "immunizations")
        ),
        "commune_station": _Writer(
            out_dir / "commune_station",
            ("organizations", "patients", "encounters", "observations"),
        ),
    }
    stations: dict[str, set[str]] = {source: set() for source in writers}
    # for a record of someone not in the register whose own code is not a commune of
    # today: the commune most of the population lives in
    living = Counter(p.commune for p in people.values() if p.commune in communes)
    fallback = living.most_common(1)[0][0] if living else sorted(communes)[0]
    try:
        with (population / "records.csv").open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                source = row["source"]
                if source not in writers:
                    continue
                out = writers[source]
                person = people.get(row["record_id"])
                # the station of the commune the person lives in; the record's own code
                # may be a pre-2025 ward code that is some other commune's code today
                code = person.commune if person is not None else row["commune_code"]
                commune = communes.get(code) or communes[fallback]
                if person is None and commune.province_code != row["province_code"]:
                    commune = communes[fallback]  # a pre-2025 code naming another place
                if commune.code not in stations[source]:
                    stations[source].add(commune.code)
                    out.write("organizations", _station(commune))
                patient = _patient(row, source)
                out.write("patients", patient)
                if source == "immunization":
                    _immunizations(rng, out, patient, person, commune, day)
                else:
                    _station_visits(rng, out, patient, person, commune, day)
    finally:
        for w in writers.values():
            w.close()
    return FhirSourcesSummary(
        resources={s: w.counts for s, w in writers.items()},
        files={s: w.paths for s, w in writers.items()},
    )


def _immunization(
    patient: dict[str, Any],
    commune: Commune,
    n: int,
    vaccine: tuple[str, str, str],
    dose: int,
    when: date,
) -> dict[str, Any]:
    cvx, display, name_vi = vaccine
    return {
        "resourceType": "Immunization",
        "id": f"{patient['id']}-{n}",
        "meta": {"source": SOURCE_URI["immunization"]},
        "status": "completed",
        "vaccineCode": {"coding": [{"system": CVX, "code": cvx, "display": display}],
                        "text": name_vi},
        "patient": {"reference": f"Patient/{patient['id']}"},
        "occurrenceDateTime": when.isoformat(),
        "primarySource": True,
        "performer": [{"actor": {"reference": f"Organization/tyt-{commune.code}"}}],
        "protocolApplied": [{"series": "Tiêm chủng mở rộng", "doseNumberPositiveInt": dose}],
    }  # fmt: skip


def _immunizations(
    rng: Random,
    out: _Writer,
    patient: dict[str, Any],
    person: _Person | None,
    commune: Commune,
    today: date,
) -> None:
    birth, age = _age_days(person, patient, today)
    n = 0
    if age < 6 * 365:
        for cvx, display, name_vi, dose, due in CHILD_SCHEDULE:
            if due > age or rng.random() < MISSED_DOSE_RATE:
                continue
            when = min(birth + timedelta(days=due + rng.randrange(0, 21)), today)
            n += 1
            out.write(
                "immunizations",
                _immunization(patient, commune, n, (cvx, display, name_vi), dose, when),
            )
        return
    sex = person.sex if person is not None else None
    if sex == "F" and 15 * 365 <= age <= 35 * 365:
        first = _when(rng, today, 3 * 365)
        for dose in (1, 2):
            n += 1
            when = first + timedelta(days=30 * (dose - 1))
            out.write(
                "immunizations",
                _immunization(patient, commune, n, TETANUS, dose, min(when, today)),
            )
    if age >= 18 * 365:
        first = date(2021, 8, 1) + timedelta(days=rng.randrange(120))
        for dose, gap in ((1, 0), (2, 56)):
            n += 1
            out.write(
                "immunizations",
                _immunization(patient, commune, n, COVID, dose, first + timedelta(days=gap)),
            )
    if age >= 50 * 365 and rng.random() < 0.5:
        n += 1
        # the latest flu season (from October) that has begun by today
        season = date(today.year - (today < date(today.year, 10, 1)), 10, 1)
        when = min(season + timedelta(days=rng.randrange(80)), today)
        out.write("immunizations", _immunization(patient, commune, n, INFLUENZA, 1, when))
    if n == 0:  # an older child: the MR catch-up campaign
        n += 1
        when = _when(rng, today, 2 * 365)
        out.write(
            "immunizations", _immunization(patient, commune, n, CHILD_SCHEDULE[12][:3], 2, when)
        )


def _quantity(value: float, unit: str, code: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def _vital(
    patient: dict[str, Any],
    encounter: dict[str, Any],
    n: int,
    loinc: tuple[str, str],
    when: str,
    commune: Commune,
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"{encounter['id']}-{n}",
        "meta": {"source": SOURCE_URI["commune_station"]},
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": loinc[0], "display": loinc[1]}]},
        "subject": {"reference": f"Patient/{patient['id']}"},
        "encounter": {"reference": f"Encounter/{encounter['id']}"},
        "effectiveDateTime": when,
        "performer": [{"reference": f"Organization/tyt-{commune.code}"}],
    }  # fmt: skip


def _station_visits(
    rng: Random,
    out: _Writer,
    patient: dict[str, Any],
    person: _Person | None,
    commune: Commune,
    today: date,
) -> None:
    _, age = _age_days(person, patient, today)
    for v in range(1 + (rng.random() < 0.4)):
        day = _when(rng, today, 365)
        start = f"{day.isoformat()}T{rng.randrange(7, 11):02d}:{rng.randrange(60):02d}:00+07:00"
        end = f"{day.isoformat()}T11:30:00+07:00"
        encounter = {
            "resourceType": "Encounter",
            "id": f"{patient['id']}-{v + 1}",
            "meta": {"source": SOURCE_URI["commune_station"]},
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB", "display": "ambulatory"},
            "type": [{"text": "Khám bệnh tại trạm y tế xã"}],
            "subject": {"reference": f"Patient/{patient['id']}"},
            "period": {"start": start, "end": end},
            "serviceProvider": {"reference": f"Organization/tyt-{commune.code}"},
        }  # fmt: skip
        out.write("encounters", encounter)
        if age >= 18 * 365:
            systolic = round(rng.gauss(118 + max(0, age // 365 - 40) * 0.6, 14))
            diastolic = round(min(systolic - 25, rng.gauss(76, 9)))
            bp = _vital(patient, encounter, 1, ("85354-9", "Blood pressure panel"), start,
                        commune)  # fmt: skip
            bp["component"] = [
                {"code": {"coding": [{"system": LOINC, "code": "8480-6",
                                      "display": "Systolic blood pressure"}]},
                 "valueQuantity": _quantity(systolic, "mmHg", "mm[Hg]")},
                {"code": {"coding": [{"system": LOINC, "code": "8462-4",
                                      "display": "Diastolic blood pressure"}]},
                 "valueQuantity": _quantity(diastolic, "mmHg", "mm[Hg]")},
            ]  # fmt: skip
            out.write("observations", bp)
        if age < 18 * 365 or rng.random() < 0.5:
            years = age / 365
            kg = 3.3 + 2.5 * min(years, 12) + (rng.gauss(0, 1.5) if years > 1 else 0)
            if years >= 18:
                kg = rng.gauss(57, 9)
            weight = _vital(patient, encounter, 2, ("29463-7", "Body weight"), start, commune)
            weight["valueQuantity"] = _quantity(round(max(kg, 2.0), 1), "kg", "kg")
            out.write("observations", weight)
