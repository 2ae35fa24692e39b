# cython: language_level=3
# The element-wise passes around the dense layer's products: forward, the bias
# add and g over the product's output; backward, grad_z and the bias sums in
# one pass over grad_a.  Inlined into each instruction-set build of _dense.

from cython cimport floating
from libc.string cimport memset

from nnkernels._math cimport row_sum
from nnkernels._math_act cimport activate, activation_grad, IDENTITY, SIGMOID, TANH, RELU, \
    GELU, GELU_TANH, SILU, LEAKY_RELU, ELU, SOFTPLUS
from nnkernels._dense_matrix cimport Matrix, gemm, transposed, n_lines, line_length


# Forward epilogue: z = g(z + b) over one line -----------------------------------
# bias_step 1: the line is a row and meets every b_j; 0: the line is a column
# (or there is no bias) and meets one value.  Only ever called with literal
# steps and activations (see bias_activate_line), so that each inlined copy is
# a contiguous loop with nothing to decide, which the compiler vectorises.
cdef inline void bias_activate_loop(floating* z,             # IN/OUT
                                    floating* a,             # OUT: g(z + b), or NULL: into z
                                    const floating* bias,    # IN
                                    Py_ssize_t bias_step, Py_ssize_t n,
                                    int g) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating v
    if a == NULL:
        for j in range(n):
            z[j] = activate(z[j] + bias[j * bias_step], g)
    else:                               # z + b kept in z (z_out), g of it in a
        for j in range(n):
            v = z[j] + bias[j * bias_step]
            z[j] = v
            a[j] = activate(v, g)


# The switch on g, taken once per line instead of once per element.
cdef inline void bias_activate_line(floating* z, floating* a, const floating* bias,
                                    Py_ssize_t bias_step, Py_ssize_t n, int g) noexcept nogil:
    if g == SIGMOID:
        bias_activate_loop(z, a, bias, bias_step, n, SIGMOID)
    elif g == TANH:
        bias_activate_loop(z, a, bias, bias_step, n, TANH)
    elif g == RELU:
        bias_activate_loop(z, a, bias, bias_step, n, RELU)
    elif g == GELU:
        bias_activate_loop(z, a, bias, bias_step, n, GELU)
    elif g == GELU_TANH:
        bias_activate_loop(z, a, bias, bias_step, n, GELU_TANH)
    elif g == SILU:
        bias_activate_loop(z, a, bias, bias_step, n, SILU)
    elif g == LEAKY_RELU:
        bias_activate_loop(z, a, bias, bias_step, n, LEAKY_RELU)
    elif g == ELU:
        bias_activate_loop(z, a, bias, bias_step, n, ELU)
    elif g == SOFTPLUS:
        bias_activate_loop(z, a, bias, bias_step, n, SOFTPLUS)
    else:
        bias_activate_loop(z, a, bias, bias_step, n, IDENTITY)


cdef inline void bias_activate(int g,
                        const floating* bias,   # IN  (out,) or NULL
                        Matrix z,               # IN/OUT (N, out)
                        Matrix* a) noexcept nogil:   # OUT (N, out), z's memory order, or NULL
    cdef floating zero = 0
    cdef floating no_bias = -zero          # x + (-0) is x for every x, -0 included
    cdef Py_ssize_t i, lines = n_lines(z), length = line_length(z)
    cdef floating* line
    cdef floating* a_line = NULL
    for i in range(lines):
        line = <floating*>z.data + i * z.ld
        if a != NULL:
            a_line = <floating*>a[0].data + i * a[0].ld
        if z.col_major or bias == NULL:
            bias_activate_line(line, a_line, (bias + i) if bias != NULL else &no_bias, 0,
                               length, g)
        else:
            bias_activate_line(line, a_line, bias, 1, length, g)


cdef inline void forward_kernel(int g,
                         Matrix x,                # IN  (N, in)
                         Matrix w,                # IN  (out, in)
                         const floating* bias,    # IN  (out,) or NULL
                         Matrix z,                # OUT (N, out): g(x wᵀ + b), or x wᵀ + b
                         Matrix* a) noexcept nogil:   # OUT (N, out): g(x wᵀ + b), or NULL
    cdef floating zero = 0
    gemm(<floating>1, x, transposed(w), zero, z)
    if g != IDENTITY or bias != NULL or a != NULL:
        bias_activate(g, bias, z, a)


# Backward epilogue: grad_z = grad_a ⊙ g'(a) and the bias sums -------------------
# One line of grad_a; a's matching values are a_step apart (1 unless a is in
# the other memory order).  column_sums (a row's partial bias sums) gets
# grad_z added when not NULL.  With the identity grad_z is grad_a and is not
# written.  Called with literal activations, NULL-ness and unit step (see
# grad_z_line), as bias_activate_loop.
cdef inline void grad_z_loop(const floating* grad_a,   # IN
                             const floating* a,        # IN
                             Py_ssize_t a_step,
                             floating* grad_z,         # OUT (untouched for the identity)
                             double* column_sums,      # IN/OUT or NULL
                             Py_ssize_t n, int g) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating v
    for j in range(n):
        v = activation_grad(grad_a[j], a[j * a_step], g)
        if g != IDENTITY:
            grad_z[j] = v
        if column_sums != NULL:
            column_sums[j] += v


cdef inline void grad_z_by_activation(const floating* grad_a, const floating* a,
                                      Py_ssize_t a_step, floating* grad_z,
                                      double* column_sums, Py_ssize_t n, int g) noexcept nogil:
    if g == SIGMOID:
        grad_z_loop(grad_a, a, a_step, grad_z, column_sums, n, SIGMOID)
    elif g == TANH:
        grad_z_loop(grad_a, a, a_step, grad_z, column_sums, n, TANH)
    elif g == RELU:
        grad_z_loop(grad_a, a, a_step, grad_z, column_sums, n, RELU)
    elif g == GELU:
        grad_z_loop(grad_a, a, a_step, grad_z, column_sums, n, GELU)
    elif g == GELU_TANH:
        grad_z_loop(grad_a, a, a_step, grad_z, column_sums, n, GELU_TANH)
    elif g == SILU:
        grad_z_loop(grad_a, a, a_step, grad_z, column_sums, n, SILU)
    elif g == LEAKY_RELU:
        grad_z_loop(grad_a, a, a_step, grad_z, column_sums, n, LEAKY_RELU)
    elif g == ELU:
        grad_z_loop(grad_a, a, a_step, grad_z, column_sums, n, ELU)
    elif g == SOFTPLUS:
        grad_z_loop(grad_a, a, a_step, grad_z, column_sums, n, SOFTPLUS)
    else:
        grad_z_loop(grad_a, a, a_step, grad_z, column_sums, n, IDENTITY)


cdef inline void grad_z_line(const floating* grad_a, const floating* a, Py_ssize_t a_step,
                             floating* grad_z, double* column_sums, Py_ssize_t n,
                             int g) noexcept nogil:
    if a_step == 1:                    # the common case: contiguous, vectorised
        grad_z_by_activation(grad_a, a, 1, grad_z, column_sums, n, g)
    else:
        grad_z_by_activation(grad_a, a, a_step, grad_z, column_sums, n, g)


cdef inline Py_ssize_t a_offset(Matrix a, Matrix grad_a, Py_ssize_t i) noexcept nogil:
    """Elements from a's start to its values for line i of grad_a: a line of
    a's own when both share a memory order, else the i-th element of every
    line of a."""
    return i * a.ld if a.col_major == grad_a.col_major else i


cdef inline void grad_z_and_bias(int g,
                          Matrix grad_a,          # IN  (N, out)
                          Matrix a,               # IN  (N, out)
                          Matrix grad_z,          # OUT (N, out), grad_a's layout
                          floating* grad_b,       # IN/OUT (out,)
                          floating scale,
                          bint accumulate,
                          double* column_sums) noexcept nogil:   # scratch (out,)
    cdef Py_ssize_t lines = n_lines(grad_a), length = line_length(grad_a)
    cdef Py_ssize_t a_step = 1 if a.col_major == grad_a.col_major else a.ld
    cdef Py_ssize_t i, j
    cdef floating s
    if grad_a.col_major:
        # lines are columns: each column's sum is one bias entry
        for i in range(lines):
            grad_z_line(<floating*>grad_a.data + i * grad_a.ld,
                        <floating*>a.data + a_offset(a, grad_a, i), a_step,
                        <floating*>grad_z.data + i * grad_z.ld, NULL, length, g)
            s = row_sum(<floating*>grad_z.data + i * grad_z.ld, length)
            grad_b[i] = (grad_b[i] + scale * s) if accumulate else scale * s
        return
    # lines are rows: they add into per-column sums, kept in double
    memset(column_sums, 0, length * sizeof(double))
    for i in range(lines):
        grad_z_line(<floating*>grad_a.data + i * grad_a.ld,
                    <floating*>a.data + a_offset(a, grad_a, i), a_step,
                    <floating*>grad_z.data + i * grad_z.ld, column_sums, length, g)
    for j in range(length):
        grad_b[j] = <floating>((grad_b[j] + scale * column_sums[j]) if accumulate
                               else scale * column_sums[j])


cdef inline void backward_kernel(int g,
                          Matrix grad_a,          # IN  (N, out)
                          Matrix x,               # IN  (N, in)
                          Matrix w,               # IN  (out, in)
                          Matrix a,               # IN  (N, out)
                          Matrix grad_z,          # scratch (N, out), or grad_a itself
                          double* column_sums,    # scratch (out,)
                          Matrix grad_w,          # OUT (out, in)
                          floating* grad_b,       # OUT (out,)
                          Matrix* grad_x,         # OUT (N, in), or NULL
                          floating scale,
                          bint accumulate) noexcept nogil:
    # scale and accumulate are the parameter gradients' (gemm's alpha and
    # beta); grad_x is always the plain input gradient, and it reads w before
    # the product into grad_w may overwrite it (the fused SGD step)
    cdef floating beta = 1 if accumulate else 0
    grad_z_and_bias(g, grad_a, a, grad_z, grad_b, scale, accumulate, column_sums)
    if grad_x != NULL:
        gemm(<floating>1, grad_z, w, <floating>0, grad_x[0])
    gemm(scale, transposed(grad_z), x, beta, grad_w)
