"""``CodeSystem/$lookup`` and ``ValueSet/$validate-code`` for ICD-10.

https://hl7.org/fhir/R4/codesystem-operation-lookup.html and
https://hl7.org/fhir/R4/valueset-operation-validate-code.html. Parameters come
from the URL (GET) or from a ``Parameters`` body (POST), including the
``coding`` / ``codeableConcept`` forms. The answer comes from the catalogue
(:func:`lienthong.terminology.icd10_catalogue`): the list loaded into the store
when there is one, else the Ministry's list (QĐ 4469/QĐ-BYT) shipped with the
package, or the WHO ICD-10 2019 edition when ``LIENTHONG_ICD10_FALLBACK=who``.
"""

from __future__ import annotations

from typing import Any

from lienthong.fhir.engine import FhirEngine, FhirResponse
from lienthong.fhir.errors import bad_request, error, not_found
from lienthong.terminology.catalogue import Icd10Catalogue, icd10_catalogue
from lienthong.terminology.icd10 import (
    ICD10_ALIASES,
    ICD10_ALL_CODES_VALUESET,
    ICD10_SYSTEM,
    normalize_icd10,
)

# the implicit all-codes value set of ICD-10 under its names
ICD10_VALUESETS = frozenset(
    {ICD10_ALL_CODES_VALUESET, f"{ICD10_SYSTEM}?fhir_vs", "http://hl7.org/fhir/sid/icd-10?fhir_vs"}
)
_CODING_NAMES = ("system", "code", "version", "display")


def operation_params(
    query: list[tuple[str, str]], body: Any | None, operation: str
) -> dict[str, list[Any]]:
    """The operation's input parameters by name, from the URL and a Parameters body;
    a ``coding`` or ``codeableConcept`` parameter is kept whole (a dict)."""
    params: dict[str, list[Any]] = {}
    for name, value in query:
        params.setdefault(name, []).append(value)
    if body is not None:
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise bad_request(f"{operation} takes a Parameters resource in the body", "Parameters")
        for i, p in enumerate(body.get("parameter") or []):
            if not isinstance(p, dict) or not isinstance(p.get("name"), str):
                raise bad_request("each parameter needs a name", f"Parameters.parameter[{i}].name")
            values = [v for k, v in p.items() if k.startswith("value")]
            if len(values) != 1:
                raise bad_request(
                    f"parameter {p['name']!r} needs exactly one value[x]",
                    f"Parameters.parameter[{i}]",
                )
            params.setdefault(p["name"], []).append(values[0])
    return params


def _one(params: dict[str, list[Any]], name: str, where: str) -> Any | None:
    values = params.get(name) or []
    if len(values) > 1:
        raise bad_request(f"{where}: parameter {name!r} may be given once", name)
    return values[0] if values else None


def _text(params: dict[str, list[Any]], name: str, where: str) -> str | None:
    value = _one(params, name, where)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"{where}: parameter {name!r} must be a non-empty string", name)
    return value.strip()


def _coding(params: dict[str, list[Any]], where: str) -> dict[str, str | None]:
    """system, code, version, display from the plain parameters or a ``coding``."""
    coding = _one(params, "coding", where)
    concept = _one(params, "codeableConcept", where)
    if concept is not None:
        codings = concept.get("coding") if isinstance(concept, dict) else None
        if not codings or not isinstance(codings, list):
            raise bad_request(f"{where}: codeableConcept has no coding", "codeableConcept")
        icd = [c for c in codings if isinstance(c, dict) and c.get("system") in ICD10_ALIASES]
        coding = (icd or codings)[0]
    out: dict[str, str | None] = {k: _text(params, k, where) for k in _CODING_NAMES}
    if coding is not None:
        if not isinstance(coding, dict):
            raise bad_request(f"{where}: coding must be a Coding", "coding")
        for k in _CODING_NAMES:
            if out[k] is None and isinstance(coding.get(k), str):
                out[k] = coding[k]
    return out


def _catalogue_for(engine: FhirEngine, system: str | None, where: str) -> Icd10Catalogue:
    if system is None:
        raise bad_request(f"{where}: the system parameter is required", "system")
    if system not in ICD10_ALIASES:
        raise not_found(f"{where}: no code system {system!r} is known here (only {ICD10_SYSTEM})")
    return icd10_catalogue(engine)


def lookup(
    engine: FhirEngine, query: list[tuple[str, str]], body: Any | None = None
) -> FhirResponse:
    where = "CodeSystem/$lookup"
    params = operation_params(query, body, where)
    coding = _coding(params, where)
    code = coding["code"]
    if code is None:
        raise bad_request(f"{where}: the code parameter is required", "code")
    catalogue = _catalogue_for(engine, coding["system"], where)
    lang = (_text(params, "displayLanguage", where) or "vi").lower()
    if not catalogue.exists(code):
        shape = "" if normalize_icd10(code) else " (not the shape of an ICD-10 code)"
        raise not_found(f"{where}: code {code!r} is not in {ICD10_SYSTEM}{shape}")
    display = catalogue.display(code, lang) or catalogue.display(code, "vi")
    display = display or catalogue.display(code, "en")
    out: list[dict[str, Any]] = [
        {"name": "name", "valueString": "ICD-10"},
        {"name": "display", "valueString": display or ""},
    ]
    if catalogue.version:
        out.insert(1, {"name": "version", "valueString": catalogue.version})
    for d in catalogue.designations(code):
        out.append(
            {
                "name": "designation",
                "part": [
                    {"name": "language", "valueCode": d.language},
                    {"name": "value", "valueString": d.value},
                ],
            }
        )
    canonical = normalize_icd10(code)
    out.append(
        {
            "name": "property",
            "part": [
                {"name": "code", "valueCode": "code"},
                {"name": "value", "valueCode": canonical},
            ],
        }
    )
    parent = catalogue.parent(code)
    if parent:
        out.append(
            {
                "name": "property",
                "part": [
                    {"name": "code", "valueCode": "parent"},
                    {"name": "value", "valueCode": parent},
                ],
            }
        )
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": out})


def _valueset_codes(engine: FhirEngine, url: str, where: str) -> frozenset[str] | None:
    """Which ICD-10 codes a value set admits: None for all of them; raises when the value
    set is unknown or not made of ICD-10 alone."""
    if url.split("|")[0] in ICD10_VALUESETS:
        return None
    with engine.store.reader() as session:
        matches = engine.match_conditional(session, "ValueSet", f"url={url}", where)
    if not matches or matches[0].content is None:
        raise not_found(f"{where}: no ValueSet with url {url!r} is known here")
    import orjson

    vs = orjson.loads(matches[0].content)
    includes = (vs.get("compose") or {}).get("include") or []
    if (vs.get("compose") or {}).get("exclude") or not includes:
        raise error(422, "not-supported", f"{where}: ValueSet {url!r} cannot be expanded here")
    codes: set[str] = set()
    for inc in includes:
        if inc.get("system") not in ICD10_ALIASES or inc.get("filter") or inc.get("valueSet"):
            raise error(
                422,
                "not-supported",
                f"{where}: ValueSet {url!r} includes more than ICD-10 codes; only ICD-10 is "
                f"validated here",
            )
        if not inc.get("concept"):
            return None
        codes.update(c for c in (normalize_icd10(x.get("code")) for x in inc["concept"]) if c)
    return frozenset(codes)


def _same_display(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def validate_code(
    engine: FhirEngine, query: list[tuple[str, str]], body: Any | None = None
) -> FhirResponse:
    where = "ValueSet/$validate-code"
    params = operation_params(query, body, where)
    coding = _coding(params, where)
    url = _text(params, "url", where)
    code = coding["code"]
    if code is None:
        raise bad_request(f"{where}: a code, coding or codeableConcept is required", "code")
    system = coding["system"]
    if url is None and system is None:
        raise bad_request(f"{where}: give the value set (url) or the code's system", "url")
    # every value set validated here is made of ICD-10 codes alone (else 422), so a code
    # given without its system is taken as ICD-10
    admitted = _valueset_codes(engine, url, where) if url is not None else None
    catalogue = _catalogue_for(engine, system or ICD10_SYSTEM, where)
    canonical = normalize_icd10(code)
    out: list[dict[str, Any]] = []
    if canonical is None or not catalogue.exists(code):
        result = False
        message = f"code {code!r} is not in {ICD10_SYSTEM} ({catalogue.source})"
    elif admitted is not None and canonical not in admitted:
        result = False
        message = f"code {code!r} is in {ICD10_SYSTEM} but not in the value set {url}"
    else:
        result, message = True, ""
        given = coding["display"]
        names = [d.value for d in catalogue.designations(code)]
        vi = catalogue.display(code, "vi")
        if vi:
            names.insert(0, vi)
        if given is not None and names and not any(_same_display(given, n) for n in names):
            result = False
            message = (
                f"display {given!r} is not a display of {ICD10_SYSTEM}#{canonical}; "
                f"expected {names[0]!r}"
            )
        display = names[0] if names else None
        if display:
            out.append({"name": "display", "valueString": display})
    out.insert(0, {"name": "result", "valueBoolean": result})
    if message:
        out.insert(1, {"name": "message", "valueString": message})
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": out})
