"""Synthetic Vietnamese population and noisy source records for record-linkage tests."""

from lienthong.synth.population import SynthSummary, generate

__all__ = ["SynthSummary", "generate"]
