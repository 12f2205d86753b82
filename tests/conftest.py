import os

import pytest
import torch

torch.set_num_threads(2)
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture
def repo_root():
    from pathlib import Path
    return Path(__file__).resolve().parents[1]
