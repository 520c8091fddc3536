"""Exception types for mistakes where torch.nn raises one type and rnnfast's own checks (the
functional API's, csrc/checks.cpp's) another: each is both, so that code catching either
catches it."""


class EmptySequenceError(RuntimeError, ValueError):
    """An input with no time steps: torch.nn raises a RuntimeError; as a bad argument value,
    a ValueError too."""


class DtypeMismatchError(RuntimeError, TypeError):
    """A tensor whose dtype is not the input's: torch.nn's cells and states raise a
    RuntimeError; rnnfast's functional API a TypeError."""


def empty_sequence_error(input_shape, layout: str) -> EmptySequenceError:
    """input_shape: the caller's own (an unbatched input's, not the op's [T, 1, I])."""
    return EmptySequenceError(
        "Expected sequence length to be larger than 0 in RNN: input must hold at least one time "
        f"step; got an empty sequence, input of shape {list(input_shape)} {layout}"
    )


def dtype_mismatch_error(name: str, expected, got) -> DtypeMismatchError:
    return DtypeMismatchError(
        f"rnnfast: {name} must have the dtype of input ({expected}); got {got}"
    )


class LstmStateError(RuntimeError, TypeError):
    """An LSTM's hx that is not a pair (h, c) of tensors: torch.nn raises a RuntimeError for a
    tuple of another length ("lstm expects two hidden states"), a TypeError for other types."""
