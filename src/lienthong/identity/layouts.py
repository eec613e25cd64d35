"""Column layouts of the identity files: the records file, the population register, and the
verification report.

One definition serves every reader and writer - linkage and verification read these files,
the synthetic population writes them - so a column added in one place cannot silently be
missing in another. Kept free of imports so the command line starts without DuckDB or Arrow.
"""

from __future__ import annotations

RECORDS_COLUMNS = (
    "record_id",
    "source",
    "full_name",
    "birth_date",
    "sex",
    "cccd",
    "bhxh",
    "bhyt",
    "phone",
    "address",
    "province_code",
    "commune_code",
)
"""The records file: one row per record from a source (hospital, immunisation, ...)."""

REGISTER_COLUMNS = (
    "cccd",
    "full_name",
    "birth_date",
    "sex",
    "province_code",
    "commune_code",
    "address",
)
"""The population register: one row per citizen, keyed by CCCD number."""

VERIFY_RECORD_COLUMNS = (
    "record_id",
    "source",
    "full_name",
    "birth_date",
    "sex",
    "cccd",
    "province_code",
    "commune_code",
)
"""The columns of a record that verification against the register reads."""

VERIFY_REPORT_COLUMNS = (
    "record_id",
    "status",
    "reasons",
    "cccd_suggested",
    "score",
    "full_name_register",
    "birth_date_register",
    "sex_register",
    "province_code_register",
    "commune_code_register",
)
"""One verification report row per record: the outcome and what the register holds."""

VERIFY_STATUSES = ("verified", "corrected", "mismatch", "not_found", "invalid_id", "missing_id")
"""Outcomes, from best to worst; `verified` and `corrected` mean the number is the record's."""
