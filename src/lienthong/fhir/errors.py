"""FHIR errors as OperationOutcome.

Every failure the engine reports is a :class:`FhirError` carrying the HTTP
status, the issue code (https://hl7.org/fhir/R4/valueset-issue-type.html) and,
wherever known, the FHIRPath of the element at fault
(https://hl7.org/fhir/R4/operationoutcome.html).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

# one step of a path: an identifier or a `delimited identifier`, then optional [n]
_STEP = r"(?:[A-Za-z_][A-Za-z0-9_]*|`(?:[^`\\]|\\.)*`)(?:\[[0-9]+\])?"
_FHIRPATH_PATH = re.compile(rf"{_STEP}(?:\.{_STEP})*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def fhirpath_name(name: str) -> str:
    """``name`` as a FHIRPath expression: a path as it is, anything else (a search
    parameter such as ``family:exact`` or ``address-city``) as a delimited identifier
    (https://hl7.org/fhirpath/N1/#identifiers), so the name stays readable."""
    if _FHIRPATH_PATH.fullmatch(name):
        return name
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def is_fhirpath_path(expression: str) -> bool:
    """Whether ``expression`` is a simple FHIRPath path (element names, ``[n]``)."""
    return _FHIRPATH_PATH.fullmatch(expression) is not None


def fhirpath_step(name: str) -> str:
    """One element name as a FHIRPath step."""
    return name if _IDENTIFIER.fullmatch(name) else fhirpath_name(name)


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            out["expression"] = list(self.expression)
        return out


@dataclass
class FhirError(Exception):
    """An error the API reports as an OperationOutcome with ``status``."""

    status: int
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return "; ".join(_located(i) for i in self.issues)

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)

    def with_expressions(self, fix: Callable[[str], str]) -> FhirError:
        """The same error with every issue's expressions passed through ``fix``."""
        issues = [replace(i, expression=tuple(fix(e) for e in i.expression)) for i in self.issues]
        return FhirError(self.status, issues, self.headers)


def _located(issue: Issue) -> str:
    where = ", ".join(issue.expression)
    if not where or issue.diagnostics.startswith(where):
        return issue.diagnostics
    return f"{where}: {issue.diagnostics}"


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def error(status: int, code: str, message: str, *expression: str) -> FhirError:
    """Shorthand for a one-issue error."""
    return FhirError(status, [Issue(code, message, expression=tuple(e for e in expression if e))])


def bad_request(message: str, *expression: str) -> FhirError:
    return error(400, "invalid", message, *expression)


def not_found(message: str) -> FhirError:
    return error(404, "not-found", message)


def gone(message: str) -> FhirError:
    return error(410, "deleted", message)


def conflict(message: str, *expression: str) -> FhirError:
    return error(409, "conflict", message, *expression)


def precondition_failed(message: str) -> FhirError:
    return error(412, "conflict", message)


def unprocessable(issues: list[Issue]) -> FhirError:
    return FhirError(422, issues)


def not_supported(message: str, status: int = 400) -> FhirError:
    return error(status, "not-supported", message)
