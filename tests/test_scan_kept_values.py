"""What rnnfast.scan's forward keeps per step for its backward (lower.kept_candidates: products,
their sums, next carries, costly pointwise results; the backward's lowering reads only what its
outputs need), and sums of products run as GEMMs that add into one buffer
(opcodes.MM_ACCUMULATE): the engine's results against the Python runner's in float64, and the
programs' contents."""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from scan_modes import split_mode  # noqa: E402, F401
from test_scan_engine import DT, assert_engine_matches_runner, codes_opcode_list  # noqa: E402

from rnnfast._scan import cache, lower, opcodes  # noqa: E402

import scan_cells  # noqa: E402


def _p(*shape):
    return (torch.randn(*shape, dtype=DT) * 0.4).requires_grad_()


def _last_plan():
    return list(cache._entries.values())[-1]


def _inline_accumulates(plan) -> int:
    return _inline_opcodes(plan).count(opcodes.MM_ACCUMULATE)


@pytest.mark.usefixtures("split_mode")
def test_a_sum_of_three_products():
    """``x @ W + h @ U + z @ V``: in the loop (inline) both later products add into the
    first's buffer."""
    torch.manual_seed(0)
    W, U, V, b = _p(3, 5), _p(5, 5), _p(2, 5), _p(5)

    def step(h, xz):
        x, z = xz
        h = torch.tanh(x @ W + h @ U + z @ V + b)
        return h, h * 2

    xs = (_p(4, 3, 3), _p(4, 3, 2))
    assert_engine_matches_runner(step, _p(3, 5), xs, [W, U, V, b])
    assert _inline_accumulates(_last_plan()) == 2


def test_a_product_read_twice_is_not_summed_into():
    """A product that something besides the sum reads keeps its own buffer."""
    torch.manual_seed(1)
    W, U = _p(3, 4), _p(4, 4)

    def step(h, x):
        p = h @ U
        h = torch.tanh(x @ W + p) * torch.sigmoid(p)
        return h, None

    assert_engine_matches_runner(step, _p(2, 4), _p(5, 2, 3), [W, U])
    assert _inline_accumulates(_last_plan()) == 0


def test_a_kept_sum_of_products():
    """Where the sum is what the step returns, the products add into its rows."""
    torch.manual_seed(2)
    W, U = _p(3, 4), _p(4, 4)

    def step(h, x):
        s = x @ W + h @ U
        return torch.tanh(s), s

    assert_engine_matches_runner(step, _p(2, 4), _p(5, 2, 3), [W, U])
    assert _inline_accumulates(_last_plan()) == 1


def _inline_opcodes(plan):
    codes, _ = lower.lower_loop(plan.inline)
    return codes_opcode_list(codes)


@pytest.mark.parametrize("bias_shape", [(5,), (1, 5)])
@pytest.mark.usefixtures("split_mode")
def test_a_bias_added_to_a_sum_of_products(bias_shape):
    """``x @ W + h @ U + b``: the first product takes the bias as addmm's, the second adds
    into it, and no pass adds anything (inline); hoisted, ``xW_t + h @ U + b`` as before."""
    torch.manual_seed(5)
    W, U, b = _p(3, 5), _p(5, 5), _p(*bias_shape)

    def step(h, x):
        h = torch.tanh(x @ W + h @ U + b)
        return h, None

    assert_engine_matches_runner(step, _p(2, 5), _p(4, 2, 3), [W, U, b])
    ops = _inline_opcodes(_last_plan())
    assert ops.count(opcodes.ADDMM) == 1 and ops.count(opcodes.MM_ACCUMULATE) == 1
    assert opcodes.BINARY["add"] not in ops


def test_a_bias_on_one_product_and_a_batch_addend():
    """A bias added to one product folds into it; a batch value added to a product does not
    (it is no bias), nor a product that something else reads."""
    torch.manual_seed(6)
    U, V, b = _p(4, 4), _p(2, 4), _p(4)

    def step(h, x):
        p = h @ U
        h = torch.tanh(h @ U + b) + torch.sigmoid(x @ V + p) * p
        return h, None

    assert_engine_matches_runner(step, _p(3, 4), _p(5, 3, 2), [U, V, b])
    ops = _inline_opcodes(_last_plan())
    assert ops.count(opcodes.ADDMM) == 1 and ops.count(opcodes.MM) == 2


@pytest.mark.parametrize(
    "make, reads",
    [
        (scan_cells.make_nndl_srn, "the next carry"),  # tanh's output is h'
        (scan_cells.make_numpy_lstm, "costly results"),  # the gates, tanh(c')
    ],
    ids=["nndl_srn", "numpy_lstm"],
)
def test_the_backward_reads_no_product_it_does_not_need(make, reads):
    """The SRN's backward reads tanh's output as the next carry (no product kept); the
    numpy LSTM's reads its gates (sigmoid and tanh outputs) and tanh(c'), not the two products
    of cat([h, x]) @ W split in two, their sum or c'. The engine's gradients match the
    runner's."""
    torch.manual_seed(3)
    step, init, xs, params = make(3, 4, DT)
    assert_engine_matches_runner(step, init(2), xs(5, 2), params)
    plan = _last_plan()
    T, B = 5, 2
    split, loop = plan.split_for(T * B)
    engine = loop.engine
    lowered, _ = engine.backward_programs[True]
    products = {n.outs[0] for n in split.loop_nodes if n.op.split(".")[1] in ("mm", "addmm")}
    assert lowered.kept_ids and not products & set(lowered.kept_ids)
    carries = set(split.prog.carry_out)
    if reads == "the next carry":
        assert set(lowered.kept_ids) <= carries
    else:
        costly = {n.outs[0] for n in split.loop_nodes if n.op.split(".")[1] in ("sigmoid", "tanh")}
        assert len(lowered.kept_ids) == 5 and set(lowered.kept_ids) <= costly


@pytest.mark.parametrize("B,T", [(1, 1), (3, 4)])
@pytest.mark.usefixtures("split_mode")
def test_masked_and_reversed_calls_with_kept_values(B, T):
    """lengths and reverse with kept next carries and sums: gradients as the runner's."""
    torch.manual_seed(4)
    step, init, xs, params = scan_cells.make_numpy_lstm(3, 4, DT)
    lengths = torch.randint(1, T + 1, (B,))
    for reverse in (False, True):
        assert_engine_matches_runner(
            step, init(B), xs(T, B), params, lengths=lengths, reverse=reverse
        )
