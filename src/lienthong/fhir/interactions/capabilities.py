"""``GET /metadata``: the CapabilityStatement (https://hl7.org/fhir/R4/capabilitystatement.html).

Built from the same registry the search index is built from, so it lists
exactly the parameters the server answers.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from lienthong import __version__
from lienthong.fhir.search_index import IndexExtractor
from lienthong.fhir.search_params import SearchParamRegistry
from lienthong.fhir.validate import is_resource_type

TYPE_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]
SUPPORTED_PARAM_TYPES = {
    "string",
    "token",
    "date",
    "reference",
    "number",
    "quantity",
    "uri",
    "composite",
}

#: Parameters of type special that are answered (location.html#positional).
SUPPORTED_SPECIAL = {("Location", "near")}
#: The parameters every type shares, which a system-level search takes.
SYSTEM_SEARCH_PARAMS = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source")

_HL7_OPS = "http://hl7.org/fhir/OperationDefinition/"
OPERATIONS: dict[str, list[tuple[str, str]]] = {
    "Patient": [
        ("everything", _HL7_OPS + "Patient-everything"),
        ("match", _HL7_OPS + "Patient-match"),
        ("merge", _HL7_OPS + "Patient-merge"),
        # R4 defines no unmerge; this one is the platform's own
        ("unmerge", "http://fhir.lienthong.vn/OperationDefinition/Patient-unmerge"),
    ],
    "CodeSystem": [("lookup", _HL7_OPS + "CodeSystem-lookup")],
    "ValueSet": [("validate-code", _HL7_OPS + "ValueSet-validate-code")],
}
"""Operations per resource type, as the CapabilityStatement lists them."""

OPERATION_DOCS: dict[tuple[str, str], str] = {
    ("Patient", "everything"): (
        "GET or POST (Parameters). Parameters: start and end (care dates of the record, "
        "not record dates; resources without a care date are kept), _since "
        "(meta.lastUpdated), _type (comma-separated), _count with _offset (paged; the "
        "links carry every parameter). On a master person record it spans the source "
        "records."
    ),
}
SYSTEM_OPERATIONS = [("versions", _HL7_OPS + "CapabilityStatement-versions")]
TYPE_DOCS = {
    "Binary": (
        "read and vread return the raw content under Binary.contentType unless "
        "application/fhir+json or _format is asked for; create and update accept the raw "
        "content under any non-FHIR Content-Type (X-Security-Context sets securityContext)."
    ),
}


@lru_cache(maxsize=4)
def capability_statement(
    base_url: str,
    registry: SearchParamRegistry,
    extractor: IndexExtractor,
    token_endpoint: str | None = None,
) -> dict[str, Any]:
    resources = []
    common: dict[str, str] = {}
    for code in SYSTEM_SEARCH_PARAMS:
        # a common parameter only if every type answers it
        defs = [registry.get(t, code) for t in registry.resource_types() if is_resource_type(t)]
        unanswered = any(
            code in {c for c, _ in extractor.failures(t)}
            for t in registry.resource_types()
            if is_resource_type(t)
        )
        if all(d is not None for d in defs) and defs and not unanswered:
            first = defs[0]
            assert first is not None
            common[code] = "token" if code == "_id" else first.type
    for rtype in registry.resource_types():
        if not is_resource_type(rtype):
            continue
        unindexed = {code for code, _ in extractor.failures(rtype)}
        params = {c: sp for c, sp in registry.for_type(rtype).items() if c not in unindexed}
        search_params = [
            {
                "name": code,
                "definition": f"http://hl7.org/fhir/SearchParameter/{_definition_id(rtype, code)}",
                "type": sp.type,
            }
            for code, sp in sorted(params.items())
            if sp.type in SUPPORTED_PARAM_TYPES
            or code in ("_id", "_lastUpdated")
            or (rtype, code) in SUPPORTED_SPECIAL
        ]
        if rtype == "AuditEvent":
            resources.append(_audit_entry(search_params))
            continue
        ref_params = sorted(c for c, sp in params.items() if sp.type == "reference")
        entry: dict[str, Any] = {
            "type": rtype,
            "interaction": [{"code": c} for c in TYPE_INTERACTIONS],
            "versioning": "versioned",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "searchInclude": ["*"] + [f"{rtype}:{c}" for c in ref_params],
            "searchRevInclude": ["*"],
            "searchParam": search_params,
        }
        if rtype in TYPE_DOCS:
            entry["documentation"] = TYPE_DOCS[rtype]
        if rtype in OPERATIONS:
            entry["operation"] = [
                _operation(name, definition, OPERATION_DOCS.get((rtype, name)))
                for name, definition in OPERATIONS[rtype]
            ]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "publisher": "lienthong",
        "kind": "instance",
        "software": {"name": "lienthong", "version": __version__},
        "implementation": {"description": "lienthong FHIR R4 server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "String search is case- and accent-insensitive (Vietnamese diacritics fold, "
                    "đ matches d). Modifiers: string :exact :contains :missing; token :not "
                    ":text :missing; uri :below :above; reference :[type] :missing :mdm (a "
                    "Patient reference stands for its person: the master Patient and every "
                    "source Patient it links); one level of chaining and of _has. A Patient "
                    "search by identifier also finds the person (master) of the records it "
                    "finds. Result parameters: _count _offset _sort "
                    "_include _revinclude _summary _elements _total. A canonical's url "
                    "takes url|version (and :below on the version). Location?near= takes "
                    "latitude|longitude|distance|units (km, m, [mi_i]; km by default, 10 km "
                    "without a distance), nearest first. An OR list may hold thousands of "
                    "values. Unknown "
                    "parameters and modifiers are ignored with a warning (an OperationOutcome "
                    "entry) unless Prefer: handling=strict. System-level search takes the "
                    "parameters common to the types searched (_type); compartment search "
                    "follows the R4 Patient CompartmentDefinition. Paging of type searches "
                    "and histories is stable: "
                    "a search or history of more than one page keeps a snapshot of its "
                    "matches (their versions as matched), and its page links "
                    "(_snapshot=...&_offset=...) answer from it, on any server process, "
                    "until it expires (then 410 Gone); links come in the Link header too."
                ),
                "security": _security(token_endpoint),
                "resource": resources,
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
                    {"code": "search-system"},
                ],
                "compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"],
                "searchParam": [
                    {"name": "_type", "type": "token"},
                    *[
                        {
                            "name": code,
                            "definition": "http://hl7.org/fhir/SearchParameter/"
                            + _definition_id("Resource", code),
                            "type": ptype,
                        }
                        for code, ptype in common.items()
                    ],
                ],
                "operation": [_operation(n, d, None) for n, d in SYSTEM_OPERATIONS],
            }
        ],
    }


AUDIT_PARAMS = ("agent", "date", "outcome", "patient")
"""What the audit trail is searched by (`lienthong.access.audit_views.search`)."""


def _audit_entry(search_params: list[dict[str, Any]]) -> dict[str, Any]:
    """AuditEvent is served from the hash-chained audit trail, not the store: written only
    by the server itself, read and searched by the parameters the trail keeps."""
    return {
        "type": "AuditEvent",
        "documentation": (
            "Written by the server for every interaction (hash-chained, append-only); "
            "read and search only. _count and _offset page the results."
        ),
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "versioning": "no-version",
        "readHistory": False,
        "updateCreate": False,
        "searchParam": [p for p in search_params if p["name"] in AUDIT_PARAMS],
    }


def _operation(name: str, definition: str, documentation: str | None) -> dict[str, str]:
    out = {"name": name, "definition": definition}
    if documentation:
        out["documentation"] = documentation
    return out


SMART_OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def _security(token_endpoint: str | None) -> dict[str, Any]:
    """``rest.security``: SMART on FHIR, with the token endpoint in the oauth-uris extension
    (https://hl7.org/fhir/smart-app-launch/conformance.html#using-cs)."""
    security: dict[str, Any] = {
        "cors": False,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
            }
        ],
        "description": (
            "OAuth 2 bearer tokens (JWT, RS256) from lienthong's issuer (discovery at "
            "/.well-known/openid-configuration, keys at /.well-known/jwks.json) or a "
            "configured OpenID Connect provider; registered systems get tokens with SMART "
            "Backend Services (client credentials, private_key_jwt; see "
            "[base]/.well-known/smart-configuration). SMART on FHIR v2 scopes (and v1 "
            "read/write) narrow each role. Every interaction is written to a hash-chained "
            "audit trail."
        ),
    }
    if token_endpoint is not None:
        security["extension"] = [
            {
                "url": SMART_OAUTH_URIS,
                "extension": [{"url": "token", "valueUri": token_endpoint}],
            }
        ]
    return security


def _definition_id(rtype: str, code: str) -> str:
    if code.startswith("_"):
        return f"Resource{code.replace('_', '-')}"
    return f"{rtype}-{code}"
