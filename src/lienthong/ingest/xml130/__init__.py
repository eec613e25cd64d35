"""Hospital XML exports (QĐ 130/4750 and legacy QĐ 4210): parsing and conformance checks.

``parse(path_or_bytes)`` streams :class:`Visit` objects out of a gateway envelope
(``GIAMDINHHS``) or a bare table file; ``validate_visit`` / ``validate_files`` report every
departure from the official data dictionary and the gateway's rules.
"""

from lienthong.ingest.xml130.model import STANDARD_130, STANDARD_4210, Visit, Xml130Error
from lienthong.ingest.xml130.parse import DEFAULT_MAX_BYTES, TABLE_ROOTS, parse, scan

__all__ = [
    "DEFAULT_MAX_BYTES",
    "STANDARD_130",
    "STANDARD_4210",
    "TABLE_ROOTS",
    "Visit",
    "Xml130Error",
    "parse",
    "scan",
]
