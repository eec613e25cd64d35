"""Tests of the write-time search index: text folding, the parameter registry, the
compiled extractors and the date/number range helpers.

Semantics checked against https://hl7.org/fhir/R4/search.html (string, token, date,
number, quantity, reference, uri and composite sections).
"""

from __future__ import annotations

import json
import math
import unicodedata
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lienthong.fhir.search_index import (
    CURRENCY_SYSTEM,
    DATE_MAX,
    DATE_MIN,
    IndexExtractor,
    IndexRows,
    date_range,
    number_range,
)
from lienthong.fhir.search_params import SearchParamRegistry, split_union
from lienthong.fhir.text import fold
from tests.synthea_data import SYNTHEA, load_synthea

CORE_TYPES = [
    "Patient",
    "Encounter",
    "Observation",
    "Condition",
    "Procedure",
    "Immunization",
    "MedicationRequest",
    "MedicationDispense",
    "DiagnosticReport",
    "AllergyIntolerance",
    "Organization",
    "Location",
    "Practitioner",
    "PractitionerRole",
    "Claim",
]

ROW_KINDS = (
    "string",
    "token",
    "date",
    "number",
    "quantity",
    "reference",
    "uri",
    "composite",
    "special",
)


@pytest.fixture(scope="module")
def registry() -> SearchParamRegistry:
    return SearchParamRegistry.default()


@pytest.fixture(scope="module")
def extractor(registry: SearchParamRegistry) -> IndexExtractor:
    return IndexExtractor(registry)


def rows_of(rows: IndexRows, kind: str, code: str) -> list[tuple[Any, ...]]:
    """The rows of one parameter, without the parameter code."""
    return [r[1:] for r in getattr(rows, kind) if r[0] == code]


def custom_extractor(*params: dict[str, Any]) -> IndexExtractor:
    """An extractor over hand-written SearchParameter definitions."""
    registry = SearchParamRegistry(list(params), SearchParamRegistry.default().element_types)
    return IndexExtractor(registry)


# ---------------------------------------------------------------------------------------
# text.fold
# ---------------------------------------------------------------------------------------


def test_fold_vietnamese_name() -> None:
    assert fold("Nguyễn  Văn Đức") == "nguyen van duc"


def test_fold_both_tone_mark_placements_and_forms() -> None:
    # "hoà" (old style, mark on a) and "hòa" (new style, mark on o), NFC and NFD.
    variants = [
        "hoà",
        "hòa",
        unicodedata.normalize("NFD", "hoà"),
        unicodedata.normalize("NFD", "hòa"),
    ]
    assert {fold(v) for v in variants} == {"hoa"}


@pytest.mark.parametrize(
    ("raw", "folded"),
    [
        ("ĐẶNG THỊ  NGỌC", "dang thi ngoc"),
        ("  Trần\tHưng\nĐạo  ", "tran hung dao"),
        ("Phường Bến Nghé", "phuong ben nghe"),
        ("Body Height", "body height"),
        ("Straße", "strasse"),  # casefold, not lower
        ("", ""),
    ],
)
def test_fold_examples(raw: str, folded: str) -> None:
    assert fold(raw) == folded


@given(st.text())
def test_fold_is_idempotent(s: str) -> None:
    assert fold(fold(s)) == fold(s)


# ---------------------------------------------------------------------------------------
# date_range / number_range
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2020", "2020-01-01T00:00:00.000000", "2020-12-31T23:59:59.999999"),
        ("2020-02", "2020-02-01T00:00:00.000000", "2020-02-29T23:59:59.999999"),
        ("2021-02", "2021-02-01T00:00:00.000000", "2021-02-28T23:59:59.999999"),
        ("2020-02-03", "2020-02-03T00:00:00.000000", "2020-02-03T23:59:59.999999"),
        ("2020-02-03T10:15", "2020-02-03T10:15:00.000000", "2020-02-03T10:15:59.999999"),
        ("2020-02-03T10:15:30Z", "2020-02-03T10:15:30.000000", "2020-02-03T10:15:30.999999"),
        # no time zone: taken as UTC
        ("2020-02-03T10:15:30", "2020-02-03T10:15:30.000000", "2020-02-03T10:15:30.999999"),
        ("2020-02-03T10:15:30.5Z", "2020-02-03T10:15:30.500000", "2020-02-03T10:15:30.599999"),
        ("2020-02-03T10:15:30.123Z", "2020-02-03T10:15:30.123000", "2020-02-03T10:15:30.123999"),
        # Vietnam (+07:00) crossing midnight and a year boundary
        ("2020-01-01T03:00:00+07:00", "2019-12-31T20:00:00.000000", "2019-12-31T20:00:00.999999"),
        ("2020-12-31T22:30:00-05:00", "2021-01-01T03:30:00.000000", "2021-01-01T03:30:00.999999"),
        (
            "2020-06-01T12:00:00.25+05:30",
            "2020-06-01T06:30:00.250000",
            "2020-06-01T06:30:00.259999",
        ),
        ("2020-06-01T12:00+07:00", "2020-06-01T05:00:00.000000", "2020-06-01T05:00:59.999999"),
        ("0500-03", "0500-03-01T00:00:00.000000", "0500-03-31T23:59:59.999999"),
    ],
)
def test_date_range(value: str, low: str, high: str) -> None:
    assert date_range(value) == (low, high)
    assert len(low) == len(high) == 26


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "20",
        "2020-1",
        "2020-13",
        "2020-02-30",
        "2021-02-29T00:00:00Z",
        "2020-01-01T25:00:00Z",
        "2020-01-01T10:00:00+15:00",
        "2020-01-01T10",
        "2020-01-01 10:00:00",
        "0000",
    ],
)
def test_date_range_rejects_bad_values(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid FHIR date"):
        date_range(bad)


@given(
    st.datetimes(min_value=datetime(1000, 1, 2)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_date_range_converts_offsets_to_utc(dt: datetime, offset_minutes: int) -> None:
    sign = "+" if offset_minutes >= 0 else "-"
    hh, mm = divmod(abs(offset_minutes), 60)
    text = dt.replace(microsecond=0).isoformat() + f"{sign}{hh:02d}:{mm:02d}"
    low, high = date_range(text)
    expected = dt.replace(microsecond=0) - timedelta(minutes=offset_minutes)
    if 1 < expected.year < 9999:
        assert low == expected.isoformat(timespec="microseconds")
        assert high == expected.replace(microsecond=999999).isoformat(timespec="microseconds")


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("100", 99.5, 100.5),
        ("100.00", 99.995, 100.005),
        ("1e2", 50.0, 150.0),
        ("0.1", 0.05, 0.15),
        ("-5", -5.5, -4.5),
        ("2.50e-1", 0.2495, 0.2505),
    ],
)
def test_number_range_significant_figures(text: str, low: float, high: float) -> None:
    lo, hi = number_range(text)
    assert math.isclose(lo, low) and math.isclose(hi, high)


@pytest.mark.parametrize("bad", ["", "abc", "NaN", "Infinity", "1,5", "--1"])
def test_number_range_rejects_bad_values(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid number"):
        number_range(bad)


# ---------------------------------------------------------------------------------------
# Registry and generated data
# ---------------------------------------------------------------------------------------


def test_shipped_data_is_complete() -> None:
    data = resources.files("lienthong.fhir") / "data"
    params = json.loads((data / "search_parameters.json").read_text(encoding="utf-8"))
    types = json.loads((data / "element_types.json").read_text(encoding="utf-8"))
    assert len(params) == 1375  # every entry of the R4 bundle
    obs_value = types["types"]["Observation"]["value"]
    assert obs_value[0]["valueQuantity"] == "Quantity"
    assert obs_value[0]["valueString"] == "string"
    # class and classHistory are two elements, not a choice: never guessed from prefixes
    assert types["types"]["Encounter"]["class"] == ["Coding", False]
    assert types["types"]["Encounter"]["classHistory"] == ["EncounterClassHistory", True]


def test_registry_basic_lookups(registry: SearchParamRegistry) -> None:
    family = registry.get("Patient", "family")
    assert family is not None
    assert (family.type, family.expression, family.resource_type) == (
        "string",
        "Patient.name.family",
        "Patient",
    )
    assert registry.get("Patient", "no-such-param") is None
    assert registry.get("NoSuchType", "family") is None
    assert registry.default() is registry  # cached


def test_registry_multi_base_params_are_restricted(registry: SearchParamRegistry) -> None:
    obs_patient = registry.get("Observation", "patient")
    assert obs_patient is not None
    assert obs_patient.expression == "Observation.subject.where(resolve() is Patient)"
    assert obs_patient.targets == ("Patient",)
    allergy_patient = registry.get("AllergyIntolerance", "patient")
    assert allergy_patient is not None and allergy_patient.expression == (
        "AllergyIntolerance.patient"
    )
    code = registry.get("MedicationRequest", "code")
    assert code is not None
    assert code.expression == "(MedicationRequest.medication as CodeableConcept)"


def test_registry_common_params(registry: SearchParamRegistry) -> None:
    for rt in registry.resource_types():
        params = registry.for_type(rt)
        assert params["_id"].type == "token"
        assert params["_lastUpdated"].type == "date"
        for code in ("_tag", "_profile", "_security", "_source"):
            assert code in params, (rt, code)
        for code in ("_text", "_content", "_query", "_list", "_has", "_type"):
            assert code not in params, (rt, code)
    assert set(CORE_TYPES) <= set(registry.resource_types())


def test_registry_composites(registry: SearchParamRegistry) -> None:
    p = registry.get("Observation", "code-value-quantity")
    assert p is not None
    assert p.type == "composite"
    assert p.components == (("token", "code"), ("quantity", "value.as(Quantity)"))
    combo = registry.get("Observation", "combo-code-value-quantity")
    assert combo is not None and combo.expression == "Observation | Observation.component"


def test_split_union_respects_parens_and_strings() -> None:
    expr = "(A.b as X) | A.c.where(d='x|y') | A.e"
    assert split_union(expr) == ["(A.b as X)", "A.c.where(d='x|y')", "A.e"]


@pytest.mark.parametrize("rt", CORE_TYPES)
def test_every_core_parameter_compiles(extractor: IndexExtractor, rt: str) -> None:
    failures = [(c, r) for c, r in extractor.failures(rt) if not r.startswith("type special")]
    assert failures == []


# ---------------------------------------------------------------------------------------
# Extraction: per parameter type
# ---------------------------------------------------------------------------------------

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {
        "tag": [{"system": "http://lienthong.vn/tag", "code": "import", "display": "Nhập"}],
        "security": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
        ],
        "profile": ["http://lienthong.vn/fhir/StructureDefinition/vn-patient"],
        "source": "http://benhvien.vn/his",
    },
    "identifier": [
        {
            "system": "http://lienthong.vn/cccd",
            "value": "001099012345",
            "type": {"text": "Căn cước công dân"},
        }
    ],
    "active": True,
    "name": [
        {
            "use": "official",
            "family": "Nguyễn",
            "given": ["Văn", "Đức"],
            "prefix": ["Ông"],
            "text": "Nguyễn Văn Đức",
        },
        # an exact duplicate: rows must not repeat
        {
            "use": "official",
            "family": "Nguyễn",
            "given": ["Văn", "Đức"],
            "prefix": ["Ông"],
            "text": "Nguyễn Văn Đức",
        },
    ],
    "telecom": [
        {"system": "phone", "value": "0901234567", "use": "mobile"},
        {"system": "email", "value": "duc@example.vn"},
    ],
    "gender": "male",
    "birthDate": "1980-02",
    "address": [
        {
            "line": ["12 Lê Lợi"],
            "city": "Huế",
            "district": "Phú Hội",
            "state": "Thừa Thiên Huế",
            "postalCode": "530000",
            "country": "VN",
        }
    ],
    "generalPractitioner": [
        {"reference": "Practitioner/pr1"},
        {"reference": "Practitioner/pr2/_history/3"},
        {"reference": "http://other.vn/fhir/Organization/o9/_history/1"},
        {"reference": "urn:uuid:7d1c0c6c-6d3a-4a8d-9f4a-2f1c0f0e0a01"},
        {"reference": "#contained1"},
        {"identifier": {"system": "http://lienthong.vn/bhxh", "value": "X1"}},
        {"reference": "Practitioner?identifier=http://x|1"},
    ],
}


def test_patient_strings(extractor: IndexExtractor) -> None:
    rows = extractor.extract(PATIENT)
    assert rows_of(rows, "string", "family") == [("nguyen", "Nguyễn")]
    assert rows_of(rows, "string", "given") == [("van", "Văn"), ("duc", "Đức")]
    assert set(rows_of(rows, "string", "name")) == {
        ("nguyen", "Nguyễn"),
        ("van", "Văn"),
        ("duc", "Đức"),
        ("ong", "Ông"),
        ("nguyen van duc", "Nguyễn Văn Đức"),
    }
    assert set(rows_of(rows, "string", "address")) == {
        ("12 le loi", "12 Lê Lợi"),
        ("hue", "Huế"),
        ("phu hoi", "Phú Hội"),
        ("thua thien hue", "Thừa Thiên Huế"),
        ("530000", "530000"),
        ("vn", "VN"),
    }
    assert rows_of(rows, "string", "address-city") == [("hue", "Huế")]


def test_rows_are_deduplicated(extractor: IndexExtractor) -> None:
    rows = extractor.extract(PATIENT)
    for kind in ROW_KINDS:
        values = getattr(rows, kind)
        assert len(values) == len(set(values)), kind


def test_patient_tokens(extractor: IndexExtractor) -> None:
    rows = extractor.extract(PATIENT)
    assert rows_of(rows, "token", "identifier") == [
        ("http://lienthong.vn/cccd", "001099012345", "can cuoc cong dan")
    ]
    assert rows_of(rows, "token", "gender") == [(None, "male", None)]
    assert rows_of(rows, "token", "active") == [(None, "true", None)]
    # where(system='phone') / where(system='email') filters
    assert rows_of(rows, "token", "phone") == [("phone", "0901234567", None)]
    assert rows_of(rows, "token", "email") == [("email", "duc@example.vn", None)]
    assert len(rows_of(rows, "token", "telecom")) == 2
    assert rows_of(rows, "token", "_tag") == [("http://lienthong.vn/tag", "import", "nhap")]
    assert rows_of(rows, "token", "_security") == [
        ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R", None)
    ]
    # _id and _lastUpdated live in columns, never in index rows
    assert not rows_of(rows, "token", "_id")
    assert not rows_of(rows, "date", "_lastUpdated")


def test_patient_uris_and_dates(extractor: IndexExtractor) -> None:
    rows = extractor.extract(PATIENT)
    assert rows_of(rows, "uri", "_profile") == [
        ("http://lienthong.vn/fhir/StructureDefinition/vn-patient",)
    ]
    assert rows_of(rows, "uri", "_source") == [("http://benhvien.vn/his",)]
    assert rows_of(rows, "date", "birthdate") == [
        ("1980-02-01T00:00:00.000000", "1980-02-29T23:59:59.999999")
    ]


def test_references(extractor: IndexExtractor) -> None:
    rows = extractor.extract(PATIENT)
    assert rows_of(rows, "reference", "general-practitioner") == [
        ("Practitioner", "pr1", None),
        ("Practitioner", "pr2", None),
        ("Organization", "o9", "http://other.vn/fhir/Organization/o9"),
        (None, None, "urn:uuid:7d1c0c6c-6d3a-4a8d-9f4a-2f1c0f0e0a01"),
        # '#contained1', identifier-only and conditional references give no rows
    ]


@pytest.mark.parametrize(
    ("deceased", "expected"),
    [
        ({}, "false"),
        ({"deceasedBoolean": False}, "false"),
        ({"deceasedBoolean": True}, "true"),
        ({"deceasedDateTime": "2021-07-01"}, "true"),
    ],
)
def test_patient_deceased_boolean_expression(
    extractor: IndexExtractor, deceased: dict[str, Any], expected: str
) -> None:
    rows = extractor.extract({"resourceType": "Patient", "id": "x", **deceased})
    assert rows_of(rows, "token", "deceased") == [(None, expected, None)]
    death = rows_of(rows, "date", "death-date")
    assert bool(death) == ("deceasedDateTime" in deceased)


def observation(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {
            "coding": [
                {"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel"}
            ],
            "text": "Huyết áp",
        },
        "subject": {"reference": "Patient/p1"},
        **extra,
    }


def test_codeable_concept_tokens(extractor: IndexExtractor) -> None:
    rows = extractor.extract(observation())
    assert rows_of(rows, "token", "code") == [
        ("http://loinc.org", "85354-9", "blood pressure panel"),
        (None, None, "huyet ap"),
    ]
    assert rows_of(rows, "token", "status") == [(None, "final", None)]


def test_where_resolve_filters_by_target_type(extractor: IndexExtractor) -> None:
    rows = extractor.extract(observation())
    assert rows_of(rows, "reference", "subject") == [("Patient", "p1", None)]
    assert rows_of(rows, "reference", "patient") == [("Patient", "p1", None)]
    rows = extractor.extract(observation(subject={"reference": "Group/g1"}))
    assert rows_of(rows, "reference", "subject") == [("Group", "g1", None)]
    assert rows_of(rows, "reference", "patient") == []
    # absolute URLs resolve() to their type as well
    rows = extractor.extract(
        observation(subject={"reference": "https://his.vn/fhir/Patient/p7/_history/2"})
    )
    assert rows_of(rows, "reference", "patient") == [
        ("Patient", "p7", "https://his.vn/fhir/Patient/p7")
    ]


def test_choice_value_quantity(extractor: IndexExtractor) -> None:
    q = {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
    rows = extractor.extract(observation(valueQuantity=q))
    expected = ("http://unitsofmeasure.org", "mm[Hg]", "mmhg", 120.0, 120.0)
    assert rows_of(rows, "quantity", "value-quantity") == [expected]
    assert rows_of(rows, "quantity", "combo-value-quantity") == [expected]
    assert rows_of(rows, "string", "value-string") == []
    assert rows_of(rows, "token", "value-concept") == []
    assert rows_of(rows, "date", "value-date") == []


def test_choice_value_string_and_concept(extractor: IndexExtractor) -> None:
    rows = extractor.extract(observation(valueString="Dương tính"))
    assert rows_of(rows, "string", "value-string") == [("duong tinh", "Dương tính")]
    assert rows_of(rows, "quantity", "value-quantity") == []
    concept = {
        "coding": [{"system": "http://snomed.info/sct", "code": "10828004"}],
        "text": "Dương tính",
    }
    rows = extractor.extract(observation(valueCodeableConcept=concept))
    assert rows_of(rows, "token", "value-concept") == [
        ("http://snomed.info/sct", "10828004", None),
        (None, None, "duong tinh"),
    ]
    # (Observation.value as CodeableConcept).text is a string parameter branch
    assert rows_of(rows, "string", "value-string") == [("duong tinh", "Dương tính")]


def test_choice_value_date_and_effective_variants(extractor: IndexExtractor) -> None:
    rows = extractor.extract(
        observation(
            valuePeriod={"start": "2021-03-01"},
            effectivePeriod={"start": "2021-03-01T08:00:00+07:00", "end": "2021-03-02"},
        )
    )
    assert rows_of(rows, "date", "value-date") == [("2021-03-01T00:00:00.000000", DATE_MAX)]
    assert rows_of(rows, "date", "date") == [
        ("2021-03-01T01:00:00.000000", "2021-03-02T23:59:59.999999")
    ]
    rows = extractor.extract(observation(effectiveInstant="2021-03-01T08:00:00.123Z"))
    assert rows_of(rows, "date", "date") == [
        ("2021-03-01T08:00:00.123000", "2021-03-01T08:00:00.123999")
    ]
    rows = extractor.extract(observation(effectivePeriod={"end": "2021"}))
    assert rows_of(rows, "date", "date") == [(DATE_MIN, "2021-12-31T23:59:59.999999")]


def test_timing_events_and_bounds(extractor: IndexExtractor) -> None:
    care_plan = {
        "resourceType": "CarePlan",
        "id": "cp",
        "activity": [
            {
                "detail": {
                    "status": "scheduled",
                    "scheduledTiming": {
                        "event": ["2021-05-01T09:00:00+07:00", "2021-05-08"],
                        "repeat": {"boundsPeriod": {"start": "2021-05", "end": "2021-06"}},
                    },
                }
            },
            {"detail": {"status": "scheduled", "scheduledString": "sáng thứ hai"}},
        ],
    }
    rows = extractor.extract(care_plan)
    assert rows_of(rows, "date", "activity-date") == [
        ("2021-05-01T02:00:00.000000", "2021-05-01T02:00:00.999999"),
        ("2021-05-08T00:00:00.000000", "2021-05-08T23:59:59.999999"),
        ("2021-05-01T00:00:00.000000", "2021-06-30T23:59:59.999999"),
    ]


def test_condition_onset_choices(extractor: IndexExtractor) -> None:
    base = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}
    age = {"value": 5, "unit": "tuổi", "system": "http://unitsofmeasure.org", "code": "a"}
    rows = extractor.extract({**base, "onsetAge": age})
    assert rows_of(rows, "quantity", "onset-age") == [
        ("http://unitsofmeasure.org", "a", "tuoi", 5.0, 5.0)
    ]
    assert rows_of(rows, "date", "onset-date") == []
    rng = {"low": {"value": 2, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}}
    rows = extractor.extract({**base, "onsetRange": rng})
    assert rows_of(rows, "quantity", "onset-age") == [
        ("http://unitsofmeasure.org", "a", "a", 2.0, math.inf)
    ]
    rows = extractor.extract({**base, "onsetString": "Từ nhỏ"})
    assert rows_of(rows, "string", "onset-info") == [("tu nho", "Từ nhỏ")]
    assert rows_of(rows, "quantity", "onset-age") == []
    rows = extractor.extract({**base, "onsetDateTime": "2019-10"})
    assert rows_of(rows, "date", "onset-date") == [
        ("2019-10-01T00:00:00.000000", "2019-10-31T23:59:59.999999")
    ]


def test_encounter_class_is_not_class_history(extractor: IndexExtractor) -> None:
    enc = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "classHistory": [
            {
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "EMER",
                },
                "period": {"start": "2020-01-01"},
            }
        ],
        "subject": {"reference": "Patient/p1"},
        "participant": [
            {"individual": {"reference": "Practitioner/pr1"}},
            {"individual": {"reference": "RelatedPerson/rp1"}},
        ],
    }
    rows = extractor.extract(enc)
    assert rows_of(rows, "token", "class") == [
        ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB", None)
    ]
    assert rows_of(rows, "reference", "practitioner") == [("Practitioner", "pr1", None)]
    assert set(rows_of(rows, "reference", "participant")) == {
        ("Practitioner", "pr1", None),
        ("RelatedPerson", "rp1", None),
    }


def test_medication_choice_as_reference_or_concept(extractor: IndexExtractor) -> None:
    base = {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order"}
    rows = extractor.extract({**base, "medicationReference": {"reference": "Medication/med1"}})
    assert rows_of(rows, "reference", "medication") == [("Medication", "med1", None)]
    assert rows_of(rows, "token", "code") == []
    concept = {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1049221"}]
    }
    rows = extractor.extract({**base, "medicationCodeableConcept": concept})
    assert rows_of(rows, "token", "code") == [
        ("http://www.nlm.nih.gov/research/umls/rxnorm", "1049221", None)
    ]
    assert rows_of(rows, "reference", "medication") == []


def test_money_and_number_ranges(extractor: IndexExtractor) -> None:
    invoice = {
        "resourceType": "Invoice",
        "id": "i1",
        "status": "issued",
        "totalGross": {"value": 150000, "currency": "VND"},
    }
    rows = extractor.extract(invoice)
    assert rows_of(rows, "quantity", "totalgross") == [
        (CURRENCY_SYSTEM, "VND", None, 150000.0, 150000.0)
    ]
    risk = {
        "resourceType": "RiskAssessment",
        "id": "r1",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "prediction": [
            {"probabilityDecimal": 0.25},
            {"probabilityRange": {"low": {"value": 0.1}, "high": {"value": 0.3}}},
            {"probabilityRange": {"high": {"value": 0.5}}},
        ],
    }
    rows = extractor.extract(risk)
    assert rows_of(rows, "number", "probability") == [
        (0.25, 0.25),
        (0.1, 0.3),
        (-math.inf, 0.5),
    ]


def test_observation_composites(extractor: IndexExtractor) -> None:
    ucum = "http://unitsofmeasure.org"
    obs = observation(
        valueQuantity={"value": 1, "unit": "panel", "system": ucum, "code": "1"},
        component=[
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 120, "unit": "mmHg", "system": ucum, "code": "mm[Hg]"},
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": {"value": 80, "unit": "mmHg", "system": ucum, "code": "mm[Hg]"},
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "9999-9"}]},
                "valueString": "không đo được",
            },
        ],
    )
    rows = extractor.extract(obs)
    loinc = "http://loinc.org"
    sys_bp = (ucum, "mm[Hg]", "mmhg")
    assert rows_of(rows, "composite", "component-code-value-quantity") == [
        (loinc, "8480-6", *sys_bp, 120.0, 120.0, None, None),
        (loinc, "8462-4", *sys_bp, 80.0, 80.0, None, None),
    ]
    assert rows_of(rows, "composite", "code-value-quantity") == [
        (loinc, "85354-9", ucum, "1", "panel", 1.0, 1.0, None, None)
    ]
    # combo = the Observation itself and each component
    assert len(rows_of(rows, "composite", "combo-code-value-quantity")) == 3
    assert rows_of(rows, "composite", "code-value-string") == []
    # the component code without a quantity still is a component-code token
    assert (loinc, "9999-9", None) in rows_of(rows, "token", "component-code")


def test_composite_cross_product_and_string_component(extractor: IndexExtractor) -> None:
    obs = observation(valueString="Âm tính")
    obs["code"]["coding"].append({"system": "http://lienthong.vn/xn", "code": "XN01"})
    rows = extractor.extract(obs)
    assert rows_of(rows, "composite", "code-value-string") == [
        ("http://loinc.org", "85354-9", None, None, "am tinh", None, None, None, None),
        ("http://lienthong.vn/xn", "XN01", None, None, "am tinh", None, None, None, None),
    ]
    rows = extractor.extract(observation(valueDateTime="2021-01-01"))
    assert rows_of(rows, "composite", "code-value-date") == [
        (
            "http://loinc.org",
            "85354-9",
            None,
            None,
            None,
            None,
            None,
            "2021-01-01T00:00:00.000000",
            "2021-01-01T23:59:59.999999",
        )
    ]


def test_bundle_first_entry(extractor: IndexExtractor) -> None:
    bundle = {
        "resourceType": "Bundle",
        "id": "b1",
        "type": "document",
        "entry": [
            {"resource": {"resourceType": "Composition", "id": "comp1"}},
            {"resource": {"resourceType": "Patient", "id": "p1"}},
        ],
    }
    rows = extractor.extract(bundle)
    assert rows_of(rows, "reference", "composition") == [("Composition", "comp1", None)]
    assert rows_of(rows, "reference", "message") == []  # Composition is not a MessageHeader


def test_unknown_or_missing_resource_type(extractor: IndexExtractor) -> None:
    with pytest.raises(ValueError, match="unknown resourceType"):
        extractor.extract({"resourceType": "NoSuchThing", "id": "x"})
    with pytest.raises(ValueError, match="unknown resourceType"):
        extractor.extract({"id": "x"})


def test_malformed_date_raises(extractor: IndexExtractor) -> None:
    with pytest.raises(ValueError, match="invalid FHIR date"):
        extractor.extract({"resourceType": "Patient", "id": "x", "birthDate": "01/02/1980"})


def test_malformed_structure_does_not_crash(extractor: IndexExtractor) -> None:
    # Not valid FHIR, but extraction must not blow up on unexpected JSON shapes.
    weird = {
        "resourceType": "Patient",
        "id": "x",
        "name": "Nguyen",
        "telecom": [None, 5, {"system": "phone"}],
        "identifier": {"system": "s", "value": "v"},
    }
    rows = extractor.extract(weird)
    assert rows_of(rows, "token", "identifier") == [("s", "v", None)]
    assert rows_of(rows, "string", "name") == []


# ---------------------------------------------------------------------------------------
# FHIRPath forms used by custom (e.g. Vietnamese profile) parameters
# ---------------------------------------------------------------------------------------

ETHNIC_URL = "http://lienthong.vn/fhir/StructureDefinition/ethnicity"


def test_extension_function_and_where_url() -> None:
    ex = custom_extractor(
        {
            "code": "ethnicity",
            "base": ["Patient"],
            "type": "token",
            "expression": f"Patient.extension('{ETHNIC_URL}').value.as(Coding)",
        },
        {
            "code": "ethnicity2",
            "base": ["Patient"],
            "type": "token",
            "expression": f"Patient.extension.where(url = '{ETHNIC_URL}').value.ofType(Coding)",
        },
    )
    patient = {
        "resourceType": "Patient",
        "id": "p",
        "extension": [
            {
                "url": ETHNIC_URL,
                "valueCoding": {
                    "system": "http://lienthong.vn/dt",
                    "code": "01",
                    "display": "Kinh",
                },
            },
            {"url": "http://other", "valueCoding": {"system": "x", "code": "no"}},
        ],
    }
    rows = ex.extract(patient)
    assert rows_of(rows, "token", "ethnicity") == [("http://lienthong.vn/dt", "01", "kinh")]
    assert rows_of(rows, "token", "ethnicity2") == [("http://lienthong.vn/dt", "01", "kinh")]


def test_where_with_and_or_not_exists_is_first_and_indexer() -> None:
    ex = custom_extractor(
        {
            "code": "mobile",
            "base": ["Patient"],
            "type": "token",
            "expression": "Patient.telecom.where(system='phone' and use='mobile')",
        },
        {
            "code": "main-name",
            "base": ["Patient"],
            "type": "string",
            "expression": "Patient.name.where(use='official' or use='usual').family",
        },
        {
            "code": "givenless",
            "base": ["Patient"],
            "type": "string",
            "expression": "Patient.name.where(given.exists().not()).text",
        },
        {
            "code": "first-given",
            "base": ["Patient"],
            "type": "string",
            "expression": "Patient.name[0].given.first()",
        },
        {
            "code": "quantity-value",
            "base": ["Observation"],
            "type": "quantity",
            "expression": "Observation.value.where($this is Quantity)",
        },
    )
    patient = {
        "resourceType": "Patient",
        "id": "p",
        "telecom": [
            {"system": "phone", "value": "1", "use": "home"},
            {"system": "phone", "value": "2", "use": "mobile"},
        ],
        "name": [
            {"use": "official", "family": "Lê", "given": ["Thị", "Hoa"]},
            {"use": "nickname", "family": "Bé"},
            {"use": "usual", "text": "Cô Hoa"},
        ],
    }
    rows = ex.extract(patient)
    assert rows_of(rows, "token", "mobile") == [("phone", "2", None)]
    assert rows_of(rows, "string", "main-name") == [("le", "Lê")]
    assert rows_of(rows, "string", "givenless") == [("co hoa", "Cô Hoa")]
    assert rows_of(rows, "string", "first-given") == [("thi", "Thị")]
    rows = ex.extract(
        {
            "resourceType": "Observation",
            "id": "o",
            "status": "final",
            "code": {},
            "valueQuantity": {"value": 3},
        }
    )
    assert rows_of(rows, "quantity", "quantity-value") == [(None, None, None, 3.0, 3.0)]


def test_uncompilable_expression_is_reported_not_raised() -> None:
    ex = custom_extractor(
        {
            "code": "bad",
            "base": ["Patient"],
            "type": "string",
            "expression": "Patient.noSuchElement",
        },
        {
            "code": "bad2",
            "base": ["Patient"],
            "type": "string",
            "expression": "Patient.name.lower(",
        },
        {
            "code": "family",
            "base": ["Patient"],
            "type": "string",
            "expression": "Patient.name.family",
        },
    )
    failures = dict(ex.failures("Patient"))
    assert set(failures) == {"bad", "bad2"}
    assert "noSuchElement" in failures["bad"]
    rows = ex.extract({"resourceType": "Patient", "id": "p", "name": [{"family": "Phạm"}]})
    assert rows_of(rows, "string", "family") == [("pham", "Phạm")]


# ---------------------------------------------------------------------------------------
# Synthea: every resource of the shared test bundles
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_synthea_bundles_extract_cleanly(registry: SearchParamRegistry) -> None:
    if not SYNTHEA.is_dir() or not any(SYNTHEA.glob("*.json.bz2")):
        pytest.skip(f"{SYNTHEA} is absent: the shared test data sits beside the checkout")
    extractor = IndexExtractor(registry)
    resources_ = load_synthea(SYNTHEA)
    assert len(resources_) > 1000
    counts: dict[str, int] = {}
    for res in resources_:
        rt = res["resourceType"]
        rows = extractor.extract(res)
        counts[rt] = counts.get(rt, 0) + rows.count()
        for kind in ROW_KINDS:
            for row in getattr(rows, kind):
                param = registry.get(rt, row[0])
                assert param is not None and param.type == kind, (rt, row)
        for _, d_low, d_high in rows.date:
            assert len(d_low) == len(d_high) == 26 and d_low <= d_high, (rt, res["id"])
        for _, n_low, n_high in rows.number:
            assert n_low <= n_high
        for _, _s, _c, _u, q_low, q_high in rows.quantity:
            assert q_low is not None and q_high is not None and q_low <= q_high
        if rt == "Observation":
            assert rows_of(rows, "token", "code"), res["id"]
            assert rows_of(rows, "reference", "subject"), res["id"]
            assert [r[0] for r in rows_of(rows, "reference", "patient")] == ["Patient"]
            assert rows_of(rows, "date", "date"), res["id"]
        elif rt == "Patient":
            assert rows_of(rows, "string", "family") and rows_of(rows, "date", "birthdate")
            assert rows_of(rows, "token", "deceased")
        elif rt == "Encounter":
            assert rows_of(rows, "date", "date") and rows_of(rows, "reference", "patient")
        elif rt == "Claim":
            assert rows_of(rows, "reference", "patient")
    print({rt: n for rt, n in sorted(counts.items())})
    assert set(counts) >= {"Patient", "Observation", "Encounter", "Condition", "Claim"}
