# cython: language_level=3
"""Row helpers shared by the softmax family and cross-entropy: the shifted
exponentials of a row, the scaled update of a row, and the scratch slots a
driver hands out to operands whose rows are not contiguous."""

from cython cimport floating

from nnkernels._math cimport exp_nonpos, row_sum


# e_j = e**(z_j - m) into e, returns s = sum_j e_j
cdef inline floating exp_shifted(const floating* z, floating m, floating* e,
                                 Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        e[j] = exp_nonpos(z[j] - m)
    return row_sum(e, n)


# g_j = k g_j - c v_j   (v NULL: v_j = 1; c = 0 leaves k g_j exactly)
cdef inline void scale_sub(floating* g, floating k, floating c, const floating* v,
                           Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    if v == NULL:
        for j in range(n):
            g[j] = k * g[j] - c
    else:
        for j in range(n):
            g[j] = k * g[j] - c * v[j]


# Scratch slot k of one thread's scratch rows, or NULL for k < 0 (no slot:
# that operand's rows are contiguous and used in place).
cdef inline floating* slot(floating* mine, int k, Py_ssize_t n) noexcept nogil:
    return mine + k * n if k >= 0 else NULL


# The next free scratch slot for an operand, or -1 when it needs none.
cdef inline int take_slot(bint needed, int* n_slots) noexcept nogil:
    if not needed:
        return -1
    n_slots[0] += 1
    return n_slots[0] - 1
