"""A sweep of mistakes that torch.nn rejects: each one, made against rnnfast's layer or cell,
raises torch.nn's exception type or a subclass of it, so that code catching torch.nn's
exceptions catches rnnfast's."""

import pytest
import torch
from torch import nn

import rnnfast

T, B, I, H = 5, 2, 3, 4
LAYERS = ("RNN", "GRU", "LSTM")
CELLS = ("RNNCell", "GRUCell", "LSTMCell")


def _state(kind, shape, c_shape=None, **kw):
    """h0 for RNN/GRU, (h0, c0) for LSTM: kw (dtype, device) apply to both."""
    h = torch.randn(shape, **kw)
    return (h, torch.randn(c_shape or shape, **kw)) if kind.startswith("LSTM") else h


def _meta_parameter(module, name):
    setattr(module, name, nn.Parameter(torch.empty(getattr(module, name).shape, device="meta")))
    return module


def _float64_parameter(module, name):
    setattr(module, name, nn.Parameter(getattr(module, name).detach().double()))
    return module


def _layer_call(x=None, hx=None, ctor=None, module=None, **kw):
    """A mistake in a layer's forward: x (default [T, B, I]) and hx given to kind(I, H, **kw)."""

    def make(ns, kind):
        m = getattr(ns, kind)(I, H, **kw)
        if module is not None:
            m = module(m)
        inp = torch.randn(T, B, I) if x is None else x(kind)
        return lambda: m(inp, None if hx is None else hx(kind))

    return make


def _packed(kind):
    return nn.utils.rnn.pack_padded_sequence(torch.randn(T, B, I), torch.tensor([T, 3]))


LAYER_MISTAKES = {
    "input_1d": _layer_call(x=lambda k: torch.randn(I)),
    "input_4d": _layer_call(x=lambda k: torch.randn(T, B, I, 1)),
    "input_size": _layer_call(x=lambda k: torch.randn(T, B, I + 1)),
    "input_size_unbatched": _layer_call(x=lambda k: torch.randn(T, I + 1)),
    "no_time_steps": _layer_call(x=lambda k: torch.randn(0, B, I)),
    "no_time_steps_unbatched": _layer_call(x=lambda k: torch.randn(0, I)),
    "no_time_steps_batch_first": _layer_call(x=lambda k: torch.randn(B, 0, I), batch_first=True),
    "no_time_steps_with_state": _layer_call(
        x=lambda k: torch.randn(0, B, I), hx=lambda k: _state(k, (1, B, H))
    ),
    "integer_input": _layer_call(x=lambda k: torch.ones(T, B, I, dtype=torch.int64)),
    "float64_input": _layer_call(x=lambda k: torch.randn(T, B, I, dtype=torch.float64)),
    "meta_input": _layer_call(x=lambda k: torch.randn(T, B, I, device="meta")),
    "h0_2d_for_batched": _layer_call(hx=lambda k: _state(k, (B, H))),
    "h0_3d_for_unbatched": _layer_call(
        x=lambda k: torch.randn(T, I), hx=lambda k: _state(k, (1, 1, H))
    ),
    "h0_layers": _layer_call(hx=lambda k: _state(k, (2, B, H))),
    "h0_batch": _layer_call(hx=lambda k: _state(k, (1, B + 1, H))),
    "h0_hidden": _layer_call(hx=lambda k: _state(k, (1, B, H + 1))),
    "h0_batch_first_takes_batch": _layer_call(
        x=lambda k: torch.randn(B, T, I), hx=lambda k: _state(k, (1, T, H)), batch_first=True
    ),
    "h0_bidirectional_count": _layer_call(hx=lambda k: _state(k, (1, B, H)), bidirectional=True),
    "h0_float64": _layer_call(hx=lambda k: _state(k, (1, B, H), dtype=torch.float64)),
    "h0_meta": _layer_call(hx=lambda k: _state(k, (1, B, H), device="meta")),
    "h0_meta_unbatched": _layer_call(
        x=lambda k: torch.randn(T, I), hx=lambda k: _state(k, (1, H), device="meta")
    ),
    "packed_h0_batch": _layer_call(x=_packed, hx=lambda k: _state(k, (1, B + 1, H))),
    "packed_h0_meta": _layer_call(x=_packed, hx=lambda k: _state(k, (1, B, H), device="meta")),
    "weight_hh_on_meta": _layer_call(module=lambda m: _meta_parameter(m, "weight_hh_l0")),
    "bias_ih_on_meta": _layer_call(module=lambda m: _meta_parameter(m, "bias_ih_l0")),
    "bias_hh_float64": _layer_call(module=lambda m: _float64_parameter(m, "bias_hh_l0")),
    "second_layer_weight_on_meta": _layer_call(
        module=lambda m: _meta_parameter(m, "weight_ih_l1"), num_layers=2
    ),
    "reverse_weight_on_meta": _layer_call(
        module=lambda m: _meta_parameter(m, "weight_hh_l0_reverse"), bidirectional=True
    ),
}

LSTM_MISTAKES = {
    "c0_hidden": _layer_call(hx=lambda k: _state(k, (1, B, H), (1, B, H + 1))),
    "c0_batch": _layer_call(hx=lambda k: _state(k, (1, B, H), (1, B + 1, H))),
    "c0_float64": _layer_call(
        hx=lambda k: (torch.randn(1, B, H), torch.randn(1, B, H, dtype=torch.float64))
    ),
    "c0_meta": _layer_call(
        hx=lambda k: (torch.randn(1, B, H), torch.randn(1, B, H, device="meta"))
    ),
    "h0_size_with_projection": _layer_call(hx=lambda k: _state(k, (1, B, H)), proj_size=2),
    "hx_three_states": _layer_call(hx=lambda k: (torch.randn(1, B, H),) * 3),
    "weight_hr_on_meta": _layer_call(
        module=lambda m: _meta_parameter(m, "weight_hr_l0"), proj_size=2
    ),
}


def _constructor(*args, **kw):
    def make(ns, kind):
        return lambda: getattr(ns, kind)(*args, **kw)

    return make


CONSTRUCTOR_MISTAKES = {
    "hidden_size_0": _constructor(I, 0),
    "hidden_size_negative": _constructor(I, -1),
    "hidden_size_a_float": _constructor(I, 4.0),
    "input_size_a_string": _constructor("3", H),
    "num_layers_0": _constructor(I, H, num_layers=0),
    "dropout_above_1": _constructor(I, H, dropout=1.5),
    "dropout_below_0": _constructor(I, H, dropout=-0.1),
    "bias_not_a_bool": _constructor(I, H, bias=1),
}
RNN_CONSTRUCTOR_MISTAKES = {
    "nonlinearity": _constructor(I, H, nonlinearity="sigmoid"),
    "proj_size": _constructor(I, H, proj_size=2),
}
LSTM_CONSTRUCTOR_MISTAKES = {
    "proj_size_not_below_hidden": _constructor(I, H, proj_size=H),
    "proj_size_negative": _constructor(I, H, proj_size=-1),
}


def _cell_call(x=None, hx=None, module=None, **kw):
    def make(ns, kind):
        m = getattr(ns, kind)(I, H, **kw)
        if module is not None:
            m = module(m)
        inp = torch.randn(B, I) if x is None else x(kind)
        return lambda: m(inp, None if hx is None else hx(kind))

    return make


CELL_MISTAKES = {
    "input_0d": _cell_call(x=lambda k: torch.tensor(1.0)),
    "input_3d": _cell_call(x=lambda k: torch.randn(1, B, I)),
    "input_size": _cell_call(x=lambda k: torch.randn(B, I + 1)),
    "input_size_unbatched": _cell_call(x=lambda k: torch.randn(I + 1)),
    "integer_input": _cell_call(x=lambda k: torch.ones(B, I, dtype=torch.int64)),
    "float64_input": _cell_call(x=lambda k: torch.randn(B, I, dtype=torch.float64)),
    "meta_input": _cell_call(x=lambda k: torch.randn(B, I, device="meta")),
    "hx_3d": _cell_call(hx=lambda k: _state(k, (1, B, H))),
    "hx_batch": _cell_call(hx=lambda k: _state(k, (B + 1, H))),
    "hx_hidden": _cell_call(hx=lambda k: _state(k, (B, H + 1))),
    "hx_float64": _cell_call(hx=lambda k: _state(k, (B, H), dtype=torch.float64)),
    "hx_meta": _cell_call(hx=lambda k: _state(k, (B, H), device="meta")),
    "hx_meta_unbatched": _cell_call(
        x=lambda k: torch.randn(I), hx=lambda k: _state(k, (H,), device="meta")
    ),
    "bias_hh_float64": _cell_call(module=lambda m: _float64_parameter(m, "bias_hh")),
    "bias_hh_on_meta": _cell_call(module=lambda m: _meta_parameter(m, "bias_hh")),
}
LSTM_CELL_MISTAKES = {
    "cx_hidden": _cell_call(hx=lambda k: (torch.randn(B, H), torch.randn(B, H + 1))),
    "hx_three_states": _cell_call(hx=lambda k: (torch.randn(B, H),) * 3),
    "hx_a_tensor": _cell_call(hx=lambda k: torch.randn(B, H)),
    "cx_meta": _cell_call(hx=lambda k: (torch.randn(B, H), torch.randn(B, H, device="meta"))),
}
CELL_CONSTRUCTOR_MISTAKES = {
    "hidden_size_negative": _constructor(I, -1),
}


def _cases():
    for kind in LAYERS:
        mistakes = {**LAYER_MISTAKES, **CONSTRUCTOR_MISTAKES}
        if kind == "LSTM":
            mistakes.update(LSTM_MISTAKES, **LSTM_CONSTRUCTOR_MISTAKES)
        if kind == "RNN":
            mistakes.update(RNN_CONSTRUCTOR_MISTAKES)
        for what, make in mistakes.items():
            yield pytest.param(kind, make, id=f"{kind}-{what}")
    for kind in CELLS:
        mistakes = {**CELL_MISTAKES, **CELL_CONSTRUCTOR_MISTAKES}
        if kind == "LSTMCell":
            mistakes.update(LSTM_CELL_MISTAKES)
        for what, make in mistakes.items():
            yield pytest.param(kind, make, id=f"{kind}-{what}")


def _exception(make, ns, kind):
    try:
        make(ns, kind)()
    except Exception as e:  # noqa: BLE001  (the type is what the test compares)
        return e
    return None


@pytest.mark.parametrize("kind, make", list(_cases()))
def test_rnnfast_raises_the_type_torch_nn_raises(kind, make):
    torch_error = _exception(make, nn, kind)
    if torch_error is None:  # torch.nn refuses some of these only from a later release on
        pytest.skip(f"torch {torch.__version__}'s nn accepts this: nothing to compare with")
    fast_error = _exception(make, rnnfast, kind)
    assert fast_error is not None, f"rnnfast accepts what torch.nn refuses with: {torch_error!r}"
    assert issubclass(type(fast_error), type(torch_error)), (
        f"torch.nn raises {type(torch_error).__name__}({torch_error}); rnnfast raises "
        f"{type(fast_error).__name__}({fast_error})"
    )
