"""What the rnnfast layers and cells share for moving to and from their torch.nn namesakes."""

import warnings

import torch
from torch import nn


class TorchConversion:
    """Mixin of the layers and cells. Subclasses set ``_torch_class`` (the torch.nn namesake)
    and define ``_config()``: the constructor arguments both classes share."""

    _torch_class: type

    @classmethod
    def from_torch(cls, module: nn.Module):
        """The rnnfast module equivalent to ``module`` (a torch.nn module of this class's kind).
        It shares ``module``'s Parameter objects (optimisers that hold them keep working, and
        no memory is copied), device, dtype and training mode."""
        if not isinstance(module, cls._torch_class) or isinstance(module, TorchConversion):
            raise TypeError(
                f"rnnfast.{cls.__name__}.from_torch: expected a torch.nn."
                f"{cls._torch_class.__name__}; got {type(module).__name__}"
            )
        return adopt_parameters(cls, cls._config(module), module)

    def to_torch(self) -> nn.Module:
        """The torch.nn namesake sharing this module's Parameter objects and training mode."""
        return adopt_parameters(self._torch_class, self._torch_config(), self)

    def __prepare_scriptable__(self):
        """torch.jit.script calls this on every module it compiles. TorchScript cannot compile
        rnnfast's Python forward (nor call its extension), and its own error would not say
        what to do instead."""
        raise RuntimeError(
            f"rnnfast.{type(self).__name__} cannot be compiled by torch.jit.script. Use "
            "torch.jit.trace (the traced graph calls rnnfast's ops, and saves and loads with "
            "torch.jit.save/load), torch.compile or torch.export instead; or script its torch.nn "
            f"namesake, module.to_torch() (a torch.nn.{self._torch_class.__name__} sharing its "
            "parameters, without rnnfast's speed)"
        )

    def _torch_config(self) -> dict:
        """The torch.nn namesake's constructor arguments; raises where it cannot express this
        module."""
        return self._config()


def adopt_parameters(cls, config: dict, source: nn.Module) -> nn.Module:
    """A new ``cls(**config)`` whose parameters are ``source``'s own Parameter objects."""
    if torch.nn.utils.parametrize.is_parametrized(source):
        raise ValueError(
            f"rnnfast: cannot convert {type(source).__name__} with parametrized "
            "weights (e.g. weight_norm); remove the parametrization first"
        )
    first = next(iter(source._parameters.values()))
    with warnings.catch_warnings():  # the dropout warning was given when source was built
        warnings.simplefilter("ignore")
        target = cls(**config, device="meta", dtype=first.dtype)
    if set(target._parameters) != set(source._parameters):
        raise ValueError(
            f"rnnfast: {type(source).__name__} has parameters "
            f"{sorted(source._parameters)}; expected {sorted(target._parameters)}"
        )
    for name, param in source._parameters.items():
        setattr(target, name, param)
    if isinstance(target, nn.RNNBase):
        target._init_flat_weights()
    return target.train(source.training)
