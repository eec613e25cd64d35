"""Write-path validation: the FHIR R4 structure validator against the former
``fhir.resources`` R4B model check, in µs per resource, and their agreement on mutated
resources.

    .venv/bin/python -m bench.bench_validate [--mutations 100000]

1. Every Synthea resource (../shared/testdata/synthea, references rewritten as a
   transaction would) through ``validate_resource`` (the R4 structure) and through the
   former check (``tests.r4b_reference``: models, required-binding codes, control
   characters), one core, each timed over the same list in the same run.
2. ``--xml130-visits`` synthetic hospital XML 130 visits (``lienthong.synth``, kept in
   ``bench/out/validate_xml130``) mapped to FHIR as ingest maps them, each visit's
   resources through both checks: the cost per visit.
3. ``--mutations`` resources mutated by hypothesis (``tests.r4_mutations``) from a sample
   of every Synthea resource type, compared; disagreements counted by their explained
   class; the script exits non-zero on any disagreement no class explains.

Prints one line per figure.
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.common import machine, synthea_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mutations", type=int, default=100_000)
    parser.add_argument("--xml130-visits", type=int, default=1000)
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    from hypothesis import HealthCheck, Phase, given, settings
    from tests.r4_mutations import Mutation, Tally, mutated, sample
    from tests.r4b_reference import reference_errors
    from tests.synthea_data import SYNTHEA, load_synthea

    from lienthong.fhir.validate import validate_resource

    synthea_files()  # stops with a message when the bundles are absent
    print(f"machine: {machine()}")
    if not args.skip_timing:
        resources = load_synthea(SYNTHEA)
        for r in resources[:2000]:  # compile the types and warm the caches of both
            validate_resource(r)
            reference_errors(r)
        clock = time.process_time
        started = clock()
        for r in resources:
            validate_resource(r)
        new_s = clock() - started
        started = clock()
        for r in resources:
            reference_errors(r)
        old_s = clock() - started
        n = len(resources)
        print(f"resources: {n}")
        print(f"R4 structure validator: {new_s / n * 1e6:.1f} us/resource (CPU)")
        print(f"former fhir.resources check: {old_s / n * 1e6:.1f} us/resource (CPU)")
        print(f"new / old: {new_s / old_s:.3f}")
    if args.xml130_visits:
        xml130_figures(args.xml130_visits)
    if args.mutations:
        bases = sample(3, 62)
        tally = Tally()

        @settings(
            max_examples=args.mutations,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(mutated(bases))
        def run(case: tuple[dict, Mutation]) -> None:
            tally.add(*case)

        started = time.perf_counter()
        run()
        print(f"mutated resources: {sum(tally.counts.values()) + len(tally.unexplained)}")
        for name, count in tally.counts.most_common():
            print(f"  {name}: {count}")
        print(f"unexplained disagreements: {len(tally.unexplained)}")
        for line in tally.unexplained[:20]:
            print(f"    {line}")
        print(f"mutation run: {time.perf_counter() - started:.0f} s")
        if tally.unexplained:
            sys.exit(1)


def xml130_figures(visits: int) -> None:
    from tests.r4b_reference import reference_errors

    from bench.bench_xml130 import exports
    from bench.common import ROOT
    from lienthong.fhir.validate import validate_resource
    from lienthong.ingest.xml130.to_fhir import visit_bundle
    from lienthong.ingest.xml130.validate import FileValidation
    from lienthong.terminology.catalogue import WhoIcd10

    icd = WhoIcd10()
    files = exports(visits, 0, 0.0, ROOT / "bench" / "out" / "validate_xml130")
    valid = [v for path in files for v, problems in FileValidation(path, icd=icd) if not problems]
    bundles = [[e["resource"] for e in visit_bundle(v, icd)["entry"]] for v in valid]
    n = sum(len(b) for b in bundles)
    for b in bundles[:50]:
        for r in b:
            validate_resource(r)
            reference_errors(r)
    clock = time.process_time
    started = clock()
    for b in bundles:
        for r in b:
            validate_resource(r)
    new_s = clock() - started
    started = clock()
    for b in bundles:
        for r in b:
            assert not reference_errors(r)
    old_s = clock() - started
    v = len(bundles)
    print(f"XML 130 visits: {v} ({n} resources, {n / v:.1f} per visit)")
    for name, seconds in (
        ("R4 structure validator", new_s),
        ("former fhir.resources check", old_s),
    ):
        print(f"{name}: {seconds / v * 1e3:.2f} ms/visit ({seconds / n * 1e6:.1f} us/resource)")


if __name__ == "__main__":
    main()
