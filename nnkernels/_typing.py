"""Type aliases of the public signatures (for annotations only; no runtime role).

``ArrayLike`` is what an input may be (an ndarray, or a nested list of
numbers); ``FloatArray`` is what a result is, a float32 or float64 ndarray;
``Loss`` is what a loss function returns as its loss: a NumPy scalar of the
input dtype, or an array with ``reduction="none"``.
"""

from typing import (Any, Callable, Iterable, Literal, Optional, SupportsFloat, SupportsIndex,
                    TypeVar, Union)

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

__all__ = [
    # the aliases
    "FloatArray", "Loss", "Reduction", "Activation", "FloatArrayT",
    # re-exported, so that an annotated module needs one import line
    "Any", "ArrayLike", "Callable", "DTypeLike", "Iterable", "Literal", "Optional",
    "SupportsFloat", "SupportsIndex",
]

FloatArray = NDArray[np.floating[Any]]
Loss = Union[np.floating[Any], FloatArray]
Reduction = Literal["mean", "sum", "none"]
Activation = Optional[Literal["sigmoid", "tanh", "relu"]]
FloatArrayT = TypeVar("FloatArrayT", bound=FloatArray)
