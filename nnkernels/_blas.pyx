# cython: language_level=3
"""The table of BLAS entry points every matrix product goes through.

One table, read by the dense kernels of every instruction-set build through
gemm_table(); _blas_providers.py fills it with the Fortran-interface sgemm
and dgemm of the provider in use (SciPy's cython_blas, MKL's mkl_rt,
scipy-openblas32).  All three share the reference BLAS calling convention
(arguments by pointer, 32-bit integers, column-major), so a provider is two
addresses and nothing else: there is one gemm call path for all of them.

Compiled once, for the baseline target: it holds no loops.
"""

from libc.stdint cimport uintptr_t
from scipy.linalg.cython_blas cimport sgemm, dgemm

cdef GemmTable active = GemmTable(sgemm, dgemm)


cdef GemmTable* gemm_table() noexcept nogil:
    return &active


def scipy_addresses():
    """(sgemm, dgemm) addresses of SciPy's BLAS, the default provider."""
    return <uintptr_t>sgemm, <uintptr_t>dgemm


def current_addresses():
    """(sgemm, dgemm) addresses the table holds now."""
    return <uintptr_t>active.sgemm, <uintptr_t>active.dgemm


def use(uintptr_t sgemm_address, uintptr_t dgemm_address):
    """Point the table at another provider's sgemm and dgemm.

    The caller (_blas_providers.use) has resolved both from a loaded library;
    a product already running finishes in the provider it started with.
    """
    if sgemm_address == 0 or dgemm_address == 0:
        raise ValueError("nnkernels: internal error, a null BLAS entry point")
    active.sgemm = <sgemm_fn>sgemm_address
    active.dgemm = <dgemm_fn>dgemm_address
