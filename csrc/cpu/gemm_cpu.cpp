#include "gemm_cpu.h"

#include <ATen/ATen.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <climits>
#include <cstdint>

#include "register_block.h"
#include "scratch_pool.h"

// The BLAS entry points that torch's x86 builds export (MKL, LP64). Declared weak: where a
// torch build lacks one, its address is null and gemm falls back to ATen's mm.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc) __attribute__((weak));
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k) __attribute__((weak));
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha,
                      const float* src, int ld, float* dest) __attribute__((weak));
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float* a,
                         int lda, const float* b, int ldb, float beta, float* c, int ldc)
    __attribute__((weak));
// MKL's thread count for the calling thread only; returns the previous one (0: the global).
int MKL_Set_Num_Threads_Local(int nt) __attribute__((weak));
void cblas_gemm_bf16bf16f32(int layout, int transa, int transb, int m, int n, int k, float alpha,
                            const uint16_t* a, int lda, const uint16_t* b, int ldb, float beta,
                            float* c, int ldc) __attribute__((weak));
void cblas_gemm_f16f16f32(int layout, int transa, int transb, int m, int n, int k, float alpha,
                          const uint16_t* a, int lda, const uint16_t* b, int ldb, float beta,
                          float* c, int ldc) __attribute__((weak));
}

namespace rnnfast::cpu {
namespace {

constexpr int kCblasRowMajor = 101, kCblasNoTrans = 111, kCblasTrans = 112;
constexpr int kCblasPacked = 151, kCblasBMatrix = 162;
// Packing pays off from about this many multiply-adds per product, and from this many products:
// it copies the whole operand, at the cost of several rows' product, which a cell's single
// step (an LSTM cell with H = 512 at B = 1: 4 MiB for one row) never earns back.
constexpr int64_t kPackMacs = 1 << 20;
constexpr int64_t kPackUses = 4;
// A product of at least this many rows of A, beyond small_gemm's reach, goes through panels
// packed for itself alone (where step_gemm() says panels): copying B costs a fraction 1 / M of
// its multiply-adds, where MKL's generic path runs such mid-sized products (a small layer's
// input projection, dx and weight gradients) well below its rate.
constexpr int64_t kPanelRows = 8;
// ... where A is transposed (a weight gradient's dG^T), in blocks of at most this many of the
// summed dimension K, each adding into C: each row block of A is then read as strided
// columns of one block, which stay in cache for the next rows. Unblocked, a weight gradient
// summed over all steps (K = T * B = 6400) ran at a third of MKL's rate on the EPYC; blocking
// a product whose A is not transposed only adds passes over C (dx at K = 1024: 1.2x the time).
constexpr int64_t kTransposedPanelDepth = 512;

bool fits_int(std::initializer_list<int64_t> values) {
  for (int64_t v : values) {
    if (v > INT_MAX) return false;
  }
  return true;
}

// op(X) as a tensor view over X's memory (no copy).
template <class T>
at::Tensor view_of(MatrixRef<T> X, int64_t rows, int64_t cols) {
  const auto dtype = c10::CppTypeToScalarType<T>::value;
  const auto data = const_cast<T*>(X.data);
  return X.trans ? at::from_blob(data, {rows, cols}, {1, X.ld}, at::dtype(dtype))
                 : at::from_blob(data, {rows, cols}, {X.ld, 1}, at::dtype(dtype));
}

// Below this many multiply-adds a BLAS call runs on the calling thread alone. Split over the
// cores, each core's share of the output must then travel to the core that reads it next (a
// small layer's pointwise loop): that cost more than the split saved.
constexpr int64_t kThreadedGemmMacs = 1 << 20;
// ... unless the right-hand operand (a weight) is this large: a product of few rows, such as
// a cell's step in a generation loop (B = 1), then mostly reads the weight, and (presumably)
// each core keeps and reads its half in its own cache.
constexpr int64_t kThreadedWeightElements = 1 << 16;

// MKL forms C = A^T B with few columns of C (a weight gradient dG^T X of a narrow input: I = 28
// at LM) at about half its rate, and the transposed product C^T = B^T A at its full rate. It
// pays from a few hundred rows of C up; at 64 columns and more the two take about as long.
constexpr int64_t kNarrowColumns = 64;
constexpr int64_t kNarrowMinRows = 256;

// Below this many multiply-adds a register-blocked loop beats a BLAS call's fixed cost
// (the per-step product of a small layer: B = 8, H = 32 is 8k; its input projection 160k).
constexpr int64_t kSmallGemmMacs = 1 << 18;

// C = A B (+ C if accumulate) for small dense row-major operands: column blocks of 2 vectors.
template <class T>
void small_gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                bool accumulate, T* C, int64_t ldc) {
  constexpr int64_t W = at::vec::Vectorized<T>::size();
  for (int64_t j = 0; j < N; j += 2 * W) {
    column_block</*kTransA=*/false, /*kPaddedB=*/false>(
        M, K, A, lda, B + j, ldb, std::min(2 * W, N - j), accumulate, C + j, ldc);
  }
}

template <class T>
void gemm_fallback(int64_t M, int64_t N, int64_t K, MatrixRef<T> A, MatrixRef<T> B, float beta,
                   at::opmath_type<T>* C, int64_t ldc) {
  using acc_t = at::opmath_type<T>;
  at::Tensor c =
      at::from_blob(C, {M, N}, {ldc, 1}, at::dtype(c10::CppTypeToScalarType<acc_t>::value));
  at::Tensor product = at::mm(view_of(A, M, K), view_of(B, K, N)).to(c.scalar_type());
  if (beta == 0.f) {
    c.copy_(product);
  } else {
    c.mul_(beta).add_(product);
  }
}

// C[M, N] = A^T B + beta * C (A.trans, B not) as Ct[N, M] = B^T A in scratch, then added to
// C transposed.
void narrow_transposed_gemm(int64_t M, int64_t N, int64_t K, MatrixRef<float> A, MatrixRef<float> B,
                            float beta, float* C, int64_t ldc) {
  const at::Tensor scratch = scratch_empty({N, M}, at::kFloat);
  float* ct = scratch.data_ptr<float>();
  gemm<float>(N, M, K, {B.data, B.ld, true}, {A.data, A.ld, false}, 0.f, ct, M);
  for (int64_t i = 0; i < M; ++i) {
    float* row = C + i * ldc;
    for (int64_t j = 0; j < N; ++j) {
      // beta == 0 must not read C, which may hold anything (NaN included).
      row[j] = beta == 0.f ? ct[j * M + i] : beta * row[j] + ct[j * M + i];
    }
  }
}

}  // namespace

template <class T>
void gemm(int64_t M, int64_t N, int64_t K, MatrixRef<T> A, MatrixRef<T> B, float beta,
          at::opmath_type<T>* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if constexpr (std::is_same_v<T, at::opmath_type<T>>) {
    if (!A.trans && !B.trans && M * N * K <= kSmallGemmMacs && (beta == 0.f || beta == 1.f)) {
      small_gemm(M, N, K, A.data, A.ld, B.data, B.ld, beta == 1.f, C, ldc);
      return;
    }
  }
  if constexpr (std::is_same_v<T, float>) {
    if (step_gemm() == StepGemm::kPanels && (beta == 0.f || beta == 1.f)) {
      // The operand B is copied into panels for this product alone: worth it where many rows
      // of A reuse it (small dense products went to small_gemm above).
      if (M >= kPanelRows) {
        const int64_t block = A.trans ? kTransposedPanelDepth : K;
        for (int64_t k0 = 0; k0 < K; k0 += block) {
          const int64_t depth = std::min(block, K - k0);
          const MatrixRef<float> A_block{A.data + (A.trans ? k0 * A.ld : k0), A.ld, A.trans};
          const MatrixRef<float> B_block{B.data + (B.trans ? k0 : k0 * B.ld), B.ld, B.trans};
          PanelMatrix(N, depth, B_block).multiply(M, A_block, beta == 1.f || k0 > 0, C, ldc);
        }
        return;
      }
      // Fewer rows read B once or twice as it lies, at the speed its reading allows, where
      // MKL's generic path (what it runs on CPUs other than Intel's) runs 2 to 3 times longer.
      if (!A.trans && !B.trans) {
        small_gemm(M, N, K, A.data, A.ld, B.data, B.ld, beta == 1.f, C, ldc);
        return;
      }
    }
  }
  const bool blas_sized = fits_int({M, N, K, A.ld, B.ld, ldc});
  if constexpr (std::is_same_v<T, float>) {
    if (sgemm_ != nullptr && blas_sized && A.trans && !B.trans && N < kNarrowColumns &&
        M >= kNarrowMinRows && M * N * K >= kThreadedGemmMacs) {
      narrow_transposed_gemm(M, N, K, A, B, beta, C, ldc);
      return;
    }
  }
  const SingleThreadedBlas threads(M * N * K < kThreadedGemmMacs &&
                                   N * K < kThreadedWeightElements);
  if constexpr (sizeof(T) == 2) {
    // 16-bit operands (bfloat16, float16), float32 products and accumulation.
    const auto gemm16 =
        std::is_same_v<T, at::BFloat16> ? cblas_gemm_bf16bf16f32 : cblas_gemm_f16f16f32;
    if (gemm16 != nullptr && blas_sized) {
      gemm16(kCblasRowMajor, A.trans ? kCblasTrans : kCblasNoTrans,
             B.trans ? kCblasTrans : kCblasNoTrans, M, N, K, 1.f,
             reinterpret_cast<const uint16_t*>(A.data), A.ld,
             reinterpret_cast<const uint16_t*>(B.data), B.ld, beta, C, ldc);
      return;
    }
  } else {
    // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T.
    const char ta = A.trans ? 'T' : 'N', tb = B.trans ? 'T' : 'N';
    const int m = N, n = M, k = K, lda = B.ld, ldb = A.ld, ldc_ = ldc;
    const T alpha = 1, beta_ = beta;
    if constexpr (std::is_same_v<T, float>) {
      if (sgemm_ != nullptr && blas_sized) {
        sgemm_(&tb, &ta, &m, &n, &k, &alpha, B.data, &lda, A.data, &ldb, &beta_, C, &ldc_);
        return;
      }
    } else {
      if (dgemm_ != nullptr && blas_sized) {
        dgemm_(&tb, &ta, &m, &n, &k, &alpha, B.data, &lda, A.data, &ldb, &beta_, C, &ldc_);
        return;
      }
    }
  }
  gemm_fallback(M, N, K, A, B, beta, C, ldc);
}

SingleThreadedBlas::SingleThreadedBlas(bool active) {
  if (active && MKL_Set_Num_Threads_Local != nullptr) previous_ = MKL_Set_Num_Threads_Local(1);
}

SingleThreadedBlas::~SingleThreadedBlas() {
  if (previous_ >= 0) MKL_Set_Num_Threads_Local(previous_);
}

template <class T>
bool PackedMatrix<T>::packs(int64_t M, int64_t N, int64_t K, int64_t uses) {
  if constexpr (std::is_same_v<T, float>) {
    const bool available = step_gemm() == StepGemm::kPanels ||
                           (cblas_sgemm_pack_get_size != nullptr && cblas_sgemm_pack != nullptr &&
                            cblas_sgemm_compute != nullptr);
    return available && M * N * K >= kPackMacs && uses >= kPackUses && fits_int({M, N, K});
  }
  return false;
}

template <class T>
PackedMatrix<T>::PackedMatrix(int64_t M, int64_t N, int64_t K, MatrixRef<T> B, int64_t uses)
    : M_(M), N_(N), K_(K), B_(B) {
  if constexpr (std::is_same_v<T, float>) {
    if (!packs(M, N, K, uses)) return;
    if (step_gemm() == StepGemm::kPanels) {
      panels_ = PanelMatrix(N, K, B);
    } else if (fits_int({B.ld})) {
      const size_t bytes = cblas_sgemm_pack_get_size(kCblasBMatrix, M, N, K);
      packed_ = scratch_empty({static_cast<int64_t>(bytes / sizeof(float) + 1)}, at::kFloat);
      cblas_sgemm_pack(kCblasRowMajor, kCblasBMatrix, B.trans ? kCblasTrans : kCblasNoTrans, M, N,
                       K, 1.f, B.data, B.ld, packed_.data_ptr<float>());
    }
  }
}

template <class T>
void PackedMatrix<T>::multiply(MatrixRef<T> A, float beta, at::opmath_type<T>* C,
                               int64_t ldc) const {
  if constexpr (std::is_same_v<T, float>) {
    if (panels_.defined() && (beta == 0.f || beta == 1.f)) {
      panels_.multiply(M_, A, beta == 1.f, C, ldc);
      return;
    }
    if (packed_.defined() && fits_int({A.ld, ldc})) {
      cblas_sgemm_compute(kCblasRowMajor, A.trans ? kCblasTrans : kCblasNoTrans, kCblasPacked, M_,
                          N_, K_, A.data, A.ld, packed_.const_data_ptr<float>(), N_, beta, C, ldc);
      return;
    }
  }
  gemm<T>(M_, N_, K_, A, B_, beta, C, ldc);
}

template class PackedMatrix<float>;
template class PackedMatrix<double>;
template class PackedMatrix<at::BFloat16>;
template class PackedMatrix<at::Half>;

template void gemm<float>(int64_t, int64_t, int64_t, MatrixRef<float>, MatrixRef<float>, float,
                          float*, int64_t);
template void gemm<double>(int64_t, int64_t, int64_t, MatrixRef<double>, MatrixRef<double>, float,
                           double*, int64_t);
template void gemm<at::BFloat16>(int64_t, int64_t, int64_t, MatrixRef<at::BFloat16>,
                                 MatrixRef<at::BFloat16>, float, float*, int64_t);
template void gemm<at::Half>(int64_t, int64_t, int64_t, MatrixRef<at::Half>, MatrixRef<at::Half>,
                             float, float*, int64_t);

}  // namespace rnnfast::cpu
