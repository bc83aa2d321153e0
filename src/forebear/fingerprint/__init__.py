"""Fingerprints: what the same-position test needs, in a few MB, without the weights."""

from forebear.fingerprint.evidence import FingerprintEvidence, compare_fingerprints
from forebear.fingerprint.io import load_fingerprint, save_fingerprint
from forebear.fingerprint.sketch import FINGERPRINT_VERSION, Fingerprint, LayerSketch, fingerprint

__all__ = [
    "FINGERPRINT_VERSION",
    "Fingerprint",
    "FingerprintEvidence",
    "LayerSketch",
    "compare_fingerprints",
    "fingerprint",
    "load_fingerprint",
    "save_fingerprint",
]
