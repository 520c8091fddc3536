"""The C++ engine's program format as the lowering writes it (csrc/scan/scan_program.h): the
format version, dtypes, opcodes, and the exception for what has no opcode."""

import torch

VERSION = 1
DTYPES = {torch.float32: 0, torch.float64: 1}
BOOL = torch.bool  # a boolean value is held as 0 or 1 in the program's dtype
NO_OPERAND = -(2**63)  # an absent optional operand

MM, ADDMM, MM_ACCUMULATE = 0, 1, 2  # MM_ACCUMULATE: out += a @ W
BINARY = {
    "add": 10,
    "sub": 11,
    "mul": 12,
    "div": 13,
    "maximum": 14,
    "minimum": 15,
    "fmod": 81,
    "remainder": 82,
}
DIV_ROUNDING = {"trunc": 83, "floor": 84}  # div's rounding modes
UNARY = {
    "neg": 20,
    "reciprocal": 21,
    "sigmoid": 22,
    "tanh": 23,
    "relu": 24,
    "exp": 25,
    "expm1": 26,
    "log": 27,
    "log1p": 28,
    "abs": 29,
    "sqrt": 30,
    "rsqrt": 31,
    "log_sigmoid_forward": 32,
    "clone": 33,
    "alias": 33,
    "detach": 33,  # the forward's copy; the vjp, traced through it, stops its gradient
    "_to_copy": 33,
    "erf": 53,
    "sin": 54,
    "cos": 55,
    "floor": 56,
    "ceil": 57,
    "round": 58,
    "trunc": 59,
    "exp2": 72,
    "log2": 73,
    "log10": 74,
    "atan": 75,
    "sinh": 76,
    "cosh": 77,
    "tan": 78,
    "asin": 79,
    "acos": 80,
}
COMPARE = {"gt": 16, "lt": 17, "ge": 18, "le": 19, "eq": 34, "ne": 35}
WHERE, MASKED_FILL, LOGICAL_AND, LOGICAL_OR, SIGN = 38, 39, 45, 46, 47
SOFTPLUS_BACKWARD, LOG_SIGMOID_BACKWARD = 48, 49
# Backward-only opcodes (lower_vjp.py): ATen's pointwise backwards, the gradient of a slice,
# of layer norm, and the weights' gradients summed over the steps.
TANH_BACKWARD, SIGMOID_BACKWARD, THRESHOLD_BACKWARD, HARDTANH_BACKWARD = 36, 37, 43, 44
SLICE_BACKWARD, LAYER_NORM_BACKWARD = 52, 63
ROW_MAX, ROW_CUMSUM, ROW_FLIP = 64, 65, 66
ACCUMULATE_PRODUCT, ACCUMULATE_COLUMN_SUM = 70, 71
COPY, CLAMP, POW, SOFTPLUS, SPLIT, CAT, ROW_SUM, ROW_MEAN, LAYER_NORM = (
    33,
    40,
    41,
    42,
    50,
    51,
    60,
    61,
    62,
)


class Unsupported(Exception):
    """The engine has no opcode for this node or value."""
