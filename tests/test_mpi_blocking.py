"""The person index stays bounded when thousands share a birth date and common names.

20,000 Patients born the same day, named from the Vietnamese frequency tables (four in
ten are Nguyễn), in twenty communes, are loaded through the store's bulk write and the
index's own record writer (resolving each one would take minutes and is what the bound
is about). Then Patients are written through the engine: the records scored against each
must stay within the cap, a true duplicate among the 20,000 (respelled) must still join
its person, and a newcomer must not be linked to anyone.
"""

from __future__ import annotations

import random
import unicodedata
from collections import Counter
from typing import Any

import pytest

from lienthong.fhir.engine import FhirEngine, now_instant
from lienthong.fhir.interactions.create import create_in
from lienthong.identity.mpi import CANDIDATE_CAP, raw_session
from lienthong.identity.scoring import patient_features
from lienthong.settings import Settings
from lienthong.storage.base import ResourceStore
from lienthong.synth.names import GIVEN_FEMALE, GIVEN_MALE, MIDDLE_MALE_OLDER, SURNAMES

PEOPLE = 20_000
BIRTH = "1990-05-17"


def plain(text: str) -> str:
    """Upper case without diacritics."""
    folded = unicodedata.normalize("NFD", text.replace("Đ", "D").replace("đ", "d"))
    return "".join(c for c in folded if not unicodedata.combining(c)).upper()


def _pick(rng: random.Random, table: dict[str, float]) -> str:
    return rng.choices(list(table), weights=list(table.values()))[0]


def person(rng: random.Random, n: int) -> dict[str, Any]:
    male = rng.random() < 0.5
    return {
        "resourceType": "Patient",
        "name": [
            {
                "family": _pick(rng, SURNAMES),
                "given": [
                    _pick(rng, MIDDLE_MALE_OLDER) if male else "Thị",
                    _pick(rng, GIVEN_MALE if male else GIVEN_FEMALE),
                ],
            }
        ],
        "gender": "male" if male else "female",
        "birthDate": BIRTH,
        "telecom": [{"system": "phone", "value": f"09{10_000_000 + n * 37:08d}"}],
        "address": [{"state": "79", "city": f"{27400 + rng.randrange(20):05d}"}],
    }


@pytest.fixture
def crowded(store: ResourceStore, settings: Settings) -> tuple[FhirEngine, list[dict[str, Any]]]:
    """An engine with the person index on over 20,000 people born on one day, each a
    person of one record."""
    engine = FhirEngine(store, settings.model_copy(update={"mpi": True}))
    mpi = engine.mpi
    rng = random.Random(20)
    people = [person(rng, n) for n in range(PEOPLE)]
    now = now_instant()
    with store.writer() as session:
        ops = [engine.prepare(p, f"p{n}", 1, now, "POST", None) for n, p in enumerate(people)]
        session.write(ops)
        raw = raw_session(session)
        for n, p in enumerate(people):
            features = patient_features(p)
            features["record_id"] = f"p{n}"
            mpi._set_record(raw, f"p{n}", f"m{n}", features, None, "new", known=False)
    return engine, people


def full_name(p: dict[str, Any]) -> str:
    return " ".join([p["name"][0]["family"], *p["name"][0]["given"]])


def write(engine: FhirEngine, resource: dict[str, Any]) -> tuple[str, str, int]:
    """Create ``resource``; returns its id, its master and the records scored for it."""
    with engine.store.writer() as session:
        _, stored = create_in(engine, session, resource)
        master = raw_session(session).side(
            "SELECT master_id FROM mpi_record WHERE res_id = ?", (stored.res_id,)
        )[0][0]
    return stored.res_id, str(master), engine.mpi.last_scored


def test_candidates_scored_per_write_stay_within_the_cap(
    crowded: tuple[FhirEngine, list[dict[str, Any]]],
) -> None:
    engine, people = crowded
    # the target: a Nguyễn (the largest block: thousands share family name and birth date)
    # whose full name no one else born that day has (a namesake would be linkage's
    # question, not the bound's)
    names = Counter(full_name(p) for p in people)
    n = next(
        i
        for i, p in enumerate(people)
        if i > 9000 and p["name"][0]["family"] == "Nguyễn" and names[full_name(p)] == 1
    )
    original = people[n]
    same_day_nguyen = sum(p["name"][0]["family"] == "Nguyễn" for p in people)
    assert same_day_nguyen > 5 * CANDIDATE_CAP  # the block is far larger than the cap
    duplicate = {
        "resourceType": "Patient",
        # as a hospital system without diacritics writes it, the phone in +84 form
        "name": [{"text": plain(full_name(original))}],
        "gender": original["gender"],
        "birthDate": BIRTH,
        "telecom": [{"system": "phone", "value": "+84" + original["telecom"][0]["value"][1:]}],
        "address": original["address"],
    }
    _, master, scored = write(engine, duplicate)
    assert scored <= CANDIDATE_CAP
    assert master == f"m{n}"  # joined the person of its true record
    # a Nguyễn born that day whose name no one has: scored within the cap, a new person
    newcomer = {**person(random.Random(99), PEOPLE + 1), "name": [
        {"family": "Nguyễn", "given": ["Văn", "Xuyên"]}]}  # fmt: skip
    assert names[full_name(newcomer)] == 0
    rid, master, scored = write(engine, newcomer)
    assert 0 < scored <= CANDIDATE_CAP
    assert master not in {f"m{i}" for i in range(PEOPLE)}
    total_before = engine.mpi.scored_total
    for k in range(5):
        write(engine, person(random.Random(k), PEOPLE + 10 + k))
        assert engine.mpi.last_scored <= CANDIDATE_CAP
    assert engine.mpi.scored_total - total_before <= 5 * CANDIDATE_CAP
