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

// Keys ahead of the one being scored whose key and value rows are fetched early. A sequence's rows sit
// in 16-slot blocks scattered over the pool, one kv head's 128-256 bytes in every slot's 384-768, which
// the hardware prefetchers did not follow: 30 layers of 32 sequences at 150 tokens took 19-24 ms from
// DRAM against 9.5 ms with the same rows in cache; prefetched, 12-16 ms for a bfloat16 cache (8 and
// 32 keys ahead measured the same, within this machine's noise).
constexpr int64_t kPrefetchKeys = 16;

// Heads of a kv group handled together, at most this many at a time: each key and value row is widened
// from the cache once for them all. Head by head, every row was loaded and widened once per head, and 30
// layers of 32 sequences (SmolLM2: 3 heads per kv head, bfloat16 cache) at 160 tokens took 13.9 ms with
// the rows in cache: the widening, not the multiply-adds, set the pace.
constexpr int kMaxGroupHeads = 4;

// sc[h * stride + t] = q_h . key(t) for the G heads at q (G rows of dim) and keys [0, len): two keys at a
// time (2G accumulators, the keys' two widened vectors and a query operand stay in registers), each sum
// reduced by hsum's tree, the arithmetic of `dot`.
template <int G, class KeyRow, class Prefetch>
inline void group_scores(const float* q, int64_t dim, int64_t len, const KeyRow& key, const Prefetch& prefetch,
                         float* sc, int64_t stride) {
  int64_t t = 0;
  for (; t + 2 <= len; t += 2) {
    prefetch(t + kPrefetchKeys);
    prefetch(t + kPrefetchKeys + 1);
    const auto* k0 = key(t);
    const auto* k1 = key(t + 1);
    __m256 acc[2 * G];
    for (int a = 0; a < 2 * G; ++a) acc[a] = _mm256_setzero_ps();
    for (int64_t i = 0; i < dim; i += 8) {
      const __m256 a0 = load8(k0 + i), a1 = load8(k1 + i);
      for (int h = 0; h < G; ++h) {
        const __m256 qv = _mm256_loadu_ps(q + h * dim + i);
        acc[2 * h] = _mm256_fmadd_ps(qv, a0, acc[2 * h]);
        acc[2 * h + 1] = _mm256_fmadd_ps(qv, a1, acc[2 * h + 1]);
      }
    }
    alignas(16) float sums[2 * G + 3];
    for (int a = 0; a < 2 * G; a += 4) {  // hsum4 reduces each vector by hsum's tree
      const __m256 z = _mm256_setzero_ps();
      _mm_store_ps(sums + a, hsum4(acc[a], a + 1 < 2 * G ? acc[a + 1] : z, a + 2 < 2 * G ? acc[a + 2] : z,
                                   a + 3 < 2 * G ? acc[a + 3] : z));
    }
    for (int h = 0; h < G; ++h) {
      sc[h * stride + t] = sums[2 * h];
      sc[h * stride + t + 1] = sums[2 * h + 1];
    }
  }
  for (; t < len; ++t)
    for (int h = 0; h < G; ++h) sc[h * stride + t] = dot(q + h * dim, key(t), dim);
}

// out[h * dim + d] = Σ_u w[h * stride + u] * value(u)[d] for the G heads, 16 dims at a time (2G
// accumulators, two widened value vectors and a weight broadcast in registers); each sum runs over u
// in order, one FMA per row. dim a multiple of 8.
template <int G, class ValueRow>
inline void group_values(const float* w, int64_t stride, int64_t len, int64_t dim, const ValueRow& value, float* out) {
  int64_t d0 = 0;
  for (; d0 + 16 <= dim; d0 += 16) {
    __m256 acc[2 * G];
    for (int a = 0; a < 2 * G; ++a) acc[a] = _mm256_setzero_ps();
    for (int64_t u = 0; u < len; ++u) {
      const auto* v = value(u) + d0;
      const __m256 v0 = load8(v), v1 = load8(v + 8);
      for (int h = 0; h < G; ++h) {
        const __m256 wv = _mm256_set1_ps(w[h * stride + u]);
        acc[2 * h] = _mm256_fmadd_ps(wv, v0, acc[2 * h]);
        acc[2 * h + 1] = _mm256_fmadd_ps(wv, v1, acc[2 * h + 1]);
      }
    }
    for (int h = 0; h < G; ++h) {
      _mm256_storeu_ps(out + h * dim + d0, acc[2 * h]);
      _mm256_storeu_ps(out + h * dim + d0 + 8, acc[2 * h + 1]);
    }
  }
  if (d0 < dim) {  // dim = 16k + 8
    __m256 acc[G];
    for (int h = 0; h < G; ++h) acc[h] = _mm256_setzero_ps();
    for (int64_t u = 0; u < len; ++u) {
      const __m256 v0 = load8(value(u) + d0);
      for (int h = 0; h < G; ++h) acc[h] = _mm256_fmadd_ps(_mm256_set1_ps(w[h * stride + u]), v0, acc[h]);
    }
    for (int h = 0; h < G; ++h) _mm256_storeu_ps(out + h * dim + d0, acc[h]);
  }
}

// Turns each of G rows of scores (sc[h * stride + t], t < len) into softmax weights in place.
inline void softmax_rows(float* sc, int64_t stride, int64_t len, int groups) {
  for (int h = 0; h < groups; ++h) {
    float* row = sc + h * stride;
    float mx = -INFINITY;
    for (int64_t t = 0; t < len; ++t) mx = std::max(mx, row[t]);
    __m256 dv = _mm256_setzero_ps();
    int64_t t = 0;
    for (; t + 8 <= len; t += 8) {
      const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(row + t), _mm256_set1_ps(mx)));
      _mm256_storeu_ps(row + t, e);
      dv = _mm256_add_ps(dv, e);
    }
    float denom = hsum(dv);
    for (; t < len; ++t) {
      row[t] = std::exp(row[t] - mx);
      denom += row[t];
    }
    const float inv = 1.f / denom;
    const __m256 inv_v = _mm256_set1_ps(inv);
    for (t = 0; t + 8 <= len; t += 8) _mm256_storeu_ps(row + t, _mm256_mul_ps(_mm256_loadu_ps(row + t), inv_v));
    for (; t < len; ++t) row[t] *= inv;
  }
}

template <int G, class KV, class KeyRow, class ValueRow, class Prefetch>
inline void attend_group(const float* q, int64_t dim, int64_t len, const KeyRow& key, const ValueRow& value,
                         const Prefetch& prefetch, float* sc, int64_t stride, float* out) {
  group_scores<G>(q, dim, len, key, prefetch, sc, stride);
  softmax_rows(sc, stride, len, G);
  group_values<G>(sc, stride, len, dim, value, out);
}

// Decode attention over a paged cache: query b (one token; heads at q + b * q_stride, pre-scaled) attends
// to the first pos[b] + 1 slots of its row of `kv_slots` (n, max_t). out: (n, heads * head_dim).
// Work items are (sequence, kv head): the heads sharing a kv head read each key and value row once, up
// to kMaxGroupHeads at a time (head_dim a multiple of 8, at most 256; others take the plain loop).
template <class KV>
void attend(const float* q_all, int64_t q_stride, const KV* k_cache, const KV* v_cache, const int64_t* kv_slots,
            int64_t max_t, const int64_t* pos, int64_t n, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
            float* attn) {
  const int64_t group = num_heads / num_kv_heads, slot_stride = num_kv_heads * head_dim;
  const int64_t q_size = num_heads * head_dim;
  const bool vector_dims = head_dim % 8 == 0 && head_dim <= 256;
  at::parallel_for(0, n * num_kv_heads, 1, [&](int64_t i0, int64_t i1) {
    const int64_t stride = max_t + 8;
    std::vector<float> scores(group * stride);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / num_kv_heads, kvh = i % num_kv_heads;
      const int64_t len = pos[b] + 1;
      const int64_t* seq_slots = kv_slots + b * max_t;
      const float* q0 = q_all + b * q_stride + kvh * group * head_dim;
      float* out0 = attn + b * q_size + kvh * group * head_dim;
      auto key = [&](int64_t t) { return k_cache + seq_slots[t] * slot_stride + kvh * head_dim; };
      auto value = [&](int64_t t) { return v_cache + seq_slots[t] * slot_stride + kvh * head_dim; };
      const int64_t row_bytes = head_dim * static_cast<int64_t>(sizeof(KV));
      auto prefetch = [&](int64_t t) {
        if (t >= len) return;
        prefetch_bytes(key(t), row_bytes);
        prefetch_bytes(value(t), row_bytes);
      };
      auto no_prefetch = [](int64_t) {};
      for (int64_t t = 0; t < std::min(len, kPrefetchKeys); ++t) prefetch(t);
      if (!vector_dims) {
        for (int64_t h = 0; h < group; ++h) {
          float* sc = scores.data() + h * stride;
          for (int64_t t = 0; t < len; ++t) sc[t] = dot(q0 + h * head_dim, key(t), head_dim);
        }
        softmax_rows(scores.data(), stride, len, static_cast<int>(group));
        for (int64_t h = 0; h < group; ++h) {
          float* out = out0 + h * head_dim;
          std::fill(out, out + head_dim, 0.f);
          for (int64_t u = 0; u < len; ++u) {
            const KV* v = value(u);
            for (int64_t d = 0; d < head_dim; ++d) out[d] += scores[h * stride + u] * to_float(v[d]);
          }
        }
        continue;
      }
      for (int64_t h0 = 0; h0 < group; h0 += kMaxGroupHeads) {
        const int heads = static_cast<int>(std::min<int64_t>(kMaxGroupHeads, group - h0));
        const float* q = q0 + h0 * head_dim;
        float* out = out0 + h0 * head_dim;
        // The first heads' pass brings the rows in; later passes over the same group find them in cache.
        switch (heads) {
          case 4:
            h0 == 0 ? attend_group<4, KV>(q, head_dim, len, key, value, prefetch, scores.data(), stride, out)
                    : attend_group<4, KV>(q, head_dim, len, key, value, no_prefetch, scores.data(), stride, out);
            break;
          case 3:
            h0 == 0 ? attend_group<3, KV>(q, head_dim, len, key, value, prefetch, scores.data(), stride, out)
                    : attend_group<3, KV>(q, head_dim, len, key, value, no_prefetch, scores.data(), stride, out);
            break;
          case 2:
            h0 == 0 ? attend_group<2, KV>(q, head_dim, len, key, value, prefetch, scores.data(), stride, out)
                    : attend_group<2, KV>(q, head_dim, len, key, value, no_prefetch, scores.data(), stride, out);
            break;
          default:
            h0 == 0 ? attend_group<1, KV>(q, head_dim, len, key, value, prefetch, scores.data(), stride, out)
                    : attend_group<1, KV>(q, head_dim, len, key, value, no_prefetch, scores.data(), stride, out);
            break;
        }
      }
    }
  });
}

}  // namespace

void check_decode_layout(const int64_t* pos, const int64_t* kv_slots, int64_t n, int64_t max_t, int64_t num_slots) {
  for (int64_t b = 0; b < n; ++b) {
    TORCH_CHECK(pos[b] >= 0 && pos[b] < max_t, "decode_attention: context length out of range");
    for (int64_t t = 0; t <= pos[b]; ++t)
      TORCH_CHECK(kv_slots[b * max_t + t] >= 0 && kv_slots[b * max_t + t] < num_slots, "decode_attention: bad slot");
  }
}

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
  check_decode_layout(p, sl, n, max_t, num_slots);
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
