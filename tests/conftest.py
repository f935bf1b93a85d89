"""Shared test settings: one torch thread (the suite must stay fast and deterministic on 2 cores)."""

import torch

torch.set_num_threads(1)
