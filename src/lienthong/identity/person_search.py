"""Person-level search: a search about a person finds what every source holds of them.

The person index keeps each source's Patient as the source wrote it and ties the records
of one person to a master Patient (``Patient.link`` seealso). A plain search sees the
records one by one; two things make it see the person:

* the ``:mdm`` modifier on a reference parameter that can refer to a Patient
  (``Encounter?patient:mdm=Patient/<id>``, as HAPI FHIR's MDM names it): the Patient named,
  master or source record, stands for its person - the master and every source Patient it
  links (``person_patients``, merges followed) - so the search finds the resources that
  refer to any of them, as ``$everything`` of the master does;
* a Patient search by ``identifier`` finds, beside the source records carrying the
  identifier, the person (master) record they belong to, though the master need not
  carry that identifier itself (a hospital's patient code, an insurance card number).

Both rewrite the parsed query inside the reader that then runs it, so the access guard of
the session still decides what comes back: expansion widens the ids asked for, never what
the user may see.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from lienthong.identity.mpi import masters_of, person_patients
from lienthong.storage.base import Session
from lienthong.storage.query import Criterion, ReferenceValue, SearchQuery, TokenValue

if TYPE_CHECKING:
    from lienthong.fhir.engine import FhirEngine

MDM = "mdm"
IDENTIFIER_MATCHES_MAX = 1000
"""An identifier search matching more source records than this (a bare system) is left as
it is: the masters of so many records are not one person's."""


def resolve_persons(
    engine: FhirEngine,
    session: Session,
    res_type: str | None,
    params: list[tuple[str, str]],
    query: SearchQuery,
) -> None:
    """Expand ``:mdm`` references to the persons' Patients and add to a Patient search by
    identifier the masters of the records it finds (see the module). With the person index
    off, ``:mdm`` names the Patient alone."""
    mpi = engine.settings.mpi
    for crit in _all_criteria(query.criteria):
        if crit.modifier != MDM:
            continue
        ids: set[str] = set()
        for value in crit.values:
            assert isinstance(value, ReferenceValue) and value.target_id is not None
            ids |= person_patients(session, value.target_id) if mpi else {value.target_id}
        crit.values = [ReferenceValue("Patient", i) for i in sorted(ids)]
        crit.modifier = None
    if mpi and res_type == "Patient":
        _with_masters(session, params, query)


def _all_criteria(criteria: Iterable[Criterion]) -> Iterable[Criterion]:
    for crit in criteria:
        yield crit
        yield from _all_criteria(crit.chain)
        if crit.has is not None:
            yield from _all_criteria([crit.has])


def _with_masters(session: Session, params: list[tuple[str, str]], query: SearchQuery) -> None:
    if any(k.split(":")[0] == "_tag" for k, _ in params):
        return  # a search that asks for tags says itself whether it wants masters
    if not any(c.code == "identifier" and c.modifier is None for c in query.criteria):
        return
    probe = SearchQuery(
        "Patient",
        criteria=query.criteria,
        count=IDENTIFIER_MATCHES_MAX + 1,
        with_total=False,
        visible_patients=query.visible_patients,
        public_types=query.public_types,
    )
    records = [m.res_id for m in session.search(probe).matches]
    if not records or len(records) > IDENTIFIER_MATCHES_MAX:
        return
    masters = set(masters_of(session, records).values()) - set(records)
    if not masters:
        return
    ids = sorted(set(records) | masters)
    query.criteria = [
        Criterion("Patient", "_id", "token", None, [TokenValue(None, i) for i in ids])
    ]
