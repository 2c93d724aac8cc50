"""Session-wide test settings."""

import torch

# One torch thread: results and timings do not depend on what else runs on the (2-core) machine.
torch.set_num_threads(1)
