"""rnnfast.convert: swap the torch.nn recurrent modules inside a model for rnnfast's."""

from torch import nn

from .cells import GRUCell, LSTMCell, RNNCell
from .layers import GRU, LSTM, RNN

__all__ = ["convert"]

# Exact types only: a subclass of nn.LSTM may override forward, and converting it would drop
# that behaviour silently.
_REPLACEMENTS = {
    nn.RNN: RNN,
    nn.GRU: GRU,
    nn.LSTM: LSTM,
    nn.RNNCell: RNNCell,
    nn.GRUCell: GRUCell,
    nn.LSTMCell: LSTMCell,
}


def convert(model: nn.Module) -> nn.Module:
    """Replace, in place, every ``nn.RNN``, ``nn.GRU``, ``nn.LSTM``, ``nn.RNNCell``,
    ``nn.GRUCell`` and ``nn.LSTMCell`` inside ``model`` by its rnnfast equivalent, and return
    ``model``.

    The replacements share the originals' Parameter objects (so an optimiser built before the
    conversion keeps training them), keep their device, dtype and training mode, and take
    over their module hooks (forward, backward and state_dict hooks keep firing, and their
    handles still remove them). A module reached through several paths is replaced by one
    shared rnnfast module. If ``model`` itself is one of these modules, the converted module
    is returned (it cannot be replaced in place). Subclasses of these classes are left alone.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"rnnfast.convert: expected an nn.Module; got {type(model).__name__}")
    converted = {}

    def replacement(module):
        key = id(module)
        if key not in converted:
            converted[key] = _REPLACEMENTS[type(module)].from_torch(module)
            _take_over_hooks(module, converted[key])
        return converted[key]

    if type(model) in _REPLACEMENTS:
        return replacement(model)
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None and type(child) in _REPLACEMENTS:
                parent._modules[name] = replacement(child)
    return model


def _take_over_hooks(source: nn.Module, target: nn.Module) -> None:
    """Give ``target`` the hook dictionaries of ``source`` themselves (not copies): a handle
    returned by ``register_forward_hook`` and the like refers to its dictionary, so it still
    removes its hook from the module that replaced ``source``."""
    for name, value in vars(source).items():
        if "hook" in name:
            target.__dict__[name] = value
