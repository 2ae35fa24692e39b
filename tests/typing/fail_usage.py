"""Wrong calls that ``mypy --strict`` must refuse: every line marked ``# E``.

check_types.py asserts that mypy reports an error on exactly those lines.
(Not meant to run: each call would raise.)
"""

import numpy as np
from numpy.typing import NDArray

import nnkernels as nk

z: NDArray[np.float64] = np.zeros((4, 3))
labels: NDArray[np.intp] = np.zeros(4, np.intp)
w: NDArray[np.float64] = np.zeros((2, 3))

nk.sigmoid("not an array")  # E  a str where an array goes
nk.relu_backward(z, None)  # E  None where an array goes
nk.mse(z, z, reduction="average")  # E  an unknown reduction
nk.softmax_cross_entropy(z, labels, reduction="batchmean")  # E  an unknown reduction
nk.softmax(z, axes=0)  # E  a wrong keyword
nk.sigmoid_binary_cross_entropy(z, z, posweight=None)  # E  a wrong keyword
nk.softmax_cross_entropy(z, labels, 0)  # E  axis is keyword-only
nk.dense_forward(z, w, None, "swish")  # E  an unknown activation
nk.set_num_threads("4")  # E  a str for the thread count
grad_w, grad_b = nk.dense_backward(np.zeros((4, 2)), z, w)  # E  three results, not two
nk.dense_backward(np.zeros((4, 2)), z, w)[2].sum()  # E  grad_x may be None
nk.gradcheck(lambda x: nk.mse(x, z), [1.0, 2.0])  # E  x must be an ndarray
count: int = nk.build_info()  # E  a dict, not an int
