"""Robust meta-optimisation (Serban et al., *Learning to Learn from Mistakes*, arXiv 2008.05247).

``train``: meta-train the shared coordinatewise LSTM optimizer (:mod:`l2l_gail.core`) on
adversarial batches; ``apply``: train a new model on clean data with the frozen optimizer and
evaluate its robustness; ``optimizees``: the models it trains and the size it can serve;
``report``: the transfer benchmark's ``gap_closed`` arithmetic and tables.
"""
