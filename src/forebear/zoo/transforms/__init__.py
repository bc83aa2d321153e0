"""Transformations that derive one model from another, on HF state dicts.

Every transformation is a pure function ``(state, config, ...) -> Derived``: it
returns a new state dict (HF tensor names, numpy arrays) and a new config.json
dict, never mutating its inputs, and records what it did (the maps it used are
ground truth). Function-preserving ones say so and are verified in the tests.
"""
