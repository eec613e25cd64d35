"""Terminology: code systems the platform checks codes against (ICD-10 first)."""

from lienthong.terminology.catalogue import (
    Designation,
    Icd10Catalogue,
    LoadedIcd10,
    ShippedIcd10,
    WhoIcd10,
    default_icd10_catalogue,
    icd10_catalogue,
)
from lienthong.terminology.icd10 import (
    ICD10_SYSTEM,
    WorkbookError,
    code_system,
    normalize_icd10,
    read_workbook,
)

__all__ = [
    "ICD10_SYSTEM",
    "Designation",
    "Icd10Catalogue",
    "LoadedIcd10",
    "ShippedIcd10",
    "WhoIcd10",
    "WorkbookError",
    "code_system",
    "default_icd10_catalogue",
    "icd10_catalogue",
    "normalize_icd10",
    "read_workbook",
]
