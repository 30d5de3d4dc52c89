// Fused CPU kernels for "[2x2 max-pool ->] batch norm (training) -> ReLU" on channels_last maps.
//
// cnnkit.layers.fused builds this file with the system C++ compiler on first use and loads it
// with torch.ops.load_library. Eager PyTorch runs the same layers as 3-4 separate kernels
// (max_pool2d_with_indices, native_batch_norm, relu, and in the backward the zero fill of the
// pool's input gradient, max_pool2d_with_indices_backward, native_batch_norm_backward and
// threshold_backward), each a full pass over memory. Here the forward is two passes (pool and
// per-channel sums; normalise and ReLU) and the backward two (the two per-channel sums; the
// input gradient, written once with its zeros). The pool's argmax is one byte per output.
//
// Tensors are NHWC buffers (channels_last contiguous), float32 or bfloat16 (raw uint16); the
// Python side checks shapes, dtypes and layouts. Sums are float per image row, double across.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

namespace {

inline float load(const float* p, int64_t i) { return p[i]; }
inline float load(const uint16_t* p, int64_t i) {
  uint32_t u = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline void store(float* p, int64_t i, float v) { p[i] = v; }
inline void store(uint16_t* p, int64_t i, float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  // round to nearest even, as torch's float -> bfloat16 conversion; NaN stays NaN
  uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  p[i] = std::isnan(v) ? static_cast<uint16_t>(0x7fc0) : static_cast<uint16_t>(r);
}

#if defined(__AVX512F__)
// 16 channels at a time (AVX-512), for channel counts that are multiples of 16.
inline __m512 vload(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 vload(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline void vstore(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline void vstore(uint16_t* p, __m512 v) {
#if defined(__AVX512BF16__)
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
#else
  const __m512i u = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd)), 16);
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc0));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
#endif
}
// m, k <- v, j where v > m or v is NaN (aten's max-pool: the first maximum wins, NaN propagates)
inline void vmax_arg(__m512& m, __m512i& k, __m512 v, int j) {
  const __mmask16 take = _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  m = _mm512_mask_mov_ps(m, take, v);
  k = _mm512_mask_mov_epi32(k, take, _mm512_set1_epi32(j));
}
#endif

// Per-thread double accumulators: acc[t][k * C + c] for k < nsums.
struct Accumulators {
  int64_t C, nsums;
  std::vector<double> acc;
  Accumulators(int64_t C_, int64_t nsums_) : C(C_), nsums(nsums_), acc(at::get_num_threads() * C_ * nsums_, 0.0) {}
  double* mine() { return acc.data() + at::get_thread_num() * C * nsums; }
  void reduce_into(double* out) const {
    const int64_t n = C * nsums, threads = static_cast<int64_t>(acc.size()) / n;
    for (int64_t k = 0; k < n; ++k) {
      double s = 0;
      for (int64_t t = 0; t < threads; ++t) s += acc[t * n + k];
      out[k] = s;
    }
  }
};

// The inner loops over one image row (all of its columns and channels). Each has a scalar
// form and, with AVX-512 and channels a multiple of 16, a 16-channel vector form.

// p = maxpool2x2 of rows x0, x1 with its argmax (0..3, row-major in the window); s1 += p, s2 += p^2.
template <typename T>
void pool_row(const T* x0, const T* x1, T* prow, uint8_t* irow, float* s1, float* s2, int64_t Wo, int64_t C) {
#if defined(__AVX512F__)
  if (C % 16 == 0) {
    // channel block outer, positions inner: the sums stay in registers along the row
    for (int64_t c = 0; c < C; c += 16) {
      __m512 a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps();
      for (int64_t wo = 0; wo < Wo; ++wo) {
        const int64_t o0 = 2 * wo * C + c, o1 = o0 + C, oo = wo * C + c;
        __m512 m = vload(x0 + o0);
        __m512i k = _mm512_setzero_si512();
        vmax_arg(m, k, vload(x0 + o1), 1);
        vmax_arg(m, k, vload(x1 + o0), 2);
        vmax_arg(m, k, vload(x1 + o1), 3);
        vstore(prow + oo, m);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(irow + oo), _mm512_cvtepi32_epi8(k));
        a1 = _mm512_add_ps(a1, m);
        a2 = _mm512_fmadd_ps(m, m, a2);
      }
      _mm512_storeu_ps(s1 + c, a1);
      _mm512_storeu_ps(s2 + c, a2);
    }
    return;
  }
#endif
  for (int64_t wo = 0; wo < Wo; ++wo) {
    const int64_t o0 = 2 * wo * C, o1 = o0 + C, oo = wo * C;
    for (int64_t c = 0; c < C; ++c) {
      float m = load(x0, o0 + c);
      uint8_t k = 0;
      const float v[3] = {load(x0, o1 + c), load(x1, o0 + c), load(x1, o1 + c)};
      for (int j = 0; j < 3; ++j)
        if (v[j] > m || std::isnan(v[j])) { m = v[j]; k = static_cast<uint8_t>(j + 1); }
      store(prow, oo + c, m);
      irow[oo + c] = k;
      s1[c] += m;
      s2[c] += m * m;
    }
  }
}

// s1 += x, s2 += x^2 over a row of n = columns * C values.
template <typename T>
void stats_row(const T* x, float* s1, float* s2, int64_t n, int64_t C) {
#if defined(__AVX512F__)
  if (C % 16 == 0) {
    for (int64_t c = 0; c < C; c += 16) {
      __m512 a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps();
      for (int64_t i = c; i < n; i += C) {
        const __m512 v = vload(x + i);
        a1 = _mm512_add_ps(a1, v);
        a2 = _mm512_fmadd_ps(v, v, a2);
      }
      _mm512_storeu_ps(s1 + c, a1);
      _mm512_storeu_ps(s2 + c, a2);
    }
    return;
  }
#endif
  for (int64_t i = 0; i < n; i += C)
    for (int64_t c = 0; c < C; ++c) {
      const float v = load(x, i + c);
      s1[c] += v;
      s2[c] += v * v;
    }
}

// y = max(p * scale + shift, 0) over a row of n values.
template <typename T>
void affine_relu_row(const T* p, const float* scale, const float* shift, T* y, int64_t n, int64_t C) {
#if defined(__AVX512F__)
  if (C % 16 == 0) {
    for (int64_t c = 0; c < C; c += 16) {
      const __m512 sc = _mm512_loadu_ps(scale + c), sh = _mm512_loadu_ps(shift + c);
      for (int64_t i = c; i < n; i += C)
        vstore(y + i, _mm512_max_ps(_mm512_fmadd_ps(vload(p + i), sc, sh), _mm512_setzero_ps()));
    }
    return;
  }
#endif
  for (int64_t i = 0; i < n; i += C)
    for (int64_t c = 0; c < C; ++c) {
      const float z = load(p, i + c) * scale[c] + shift[c];
      store(y, i + c, z > 0.f ? z : 0.f);
    }
}

// dz = dy where p * scale + shift > 0 (the ReLU's mask), else 0; s1 += dz, s2 += dz * (p - mean).
template <typename T>
void reduce_row(const T* dy, const T* p, const float* scale, const float* shift, const float* mean, float* s1,
                float* s2, int64_t n, int64_t C) {
#if defined(__AVX512F__)
  if (C % 16 == 0) {
    for (int64_t c = 0; c < C; c += 16) {
      const __m512 sc = _mm512_loadu_ps(scale + c), sh = _mm512_loadu_ps(shift + c), mu = _mm512_loadu_ps(mean + c);
      __m512 a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps();
      for (int64_t i = c; i < n; i += C) {
        const __m512 pv = vload(p + i);
        const __m512 z = _mm512_fmadd_ps(pv, sc, sh);
        const __m512 dz = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_GT_OQ), vload(dy + i));
        a1 = _mm512_add_ps(a1, dz);
        a2 = _mm512_fmadd_ps(dz, _mm512_sub_ps(pv, mu), a2);
      }
      _mm512_storeu_ps(s1 + c, a1);
      _mm512_storeu_ps(s2 + c, a2);
    }
    return;
  }
#endif
  for (int64_t i = 0; i < n; i += C)
    for (int64_t c = 0; c < C; ++c) {
      const float pv = load(p, i + c);
      const float dz = pv * scale[c] + shift[c] > 0.f ? load(dy, i + c) : 0.f;
      s1[c] += dz;
      s2[c] += dz * (pv - mean[c]);
    }
}

// The batch-norm input gradient g = k * (dz - a - (p - mean) * b) of a pooled row; written to
// dx0 (no pool), or to the argmax of each 2x2 window in rows d0, d1 and 0 elsewhere (pool).
template <typename T>
void dx_row(const T* dy, const T* p, const uint8_t* irow, const float* scale, const float* shift,
            const float* mean, const float* k, const float* a, const float* b, T* d0, T* d1, int64_t Wo,
            int64_t C, bool pool) {
#if defined(__AVX512F__)
  if (C % 16 == 0) {
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t wo = 0; wo < Wo; ++wo)
      for (int64_t c = 0; c < C; c += 16) {
        const int64_t i = wo * C + c;
        const __m512 pv = vload(p + i);
        const __m512 z = _mm512_fmadd_ps(pv, _mm512_loadu_ps(scale + c), _mm512_loadu_ps(shift + c));
        const __m512 dz = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(z, zero, _CMP_GT_OQ), vload(dy + i));
        const __m512 xc = _mm512_sub_ps(pv, _mm512_loadu_ps(mean + c));
        const __m512 inner = _mm512_sub_ps(_mm512_sub_ps(dz, _mm512_loadu_ps(a + c)), _mm512_mul_ps(xc, _mm512_loadu_ps(b + c)));
        const __m512 g = _mm512_mul_ps(_mm512_loadu_ps(k + c), inner);
        if (!pool) {
          vstore(d0 + i, g);
          continue;
        }
        const __m512i j = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(irow + i)));
        const int64_t o0 = 2 * wo * C + c, o1 = o0 + C;
        vstore(d0 + o0, _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(j, _mm512_set1_epi32(0)), g));
        vstore(d0 + o1, _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(j, _mm512_set1_epi32(1)), g));
        vstore(d1 + o0, _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(j, _mm512_set1_epi32(2)), g));
        vstore(d1 + o1, _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(j, _mm512_set1_epi32(3)), g));
      }
    return;
  }
#endif
  for (int64_t wo = 0; wo < Wo; ++wo)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = wo * C + c;
      const float pv = load(p, i);
      const float dz = pv * scale[c] + shift[c] > 0.f ? load(dy, i) : 0.f;
      const float g = k[c] * (dz - a[c] - (pv - mean[c]) * b[c]);
      if (!pool) {
        store(d0, i, g);
        continue;
      }
      const uint8_t j = irow[i];
      const int64_t o0 = 2 * wo * C + c, o1 = o0 + C;
      store(d0, o0, j == 0 ? g : 0.f);
      store(d0, o1, j == 1 ? g : 0.f);
      store(d1, o0, j == 2 ? g : 0.f);
      store(d1, o1, j == 3 ? g : 0.f);
    }
}

// Forward pass 1: p = maxpool2x2(x) with its argmax (or p = x), and sums = (sum p, sum p^2) per channel.
template <typename T>
void pool_stats_impl(const T* x, T* p, uint8_t* idx, double* sums, int64_t N, int64_t H, int64_t W,
                     int64_t C, bool pool) {
  const int64_t Ho = pool ? H / 2 : H, Wo = pool ? W / 2 : W;
  Accumulators acc(C, 2);
  at::parallel_for(0, N * Ho, 1, [&](int64_t begin, int64_t end) {
    double* a = acc.mine();
    std::vector<float> s1(C), s2(C);
    for (int64_t r = begin; r < end; ++r) {
      std::fill(s1.begin(), s1.end(), 0.f);
      std::fill(s2.begin(), s2.end(), 0.f);
      if (pool) {
        const int64_t n = r / Ho, ho = r % Ho;
        const T* x0 = x + ((n * H + 2 * ho) * W) * C;
        pool_row(x0, x0 + W * C, p + r * Wo * C, idx + r * Wo * C, s1.data(), s2.data(), Wo, C);
      } else {
        stats_row(x + r * Wo * C, s1.data(), s2.data(), Wo * C, C);
      }
      for (int64_t c = 0; c < C; ++c) {
        a[c] += s1[c];
        a[C + c] += s2[c];
      }
    }
  });
  acc.reduce_into(sums);
}

// Forward pass 2: y = max(p * scale + shift, 0).
template <typename T>
void affine_relu_impl(const T* p, const float* scale, const float* shift, T* y, int64_t rows, int64_t cols,
                      int64_t C) {
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      affine_relu_row(p + r * cols * C, scale, shift, y + r * cols * C, cols * C, C);
  });
}

// Backward pass 1: sums = (sum dz, sum dz * (p - mean)) per channel.
template <typename T>
void bwd_reduce_impl(const T* dy, const T* p, const float* scale, const float* shift, const float* mean,
                     double* sums, int64_t rows, int64_t cols, int64_t C) {
  Accumulators acc(C, 2);
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    double* a = acc.mine();
    std::vector<float> s1(C), s2(C);
    for (int64_t r = begin; r < end; ++r) {
      std::fill(s1.begin(), s1.end(), 0.f);
      std::fill(s2.begin(), s2.end(), 0.f);
      const int64_t base = r * cols * C;
      reduce_row(dy + base, p + base, scale, shift, mean, s1.data(), s2.data(), cols * C, C);
      for (int64_t c = 0; c < C; ++c) {
        a[c] += s1[c];
        a[C + c] += s2[c];
      }
    }
  });
  acc.reduce_into(sums);
}

// Backward pass 2: the input gradient, every element written once (the pool's zeros included,
// and the last row and column a floor-mode pool drops from an odd size).
template <typename T>
void bwd_dx_impl(const T* dy, const T* p, const uint8_t* idx, const float* scale, const float* shift,
                 const float* mean, const float* k, const float* a, const float* b, T* dx, int64_t N,
                 int64_t H, int64_t W, int64_t C, bool pool) {
  const int64_t Ho = pool ? H / 2 : H, Wo = pool ? W / 2 : W;
  at::parallel_for(0, N * Ho, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / Ho, ho = r % Ho, base = r * Wo * C;
      if (!pool) {
        dx_row<T>(dy + base, p + base, nullptr, scale, shift, mean, k, a, b, dx + base, nullptr, Wo, C, false);
        continue;
      }
      T* d0 = dx + ((n * H + 2 * ho) * W) * C;
      T* d1 = d0 + W * C;
      dx_row(dy + base, p + base, idx + base, scale, shift, mean, k, a, b, d0, d1, Wo, C, true);
      if (W > 2 * Wo) {
        std::memset(d0 + 2 * Wo * C, 0, (W - 2 * Wo) * C * sizeof(T));
        std::memset(d1 + 2 * Wo * C, 0, (W - 2 * Wo) * C * sizeof(T));
      }
      if (ho == Ho - 1 && H > 2 * Ho)
        std::memset(dx + ((n * H + 2 * Ho) * W) * C, 0, (H - 2 * Ho) * W * C * sizeof(T));
    }
  });
}

bool is_bf16(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16; }

#define DISPATCH(t, F, ...)                                                              \
  if (is_bf16(t)) {                                                                      \
    using T = uint16_t;                                                                  \
    F<T>(__VA_ARGS__);                                                                   \
  } else {                                                                               \
    using T = float;                                                                     \
    F<T>(__VA_ARGS__);                                                                   \
  }
#define PTR(t) static_cast<T*>(t.data_ptr())
#define CPTR(t) static_cast<const T*>(t.data_ptr())
#define F32(t) static_cast<const float*>(t.data_ptr())

// x: (N, C, H, W) channels_last; p, idx: the pooled (or same) shape; sums: (2, C) float64
void pool_stats(const at::Tensor& x, const at::Tensor& p, const at::Tensor& idx, const at::Tensor& sums,
                bool pool) {
  DISPATCH(x, pool_stats_impl, CPTR(x), PTR(p), pool ? static_cast<uint8_t*>(idx.data_ptr()) : nullptr,
           static_cast<double*>(sums.data_ptr()), x.size(0), x.size(2), x.size(3), x.size(1), pool);
}

void affine_relu(const at::Tensor& p, const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& y) {
  DISPATCH(p, affine_relu_impl, CPTR(p), F32(scale), F32(shift), PTR(y), p.size(0) * p.size(2), p.size(3),
           p.size(1));
}

void bwd_reduce(const at::Tensor& dy, const at::Tensor& p, const at::Tensor& scale, const at::Tensor& shift,
                const at::Tensor& mean, const at::Tensor& sums) {
  DISPATCH(p, bwd_reduce_impl, CPTR(dy), CPTR(p), F32(scale), F32(shift), F32(mean),
           static_cast<double*>(sums.data_ptr()), p.size(0) * p.size(2), p.size(3), p.size(1));
}

void bwd_dx(const at::Tensor& dy, const at::Tensor& p, const at::Tensor& idx, const at::Tensor& scale,
            const at::Tensor& shift, const at::Tensor& mean, const at::Tensor& k, const at::Tensor& a,
            const at::Tensor& b, const at::Tensor& dx, bool pool) {
  DISPATCH(p, bwd_dx_impl, CPTR(dy), CPTR(p), pool ? static_cast<const uint8_t*>(idx.data_ptr()) : nullptr,
           F32(scale), F32(shift), F32(mean), F32(k), F32(a), F32(b), PTR(dx), dx.size(0), dx.size(2),
           dx.size(3), dx.size(1), pool);
}

// The per-channel batch-norm constants from the forward sums, and the running statistics'
// update of nn.BatchNorm2d (running = (1 - factor) * running + factor * batch, the variance
// unbiased): out rows are mean, invstd, scale = weight * invstd, shift = bias - mean * scale.
void bn_stats(const at::Tensor& sums, int64_t count, double eps, const at::Tensor& weight,
              const at::Tensor& bias, const std::optional<at::Tensor>& running_mean,
              const std::optional<at::Tensor>& running_var, double factor, const at::Tensor& out) {
  const int64_t C = sums.size(1);
  const double* s = static_cast<const double*>(sums.data_ptr());
  const float* w = F32(weight);
  const float* b = F32(bias);
  float* o = static_cast<float*>(out.data_ptr());
  float* rm = running_mean ? static_cast<float*>(running_mean->data_ptr()) : nullptr;
  float* rv = running_var ? static_cast<float*>(running_var->data_ptr()) : nullptr;
  const double unbias = count > 1 ? static_cast<double>(count) / (count - 1) : 1.0;
  for (int64_t c = 0; c < C; ++c) {
    const double mean = s[c] / count;
    double var = s[C + c] / count - mean * mean;
    var = var > 0 ? var : 0;
    const double invstd = 1.0 / std::sqrt(var + eps);
    o[c] = static_cast<float>(mean);
    o[C + c] = static_cast<float>(invstd);
    o[2 * C + c] = static_cast<float>(w[c] * invstd);
    o[3 * C + c] = static_cast<float>(b[c] - mean * w[c] * invstd);
    if (rm) rm[c] = static_cast<float>(rm[c] + factor * (mean - rm[c]));
    if (rv) rv[c] = static_cast<float>(rv[c] + factor * (var * unbias - rv[c]));
  }
}

// The backward's per-channel constants from its sums (sum dz, sum dz * (p - mean)): out rows
// are dweight = invstd * sum dz (p - mean), dbias = sum dz, k = weight * invstd,
// a = sum dz / count, b = invstd^2 * sum dz (p - mean) / count.
void bn_grads(const at::Tensor& sums, int64_t count, const at::Tensor& weight, const at::Tensor& stats,
              const at::Tensor& out) {
  const int64_t C = sums.size(1);
  const double* s = static_cast<const double*>(sums.data_ptr());
  const float* w = F32(weight);
  const float* invstd = F32(stats) + C;
  float* o = static_cast<float*>(out.data_ptr());
  for (int64_t c = 0; c < C; ++c) {
    const double is = invstd[c];
    o[c] = static_cast<float>(is * s[C + c]);
    o[C + c] = static_cast<float>(s[c]);
    o[2 * C + c] = static_cast<float>(w[c] * is);
    o[3 * C + c] = static_cast<float>(s[c] / count);
    o[4 * C + c] = static_cast<float>(is * is * s[C + c] / count);
  }
}

}  // namespace

TORCH_LIBRARY(cnnkit_fused, m) {
  m.def("pool_stats(Tensor x, Tensor(a!) p, Tensor(b!) idx, Tensor(c!) sums, bool pool) -> ()", &pool_stats);
  m.def("affine_relu(Tensor p, Tensor scale, Tensor shift, Tensor(a!) y) -> ()", &affine_relu);
  m.def("bwd_reduce(Tensor dy, Tensor p, Tensor scale, Tensor shift, Tensor mean, Tensor(a!) sums) -> ()",
        &bwd_reduce);
  m.def(
      "bn_stats(Tensor sums, int count, float eps, Tensor weight, Tensor bias, Tensor(a!)? running_mean, "
      "Tensor(b!)? running_var, float factor, Tensor(c!) out) -> ()",
      &bn_stats);
  m.def("bn_grads(Tensor sums, int count, Tensor weight, Tensor stats, Tensor(a!) out) -> ()", &bn_grads);
  m.def(
      "bwd_dx(Tensor dy, Tensor p, Tensor idx, Tensor scale, Tensor shift, Tensor mean, Tensor k, Tensor a, "
      "Tensor b, Tensor(a!) dx, bool pool) -> ()",
      &bwd_dx);
}
