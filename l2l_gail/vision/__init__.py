"""Image-classification mode: data, models, attacks, training methods, evaluation."""
