"""Which BLAS the dense layer's matrix products run on."""

from __future__ import annotations

from . import _blas_providers as providers, _dispatch


def set_blas(name: str) -> None:
    """Choose the BLAS provider of every matrix product.

    Parameters
    ----------
    name : {"auto", "scipy", "mkl", "openblas"}
        "scipy" is SciPy's BLAS (``scipy.linalg.cython_blas``), always
        installed; "mkl" is Intel MKL from the ``mkl`` package (extra
        ``nnkernels[mkl]``); "openblas" is OpenBLAS from ``scipy-openblas32``
        (extra ``nnkernels[openblas]``). "auto", the default (also read from
        the ``NNKERNELS_BLAS`` environment variable at first use), takes the
        first installed one in the order measured fastest for this CPU's
        vendor: MKL, then OpenBLAS, then SciPy's on Intel; OpenBLAS, then
        SciPy's elsewhere. Every provider's results agree to float rounding.
        The provider's threads follow :func:`set_num_threads`.

    Raises
    ------
    TypeError
        If `name` is not a str.
    ValueError
        If `name` is not one of the four names.
    ImportError
        If the provider's package is not installed; the message names it.

    See Also
    --------
    get_blas : The provider in use.
    build_info : Its library, version and threading.

    Examples
    --------
    >>> import nnkernels as nk
    >>> before = nk.get_blas()
    >>> nk.set_blas("scipy")
    >>> nk.get_blas()
    'scipy'
    >>> nk.set_blas(before)
    """
    providers.use(name)
    _dispatch.blas_pools_changed()


def get_blas() -> str:
    """The BLAS provider the matrix products run on now.

    Returns
    -------
    name : str
        "scipy", "mkl" or "openblas" (what "auto" chose, if it was asked for).

    See Also
    --------
    set_blas : Choose it.

    Examples
    --------
    >>> import nnkernels as nk
    >>> nk.get_blas() in ("scipy", "mkl", "openblas")
    True
    """
    _dispatch.dense()
    return providers.active().name
