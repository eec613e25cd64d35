"""``GET [base]/$versions``
(https://hl7.org/fhir/R4/capabilitystatement-operation-versions.html): the FHIR
versions the server speaks, as major.minor, and the one it uses when a request
names none."""

from __future__ import annotations

from lienthong.fhir.engine import FhirResponse
from lienthong.fhir.interactions.formats import FHIR_VERSION


def versions() -> FhirResponse:
    return FhirResponse(
        200,
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "version", "valueCode": FHIR_VERSION},
                {"name": "default", "valueCode": FHIR_VERSION},
            ],
        },
    )
