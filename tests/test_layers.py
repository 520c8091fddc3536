"""rnnfast.RNN / GRU / LSTM against torch.nn holding the same weights, and the extras (residual
SRN, reset-before GRU) against the float64 reference stacked into layers.

Every combination of cell, num_layers 1-3, bidirectional, batch_first, bias, input kind
(padded, packed, unbatched) and initial state given or not: outputs, final states and the
gradients with respect to the input, the initial state and every parameter.
"""

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnfast

import reference

I, H, P, T, B = 4, 5, 3, 6, 3
LENGTHS = [4, 6, 1]  # any order, one full-length sequence

# name -> (torch.nn class, rnnfast class, constructor extras)
STANDARD = {
    "rnn_tanh": (nn.RNN, rnnfast.RNN, {}),
    "rnn_relu": (nn.RNN, rnnfast.RNN, {"nonlinearity": "relu"}),
    "gru": (nn.GRU, rnnfast.GRU, {}),
    "lstm": (nn.LSTM, rnnfast.LSTM, {}),
    "lstm_proj": (nn.LSTM, rnnfast.LSTM, {"proj_size": P}),
}
# name -> (rnnfast class, constructor extras, reference function, its keyword arguments)
EXTRAS = {
    "rnn_tanh_residual": (rnnfast.RNN, {"residual": True}, reference.rnn, {"residual": True}),
    "rnn_relu_residual": (
        rnnfast.RNN,
        {"residual": True, "nonlinearity": "relu"},
        reference.rnn,
        {"residual": True, "nonlinearity": "relu"},
    ),
    "gru_reset_before": (
        rnnfast.GRU,
        {"reset_after": False},
        reference.gru,
        {"reset_after": False},
    ),
}
INPUTS = ["padded", "packed", "unbatched"]


def _sizes(module):
    directions = 2 if module.bidirectional else 1
    h_out = module.proj_size or module.hidden_size
    return module.num_layers * directions, h_out


def make_input(kind, batch_first, dtype):
    """(what the module gets, the leaf tensor the input gradient is taken for, lengths)."""
    shape = (B, T, I) if batch_first else (T, B, I)
    if kind == "unbatched":
        x = torch.randn(T, I, dtype=dtype, requires_grad=True)
        return x, x, None
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    if kind == "padded":
        return x, x, None
    lengths = torch.tensor(LENGTHS)
    return (
        pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False),
        x,
        lengths,
    )


def make_state(module, kind, dtype):
    """A random initial state for ``module`` (a tuple for LSTM), as leaves."""
    layers, h_out = _sizes(module)
    batch = () if kind == "unbatched" else (B,)
    h0 = torch.randn(layers, *batch, h_out, dtype=dtype, requires_grad=True)
    if module.mode != "LSTM":
        return h0
    return h0, torch.randn(layers, *batch, module.hidden_size, dtype=dtype, requires_grad=True)


def _state_tensors(state):
    return list(state) if isinstance(state, tuple) else [state]


def _output_tensor(output, batch_first):
    """Outputs in original batch order, padded with zeros (packed) or as they are."""
    if isinstance(output, PackedSequence):
        return pad_packed_sequence(output, batch_first=batch_first)[0]
    return output


def random_functional(outs, seed):
    """A fixed random linear functional of outs, its coefficients drawn in float64 and rounded
    to each output's dtype: the same functional whatever the module's dtype."""
    gen = torch.Generator().manual_seed(seed)
    return sum(
        (o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)).sum()
        for o in outs
    )


def results(module, inp, leaf, hx, batch_first, seed=7):
    """Outputs, final states and the gradients (input, initial states, parameters by name) of a
    fixed random linear functional of all outputs."""
    output, state = module(inp, hx)
    outs = [_output_tensor(output, batch_first)] + _state_tensors(state)
    loss = random_functional(outs, seed)
    leaves = [leaf] + ([] if hx is None else _state_tensors(hx))
    names, params = zip(*module.named_parameters())
    grads = torch.autograd.grad(loss, leaves + list(params), allow_unused=True)
    named = {"input": grads[0]}
    named.update({f"hx[{k}]": g for k, g in enumerate(grads[1 : len(leaves)])})
    named.update(zip(names, grads[len(leaves) :]))
    return [o.detach() for o in outs], named, output


def assert_same(actual, expected, rtol, atol):
    outs_a, grads_a, _ = actual
    outs_e, grads_e, _ = expected
    for k, (a, e) in enumerate(zip(outs_a, outs_e)):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol, msg=lambda m: f"output {k}: {m}")
    assert grads_a.keys() == grads_e.keys()
    for name in grads_e:
        torch.testing.assert_close(
            grads_a[name],
            grads_e[name],
            rtol=rtol,
            atol=atol,
            msg=lambda m: f"gradient of {name}: {m}",
        )


def twin(cell, dtype, **config):
    """A torch.nn layer and an rnnfast layer built apart, the second loaded from the first."""
    torch_class, fast_class, extras = STANDARD[cell]
    torch_layer = torch_class(I, H, **extras, **config, dtype=dtype)
    fast_layer = fast_class(I, H, **extras, **config, dtype=dtype)
    fast_layer.load_state_dict(torch_layer.state_dict())
    return torch_layer, fast_layer


def clone_input(inp, leaf, batch_first, dtype=None):
    leaf2 = leaf.detach().to(dtype or leaf.dtype, copy=True).requires_grad_()
    if isinstance(inp, PackedSequence):
        return pack_padded_sequence(
            leaf2, torch.tensor(LENGTHS), batch_first=batch_first, enforce_sorted=False
        ), leaf2
    return leaf2, leaf2


def clone_state(hx, dtype=None):
    if hx is None:
        return None
    if isinstance(hx, tuple):
        return tuple(clone_state(t, dtype) for t in hx)
    return hx.detach().to(dtype or hx.dtype, copy=True).requires_grad_()


MATRIX = list(
    itertools.product([1, 2, 3], [False, True], [False, True], [True, False], INPUTS, [False, True])
)


def _matrix_id(p):
    layers, bidirectional, batch_first, bias, kind, with_hx = p
    return (
        f"L{layers}-{'bi' if bidirectional else 'uni'}-{'bf' if batch_first else 'tf'}-"
        f"{'bias' if bias else 'nobias'}-{kind}-{'hx' if with_hx else 'nohx'}"
    )


@pytest.mark.parametrize("cell", list(STANDARD))
@pytest.mark.parametrize(
    "layers, bidirectional, batch_first, bias, kind, with_hx",
    MATRIX,
    ids=[_matrix_id(p) for p in MATRIX],
)
def test_agrees_with_torch_nn(cell, layers, bidirectional, batch_first, bias, kind, with_hx):
    dtype = torch.float64
    config = dict(
        num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias
    )
    torch_layer, fast_layer = twin(cell, dtype, **config)
    inp, leaf, _ = make_input(kind, batch_first, dtype)
    hx = make_state(torch_layer, kind, dtype) if with_hx else None
    expected = results(torch_layer, inp, leaf, hx, batch_first)
    inp2, leaf2 = clone_input(inp, leaf, batch_first)
    actual = results(fast_layer, inp2, leaf2, clone_state(hx), batch_first)
    assert_same(actual, expected, rtol=1e-10, atol=1e-12)
    if kind == "packed":  # the same packing: batch sizes and both index permutations
        for a, e in zip(actual[2][1:], expected[2][1:]):
            assert torch.equal(a, e)


@pytest.mark.parametrize("cell", list(STANDARD))
@pytest.mark.parametrize("kind", INPUTS)
def test_agrees_with_torch_nn_float32(cell, kind):
    config = dict(num_layers=2, bidirectional=True, batch_first=True)
    torch_layer, fast_layer = twin(cell, torch.float32, **config)
    inp, leaf, _ = make_input(kind, True, torch.float32)
    hx = make_state(torch_layer, kind, torch.float32)
    expected = results(torch_layer, inp, leaf, hx, True)
    inp2, leaf2 = clone_input(inp, leaf, True)
    actual = results(fast_layer, inp2, leaf2, clone_state(hx), True)
    assert_same(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", list(STANDARD))
@pytest.mark.parametrize("kind", INPUTS)
def test_float16_layer_agrees_with_torch_nn_float64(cell, kind):
    """A layer moved to float16 (module.half(), which torch.nn's layers also run on the CPU):
    against torch.nn in float64 on the same values (the float16 weights, input and state),
    within float16's precision."""
    config = dict(num_layers=2, bidirectional=True, batch_first=True)
    torch_layer, fast_layer = twin(cell, torch.float64, **config)
    fast_layer.half()
    torch_layer.load_state_dict(fast_layer.state_dict())
    inp, leaf, _ = make_input(kind, True, torch.float16)
    hx = make_state(fast_layer, kind, torch.float16)
    outs, grads, _ = results(fast_layer, inp, leaf, hx, True)
    assert all(o.dtype == torch.float16 for o in outs)
    assert all(g.dtype == torch.float16 for g in grads.values())
    actual = ([o.double() for o in outs], {n: g.double() for n, g in grads.items()}, None)
    inp64, leaf64 = clone_input(inp, leaf, True, torch.float64)
    expected = results(torch_layer, inp64, leaf64, clone_state(hx, torch.float64), True)
    assert_same(actual, expected, rtol=1e-2, atol=1e-2)


def reference_layers(module, fn, fn_kwargs, x, hx, lengths, dropout_seed=None):
    """The float64 reference stacked the way torch.nn stacks layers: directions concatenated,
    dropout (F.dropout, drawn in layer order) between layers in training mode."""
    layers, _ = _sizes(module)
    directions = 2 if module.bidirectional else 1
    h0, c0 = (hx if isinstance(hx, tuple) else (hx, None)) if hx is not None else (None, None)
    if dropout_seed is not None:
        torch.manual_seed(dropout_seed)
    layer_input, h_n = x, []
    for layer in range(module.num_layers):
        outs = []
        for d in range(directions):
            k = layer * directions + d
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            get = lambda n: getattr(module, n + sfx, None)  # noqa: E731
            state = None if h0 is None else h0[k]
            out, h = fn(
                layer_input,
                get("weight_ih"),
                get("weight_hh"),
                get("bias_ih"),
                get("bias_hh"),
                state,
                **fn_kwargs,
                batch_first=module.batch_first,
                reverse=bool(d),
                lengths=lengths,
            )
            outs.append(out)
            h_n.append(h)
        layer_input = torch.cat(outs, -1)
        if module.training and module.dropout and layer + 1 < module.num_layers:
            layer_input = torch.nn.functional.dropout(layer_input, module.dropout, True)
    return layer_input, torch.stack(h_n)


@pytest.mark.parametrize("cell", list(EXTRAS))
@pytest.mark.parametrize(
    "layers, bidirectional, batch_first, bias, kind, with_hx",
    MATRIX,
    ids=[_matrix_id(p) for p in MATRIX],
)
def test_extras_against_reference(cell, layers, bidirectional, batch_first, bias, kind, with_hx):
    dtype = torch.float64
    fast_class, extras, fn, fn_kwargs = EXTRAS[cell]
    layer = fast_class(
        I,
        H,
        num_layers=layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        bias=bias,
        dtype=dtype,
        **extras,
    )
    inp, leaf, lengths = make_input(kind, batch_first, dtype)
    hx = make_state(layer, kind, dtype) if with_hx else None
    actual = results(layer, inp, leaf, hx, batch_first)

    # The reference on the same leaves, batched (unbatched input is a batch of one).
    ref_hx = clone_state(hx)
    x, h = leaf, ref_hx
    if kind == "unbatched":
        x = leaf.unsqueeze(0 if batch_first else 1)
        h = None if ref_hx is None else ref_hx.unsqueeze(1)
    output, h_n = reference_layers(layer, fn, fn_kwargs, x, h, lengths)
    if kind == "unbatched":
        output, h_n = output.squeeze(0 if batch_first else 1), h_n.squeeze(1)
    outs = [output, h_n]
    loss = random_functional(outs, seed=7)  # the functional results() takes
    leaves = [leaf] + ([] if ref_hx is None else [ref_hx])
    names, params = zip(*layer.named_parameters())
    grads = torch.autograd.grad(loss, leaves + list(params))
    expected_grads = {"input": grads[0]}
    if ref_hx is not None:
        expected_grads["hx[0]"] = grads[1]
    expected_grads.update(zip(names, grads[len(leaves) :]))
    assert_same(actual, ([o.detach() for o in outs], expected_grads, None), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", list(STANDARD) + list(EXTRAS))
def test_dropout_one_zeroes_the_input_of_later_layers(cell):
    """With p = 1 the second layer sees zeros: its output is the same for every sequence, and
    equals torch.nn's (whose dropout is the same Bernoulli mask at p = 1)."""
    if cell in STANDARD:
        torch_layer, fast_layer = twin(cell, torch.float64, num_layers=2, dropout=1.0)
        x = torch.randn(T, B, I, dtype=torch.float64)
        torch.testing.assert_close(fast_layer(x)[0], torch_layer(x)[0], rtol=1e-10, atol=1e-12)
    else:
        fast_class, extras, _, _ = EXTRAS[cell]
        fast_layer = fast_class(I, H, num_layers=2, dropout=1.0, dtype=torch.float64, **extras)
    out = fast_layer(torch.randn(T, B, I, dtype=torch.float64))[0]
    torch.testing.assert_close(out, out[:, :1].expand_as(out), rtol=0, atol=0)


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru_reset_before", "lstm_proj"])
def test_dropout_in_training_mode(cell):
    """Dropout between layers: the masks of F.dropout drawn in layer order (so the same
    statistics as torch.nn's inverted dropout), reproducible under a seed, absent in eval."""
    if cell in STANDARD:
        _, layer = twin(cell, torch.float64, num_layers=3, dropout=0.4, bidirectional=True)
        fn, fn_kwargs = {"rnn": (reference.rnn, {}), "lstm": (None, None)}[cell.split("_")[0]]
    else:
        fast_class, extras, fn, fn_kwargs = EXTRAS[cell]
        layer = fast_class(
            I, H, num_layers=3, dropout=0.4, bidirectional=True, dtype=torch.float64, **extras
        )
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.manual_seed(3)
    first = layer(x)[0]
    torch.manual_seed(3)
    again = layer(x)[0]
    torch.manual_seed(4)
    other = layer(x)[0]
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    if fn is not None:
        expected, _ = reference_layers(layer, fn, fn_kwargs, x, None, None, dropout_seed=3)
        torch.testing.assert_close(first, expected, rtol=1e-10, atol=1e-12)
    layer.eval()
    torch.manual_seed(4)
    assert torch.equal(layer(x)[0], layer(x)[0])


def test_dropout_statistics_match_torch_nn():
    """Over many masks, the mean and spread of a dropped 2-layer RNN's output match torch.nn's."""
    torch_layer, fast_layer = twin("rnn_tanh", torch.float64, num_layers=2, dropout=0.5)
    x = torch.randn(T, 64, I, dtype=torch.float64)
    torch.manual_seed(0)
    ours = torch.stack([fast_layer(x)[0] for _ in range(200)])
    theirs = torch.stack([torch_layer(x)[0] for _ in range(200)])
    # Standard errors of these means are about 0.01; of the std, about 0.005.
    torch.testing.assert_close(ours.mean(), theirs.mean(), rtol=0, atol=0.01)
    torch.testing.assert_close(ours.std(), theirs.std(), rtol=0, atol=0.01)
    torch.testing.assert_close(ours.mean(0), theirs.mean(0), rtol=0, atol=0.15)


@pytest.mark.parametrize("cell", list(STANDARD))
def test_state_dict_moves_both_ways(cell):
    torch_class, fast_class, extras = STANDARD[cell]
    config = dict(num_layers=2, bidirectional=True, **extras)
    torch_layer = torch_class(I, H, **config)
    fast_layer = fast_class(I, H, **config)
    assert list(torch_layer.state_dict()) == list(fast_layer.state_dict())
    for name, p in torch_layer.named_parameters():
        assert getattr(fast_layer, name).shape == p.shape
    fast_layer.load_state_dict(torch_layer.state_dict())
    back = torch_class(I, H, **config)
    back.load_state_dict(fast_layer.state_dict())
    for (n1, p1), (n2, p2) in zip(torch_layer.named_parameters(), back.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert [[t.shape for t in w] for w in fast_layer.all_weights] == [
        [t.shape for t in w] for w in torch_layer.all_weights
    ]
    fast_layer.flatten_parameters()  # exists, changes nothing


@pytest.mark.parametrize("cell", list(STANDARD))
def test_initialisation_matches_torch_nn(cell):
    """Same seed, same parameters: the initialisation draws what torch.nn draws, in its order."""
    torch_class, fast_class, extras = STANDARD[cell]
    torch.manual_seed(11)
    torch_layer = torch_class(I, H, num_layers=2, bidirectional=True, **extras)
    torch.manual_seed(11)
    fast_layer = fast_class(I, H, num_layers=2, bidirectional=True, **extras)
    for (n1, p1), (n2, p2) in zip(torch_layer.named_parameters(), fast_layer.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)


@pytest.mark.parametrize("cell", list(STANDARD))
def test_repr_like_torch_nn(cell):
    torch_class, fast_class, extras = STANDARD[cell]
    config = dict(num_layers=2, bias=False, batch_first=True, dropout=0.5, bidirectional=True)
    expected = repr(torch_class(I, H, **extras, **config))
    if extras.get("nonlinearity") == "relu":  # torch.nn.RNN leaves it out; rnnfast says it
        expected = expected[:-1] + ", nonlinearity=relu)"
    assert repr(fast_class(I, H, **extras, **config)) == expected


def test_repr_names_the_extras():
    assert repr(rnnfast.RNN(3, 4, residual=True)) == "RNN(3, 4, residual=True)"
    assert repr(rnnfast.GRU(3, 4, reset_after=False)) == "GRU(3, 4, reset_after=False)"


def test_positional_arguments_as_torch_nn():
    layer = rnnfast.RNN(3, 4, 2, "relu", False, True, 0.0, True)
    assert (
        layer.num_layers,
        layer.nonlinearity,
        layer.bias,
        layer.batch_first,
        layer.bidirectional,
    ) == (2, "relu", False, True, True)
    lstm = rnnfast.LSTM(3, 4, 2, False, True, 0.0, True, 2)
    assert (lstm.bias, lstm.batch_first, lstm.bidirectional, lstm.proj_size) == (
        False,
        True,
        True,
        2,
    )


def test_device_and_dtype_arguments():
    layer = rnnfast.GRU(3, 4, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in layer.parameters())
    out, h = layer(torch.randn(2, 5, 3, dtype=torch.float64))
    assert out.dtype == h.dtype == torch.float64


def test_lstm_cell_state_never_projected():
    layer = rnnfast.LSTM(I, H, proj_size=P, num_layers=2)
    out, (h, c) = layer(torch.randn(T, B, I))
    assert out.shape == (T, B, P) and h.shape == (2, B, P) and c.shape == (2, B, H)
