// Decode attention over the paged KV cache: one query token per sequence, each reading its own cache slots
// in place (a padded copy of every context was most of a 32-sequence step's attention time). The forward
// step (forward_step.cpp) calls it per layer of a decode step; `decode_attention` serves the torch layers'.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels.h"
#include "simd.h"

namespace llmasos {
namespace {

template <class KV>
inline float dot(const float* a, const KV* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8(b + i), acc);
  float s = hsum(acc);
  for (; i < n; ++i) s += a[i] * to_float(b[i]);
  return s;
}

// The dot products of q with four keys at once, summed across lanes by one hadd tree (one horizontal
// sum per key cost as much as its 8 FMAs at head_dim 64).
template <class KV>
inline __m128 dot4(const float* q, const KV* k0, const KV* k1, const KV* k2, const KV* k3, int64_t dim) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i < dim; i += 8) {
    const __m256 qv = _mm256_loadu_ps(q + i);
    a0 = _mm256_fmadd_ps(qv, load8(k0 + i), a0);
    a1 = _mm256_fmadd_ps(qv, load8(k1 + i), a1);
    a2 = _mm256_fmadd_ps(qv, load8(k2 + i), a2);
    a3 = _mm256_fmadd_ps(qv, load8(k3 + i), a3);
  }
  return hsum4(a0, a1, a2, a3);
}

// out[0:64] = Σ_u (p[u] * scale) * value(u)[d0 : d0 + 64], the eight accumulators in registers for the
// whole context (as an array shared with the general loop, GCC stored all eight to the stack after
// every row).
template <class ValueRow>
inline void weighted_rows64(const float* p, float scale, int64_t len, const ValueRow& value, int64_t d0, float* out) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  for (int64_t u = 0; u < len; ++u) {
    const __m256 w = _mm256_set1_ps(p[u] * scale);
    const auto* v = value(u) + d0;
    a0 = _mm256_fmadd_ps(w, load8(v), a0);
    a1 = _mm256_fmadd_ps(w, load8(v + 8), a1);
    a2 = _mm256_fmadd_ps(w, load8(v + 16), a2);
    a3 = _mm256_fmadd_ps(w, load8(v + 24), a3);
    a4 = _mm256_fmadd_ps(w, load8(v + 32), a4);
    a5 = _mm256_fmadd_ps(w, load8(v + 40), a5);
    a6 = _mm256_fmadd_ps(w, load8(v + 48), a6);
    a7 = _mm256_fmadd_ps(w, load8(v + 56), a7);
  }
  const __m256 acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
  for (int c = 0; c < 8; ++c) _mm256_storeu_ps(out + c * 8, acc[c]);
}

// Keys ahead of the one being scored whose key and value rows are fetched early. A sequence's rows sit
// in 16-slot blocks scattered over the pool, one kv head's 128-256 bytes in every slot's 384-768, which
// the hardware prefetchers did not follow: 30 layers of 32 sequences at 150 tokens took 19-24 ms from
// DRAM against 9.5 ms with the same rows in cache; prefetched, 12-16 ms for a bfloat16 cache (8 and
// 32 keys ahead measured the same, within this machine's noise).
constexpr int64_t kPrefetchKeys = 16;

// Decode attention over a paged cache: query b (one token; heads at q + b * q_stride, pre-scaled) attends
// to the first pos[b] + 1 slots of its row of `kv_slots` (n, max_t). out: (n, heads * head_dim).
// Work items are (sequence, kv head): the heads sharing a kv head read each key and value row once,
// and a head's output stays in registers while the values stream past (head_dim a multiple of 8, at
// most 256; others take the plain loop).
template <class KV>
void attend(const float* q_all, int64_t q_stride, const KV* k_cache, const KV* v_cache, const int64_t* kv_slots,
            int64_t max_t, const int64_t* pos, int64_t n, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
            float* attn) {
  const int64_t group = num_heads / num_kv_heads, slot_stride = num_kv_heads * head_dim;
  const int64_t q_size = num_heads * head_dim;
  const bool vector_dims = head_dim % 8 == 0 && head_dim <= 256;
  at::parallel_for(0, n * num_kv_heads, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> scores(group * (max_t + 8));
    const int64_t stride = max_t + 8;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / num_kv_heads, kvh = i % num_kv_heads;
      const int64_t len = pos[b] + 1;
      const int64_t* seq_slots = kv_slots + b * max_t;
      const float* q0 = q_all + b * q_stride + kvh * group * head_dim;
      auto key = [&](int64_t t) { return k_cache + seq_slots[t] * slot_stride + kvh * head_dim; };
      auto value = [&](int64_t t) { return v_cache + seq_slots[t] * slot_stride + kvh * head_dim; };
      const int64_t row_bytes = head_dim * static_cast<int64_t>(sizeof(KV));
      auto prefetch = [&](int64_t t) {
        prefetch_bytes(key(t), row_bytes);
        prefetch_bytes(value(t), row_bytes);
      };
      for (int64_t t = 0; t < std::min(len, kPrefetchKeys); ++t) prefetch(t);
      for (int64_t h = 0; h < group; ++h) {
        float* sc = scores.data() + h * stride;
        const float* q = q0 + h * head_dim;
        int64_t t = 0;
        if (vector_dims) {
          for (; t + 4 <= len; t += 4) {
            if (h == 0) {  // the first head's pass brings the rows in; the others find them in cache
              for (int64_t a = t + kPrefetchKeys; a < std::min(len, t + kPrefetchKeys + 4); ++a) prefetch(a);
            }
            _mm_storeu_ps(sc + t, dot4(q, key(t), key(t + 1), key(t + 2), key(t + 3), head_dim));
          }
        }
        for (; t < len; ++t) sc[t] = dot(q, key(t), head_dim);
        float mx = -INFINITY;
        for (t = 0; t < len; ++t) mx = std::max(mx, sc[t]);
        float denom = 0.f;
        t = 0;
        if (vector_dims) {
          __m256 dv = _mm256_setzero_ps();
          for (; t + 8 <= len; t += 8) {
            const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(sc + t), _mm256_set1_ps(mx)));
            _mm256_storeu_ps(sc + t, e);
            dv = _mm256_add_ps(dv, e);
          }
          denom = hsum(dv);
        }
        for (; t < len; ++t) {
          sc[t] = std::exp(sc[t] - mx);
          denom += sc[t];
        }
        const float inv = 1.f / denom;
        float* out = attn + b * q_size + (kvh * group + h) * head_dim;
        if (vector_dims) {
          for (int64_t d0 = 0; d0 < head_dim; d0 += 64) {
            const int chunks = static_cast<int>(std::min<int64_t>(8, (head_dim - d0) / 8));
            if (chunks == 8) {  // the common head_dim 64 (and 128, 256)
              weighted_rows64(sc, inv, len, value, d0, out + d0);
              continue;
            }
            __m256 acc[8];
            for (int c = 0; c < 8; ++c) acc[c] = _mm256_setzero_ps();
            for (int64_t u = 0; u < len; ++u) {
              const __m256 p = _mm256_set1_ps(sc[u] * inv);
              const KV* v = value(u) + d0;
              for (int c = 0; c < chunks; ++c) acc[c] = _mm256_fmadd_ps(p, load8(v + c * 8), acc[c]);
            }
            for (int c = 0; c < chunks; ++c) _mm256_storeu_ps(out + d0 + c * 8, acc[c]);
          }
        } else {
          std::fill(out, out + head_dim, 0.f);
          for (int64_t u = 0; u < len; ++u) {
            const float p = sc[u] * inv;
            const KV* v = value(u);
            for (int64_t d = 0; d < head_dim; ++d) out[d] += p * to_float(v[d]);
          }
        }
      }
    }
  });
}

}  // namespace

void attend_decode(const float* q_all, int64_t q_stride, const float* k_cache, const float* v_cache,
                   const int64_t* kv_slots, int64_t max_t, const int64_t* pos, int64_t n, int64_t num_heads,
                   int64_t num_kv_heads, int64_t head_dim, float* attn) {
  attend(q_all, q_stride, k_cache, v_cache, kv_slots, max_t, pos, n, num_heads, num_kv_heads, head_dim, attn);
}

void attend_decode(const float* q_all, int64_t q_stride, const uint16_t* k_cache, const uint16_t* v_cache,
                   const int64_t* kv_slots, int64_t max_t, const int64_t* pos, int64_t n, int64_t num_heads,
                   int64_t num_kv_heads, int64_t head_dim, float* attn) {
  attend(q_all, q_stride, k_cache, v_cache, kv_slots, max_t, pos, n, num_heads, num_kv_heads, head_dim, attn);
}

// The same attention for the torch layers' decode steps: q (n, heads, head_dim) pre-scaled, caches
// (slots, kv_heads, head_dim) with this step's keys/values already written, context_lens (n,).
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                            const at::Tensor& kv_slots, const at::Tensor& context_lens) {
  TORCH_CHECK(q.dtype() == at::kFloat, "decode_attention: float32 queries");
  TORCH_CHECK(k_cache.dtype() == v_cache.dtype() && (k_cache.dtype() == at::kFloat || k_cache.dtype() == at::kBFloat16),
              "decode_attention: float32 or bfloat16 caches");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "decode_attention: contiguous caches");
  const at::Tensor qc = q.contiguous(), slots = kv_slots.contiguous();
  const at::Tensor pos = (context_lens - 1).to(at::kLong).contiguous();
  const int64_t n = qc.size(0), heads = qc.size(1), dim = qc.size(2), kv_heads = k_cache.size(1);
  TORCH_CHECK(pos.size(0) == n && slots.size(0) == n, "decode_attention: one context per query");
  const int64_t max_t = slots.size(1), num_slots = k_cache.size(0);
  const int64_t* p = pos.data_ptr<int64_t>();
  const int64_t* sl = slots.data_ptr<int64_t>();
  for (int64_t b = 0; b < n; ++b) {
    TORCH_CHECK(p[b] >= 0 && p[b] < max_t, "decode_attention: context length out of range");
    for (int64_t t = 0; t <= p[b]; ++t) TORCH_CHECK(sl[b * max_t + t] < num_slots, "decode_attention: bad slot");
  }
  at::Tensor out = at::empty({n, heads * dim}, qc.options());
  if (k_cache.dtype() == at::kBFloat16) {
    attend(qc.data_ptr<float>(), heads * dim, reinterpret_cast<const uint16_t*>(k_cache.data_ptr<at::BFloat16>()),
           reinterpret_cast<const uint16_t*>(v_cache.data_ptr<at::BFloat16>()), sl, max_t, p, n, heads, kv_heads, dim,
           out.data_ptr<float>());
  } else {
    attend(qc.data_ptr<float>(), heads * dim, k_cache.data_ptr<float>(), v_cache.data_ptr<float>(), sl, max_t, p, n,
           heads, kv_heads, dim, out.data_ptr<float>());
  }
  return out;
}

}  // namespace llmasos
