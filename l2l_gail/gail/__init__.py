"""GAIL mode: task specs, expert training and demonstrations, (L2L-)GAIL training, stability comparison."""
