// The 8-bit grouped GEMM: weights w = d_g * q + m_g (int8 q, float32 d_g and m_g per group of 16 inputs of a
// row, quant_gemm.h), activations rounded to 15-bit integers with one scale per token as for the 4-bit GEMM.
//
// Why: Q8_0, Q6_K and Q5_K weights were re-quantized to 4 bits (Qwen2.5-1.5B's Q6_K tensors among them), so
// the engine computed another model than the file's. Every GGUF block format is exactly "q d + m" per group
// of 16 with q in int8, so this one kernel computes them all as stored. A row's result is, for each group
// in order, float(the group's exact int32 sum of q x) * d_g + m_g * float(the token's sum of its 16 x),
// two FMAs per lane, then times the token's scale. The integer sums are exact (16 products of at most
// 128 x 16383), and every path (1-3 tokens in place, 4 or more through panels; AVX2 or AVX-512) takes the
// same float steps per lane in the same order, so they give the same bits.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels.h"
#include "quant_gemm.h"
#include "row_vectors.h"
#include "simd.h"

namespace llmasos {
namespace {

constexpr int64_t kSubPairs = kSubGroup / 2;  // input pairs per group
// Row vectors per small step's unit and per panel: two in both builds (AVX-512: two blocks; AVX2: one).
constexpr int kUnitVecs = 2;
constexpr int64_t kClaimVecs = 8;  // row vectors per claim of the threads
constexpr int64_t kAheadVecs = 4;  // how far ahead (in row vectors) a step fetches weights
#ifdef __AVX512VNNI__
constexpr int kTileTokens = 4;
#else
constexpr int kTileTokens = 3;  // AVX2's 16 registers
#endif

// Each token's sum of its integer activations over every group of 16, as floats (exact: |sum| <= 16 x 16383).
void group_sums(const QuantActs& acts, int64_t n, AlignedFloats& xs) {
  const int64_t groups = acts.k / kSubGroup;
  xs.resize(n * groups);
  for (int64_t t = 0; t < n; ++t) {
    const int16_t* x = acts.xq.data() + t * acts.k;
    for (int64_t g = 0; g < groups; ++g) {
      int32_t s = 0;
      for (int64_t i = 0; i < kSubGroup; ++i) s += x[g * kSubGroup + i];
      xs[t * groups + g] = static_cast<float>(s);
    }
  }
}

// Where row vector rv's weights lie: its block's pairs, its lanes (v), its d and m of group 0.
struct RowVector {
  const int8_t* q;
  const float* d;
  const float* m;
  int v;

  RowVector(const Q8GroupWeight& w, int64_t rv) {
    const int64_t block = rv / kBlockVecs;
    v = static_cast<int>(rv % kBlockVecs);
    q = w.q + block * (w.in_features / 2) * 32;
    d = w.d + block * w.groups * kBlockRows + v * kRowLanes;
    m = w.m + block * w.groups * kBlockRows + v * kRowLanes;
  }
};

// The lanes' float step for one group: sums += acc * d; sums += m * xsum.
inline FVec add_group(FVec sums, IVec acc, FVec d, FVec m, float xsum) {
  return fvec_fmadd(m, fvec_set1(xsum), fvec_fmadd(ivec_to_float(acc), d, sums));
}

// Group g of the blocks holding row vectors [rv, rv + NV), fetched ahead of their use.
template <int NV>
inline void prefetch_group(const Q8GroupWeight& w, int64_t rv, int64_t g) {
  for (int64_t b = rv / kBlockVecs; b <= (rv + NV - 1) / kBlockVecs; ++b) {
    if (b * kBlockRows >= w.out_features) return;
    prefetch_bytes(w.q + (b * (w.in_features / 2) + g * kSubPairs) * 32, kSubPairs * 32);
    prefetch_line(reinterpret_cast<const char*>(w.d + (b * w.groups + g) * kBlockRows));
    prefetch_line(reinterpret_cast<const char*>(w.m + (b * w.groups + g) * kBlockRows));
  }
}

// ---- steps of 1-3 tokens: the weights read in place, once ----

template <int NV, int TN>
void small_vecs(const QuantActs& acts, const float* xs, const Q8GroupWeight& w, int64_t rv0, int64_t ahead, float* y) {
  const int16_t* x[TN];
  for (int j = 0; j < TN; ++j) x[j] = acts.xq.data() + j * acts.k;
  const RowVector first(w, rv0), last(w, rv0 + NV - 1);
  const RowVector* rows[2] = {&first, &last};
  FVec sums[NV][TN];
  for (int i = 0; i < NV; ++i)
    for (int j = 0; j < TN; ++j) sums[i][j] = fvec_zero();
  for (int64_t g = 0; g < w.groups; ++g) {
    prefetch_group<NV>(w, ahead, g);
    IVec acc[NV][TN];
    for (int i = 0; i < NV; ++i)
      for (int j = 0; j < TN; ++j) acc[i][j] = ivec_zero();
    for (int64_t p = g * kSubPairs; p < (g + 1) * kSubPairs; ++p) {
      for (int i = 0; i < NV; ++i) {
        const IVec wv = widen_i8(rows[i]->q + p * 32, rows[i]->v);
        for (int j = 0; j < TN; ++j) acc[i][j] = dot_pairs(acc[i][j], wv, activation_pair(x[j], p));
      }
    }
    for (int i = 0; i < NV; ++i) {
      const FVec d = fvec_load(rows[i]->d + g * kBlockRows), m = fvec_load(rows[i]->m + g * kBlockRows);
      for (int j = 0; j < TN; ++j) sums[i][j] = add_group(sums[i][j], acc[i][j], d, m, xs[j * w.groups + g]);
    }
  }
  for (int i = 0; i < NV; ++i)
    for (int j = 0; j < TN; ++j)
      fvec_store(y + j * w.out_features + (rv0 + i) * kRowLanes, fvec_mul(sums[i][j], fvec_set1(acts.scale[j])));
}

template <int TN>
void small_gemm(const QuantActs& acts, const float* xs, const Q8GroupWeight& w, float* y) {
  const int64_t vecs = w.out_features / kRowLanes;
  for_claimed_blocks(vecs, kClaimVecs, [&](int64_t begin, int64_t end, int64_t next) {
    int64_t rv = begin;
    for (; rv + kUnitVecs <= end; rv += kUnitVecs)
      small_vecs<kUnitVecs, TN>(acts, xs, w, rv, block_ahead(rv, kAheadVecs, end, next), y);
    for (; rv < end; ++rv) small_vecs<1, TN>(acts, xs, w, rv, block_ahead(rv, kAheadVecs, end, next), y);
  });
}

// ---- steps of 4 or more tokens: panels unpacked once, tiles of row vectors x tokens ----
//
// A panel holds RV row vectors' weights unpacked to int16, pair-major (pair p of row vector i at
// (p * RV + i) * kRowLanes * 2), and their d and m group-major (group g of row vector i at (g * RV + i) *
// kRowLanes).
struct GroupPanel {
  AlignedBuffer<int16_t> pairs;
  AlignedFloats d, m;

  template <int RV>
  void unpack(const Q8GroupWeight& w, int64_t rv0, int64_t next) {
    const int64_t n_pairs = w.in_features / 2;
    pairs.resize(n_pairs * RV * kRowLanes * 2);
    d.resize(w.groups * RV * kRowLanes);
    m.resize(w.groups * RV * kRowLanes);
    const bool fetch = next * kRowLanes < w.out_features;
    const char* ahead = reinterpret_cast<const char*>(RowVector(w, fetch ? next : 0).q);
    for (int i = 0; i < RV; ++i) {
      const RowVector row(w, rv0 + i);
      for (int64_t p = 0; p < n_pairs; p += 2) {
        if (fetch && i == 0) prefetch_line(ahead + p * 32);
        store_pairs(pairs.data() + (p * RV + i) * kRowLanes * 2, widen_i8(row.q + p * 32, row.v));
        store_pairs(pairs.data() + ((p + 1) * RV + i) * kRowLanes * 2, widen_i8(row.q + (p + 1) * 32, row.v));
      }
      for (int64_t g = 0; g < w.groups; ++g) {
        std::memcpy(d.data() + (g * RV + i) * kRowLanes, row.d + g * kBlockRows, kRowLanes * sizeof(float));
        std::memcpy(m.data() + (g * RV + i) * kRowLanes, row.m + g * kBlockRows, kRowLanes * sizeof(float));
      }
    }
  }
};

// Tokens [t0, t0 + TN) against a panel of RV row vectors starting at row vector rv0.
template <int RV, int TN>
inline void panel_tokens(const GroupPanel& s, const Q8GroupWeight& w, const QuantActs& acts, const float* xs,
                         int64_t t0, int64_t rv0, float* y) {
  const int16_t* x[TN];
  for (int j = 0; j < TN; ++j) x[j] = acts.xq.data() + (t0 + j) * acts.k;
  FVec sums[RV][TN];
  for (int i = 0; i < RV; ++i)
    for (int j = 0; j < TN; ++j) sums[i][j] = fvec_zero();
  const int16_t* panel = s.pairs.data();
  for (int64_t g = 0; g < w.groups; ++g) {
    IVec acc[RV][TN];
    for (int i = 0; i < RV; ++i)
      for (int j = 0; j < TN; ++j) acc[i][j] = ivec_zero();
#pragma GCC unroll 8
    for (int64_t p = g * kSubPairs; p < (g + 1) * kSubPairs; ++p) {
      IVec wv[RV];
      for (int i = 0; i < RV; ++i) wv[i] = load_pairs(panel + (p * RV + i) * kRowLanes * 2);
      for (int j = 0; j < TN; ++j) {
        const IVec xb = activation_pair(x[j], p);
        for (int i = 0; i < RV; ++i) acc[i][j] = dot_pairs(acc[i][j], wv[i], xb);
      }
    }
    for (int i = 0; i < RV; ++i) {
      const FVec d = fvec_load(s.d.data() + (g * RV + i) * kRowLanes);
      const FVec m = fvec_load(s.m.data() + (g * RV + i) * kRowLanes);
      for (int j = 0; j < TN; ++j) sums[i][j] = add_group(sums[i][j], acc[i][j], d, m, xs[(t0 + j) * w.groups + g]);
    }
  }
  for (int j = 0; j < TN; ++j)
    for (int i = 0; i < RV; ++i)
      fvec_store(y + (t0 + j) * w.out_features + (rv0 + i) * kRowLanes,
                 fvec_mul(sums[i][j], fvec_set1(acts.scale[t0 + j])));
}

template <int RV>
void panel_rows(const GroupPanel& s, const Q8GroupWeight& w, const QuantActs& acts, const float* xs, int64_t n,
                int64_t rv0, float* y) {
  int64_t t = 0;
  for (; t + kTileTokens <= n; t += kTileTokens) panel_tokens<RV, kTileTokens>(s, w, acts, xs, t, rv0, y);
  const int64_t left = n - t;
  if (left == 1) panel_tokens<RV, 1>(s, w, acts, xs, t, rv0, y);
  if (left == 2) panel_tokens<RV, 2>(s, w, acts, xs, t, rv0, y);
  if constexpr (kTileTokens > 3) {
    if (left == 3) panel_tokens<RV, 3>(s, w, acts, xs, t, rv0, y);
  }
}

void panel_gemm(const QuantActs& acts, const float* xs, int64_t n, const Q8GroupWeight& w, float* y) {
  const int64_t vecs = w.out_features / kRowLanes;
  for_claimed_blocks(vecs, kUnitVecs, [&](int64_t rv0, int64_t rv1, int64_t next) {
    thread_local GroupPanel s;  // a thread's panel lives as long as it does: no allocation per claim
    if (rv1 - rv0 == kUnitVecs) {
      s.unpack<kUnitVecs>(w, rv0, next);
      panel_rows<kUnitVecs>(s, w, acts, xs, n, rv0, y);
    } else {
      s.unpack<1>(w, rv0, next);
      panel_rows<1>(s, w, acts, xs, n, rv0, y);
    }
  });
}

}  // namespace

Q8GroupWeight q8g_view(const at::Tensor& q, const at::Tensor& d, const at::Tensor& m, const at::Tensor& bias) {
  TORCH_CHECK(q.dtype() == at::kChar && q.is_contiguous() && q.dim() == 3 && q.size(2) == 32 && q.size(1) % kSubPairs == 0,
              "q: contiguous int8 (out/16, in/2, 32), in a multiple of 16");
  const int64_t blocks = q.size(0), in = q.size(1) * 2, groups = in / kSubGroup, out = blocks * kBlockRows;
  for (const at::Tensor* t : {&d, &m}) {
    TORCH_CHECK(t->dtype() == at::kFloat && t->is_contiguous() && t->dim() == 3 && t->size(0) == blocks
                    && t->size(1) == groups && t->size(2) == kBlockRows,
                "d/m: contiguous float32 (out/16, in/16, 16)");
  }
  const float* b = nullptr;
  if (bias.defined() && bias.numel() > 0) {
    TORCH_CHECK(bias.dtype() == at::kFloat && bias.is_contiguous() && bias.numel() == out, "bias: contiguous float32 (out,)");
    b = bias.data_ptr<float>();
  }
  return {q.data_ptr<int8_t>(), d.data_ptr<float>(), m.data_ptr<float>(), b, out, in, groups};
}

void q8g_linear_into(const QuantActs& acts, int64_t n, const Q8GroupWeight& w, float* y) {
  thread_local AlignedFloats xs;
  group_sums(acts, n, xs);
  switch (n) {  // 1-3 tokens read the weights in place; more take the panels
    case 0: break;
    case 1: small_gemm<1>(acts, xs.data(), w, y); break;
    case 2: small_gemm<2>(acts, xs.data(), w, y); break;
    case 3: small_gemm<3>(acts, xs.data(), w, y); break;
    default: panel_gemm(acts, xs.data(), n, w, y);
  }
  if (w.bias != nullptr) {
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < w.out_features; ++r) y[t * w.out_features + r] += w.bias[r];
  }
}

at::Tensor q8g_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& d, const at::Tensor& m,
                      const c10::optional<at::Tensor>& bias) {
  const Q8GroupWeight w = q8g_view(q, d, m, bias.has_value() ? *bias : at::Tensor());
  const at::Tensor xc = x.to(at::kFloat).contiguous();
  TORCH_CHECK(xc.dim() == 2 && xc.size(1) == w.in_features && w.in_features % 32 == 0,
              "x: (n, in_features), in_features a multiple of 32");
  const int64_t n = xc.size(0);
  at::Tensor y = at::empty({n, w.out_features}, xc.options());
  QuantActs acts;
  acts.quantize(xc.data_ptr<float>(), n, w.in_features);
  q8g_linear_into(acts, n, w, y.data_ptr<float>());
  return y;
}

LinearWeight linear_view(const at::Tensor& t0, const at::Tensor& t1, const at::Tensor& t2, const at::Tensor& t3,
                         const at::Tensor& bias) {
  LinearWeight w;
  w.grouped = t0.dtype() == at::kChar;
  if (w.grouped) {
    w.q8g = q8g_view(t0, t1, t2, bias);
  } else {
    w.q4 = q4_view(t0, t1, t2, t3, bias);
  }
  return w;
}

void linear_into(const QuantActs& acts, int64_t n, const LinearWeight& w, float* y) {
  if (w.grouped) {
    q8g_linear_into(acts, n, w.q8g, y);
  } else {
    q4_linear_into(acts, n, w.q4, y);
  }
}

}  // namespace llmasos
