"""The cell registry (csrc/cell_registry.h) against what the engines do.

Python reads the registry's traits from the extension (rnnfast._ops.CELLS) for the fake
kernels that torch.compile traces with; here the fakes' shapes are checked against the real
ops' outputs for every cell, and each trait against the behaviour it stands for.
"""

import pytest
import torch

from rnnfast import _ops

from conftest import CELLS

T, B, I, H, P = 3, 2, 4, 5, 3


def test_registry_holds_the_tests_cells():
    assert list(_ops.CELLS) == CELLS


def _arguments(cell, projection, seed=0):
    gen = torch.Generator().manual_seed(seed)
    G = _ops.CELLS[cell].gates
    out = P if projection else H

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    return {
        "input": rand(T, B, I),
        "weight_ih": rand(G * H, I),
        "weight_hh": rand(G * H, out),
        "bias_ih": rand(G * H),
        "bias_hh": rand(G * H),
        "hx": rand(B, out),
        "cx": rand(B, H) if _ops.CELLS[cell].has_cell_state else None,
        "weight_hr": rand(P, H) if projection else None,
        "lengths": None,
    }


CASES = [(cell, False) for cell in CELLS] + [("lstm", True)]


@pytest.mark.parametrize("cell,projection", CASES)
@pytest.mark.parametrize("need_saved", [True, False])
def test_fake_shapes_match_the_ops(cell, projection, need_saved):
    args = _arguments(cell, projection)
    real = _ops.recurrent_forward(*args.values(), cell, False, False, need_saved)
    fake = _ops._recurrent_forward_fake(*args.values(), cell, False, False, need_saved)
    assert [t.shape for t in fake] == [t.shape for t in real]
    if not need_saved:
        return
    output, _, _, saved = real
    mask = [True] * 8
    grad_c_n = torch.ones(B, H, dtype=torch.float64) if _ops.CELLS[cell].has_cell_state else None
    backward_args = (
        torch.ones_like(output),
        torch.ones(B, output.shape[-1], dtype=torch.float64),
        grad_c_n,
        args["input"],
        args["weight_ih"],
        args["weight_hh"],
        args["hx"],
        args["weight_hr"],
        None,
        output,
        saved,
        cell,
        False,
        False,
        mask,
    )
    real_grads = _ops.recurrent_backward(*backward_args)
    fake_grads = _ops._recurrent_backward_fake(*backward_args)
    assert [t.shape for t in fake_grads] == [t.shape for t in real_grads]


@pytest.mark.parametrize("cell", CELLS)
def test_recurrent_bias_from(cell):
    """b_hh of gate g folds into b_ih (leaves the outputs as they were) exactly for the gates
    before recurrent_bias_from."""
    spec = _ops.CELLS[cell]
    args = _arguments(cell, projection=False, seed=1)
    expected = _ops.recurrent_forward(*args.values(), cell, False, False, False)[0]
    for g in range(spec.gates):
        gate = slice(g * H, (g + 1) * H)
        moved = dict(args, bias_ih=args["bias_ih"].clone(), bias_hh=args["bias_hh"].clone())
        moved["bias_ih"][gate] += moved["bias_hh"][gate]
        moved["bias_hh"][gate] = 0
        output = _ops.recurrent_forward(*moved.values(), cell, False, False, False)[0]
        assert torch.allclose(output, expected) == (g < spec.recurrent_bias_from), g


@pytest.mark.parametrize("cell", [c for c in CELLS if _ops.CELLS[c].gates == 3])
def test_reset_before(cell):
    """One step from h0 = 0: the reset-before GRU's n gate sees r * h0 = 0, so r (moved here
    by its input bias) changes nothing; the reset-after one's sees r * b_hn."""
    args = _arguments(cell, projection=False, seed=2)
    args.update(input=args["input"][:1], hx=torch.zeros(B, H, dtype=torch.float64))
    expected = _ops.recurrent_forward(*args.values(), cell, False, False, False)[0]
    moved_r = dict(args, bias_ih=args["bias_ih"].clone())
    moved_r["bias_ih"][:H] += 1
    output = _ops.recurrent_forward(*moved_r.values(), cell, False, False, False)[0]
    assert torch.allclose(output, expected) == _ops.CELLS[cell].reset_before


def test_only_the_gru_resets():
    assert [c for c in CELLS if _ops.CELLS[c].reset_before] == ["gru_reset_before"]
