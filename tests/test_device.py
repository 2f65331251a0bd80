"""Device selection: ``auto`` falls back to the CPU, a missing GPU is a clear error, autocast is a
no-op on the CPU, and generators are seeded."""

from __future__ import annotations

import pytest
import torch

from offchain.diffusion.device import autocast, select_device, torch_generator
from offchain.errors import ConfigError

HAS_CUDA = torch.cuda.is_available()


def test_cpu_is_always_available() -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(" CPU ") == torch.device("cpu")


def test_auto_picks_cuda_when_present_else_the_cpu() -> None:
    expected = torch.device("cuda", 0) if HAS_CUDA else torch.device("cpu")
    assert select_device() == expected and select_device("auto") == expected


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_asking_for_cuda_without_one_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="CUDA is not available.*'auto' or 'cpu'"):
        select_device(name)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU")
def test_cuda_is_selected_and_an_absent_index_refused() -> None:
    assert select_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="CUDA device"):
        select_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("name", ["gpu", "mps", "", "cuda:x", 0, None])
def test_unknown_devices_are_config_errors_naming_the_choices(name) -> None:
    with pytest.raises(ConfigError, match="auto"):
        select_device(name)


def test_autocast_leaves_cpu_arithmetic_in_float32() -> None:
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with autocast(torch.device("cpu")):
        y = layer(x)
    assert y.dtype == torch.float32 and torch.equal(y, layer(x))


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU")
def test_autocast_runs_cuda_matmuls_in_bfloat16() -> None:
    layer = torch.nn.Linear(4, 3).cuda()
    with autocast(torch.device("cuda")):
        y = layer(torch.randn(2, 4, device="cuda"))
    assert y.dtype == torch.bfloat16


def test_torch_generator_is_seeded_on_its_device() -> None:
    device = select_device("auto")
    first = torch.randn(5, generator=torch_generator(device, 7), device=device)
    again = torch.randn(5, generator=torch_generator(device, 7), device=device)
    other = torch.randn(5, generator=torch_generator(device, 8), device=device)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch_generator("cpu", 7).device == torch.device("cpu")
