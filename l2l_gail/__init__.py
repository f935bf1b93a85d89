"""l2l_gail: learned inner optimizers for min-max training.

Three modes share one core (:mod:`l2l_gail.core`):

* :mod:`l2l_gail.vision` -- adversarial training with a learned attacker
  (Jiang et al., *Learning to Defend by Learning to Attack*, arXiv 1811.01213);
* :mod:`l2l_gail.meta` -- an LSTM optimizer meta-trained on adversarial examples
  (Serban et al., *Learning to Learn from Mistakes*, arXiv 2008.05247);
* :mod:`l2l_gail.gail` -- GAIL whose discriminator (or policy) is stepped by a learned optimizer.
"""

from l2l_gail.errors import L2LError

__version__ = "0.1.0"
__all__ = ["L2LError", "__version__"]
