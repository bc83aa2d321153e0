"""The provenance benchmark: score any method on the zoo's ground-truth pairs.

Owns the metrics (AUROC, TPR at fixed FPR, calibration, parent attribution),
the method adapters (forebear, a trivial baseline, external commands) and the
result tables. It never trains or builds models (``forebear.zoo`` does).
"""
