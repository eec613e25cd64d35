"""The write-path validator against the FHIR R4 (4.0.1) definitions
(``lienthong.fhir.structure``): what it refuses that the former ``fhir.resources`` check
let through, what it must keep accepting, and its agreement with that check on the
Synthea resources and on mutated resources, every disagreement explained
(``tests.r4_mutations``)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings

from lienthong.fhir import structure as r4
from lienthong.fhir.errors import FhirError
from lienthong.fhir.validate import is_resource_type, validate_resource
from tests.conftest import need_shared
from tests.factories import observation, patient
from tests.r4_mutations import LAXER, STRICTER, Mutation, Tally, mutated, new_issues, sample
from tests.r4b_reference import reference_errors
from tests.synthea_data import SYNTHEA, load_synthea

FHIR = {"Content-Type": "application/fhir+json"}
XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'


def _narrative(div: str) -> dict[str, Any]:
    return {"status": "generated", "div": div}


# each: (resource, the element path of the first issue, words of its diagnostics)
STRICT: list[tuple[str, dict[str, Any], str, str]] = [
    ("boolean as string", patient(active="yes"), "Patient.active", "JSON true or false"),
    (
        "choice boolean as string",
        patient(deceasedBoolean="no"),
        "Patient.deceasedBoolean",
        "JSON true or false",
    ),
    (
        "contained without resourceType",
        patient(contained=[{"id": "o1"}]),
        "Patient.contained[0]",
        "resourceType",
    ),
    (
        "NUL in a name",
        patient(family="Nguy\x00n"),
        "Patient.name[0].family",
        "control characters",
    ),
    (
        "script in the narrative",
        patient(text=_narrative(f"<div {XHTML}><p>x</p><script>alert(1)</script></div>")),
        "Patient.text.div",
        "script",
    ),
    (
        "event attribute in the narrative",
        patient(text=_narrative(f'<div {XHTML}><p onclick="steal()">x</p></div>')),
        "Patient.text.div",
        "onclick",
    ),
    (
        "javascript link in the narrative",
        patient(text=_narrative(f'<div {XHTML}><a href="javascript:x()">x</a></div>')),
        "Patient.text.div",
        "link",
    ),
    (
        "narrative outside the XHTML namespace",
        patient(text=_narrative("<div><p>x</p></div>")),
        "Patient.text.div",
        "XHTML namespace",
    ),
    (
        "form in the narrative",
        patient(text=_narrative(f'<div {XHTML}><form action="x">x</form></div>')),
        "Patient.text.div",
        "form",
    ),
    (
        "entity declaration in the narrative",
        patient(
            text=_narrative(f'<!DOCTYPE div [<!ENTITY e "x">]><div {XHTML}>&e;</div>'),
        ),
        "Patient.text.div",
        "DOCTYPE",
    ),
    (
        "two types of a choice",
        patient(deceasedBoolean=True, deceasedDateTime="2020-01-01"),
        "Patient.deceased",
        "one type only",
    ),
    (
        "integer outside 32 bits",
        patient(multipleBirthInteger=2**31),
        "Patient.multipleBirthInteger",
        "range",
    ),
    (
        "integer as decimal",
        patient(multipleBirthInteger=2.0),
        "Patient.multipleBirthInteger",
        "JSON integer",
    ),
    ("date that does not exist", patient(birth="2023-02-30"), "Patient.birthDate", "calendar"),
    ("empty array", patient(address=[]), "Patient.address", "ele-1"),
    ("empty object", patient(maritalStatus={}), "Patient.maritalStatus", "ele-1"),
    ("empty string", patient(family=""), "Patient.name[0].family", "ele-1"),
    ("null element", patient(address=None), "Patient.address", "ele-1"),
    (
        "abstract contained type",
        patient(contained=[{"resourceType": "DomainResource", "id": "a"}]),
        "Patient.contained[0].resourceType",
        "abstract",
    ),
    (
        "R4B-only resource contained",
        patient(contained=[{"resourceType": "SubscriptionStatus", "id": "a"}]),
        "Patient.contained[0].resourceType",
        "unknown",
    ),
    (
        "invalid contained resource",
        patient(contained=[{"resourceType": "Organization", "active": "yes"}]),
        "Patient.contained[0].active",
        "JSON true or false",
    ),
    (
        "_name array not aligned",
        patient(given=["Văn", "An"], _given=[{"id": "g1"}]),
        "Patient.name[0].given",
        "as many entries",
    ),
    (
        "base64Binary that is not base64",
        patient(photo=[{"contentType": "image/png", "data": "é"}]),
        "Patient.photo[0].data",
        "base64",
    ),
    (
        "base64Binary of whitespace",
        patient(photo=[{"contentType": "image/png", "data": " \n "}]),
        "Patient.photo[0].data",
        "base64",
    ),
    (
        "array for a single element",
        patient(gender=["male"]),
        "Patient.gender",
        "single value",
    ),
    (
        "single value for a repeating element",
        patient(name={"family": "Lê"}),
        "Patient.name",
        "JSON array",
    ),
    (
        "number for a decimal given as string",
        observation("Patient/p", valueQuantity={"value": "72"}),
        "Observation.valueQuantity.value",
        "JSON number",
    ),
]


def _fix_name_cases() -> None:
    """patient(family=..., given=...) put those in name[0]; move the _given case there."""
    for _, resource, _, _ in STRICT:
        if "_given" in resource:
            resource["name"][0]["_given"] = resource.pop("_given")


_fix_name_cases()


@pytest.mark.parametrize(("what", "resource", "where", "says"), STRICT, ids=[c[0] for c in STRICT])
def test_strict_cases_are_refused_naming_the_element(
    what: str, resource: dict[str, Any], where: str, says: str
) -> None:
    with pytest.raises(FhirError) as caught:
        validate_resource(copy.deepcopy(resource))
    err = caught.value
    assert err.status == 422, what
    assert err.issues[0].expression == (where,), err.issues
    assert says in err.issues[0].diagnostics, err.issues[0].diagnostics


MEASURED_LAX = ["boolean as string", "choice boolean as string", "contained without resourceType"]


def test_the_former_check_let_the_measured_cases_through() -> None:
    """What the new validator refuses and the models accepted (the reason for it)."""
    by_name = {c[0]: c[1] for c in STRICT}
    for name in [
        *MEASURED_LAX,
        "script in the narrative",
        "empty array",
        "base64Binary that is not base64",
    ]:
        assert reference_errors(copy.deepcopy(by_name[name])) == [], name


def test_strict_cases_over_http_are_422_with_the_path(client: TestClient) -> None:
    by_name = {c[0]: (c[1], c[2]) for c in STRICT}
    for name in [*MEASURED_LAX, "NUL in a name", "script in the narrative"]:
        resource, where = by_name[name]
        r = client.post("/fhir/Patient", json=resource, headers=FHIR)
        assert r.status_code == 422, (name, r.text)
        outcome = r.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["expression"] == [where]
    assert client.get("/fhir/Patient").json()["total"] == 0


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("empty resource", {"resourceType": "Patient"}),
    (
        "primitive with only an extension",
        {
            "resourceType": "Patient",
            "_birthDate": {"extension": [{"url": "http://x", "valueCode": "unknown"}]},
        },
    ),
    (
        "aligned _name array with nulls",
        patient(given=["Văn", None], _given=[None, {"id": "g2"}]),
    ),
    ("no-break space in a name", patient(family="Nguyễn\u00a0Thị")),
    ("tab and newline", observation("Patient/p", valueString="a\tb\nc", valueQuantity=None)),
    (
        "narrative with basic formatting",
        patient(
            text=_narrative(
                f'<div {XHTML}><p>Họ tên: <b>Lê</b></p><table><tr><td style="x">1</td></tr>'
                '</table><a href="https://example.org">x</a><img src="#a" alt="a"/></div>'
            )
        ),
    ),
    (
        "resources in a bundle and in parameters",
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"resource": patient()},
                {
                    "resource": {
                        "resourceType": "Parameters",
                        "parameter": [{"name": "p", "resource": patient(gender="female")}],
                    }
                },
            ],
        },
    ),
    (
        "contained resource",
        patient(
            contained=[{"resourceType": "Organization", "id": "o1", "name": "Bạch Mai"}],
            managingOrganization={"reference": "#o1"},
        ),
    ),
    (
        "XHTML named entity in the narrative",
        patient(text=_narrative(f"<div {XHTML}>Lê&nbsp;Văn</div>")),
    ),
    ("largest integer", patient(multipleBirthInteger=2**31 - 1)),
    ("leap day", patient(birth="2024-02-29")),
    ("decimal with exponent", observation("Patient/p", valueQuantity={"value": 1.5e3})),
]
for _, resource in ACCEPTED:
    if "_given" in resource:
        resource["name"][0]["_given"] = resource.pop("_given")


@pytest.mark.parametrize(("what", "resource"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_valid_resources_are_accepted(what: str, resource: dict[str, Any]) -> None:
    assert validate_resource(copy.deepcopy(resource)) == resource["resourceType"], what


def test_resource_types_are_the_concrete_r4_ones() -> None:
    assert is_resource_type("Patient") and is_resource_type("EffectEvidenceSynthesis")
    for name in ("Resource", "DomainResource", "SubscriptionStatus", "HumanName", "patient"):
        assert not is_resource_type(name), name
    with pytest.raises(FhirError) as caught:
        validate_resource({"resourceType": "DomainResource"})
    assert caught.value.status == 400
    assert len(r4.resource_types()) == 146


def test_r4_only_resource_type_is_validated() -> None:
    """R4 types without an R4B model (removed in R4B) now have a check."""
    ref = {"reference": "EvidenceVariable/v"}
    good = {
        "resourceType": "EffectEvidenceSynthesis",
        "status": "draft",
        **{k: ref for k in ("population", "exposure", "exposureAlternative", "outcome")},
    }
    assert validate_resource(good) == "EffectEvidenceSynthesis"
    with pytest.raises(FhirError) as caught:
        validate_resource({**good, "status": "nope"})
    assert caught.value.issues[0].expression == ("EffectEvidenceSynthesis.status",)


def test_all_issues_are_reported_with_their_paths() -> None:
    bad = patient(active="yes", gender="nam", hoTen="x")
    bad["name"][0]["family"] = 1
    with pytest.raises(FhirError) as caught:
        validate_resource(bad)
    paths = [i.expression[0] for i in caught.value.issues]
    # structure first; codes of required bindings are checked once the structure is sound
    assert paths == ["Patient.name[0].family", "Patient.active", "Patient.hoTen"]


# --- equivalence with the former check ------------------------------------------------


def test_synthea_sample_accepted_by_both() -> None:
    need_shared(SYNTHEA)
    for res in sample(20, 6):
        assert reference_errors(res) == [], res["id"]
        assert new_issues(res) == [], res["id"]


@pytest.mark.slow
def test_every_synthea_resource_accepted_by_both() -> None:
    resources = load_synthea(need_shared(SYNTHEA))
    assert len(resources) > 40_000
    for res in resources:
        assert new_issues(res) == [], (res["resourceType"], res["id"])
        assert reference_errors(res) == [], (res["resourceType"], res["id"])


CI_EXAMPLES = 2_500


def test_mutated_resources_agree_or_disagree_for_a_listed_reason() -> None:
    need_shared(SYNTHEA)
    bases = sample(4, 4)
    tally = Tally()

    @settings(
        max_examples=CI_EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(mutated(bases))
    def run(case: tuple[dict[str, Any], Mutation]) -> None:
        tally.add(*case)

    run()
    assert not tally.unexplained, "\n".join(tally.unexplained[:20])
    assert sum(tally.counts.values()) >= CI_EXAMPLES
    # the mutations do reach both verdicts, and most refusals are shared
    assert tally.counts["agree-refuse"] > tally.counts["agree-accept"] > 0


def test_every_disagreement_class_is_explained() -> None:
    names = [d.name for d in STRICTER + LAXER]
    assert len(names) == len(set(names))
    assert all(len(d.explanation) > 40 for d in STRICTER + LAXER)


def test_r4_only_resource_type_over_http(client: TestClient) -> None:
    """A type R4 has and R4B dropped goes through create, read and search by _id; its
    other search parameters wait for element types of R4 (the index still takes them
    from the R4B models), and the CapabilityStatement lists only what it answers."""
    ref = {"reference": "EvidenceVariable/v"}
    body = {
        "resourceType": "RiskEvidenceSynthesis",
        "status": "active",
        "name": "ketqua",
        "population": ref,
        "outcome": ref,
    }
    r = client.post("/fhir/RiskEvidenceSynthesis", json=body, headers=FHIR)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert client.get(f"/fhir/RiskEvidenceSynthesis/{rid}").json()["name"] == "ketqua"
    found = client.get("/fhir/RiskEvidenceSynthesis", params={"_id": rid}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [rid]
    rest = client.get("/fhir/metadata").json()["rest"][0]
    listed = {r["type"]: {p["name"] for p in r["searchParam"]} for r in rest["resource"]}
    assert "_id" in listed["RiskEvidenceSynthesis"]
    assert "status" not in listed["RiskEvidenceSynthesis"]
    r = client.post("/fhir/RiskEvidenceSynthesis", json={**body, "status": "yes"}, headers=FHIR)
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == ["RiskEvidenceSynthesis.status"]
