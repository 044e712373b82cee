// One step of the Llama family in one call: every layer's norm, 4-bit projections, RoPE, paged attention
// and SwiGLU without returning to Python, for decode tokens (one per sequence) and prompt chunks alike.
// Why: ~20 torch ops per layer cost ~11 ms of dispatch per token of a small model at decode; at prefill
// their norms, RoPE and SwiGLU over whole chunks (and the conversions between them) were ~0.2 s of a
// 1.9 s 1,024-token prompt, and a step that mixed decode tokens with a chunk ran every token that way.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "forward_step.h"
#include "kernels.h"
#include "quant_gemm.h"
#include "simd.h"

namespace llmasos {
namespace {

// y = x / rms(x) * w per token, the sum of squares in 8 lanes summed by hsum's fixed order.
void rms_norm(const float* x, const float* w, float eps, int64_t n, int64_t dim, float* y) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xr = x + t * dim;
    float* yr = y + t * dim;
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= dim; i += 8) {
      const __m256 v = _mm256_loadu_ps(xr + i);
      acc = _mm256_fmadd_ps(v, v, acc);
    }
    float ss = hsum(acc);
    for (; i < dim; ++i) ss += xr[i] * xr[i];
    const float inv = 1.f / std::sqrt(ss / static_cast<float>(dim) + eps);
    const __m256 inv_v = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= dim; i += 8)
      _mm256_storeu_ps(yr + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + i), inv_v), _mm256_loadu_ps(w + i)));
    for (; i < dim; ++i) yr[i] = xr[i] * inv * w[i];
  }
}

// x (heads, dim) rotated in place, "rotate half" layout: x' = x * cos + roll(x, dim/2) * signed_sin,
// each table row scaled by `scale` (1/sqrt(head_dim) for queries, as in the torch path). Eight lanes of
// each half at a time (a scalar loop with a modulo per element was 1.3 ms of a 32-sequence step).
void rope(float* x, int64_t heads, int64_t dim, const float* cos, const float* sin, float scale) {
  const int64_t half = dim / 2;
  const __m256 sc = _mm256_set1_ps(scale);
  for (int64_t h = 0; h < heads; ++h) {
    float* v = x + h * dim;
    int64_t i = 0;
    for (; i + 8 <= half; i += 8) {
      const __m256 lo = _mm256_loadu_ps(v + i), hi = _mm256_loadu_ps(v + i + half);
      const __m256 c_lo = _mm256_mul_ps(_mm256_loadu_ps(cos + i), sc), s_lo = _mm256_mul_ps(_mm256_loadu_ps(sin + i), sc);
      const __m256 c_hi = _mm256_mul_ps(_mm256_loadu_ps(cos + i + half), sc);
      const __m256 s_hi = _mm256_mul_ps(_mm256_loadu_ps(sin + i + half), sc);
      _mm256_storeu_ps(v + i, _mm256_fmadd_ps(lo, c_lo, _mm256_mul_ps(hi, s_lo)));
      _mm256_storeu_ps(v + i + half, _mm256_fmadd_ps(hi, c_hi, _mm256_mul_ps(lo, s_hi)));
    }
    for (; i < half; ++i) {  // head_dim not a multiple of 16: the same arithmetic, one pair at a time
      const float lo = v[i], hi = v[i + half];
      v[i] = std::fma(lo, cos[i] * scale, hi * (sin[i] * scale));
      v[i + half] = std::fma(hi, cos[i + half] * scale, lo * (sin[i + half] * scale));
    }
  }
}

inline void store_row(float* dst, const float* src, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }
inline void store_row(uint16_t* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bf16(src[i]);
}

// The per-token work between a step's GEMMs (norms, RoPE, SwiGLU), split between the threads:
// done by one thread, the other waited for it (~10% of a 32-sequence step). Below 8 tokens it runs
// inline. Each token's arithmetic is the same whichever thread runs it.
template <class F>
inline void per_token(int64_t n, const F& f) {
  at::parallel_for(0, n, 8, f);
}

// One layer's keys and values in a float32 or bfloat16 cache (slots, kv_heads, head_dim): where the
// step writes a token's row and what it attends over.
template <class KV>
struct KVLayer {
  KV* k;
  KV* v;
  int64_t slot_stride;
  void write(int64_t slot, const float* key, const float* value) const {
    store_row(k + slot * slot_stride, key, slot_stride);
    store_row(v + slot * slot_stride, value, slot_stride);
  }
};

// SwiGLU of one token: out[i] = silu(g[i]) * g[inter + i], with silu(v) = v / (1 + e^-v). The exp is
// exp256's (a scalar expf per element was 5 ms of a 32-sequence step, 5% of it).
inline void swiglu(const float* g, int64_t inter, float* out) {
  int64_t i = 0;
  const __m256 one = _mm256_set1_ps(1.f);
  for (; i + 8 <= inter; i += 8) {
    const __m256 v = _mm256_loadu_ps(g + i);
    // exp256 clamps: v > 87.3 gives v / (1 + ~1e-38) = v; v < -88.3 gives v / ~2e38, ~0, as silu.
    const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), v));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(one, e)), _mm256_loadu_ps(g + inter + i)));
  }
  for (; i < inter; ++i) out[i] = g[i] / (1.f + std::exp(-g[i])) * g[inter + i];
}

}  // namespace

StepWeights::StepWeights(std::vector<at::Tensor> tensors) : tensors_(std::move(tensors)) {
  constexpr int64_t kPerLayer = 22;
  const int64_t num_layers = static_cast<int64_t>(tensors_.size()) / kPerLayer;
  TORCH_CHECK(static_cast<int64_t>(tensors_.size()) == num_layers * kPerLayer, "StepWeights: 22 tensors per layer");
  for (int64_t l = 0; l < num_layers; ++l) {
    const at::Tensor* t = tensors_.data() + l * kPerLayer;
    TORCH_CHECK(t[0].dtype() == at::kFloat && t[0].is_contiguous() && t[1].dtype() == at::kFloat && t[1].is_contiguous(),
                "StepWeights: contiguous float32 norms");
    layers_.push_back({t[0].data_ptr<float>(), t[1].data_ptr<float>(), linear_view(t[2], t[3], t[4], t[5], t[6]),
                       linear_view(t[7], t[8], t[9], t[10], t[11]), linear_view(t[12], t[13], t[14], t[15], t[16]),
                       linear_view(t[17], t[18], t[19], t[20], t[21])});
  }
}

// SwiGLU of rows (n, 2 * inter) -> (n, inter), gate half first: the forward step's own, for tests.
at::Tensor swiglu_rows(const at::Tensor& gate_up) {
  const at::Tensor g = gate_up.to(at::kFloat).contiguous();
  TORCH_CHECK(g.dim() == 2 && g.size(1) % 2 == 0, "swiglu: (n, 2 * inter)");
  const int64_t n = g.size(0), inter = g.size(1) / 2;
  at::Tensor out = at::empty({n, inter}, g.options());
  for (int64_t b = 0; b < n; ++b) swiglu(g.data_ptr<float>() + b * 2 * inter, inter, out.data_ptr<float>() + b * inter);
  return out;
}

// One step over n tokens, token i at positions[i] written to cache slot slot_mapping[i]; returns the
// final-normed hidden states (n, hidden).
// Decode (query_start absent): token b is sequence b's one new token; its context is its first
// positions[b] + 1 slots of kv_slots row b. Prompt chunks (query_start, context_lens): sequence b's tokens
// are [query_start[b], query_start[b + 1]) and its context the first context_lens[b] slots of its row;
// any sequence may have one token (a decode token sharing the step).
at::Tensor forward_step(const at::Tensor& hidden_in, const at::Tensor& positions, const at::Tensor& slot_mapping,
                        const at::Tensor& kv_slots, at::Tensor kv_cache, const at::Tensor& rope_cos,
                        const at::Tensor& rope_sin, const StepWeights& weights, const at::Tensor& final_norm,
                        int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, double eps_d,
                        const c10::optional<at::Tensor>& query_start, const c10::optional<at::Tensor>& context_lens) {
  const std::vector<LayerWeights>& layers = weights.layers();
  const int64_t num_layers = static_cast<int64_t>(layers.size());
  TORCH_CHECK((kv_cache.dtype() == at::kFloat || kv_cache.dtype() == at::kBFloat16) && kv_cache.is_contiguous()
                  && kv_cache.dim() == 5,
              "kv_cache: contiguous float32 or bfloat16 (layers, 2, slots, kv_heads, head_dim)");
  TORCH_CHECK(kv_cache.size(0) == num_layers && kv_cache.size(3) == num_kv_heads && kv_cache.size(4) == head_dim,
              "kv_cache shape does not match the model");
  TORCH_CHECK(hidden_in.dtype() == at::kFloat && positions.dtype() == at::kLong && slot_mapping.dtype() == at::kLong
                  && kv_slots.dtype() == at::kLong,
              "forward_step: float32 hidden states, int64 indices");
  TORCH_CHECK(rope_cos.dtype() == at::kFloat && rope_cos.is_contiguous() && rope_sin.is_contiguous(),
              "rope tables: contiguous float32 (positions, head_dim)");
  const float eps = static_cast<float>(eps_d);
  at::Tensor x = hidden_in.contiguous().clone();
  const at::Tensor pos_c = positions.contiguous(), slot_c = slot_mapping.contiguous(), kv_c = kv_slots.contiguous();
  const int64_t n = x.size(0), hidden = x.size(1), max_t = kv_c.size(1);
  const int64_t q_size = num_heads * head_dim, kv_size = num_kv_heads * head_dim;
  const int64_t inter = layers.empty() ? 0 : layers[0].down.in_features();
  const int64_t num_slots = kv_cache.size(2);
  const int64_t* pos = pos_c.data_ptr<int64_t>();
  const int64_t* slots = slot_c.data_ptr<int64_t>();
  const int64_t* ctx = kv_c.data_ptr<int64_t>();
  TORCH_CHECK(pos_c.numel() == n && slot_c.numel() == n && kv_c.dim() == 2, "forward_step: one position and slot per token");
  for (int64_t b = 0; b < n; ++b) {
    TORCH_CHECK(pos[b] >= 0 && pos[b] < rope_cos.size(0) && pos[b] < max_t, "forward_step: position out of range");
    TORCH_CHECK(slots[b] >= 0 && slots[b] < num_slots, "forward_step: slot out of range");
  }
  const bool chunks = query_start.has_value();
  at::Tensor starts_c, lens_c;
  const int64_t *starts = nullptr, *lens = nullptr;
  int64_t num_seqs = n;
  if (chunks) {
    TORCH_CHECK(context_lens.has_value(), "forward_step: prompt chunks need context_lens");
    starts_c = query_start->to(at::kLong).contiguous();
    lens_c = context_lens->to(at::kLong).contiguous();
    num_seqs = lens_c.numel();
    TORCH_CHECK(starts_c.numel() == num_seqs + 1 && kv_c.size(0) == num_seqs,
                "forward_step: query_start (seqs + 1), context_lens (seqs), kv_slots (seqs, T)");
    TORCH_CHECK(head_dim % 16 == 0, "forward_step: prompt chunks need head_dim a multiple of 16");
    starts = starts_c.data_ptr<int64_t>();
    lens = lens_c.data_ptr<int64_t>();
    check_prefill_layout(starts, lens, ctx, num_seqs, max_t, num_slots, n);
  } else {
    TORCH_CHECK(kv_c.size(0) == n, "forward_step: decode steps have one token per kv_slots row");
    check_decode_layout(pos, ctx, n, max_t, num_slots);
  }
  // 64-byte aligned, so the threads' claims of output rows (kPanelsPerClaim) never share a cache line.
  AlignedFloats h(n * hidden), qkv(n * (q_size + 2 * kv_size)), attn(n * q_size), tmp(n * hidden);
  AlignedFloats gate_up(n * 2 * inter), act(n * inter);
  QuantActs acts;
  float* xp = x.data_ptr<float>();
  const bool bf16_cache = kv_cache.dtype() == at::kBFloat16;
  char* cache = static_cast<char*>(kv_cache.data_ptr());
  const int64_t plane_bytes = num_slots * kv_size * kv_cache.element_size();
  const float* cos_t = rope_cos.data_ptr<float>();
  const float* sin_t = rope_sin.data_ptr<float>();
  const float q_scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  const int64_t qkv_w = q_size + 2 * kv_size, slot_stride = kv_size;
  for (int64_t l = 0; l < num_layers; ++l) {
    const LayerWeights& lw = layers[l];
    char* k_plane = cache + (l * 2) * plane_bytes;
    char* v_plane = cache + (l * 2 + 1) * plane_bytes;
    const KVLayer<float> kv32{reinterpret_cast<float*>(k_plane), reinterpret_cast<float*>(v_plane), slot_stride};
    const KVLayer<uint16_t> kv16{reinterpret_cast<uint16_t*>(k_plane), reinterpret_cast<uint16_t*>(v_plane),
                                 slot_stride};
    per_token(n, [&](int64_t b0, int64_t b1) { rms_norm(xp + b0 * hidden, lw.attn_norm, eps, b1 - b0, hidden, h.data() + b0 * hidden); });
    acts.quantize(h.data(), n, hidden);
    linear_into(acts, n, lw.qkv, qkv.data());
    per_token(n, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        float* row = qkv.data() + b * qkv_w;
        const float* c = cos_t + pos[b] * head_dim;
        const float* s = sin_t + pos[b] * head_dim;
        rope(row, num_heads, head_dim, c, s, q_scale);
        rope(row + q_size, num_kv_heads, head_dim, c, s, 1.f);
        if (bf16_cache) {
          kv16.write(slots[b], row + q_size, row + q_size + kv_size);
        } else {
          kv32.write(slots[b], row + q_size, row + q_size + kv_size);
        }
      }
    });
    if (chunks && bf16_cache) {
      attend_prefill(qkv.data(), qkv_w, kv16.k, kv16.v, ctx, max_t, starts, lens, num_seqs, num_heads, num_kv_heads,
                     head_dim, attn.data());
    } else if (chunks) {
      attend_prefill(qkv.data(), qkv_w, kv32.k, kv32.v, ctx, max_t, starts, lens, num_seqs, num_heads, num_kv_heads,
                     head_dim, attn.data());
    } else if (bf16_cache) {
      attend_decode(qkv.data(), qkv_w, kv16.k, kv16.v, ctx, max_t, pos, n, num_heads, num_kv_heads, head_dim, attn.data());
    } else {
      attend_decode(qkv.data(), qkv_w, kv32.k, kv32.v, ctx, max_t, pos, n, num_heads, num_kv_heads, head_dim, attn.data());
    }
    acts.quantize(attn.data(), n, q_size);
    linear_into(acts, n, lw.o, tmp.data());
    per_token(n, [&](int64_t b0, int64_t b1) {
      for (int64_t i = b0 * hidden; i < b1 * hidden; ++i) xp[i] += tmp[i];
      rms_norm(xp + b0 * hidden, lw.ffn_norm, eps, b1 - b0, hidden, h.data() + b0 * hidden);
    });
    acts.quantize(h.data(), n, hidden);
    linear_into(acts, n, lw.gate_up, gate_up.data());
    per_token(n, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) swiglu(gate_up.data() + b * 2 * inter, inter, act.data() + b * inter);
    });
    acts.quantize(act.data(), n, inter);
    linear_into(acts, n, lw.down, tmp.data());
    per_token(n, [&](int64_t b0, int64_t b1) {
      for (int64_t i = b0 * hidden; i < b1 * hidden; ++i) xp[i] += tmp[i];
    });
  }
  at::Tensor out = at::empty_like(x);
  rms_norm(xp, final_norm.contiguous().data_ptr<float>(), eps, n, hidden, out.data_ptr<float>());
  return out;
}

}  // namespace llmasos
