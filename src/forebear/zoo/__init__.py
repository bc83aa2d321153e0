"""The model zoo: tiny models genuinely trained on CPU, with known ground truth.

Owns building the zoo (``build``), the transformations that derive models
(``transforms``) and the ground-truth manifest (``manifest``). Training needs
the ``torch`` extra; reading a built zoo does not.
"""
