"""The behaviour tier: provenance from what a model says, not from its weights.

Labelled apart from the weight evidence everywhere: it answers "does this endpoint
behave like candidate X beyond what unrelated models share?" (identity, derivation
or distillation — each result says which), through clients that query a local model
or an OpenAI-compatible HTTP endpoint.
"""
