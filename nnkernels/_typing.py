"""Type aliases of the public signatures (for annotations only; no runtime role).

``FloatArrayLike`` is what a float input may be: a float ndarray (or one of
unknown dtype), a NumPy float or Python number, or a (nested) list of
numbers. It is narrower than ``numpy.typing.ArrayLike``, which also admits
str, bytes, complex and integer arrays, all of which the functions refuse
at run time; ``ArrayLike`` itself types the class-index-or-probability
``target`` of the cross-entropy. ``FloatArray`` is what a result is, a
float32 or float64 ndarray;
``Loss`` is what a loss function returns as its loss: a NumPy scalar of the
input dtype, or an array with ``reduction="none"``.
"""

from typing import (Any, Callable, Iterable, Literal, Optional, Sequence, SupportsFloat,
                    SupportsIndex, TypeVar, Union)

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

__all__ = [
    # the aliases
    "FloatArrayLike", "FloatArray", "Loss", "Reduction", "Activation", "FloatArrayT",
    # re-exported, so that an annotated module needs one import line
    "Any", "ArrayLike", "Callable", "DTypeLike", "Iterable", "Literal", "Optional",
    "SupportsFloat", "SupportsIndex",
]

FloatArray = NDArray[np.floating[Any]]
FloatArrayLike = Union[FloatArray, np.floating[Any], float,
                       Sequence[float], Sequence[Sequence[float]]]
Loss = Union[np.floating[Any], FloatArray]
Reduction = Literal["mean", "sum", "none"]
Activation = Optional[Literal["sigmoid", "tanh", "relu", "gelu", "gelu_tanh", "silu",
                              "leaky_relu", "elu", "softplus"]]
FloatArrayT = TypeVar("FloatArrayT", bound=FloatArray)
