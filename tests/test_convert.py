"""rnnfast.convert, Layer.from_torch and layer.to_torch."""

import pytest
import torch
from torch import nn

import rnnfast


class Tagger(nn.Module):
    """A model holding several kinds of recurrent modules, nested and shared."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.encoder = nn.LSTM(
            6, 8, num_layers=2, bidirectional=True, batch_first=True, dropout=0.25, proj_size=3
        )
        self.stack = nn.ModuleList([nn.GRU(6, 5), nn.RNN(5, 4, nonlinearity="relu")])
        self.decoder = nn.Sequential(nn.Linear(6, 6), nn.GRUCell(6, 7))
        self.cells = nn.ModuleDict({"lstm": nn.LSTMCell(6, 4), "rnn": nn.RNNCell(6, 3)})
        self.shared = self.stack[0]  # the same module reached through two paths

    def forward(self, tokens):
        x = self.embed(tokens)  # [B, T, 6]
        enc, _ = self.encoder(x)
        seq = x.transpose(0, 1)
        g, _ = self.stack[0](seq)
        r, _ = self.stack[1](g)
        h = self.decoder[1](self.decoder[0](x[:, 0]))
        hc = self.cells["lstm"](x[:, 1])
        hr = self.cells["rnn"](x[:, 2])
        return torch.cat([enc.sum(1), r.sum(0), h, hc[0], hr], -1)


RECURRENT = (nn.RNN, nn.GRU, nn.LSTM, nn.RNNCell, nn.GRUCell, nn.LSTMCell)


def test_convert_replaces_every_recurrent_module_in_place():
    torch.manual_seed(0)
    model = Tagger().double().train()
    tokens = torch.randint(0, 10, (3, 7))
    torch.manual_seed(1)
    before = model.eval()(tokens)
    params_before = dict(model.named_parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    assert rnnfast.convert(model.train()) is model
    kinds = [type(m) for m in model.modules() if isinstance(m, RECURRENT)]
    assert kinds == []
    fast = [m for m in model.modules() if type(m).__module__.startswith("rnnfast")]
    assert {type(m).__name__ for m in fast} == {
        "LSTM",
        "GRU",
        "RNN",
        "GRUCell",
        "LSTMCell",
        "RNNCell",
    }
    assert model.shared is model.stack[0]
    assert all(m.training for m in fast)
    assert isinstance(model.stack[1], rnnfast.RNN) and model.stack[1].nonlinearity == "relu"
    assert model.encoder.proj_size == 3 and model.encoder.dropout == 0.25
    # The very same Parameter objects: the optimiser built before still trains the model.
    params_after = dict(model.named_parameters())
    assert params_after.keys() == params_before.keys()
    assert all(params_after[k] is params_before[k] for k in params_before)
    assert all(p.dtype == torch.float64 for p in params_after.values())

    after = model.eval()(tokens)
    torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-12)
    model.train()
    weight_before = model.encoder.weight_ih_l0.detach().clone()
    model(tokens).square().sum().backward()
    optimizer.step()
    assert not torch.equal(model.encoder.weight_ih_l0, weight_before)


def test_convert_a_recurrent_module_itself_returns_its_replacement():
    lstm = nn.LSTM(3, 4).eval()
    fast = rnnfast.convert(lstm)
    assert isinstance(fast, rnnfast.LSTM) and not fast.training
    assert fast.weight_hh_l0 is lstm.weight_hh_l0


def test_convert_leaves_subclasses_and_rnnfast_modules_alone():
    class MyLSTM(nn.LSTM):
        pass

    model = nn.Sequential(MyLSTM(3, 4), rnnfast.GRU(3, 4))
    first, second = model[0], model[1]
    rnnfast.convert(model)
    assert model[0] is first and model[1] is second


def test_convert_rejects_what_is_not_a_module():
    with pytest.raises(TypeError, match="nn.Module"):
        rnnfast.convert("lstm")


@pytest.mark.parametrize(
    "make, fast_class",
    [
        (lambda: nn.RNN(3, 4, 2, nonlinearity="relu", bias=False, batch_first=True), rnnfast.RNN),
        (lambda: nn.GRU(3, 4, bidirectional=True, dtype=torch.float64), rnnfast.GRU),
        (lambda: nn.LSTM(3, 4, 3, dropout=0.5, proj_size=2), rnnfast.LSTM),
        (lambda: nn.RNNCell(3, 4, nonlinearity="relu"), rnnfast.RNNCell),
        (lambda: nn.GRUCell(3, 4, bias=False), rnnfast.GRUCell),
        (lambda: nn.LSTMCell(3, 4, dtype=torch.float64), rnnfast.LSTMCell),
    ],
)
def test_from_torch_and_back(make, fast_class):
    original = make().eval()
    fast = fast_class.from_torch(original)
    assert type(fast) is fast_class and not fast.training
    back = fast.to_torch()
    assert type(back) is type(original) and not back.training
    assert repr(back) == repr(original)
    for (n1, p1), (n2, p2), (n3, p3) in zip(
        original.named_parameters(), fast.named_parameters(), back.named_parameters()
    ):
        assert n1 == n2 == n3 and p1 is p2 is p3
    x = torch.randn(
        5,
        2,
        3,
        dtype=original.weight_ih_l0.dtype
        if hasattr(original, "weight_ih_l0")
        else original.weight_ih.dtype,
    )
    x = x[0] if isinstance(original, nn.RNNCellBase) else x
    out_original, out_fast = original(x), fast(x)
    if isinstance(out_original, tuple) and not isinstance(original, nn.LSTMCell):
        out_original, out_fast = out_original[0], out_fast[0]
    torch.testing.assert_close(out_fast, out_original, rtol=1e-5, atol=1e-6)


def test_from_torch_rejects_the_wrong_kind():
    with pytest.raises(TypeError, match="expected a torch.nn.GRU; got LSTM"):
        rnnfast.GRU.from_torch(nn.LSTM(3, 4))
    with pytest.raises(TypeError, match="expected a torch.nn.LSTMCell; got GRUCell"):
        rnnfast.LSTMCell.from_torch(nn.GRUCell(3, 4))


def test_to_torch_refuses_what_torch_nn_cannot_express():
    with pytest.raises(ValueError, match="no residual"):
        rnnfast.RNN(3, 4, residual=True).to_torch()
    with pytest.raises(ValueError, match="reset_after=True"):
        rnnfast.GRU(3, 4, reset_after=False).to_torch()
    with pytest.raises(ValueError, match="no residual"):
        rnnfast.RNNCell(3, 4, residual=True).to_torch()
    with pytest.raises(ValueError, match="reset_after=True"):
        rnnfast.GRUCell(3, 4, reset_after=False).to_torch()


def test_from_torch_refuses_parametrized_weights():
    lstm = nn.utils.parametrizations.weight_norm(nn.LSTM(3, 4), "weight_hh_l0")
    with pytest.raises(ValueError, match="parametrized"):
        rnnfast.LSTM.from_torch(lstm)


def test_convert_keeps_module_hooks():
    """Hooks registered on the torch.nn modules before the conversion fire on their
    replacements, with the replacement as the module, and their handles still remove them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.GRU(4, 5, batch_first=True))
    calls = []
    pre = model[1].register_forward_pre_hook(lambda m, args: calls.append(("pre", type(m))))
    post = model[1].register_forward_hook(
        lambda m, args, kwargs, out: calls.append(("forward", type(m), len(kwargs))),
        with_kwargs=True,
    )
    back = model[1].register_full_backward_hook(
        lambda m, grad_in, grad_out: calls.append(("backward", type(m)))
    )
    saved = model[1].register_state_dict_post_hook(
        lambda m, state, prefix, local: calls.append(("state_dict", type(m)))
    )

    rnnfast.convert(model)
    assert isinstance(model[1], rnnfast.GRU)
    x = torch.randn(2, 3, 4, requires_grad=True)
    output, _ = model[1](model[0](x))
    output.sum().backward()
    model.state_dict()
    assert calls == [
        ("pre", rnnfast.GRU),
        ("forward", rnnfast.GRU, 0),
        ("backward", rnnfast.GRU),
        ("state_dict", rnnfast.GRU),
    ]

    calls.clear()
    for handle in (pre, post, back, saved):
        handle.remove()
    output, _ = model[1](model[0](x))
    output.sum().backward()
    model.state_dict()
    assert calls == []
