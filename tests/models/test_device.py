"""cmrecon.models.device: the one device resolver of training and inference."""

import pytest
import torch

from cmrecon.errors import StepError
from cmrecon.models.device import resolve_device


def test_auto_is_cuda_when_available_else_cpu_and_cpu_is_cpu():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_unknown_or_missing_devices_are_errors_naming_the_setting():
    with pytest.raises(StepError, match=r"train\.device = 'gpu'; one of auto, cpu, cuda"):
        resolve_device("gpu", "train.device")
    if not torch.cuda.is_available():
        with pytest.raises(StepError, match="device = 'cuda' but no CUDA device"):
            resolve_device("cuda")
