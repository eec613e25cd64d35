"""Keep the ``search_param`` table in step with the shipped SearchParameter registry."""

from __future__ import annotations

from typing import Any

from lienthong.fhir.search_params import SearchParamRegistry
from lienthong.storage.sql_search import ParamIds


def load_param_ids(cur: Any, dialect: Any, registry: SearchParamRegistry | None = None) -> ParamIds:
    """Give every (resource type, code) the registry knows a stable integer id.

    Ids already in the database are kept, so index rows stay valid when a new
    release adds parameters; new pairs get the next free ids.
    """
    registry = registry or SearchParamRegistry.default()
    cur.execute(dialect.sql("SELECT res_type, code, sp FROM search_param"))
    ids = {(t, c): int(sp) for t, c, sp in cur.fetchall()}
    wanted = [
        (rt, code) for rt in registry.resource_types() for code in sorted(registry.for_type(rt))
    ]
    missing = [key for key in wanted if key not in ids]
    if missing:
        start = max(ids.values(), default=0)
        rows = [(start + i + 1, rt, code) for i, (rt, code) in enumerate(missing)]
        cur.executemany(
            dialect.sql("INSERT INTO search_param (sp, res_type, code) VALUES (?, ?, ?)"), rows
        )
        ids.update({(rt, code): sp for sp, rt, code in rows})
    return ParamIds(ids)
