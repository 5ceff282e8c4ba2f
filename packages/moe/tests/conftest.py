"""The moe tests use tiny tensors: one intra-op thread is as fast, and on a machine shared by
many jobs it avoids the thread contention that makes 2-thread runs many times slower."""

import torch

torch.set_num_threads(1)
