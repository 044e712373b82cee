// Causal attention for steps that carry prompt chunks, over the paged KV cache, in flash-attention form.
//
// Why: torch's CPU flash attention, fed a padded (B, T_q, T_kv) mask, computes every score of the square
// (it can skip the masked half only for a top-left causal mask, which a later chunk of a prompt is not)
// and needs each sequence's keys and values gathered, widened to float32 and repeated per head first: for
// a 1,024-token SmolLM2 prompt in two 512-token chunks it was 0.49 s of a 2.0 s prefill. Here the keys
// are visited in blocks of kKeyBlock and a block past a query block's last position is never touched
// (a third fewer multiply-adds over the two chunks), each block is read from its cache slots once per
// work item and widened there, and the heads of a kv group share it.
//
// A work item is (sequence, kv head, block of kQueryBlock query tokens); its rows are the group's heads
// of each query token. Per key block: scores S = Q K^T by a 6-row x 16-key register tile over a
// transposed copy of the block's keys; an online softmax per row (running max m and sum l, the row's
// output rescaled when m grows); O += P V by a 6-row x 16-dim tile. A row's arithmetic depends only on
// its own query and the key blocks, whose bounds are absolute positions: results do not depend on how
// a prompt was chunked or on what else shares the step.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels.h"
#include "simd.h"

namespace llmasos {
namespace {

constexpr int64_t kKeyBlock = 32;    // two 16-key column tiles; a row's scores are four vectors
constexpr int64_t kQueryBlock = 32;  // query tokens per work item: 96 rows for SmolLM2's groups of 3
constexpr int kTileRows = 6;         // 6 x 2 accumulators + 2 loads + a broadcast fill 15 of 16 registers

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

// s[m][c .. c + 16) = q[m] . kt[:, c .. c + 16) for M rows; kt is (dim, kKeyBlock).
template <int M>
inline void score_tile(const float* q, int64_t dim, const float* kt, int64_t c, float* s) {
  __m256 acc[M][2];
  for (int m = 0; m < M; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
  for (int64_t d = 0; d < dim; ++d) {
    const __m256 k0 = _mm256_load_ps(kt + d * kKeyBlock + c);
    const __m256 k1 = _mm256_load_ps(kt + d * kKeyBlock + c + 8);
    for (int m = 0; m < M; ++m) {
      const __m256 qv = _mm256_broadcast_ss(q + m * dim + d);
      acc[m][0] = _mm256_fmadd_ps(qv, k0, acc[m][0]);
      acc[m][1] = _mm256_fmadd_ps(qv, k1, acc[m][1]);
    }
  }
  for (int m = 0; m < M; ++m) {
    _mm256_store_ps(s + m * kKeyBlock + c, acc[m][0]);
    _mm256_store_ps(s + m * kKeyBlock + c + 8, acc[m][1]);
  }
}

// o[m][d0 .. d0 + 16) += Σ_j p[m][j] v[j][d0 .. d0 + 16) over the block's first `keys` keys, M rows.
template <int M>
inline void value_tile(const float* p, int64_t keys, const float* vb, int64_t dim, float* o) {
  for (int64_t d0 = 0; d0 < dim; d0 += 16) {
    __m256 acc[M][2];
    for (int m = 0; m < M; ++m) {
      acc[m][0] = _mm256_load_ps(o + m * dim + d0);
      acc[m][1] = _mm256_load_ps(o + m * dim + d0 + 8);
    }
    for (int64_t j = 0; j < keys; ++j) {
      const __m256 v0 = _mm256_load_ps(vb + j * dim + d0);
      const __m256 v1 = _mm256_load_ps(vb + j * dim + d0 + 8);
      for (int m = 0; m < M; ++m) {
        const __m256 pv = _mm256_broadcast_ss(p + m * kKeyBlock + j);
        acc[m][0] = _mm256_fmadd_ps(pv, v0, acc[m][0]);
        acc[m][1] = _mm256_fmadd_ps(pv, v1, acc[m][1]);
      }
    }
    for (int m = 0; m < M; ++m) {
      _mm256_store_ps(o + m * dim + d0, acc[m][0]);
      _mm256_store_ps(o + m * dim + d0 + 8, acc[m][1]);
    }
  }
}

// The tile functions for the rows left after whole 6-row tiles.
template <class F>
inline void for_row_tiles(int64_t rows, const F& f) {
  int64_t r = 0;
  for (; r + kTileRows <= rows; r += kTileRows) f(r, std::integral_constant<int, kTileRows>());
  switch (rows - r) {
    case 5: f(r, std::integral_constant<int, 5>()); break;
    case 4: f(r, std::integral_constant<int, 4>()); break;
    case 3: f(r, std::integral_constant<int, 3>()); break;
    case 2: f(r, std::integral_constant<int, 2>()); break;
    case 1: f(r, std::integral_constant<int, 1>()); break;
    default: break;
  }
}

struct WorkItem {
  int64_t seq, kv_head, first_query, queries, cost;
};

// One thread's buffers, 32-byte aligned for the tiles' aligned loads (float vectors from std::vector
// are only 16-byte aligned).
struct Scratch {
  std::vector<float> storage;
  float *q, *s, *o, *kt, *vb, *m, *l;
  Scratch(int64_t rows, int64_t dim) {
    const int64_t sizes[] = {rows * dim, rows * kKeyBlock, rows * dim, dim * kKeyBlock, kKeyBlock * dim, rows, rows};
    int64_t total = 8;
    for (const int64_t n : sizes) total += (n + 7) & ~int64_t{7};
    storage.assign(total, 0.f);
    float* p = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(storage.data()) + 31) & ~uintptr_t{31});
    float** slots[] = {&q, &s, &o, &kt, &vb, &m, &l};
    for (int i = 0; i < 7; ++i) {
      *slots[i] = p;
      p += (sizes[i] + 7) & ~int64_t{7};
    }
  }
};

template <class KV>
void attend_chunks(const float* q_all, int64_t q_stride, const KV* k_cache, const KV* v_cache, const int64_t* kv_slots,
                   int64_t max_t, const int64_t* query_start, const int64_t* context_lens, int64_t num_seqs,
                   int64_t num_heads, int64_t num_kv_heads, int64_t dim, float* out) {
  const int64_t group = num_heads / num_kv_heads, slot_stride = num_kv_heads * dim, out_stride = num_heads * dim;
  std::vector<WorkItem> items;
  for (int64_t b = 0; b < num_seqs; ++b) {
    const int64_t queries = query_start[b + 1] - query_start[b], first_pos = context_lens[b] - queries;
    for (int64_t i0 = 0; i0 < queries; i0 += kQueryBlock) {
      const int64_t nq = std::min(kQueryBlock, queries - i0);
      for (int64_t h = 0; h < num_kv_heads; ++h) items.push_back({b, h, i0, nq, nq * (first_pos + i0 + nq)});
    }
  }
  // The costliest first, claimed one at a time: the late query blocks of a prompt see the most keys,
  // and a fixed split would leave one thread with most of them.
  std::stable_sort(items.begin(), items.end(), [](const WorkItem& a, const WorkItem& b) { return a.cost > b.cost; });
  std::atomic<int64_t> next{0};
  const int64_t num_items = static_cast<int64_t>(items.size());
  at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), num_items), 1, [&](int64_t, int64_t) {
    Scratch w(kQueryBlock * group, dim);
    for (int64_t it = next.fetch_add(1); it < num_items; it = next.fetch_add(1)) {
      const WorkItem& item = items[it];
      const int64_t b = item.seq, rows = item.queries * group;
      const int64_t first_pos = context_lens[b] - (query_start[b + 1] - query_start[b]) + item.first_query;
      const int64_t last_pos = first_pos + item.queries - 1;
      const int64_t* slots = kv_slots + b * max_t;
      // Rows are (query, head) query-major, so a row's position is first_pos + row / group.
      for (int64_t r = 0; r < rows; ++r) {
        const float* src = q_all + (query_start[b] + item.first_query + r / group) * q_stride +
                           (item.kv_head * group + r % group) * dim;
        std::copy(src, src + dim, w.q + r * dim);
        w.m[r] = -INFINITY;
        w.l[r] = 0.f;
      }
      std::fill(w.o, w.o + rows * dim, 0.f);
      const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      for (int64_t k0 = 0; k0 <= last_pos; k0 += kKeyBlock) {
        const int64_t keys = std::min(kKeyBlock, last_pos + 1 - k0);
        alignas(32) float row[8];
        for (int64_t j = 0; j < keys; ++j) {
          const int64_t slot = slots[k0 + j] * slot_stride + item.kv_head * dim;
          const KV* k = k_cache + slot;
          const KV* v = v_cache + slot;
          for (int64_t d = 0; d < dim; d += 8) {
            _mm256_store_ps(row, load8(k + d));
            for (int e = 0; e < 8; ++e) w.kt[(d + e) * kKeyBlock + j] = row[e];
            _mm256_store_ps(w.vb + j * dim + d, load8(v + d));
          }
        }
        for (int64_t c = 0; c < keys; c += 16) {
          for_row_tiles(rows, [&](int64_t r, auto m) { score_tile<decltype(m)::value>(w.q + r * dim, dim, w.kt, c, w.s + r * kKeyBlock); });
        }
        // Online softmax: keys past a row's position (and past the block's end) get probability 0.
        for (int64_t r = 0; r < rows; ++r) {
          float* s = w.s + r * kKeyBlock;
          const int64_t visible = std::clamp<int64_t>(first_pos + r / group - k0 + 1, 0, keys);
          if (visible == 0) {
            std::fill(s, s + kKeyBlock, 0.f);
            continue;
          }
          const __m256i limit = _mm256_set1_epi32(static_cast<int>(visible));
          __m256 sv[kKeyBlock / 8], valid[kKeyBlock / 8];
          __m256 mx = _mm256_set1_ps(-INFINITY);
          for (int c = 0; c < kKeyBlock / 8; ++c) {
            valid[c] = _mm256_castsi256_ps(_mm256_cmpgt_epi32(limit, _mm256_add_epi32(lane, _mm256_set1_epi32(c * 8))));
            sv[c] = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_load_ps(s + c * 8), valid[c]);
            mx = _mm256_max_ps(mx, sv[c]);
          }
          const float m_old = w.m[r], m_new = std::max(m_old, hmax(mx));
          const __m256 m_v = _mm256_set1_ps(m_new);
          __m256 sum = _mm256_setzero_ps();
          for (int c = 0; c < kKeyBlock / 8; ++c) {
            const __m256 p = _mm256_and_ps(exp256(_mm256_sub_ps(sv[c], m_v)), valid[c]);
            _mm256_store_ps(s + c * 8, p);
            sum = _mm256_add_ps(sum, p);
          }
          if (m_new > m_old) {  // earlier blocks' sums and outputs were relative to the smaller max
            const float alpha = std::exp(m_old - m_new);  // 0 for the first block (m_old = -inf)
            w.l[r] *= alpha;
            float* o = w.o + r * dim;
            const __m256 a = _mm256_set1_ps(alpha);
            for (int64_t d = 0; d < dim; d += 8) _mm256_store_ps(o + d, _mm256_mul_ps(a, _mm256_load_ps(o + d)));
          }
          w.m[r] = m_new;
          w.l[r] += hsum(sum);
        }
        for_row_tiles(rows, [&](int64_t r, auto m) {
          constexpr int M = decltype(m)::value;
          // The tile's last row has the latest position: no row needs keys past its visible ones.
          const int64_t visible = std::clamp<int64_t>(first_pos + (r + M - 1) / group - k0 + 1, 0, keys);
          value_tile<M>(w.s + r * kKeyBlock, visible, w.vb, dim, w.o + r * dim);
        });
      }
      for (int64_t r = 0; r < rows; ++r) {
        float* dst = out + (query_start[b] + item.first_query + r / group) * out_stride +
                     (item.kv_head * group + r % group) * dim;
        const __m256 inv = _mm256_set1_ps(1.f / w.l[r]);
        for (int64_t d = 0; d < dim; d += 8) _mm256_storeu_ps(dst + d, _mm256_mul_ps(inv, _mm256_load_ps(w.o + r * dim + d)));
      }
    }
  });
}

}  // namespace

void attend_prefill(const float* q_all, int64_t q_stride, const float* k_cache, const float* v_cache,
                    const int64_t* kv_slots, int64_t max_t, const int64_t* query_start, const int64_t* context_lens,
                    int64_t num_seqs, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, float* out) {
  attend_chunks(q_all, q_stride, k_cache, v_cache, kv_slots, max_t, query_start, context_lens, num_seqs, num_heads,
                num_kv_heads, head_dim, out);
}

void attend_prefill(const float* q_all, int64_t q_stride, const uint16_t* k_cache, const uint16_t* v_cache,
                    const int64_t* kv_slots, int64_t max_t, const int64_t* query_start, const int64_t* context_lens,
                    int64_t num_seqs, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, float* out) {
  attend_chunks(q_all, q_stride, k_cache, v_cache, kv_slots, max_t, query_start, context_lens, num_seqs, num_heads,
                num_kv_heads, head_dim, out);
}

void check_prefill_layout(const int64_t* query_start, const int64_t* context_lens, const int64_t* kv_slots,
                          int64_t num_seqs, int64_t max_t, int64_t num_slots, int64_t num_tokens) {
  TORCH_CHECK(query_start[0] == 0 && query_start[num_seqs] == num_tokens,
              "prefill_attention: query_start must run from 0 to the token count");
  for (int64_t b = 0; b < num_seqs; ++b) {
    const int64_t queries = query_start[b + 1] - query_start[b];
    TORCH_CHECK(queries >= 1 && context_lens[b] >= queries && context_lens[b] <= max_t,
                "prefill_attention: bad query or context length");
    for (int64_t t = 0; t < context_lens[b]; ++t)
      TORCH_CHECK(kv_slots[b * max_t + t] >= 0 && kv_slots[b * max_t + t] < num_slots, "prefill_attention: bad slot");
  }
}

at::Tensor prefill_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                             const at::Tensor& kv_slots, const at::Tensor& query_start,
                             const at::Tensor& context_lens) {
  TORCH_CHECK(q.dtype() == at::kFloat && q.dim() == 3, "prefill_attention: float32 queries (tokens, heads, head_dim)");
  TORCH_CHECK(k_cache.dtype() == v_cache.dtype() && (k_cache.dtype() == at::kFloat || k_cache.dtype() == at::kBFloat16),
              "prefill_attention: float32 or bfloat16 caches");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous() && k_cache.dim() == 3 && v_cache.sizes() == k_cache.sizes(),
              "prefill_attention: contiguous caches (slots, kv_heads, head_dim)");
  // Rows of heads may be strided (q is a view of the fused q|k projection); heads and dims must not be.
  const at::Tensor qc = q.stride(2) == 1 && q.stride(1) == q.size(2) ? q : q.contiguous();
  const int64_t n = qc.size(0), heads = qc.size(1), dim = qc.size(2), kv_heads = k_cache.size(1);
  TORCH_CHECK(k_cache.size(2) == dim && heads % kv_heads == 0, "prefill_attention: cache does not match the queries");
  TORCH_CHECK(dim % 16 == 0, "prefill_attention: head_dim must be a multiple of 16");
  const at::Tensor slots = kv_slots.to(at::kLong).contiguous();
  const at::Tensor starts = query_start.to(at::kLong).contiguous(), lens = context_lens.to(at::kLong).contiguous();
  const int64_t num_seqs = lens.numel(), max_t = slots.size(1), num_slots = k_cache.size(0);
  TORCH_CHECK(slots.dim() == 2 && slots.size(0) == num_seqs && starts.numel() == num_seqs + 1,
              "prefill_attention: kv_slots (seqs, T), query_start (seqs + 1), context_lens (seqs)");
  const int64_t* st = starts.data_ptr<int64_t>();
  const int64_t* ln = lens.data_ptr<int64_t>();
  const int64_t* sl = slots.data_ptr<int64_t>();
  check_prefill_layout(st, ln, sl, num_seqs, max_t, num_slots, n);
  at::Tensor out = at::empty({n, heads * dim}, qc.options());
  if (k_cache.dtype() == at::kBFloat16) {
    attend_prefill(qc.data_ptr<float>(), qc.stride(0), reinterpret_cast<const uint16_t*>(k_cache.data_ptr<at::BFloat16>()),
                  reinterpret_cast<const uint16_t*>(v_cache.data_ptr<at::BFloat16>()), sl, max_t, st, ln, num_seqs, heads,
                  kv_heads, dim, out.data_ptr<float>());
  } else {
    attend_prefill(qc.data_ptr<float>(), qc.stride(0), k_cache.data_ptr<float>(), v_cache.data_ptr<float>(), sl, max_t, st,
                  ln, num_seqs, heads, kv_heads, dim, out.data_ptr<float>());
  }
  return out;
}

}  // namespace llmasos
