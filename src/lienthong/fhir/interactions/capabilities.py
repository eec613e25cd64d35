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


@lru_cache(maxsize=4)
def capability_statement(
    base_url: str, registry: SearchParamRegistry, extractor: IndexExtractor
) -> dict[str, Any]:
    resources = []
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
            if sp.type in SUPPORTED_PARAM_TYPES or code in ("_id", "_lastUpdated")
        ]
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
        if rtype in OPERATIONS:
            entry["operation"] = [
                {"name": name, "definition": definition} for name, definition in OPERATIONS[rtype]
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
                    "_include _revinclude _summary _elements _total."
                ),
                "security": {
                    "cors": False,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/"
                                    "restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                    "description": (
                        "OAuth 2 bearer tokens (JWT, RS256) from lienthong's issuer "
                        "(keys at /.well-known/jwks.json) or a configured OpenID Connect "
                        "provider; SMART on FHIR v2 scopes narrow each role. Every "
                        "interaction is written to a hash-chained audit trail."
                    ),
                },
                "resource": resources,
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
                ],
                "searchParam": [
                    {"name": "_id", "type": "token"},
                    {"name": "_lastUpdated", "type": "date"},
                ],
            }
        ],
    }


def _definition_id(rtype: str, code: str) -> str:
    if code.startswith("_"):
        return f"Resource{code.replace('_', '-')}"
    return f"{rtype}-{code}"
