"""The robustness toolkit shared by the vision and meta modes.

``data`` (digest-checked image data sets, reproducible batches, each data set's eps),
``models`` (classifiers), ``attacks`` (L-inf attacks with one signature), ``evaluate`` (clean,
per-attack and worst-case accuracy), ``training`` (the method protocol and the one training
epoch) and ``options`` (range checks of the modes' configurations).
"""
