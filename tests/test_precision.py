"""Precision: ``auto`` follows the hardware; explicit choices pass through; autocast matches."""

from __future__ import annotations

import pytest
import torch

from echoclip import precision as P


@pytest.mark.parametrize("choice", ["fp32", "bf16"])
def test_explicit_precision_passes_through(choice):
    assert P.resolve_precision(choice, "cpu") == choice
    assert P.resolve_precision(choice, "cuda") == choice


def test_auto_is_bf16_on_a_gpu():
    assert P.resolve_precision("auto", torch.device("cuda")) == "bf16"


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_a_cpu_follows_its_bf16_units(monkeypatch, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert P.cpu_has_bf16() is native
    assert P.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")


def test_amx_alone_counts_as_bf16_units(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert P.resolve_precision("auto", "cpu") == "bf16"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp16"):
        P.resolve_precision("fp16")


def test_autocast_runs_matmuls_in_the_resolved_format():
    a, b = torch.randn(4, 8), torch.randn(8, 2)
    with P.autocast("bf16", "cpu"):
        assert (a @ b).dtype == torch.bfloat16
    with P.autocast("fp32", "cpu"):
        assert (a @ b).dtype == torch.float32
