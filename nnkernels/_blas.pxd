# The BLAS seam: every matrix product of the package goes through this one
# table of function pointers, filled once per provider (see _blas.pyx).

ctypedef void (*sgemm_fn)(char* transa, char* transb, int* m, int* n, int* k,
                          float* alpha, float* a, int* lda, float* b, int* ldb,
                          float* beta, float* c, int* ldc) noexcept nogil
ctypedef void (*dgemm_fn)(char* transa, char* transb, int* m, int* n, int* k,
                          double* alpha, double* a, int* lda, double* b, int* ldb,
                          double* beta, double* c, int* ldc) noexcept nogil

cdef struct GemmTable:
    sgemm_fn sgemm
    dgemm_fn dgemm

cdef GemmTable* gemm_table() noexcept nogil
