# cython: language_level=3
# The dense layer's operands as BLAS sees them, and the one gemm call path
# (through the provider table of _blas.pxd) that every product takes.

from cython cimport floating
from libc.string cimport memset

from nnkernels._blas cimport GemmTable, gemm_table


# Operands --------------------------------------------------------------------
cdef struct Matrix:
    char* data
    int rows, cols         # the NumPy shape
    int ld                 # elements from one line (row or column) to the next
    bint col_major         # lines are columns (F order)


cdef inline Matrix transposed(Matrix m) noexcept nogil:
    """The transpose is the same memory read the other way."""
    m.rows, m.cols = m.cols, m.rows
    m.col_major = not m.col_major
    return m


cdef inline Py_ssize_t n_lines(Matrix m) noexcept nogil:
    return m.cols if m.col_major else m.rows


cdef inline Py_ssize_t line_length(Matrix m) noexcept nogil:
    return m.rows if m.col_major else m.cols


# c = alpha a b + beta c; a row-major c through the column-major identity cᵀ = bᵀ aᵀ
# beta is 0 (overwrite) or 1 (accumulate); its type picks sgemm or dgemm.
cdef inline void gemm(floating alpha, Matrix a, Matrix b, floating beta, Matrix c) noexcept nogil:
    cdef int m = c.rows, n = c.cols, k = a.cols
    cdef char trans_first, trans_second
    cdef Py_ssize_t i
    cdef GemmTable* blas = gemm_table()
    if m == 0 or n == 0:
        return
    if k == 0:                        # an empty sum; spelled out, not left to the BLAS
        if beta == 0:
            for i in range(n_lines(c)):
                memset(c.data + i * c.ld * sizeof(floating), 0, line_length(c) * sizeof(floating))
        return
    if not c.col_major:               # cᵀ = bᵀ aᵀ, and cᵀ is column-major
        gemm(alpha, transposed(b), transposed(a), beta, transposed(c))
        return
    # c = op(a) op(b), column-major; a row-major operand is stored as its transpose
    trans_first = b'N' if a.col_major else b'T'
    trans_second = b'N' if b.col_major else b'T'
    if floating is float:
        blas.sgemm(&trans_first, &trans_second, &m, &n, &k, &alpha, <float*>a.data, &a.ld,
                   <float*>b.data, &b.ld, &beta, <float*>c.data, &c.ld)
    else:
        blas.dgemm(&trans_first, &trans_second, &m, &n, &k, &alpha, <double*>a.data, &a.ld,
                   <double*>b.data, &b.ld, &beta, <double*>c.data, &c.ld)
