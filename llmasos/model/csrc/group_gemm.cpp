// The 8-bit grouped GEMM: weights w = d_g * q + m_g (int8 q, float32 d_g and m_g per group of 16 inputs of a
// row, quant_gemm.h), activations rounded to 15-bit integers with one scale per token as for the 4-bit GEMM.
//
// Why: Q8_0, Q6_K and Q5_K weights were re-quantized to 4 bits (Qwen2.5-1.5B's Q6_K tensors among them), so
// the engine computed another model than the file's. Every GGUF block format is exactly "q d + m" per group
// of 16 with q in int8, so this one kernel computes them all as stored. A row's result is, for each group
// in order, float(the group's exact int32 sum of q x) * d_g + m_g * float(the token's sum of its 16 x),
// two FMAs per lane, then times the token's scale. The integer sums are exact (16 products of at most
// 128 x 16383), and every path (up to kInPlaceMaxTokens tokens in place, group_inplace.cpp; more through
// panels; AVX2 or AVX-512) takes the same float steps per lane in the same order, so they give the same bits.
//
// Q6_K blocks kept at 6 bits (Q6KWeight) run the same loops: only where a row vector's weights and group
// scales come from differs (Q8Rows, Q6Rows). Their q - 32 is widened to the same int16 pairs, their d_g is
// float(sc_g) * dsup (exact in float32: an 8-bit integer times an fp16), and they have no m_g.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels.h"
#include "quant_gemm.h"
#include "group_rows.h"
#include "row_vectors.h"
#include "simd.h"

namespace llmasos {
namespace {

#ifdef __AVX512VNNI__
constexpr int kTileTokens = 4;
#else
constexpr int kTileTokens = 3;  // AVX2's 16 registers
#endif

// ---- steps past kInPlaceMaxTokens tokens: the weights unpacked a chunk at a time, tiles of row vectors x tokens ----
//
// A claim of RV row vectors unpacks its weights to int16 kChunkGroups groups at a time (steps of more than
// kChunkMaxTokens tokens: all of them, quant_gemm.h; pair p of row vector i at (p * RV + i) * kRowLanes * 2
// from the chunk's first pair; 8 KB with AVX-512), with their d and m
// group-major (group g of row vector i at (g * RV + i) * kRowLanes). Every token runs over a chunk while it
// is in L1; a tile's float sums wait in the claim's buffer between chunks, so each lane takes its groups'
// float steps in the same order as over a panel of every input. Why: that whole panel (the claim's rows
// x every input, 96 KB at 1,536 inputs, 716 KB with its d and m at Qwen2.5-1.5B's 8,960) was read back
// from L2 by every tile, and a down projection's panel beside the step's activations outgrew L2.
constexpr int64_t kChunkGroups = 8;

struct GroupPanel {
  AlignedBuffer<int16_t> pairs;  // (chunk groups * kSubPairs, RV, kRowLanes, 2)
  AlignedFloats d, m;  // (chunk groups, RV, kRowLanes)
  AlignedFloats sums;  // every token's float sums between chunks: (n, RV, kRowLanes)

  // Groups [g0, g1) of row vectors [rv0, rv0 + RV), fetching the same groups of row vector `next` on.
  template <class Rows, int RV>
  void unpack(const typename Rows::Weight& w, int64_t rv0, int64_t g0, int64_t g1, int64_t next) {
    const bool fetch = next * kRowLanes < w.out_features;
    const char* ahead = Rows(w, fetch ? next : 0).first_byte();
    constexpr int64_t kGroupBytes = kSubPairs * Rows::kPairBytes;
    for (int i = 0; i < RV; ++i) {
      const Rows row(w, rv0 + i);
      for (int64_t g = g0; g < g1; ++g) {
        if (fetch && i == 0) prefetch_bytes(ahead + g * kGroupBytes, kGroupBytes);
        int16_t* dst = pairs.data() + ((g - g0) * kSubPairs * RV + i) * kRowLanes * 2;
        row.group_pairs(g, [&](int jp, IVec pair) { store_pairs(dst + jp * RV * kRowLanes * 2, pair); });
        fvec_store(d.data() + ((g - g0) * RV + i) * kRowLanes, row.scale(g));
        if constexpr (Rows::kOffsets) fvec_store(m.data() + ((g - g0) * RV + i) * kRowLanes, row.offset(g));
      }
    }
  }
};

// Where a chunk lies in the groups, whether it is a claim's first or last, and the claim's buffers (pointers,
// not the thread_local scratch, whose address every tile would fetch again through __tls_get_addr).
struct GroupChunk {
  int64_t g0, g1;
  bool first, last;
  const int16_t* pairs;
  const float* d;
  const float* m;
  float* sums;
};

// Tokens [t0, t0 + TN) against a chunk of RV row vectors starting at row vector rv0: their sums taken up
// (zero at the first chunk), the chunk's groups added, then kept for the next chunk or, after the last,
// scaled into y.
template <class Rows, int RV, int TN>
inline void chunk_tokens(const typename Rows::Weight& w, const QuantActs& acts, const float* xs,
                         const GroupChunk& c, int64_t t0, int64_t rv0, float* y) {
  const int16_t* x[TN];
  for (int j = 0; j < TN; ++j) x[j] = acts.xq.data() + (t0 + j) * acts.k;
  float* kept = c.sums + t0 * RV * kRowLanes;
  FVec sums[RV][TN];
  for (int i = 0; i < RV; ++i)
    for (int j = 0; j < TN; ++j) sums[i][j] = c.first ? fvec_zero() : fvec_load(kept + (j * RV + i) * kRowLanes);
  for (int64_t g = c.g0; g < c.g1; ++g) {
    IVec acc[RV][TN];
    for (int i = 0; i < RV; ++i)
      for (int j = 0; j < TN; ++j) acc[i][j] = ivec_zero();
    dot_eight_pairs<RV, TN>(c.pairs + (g - c.g0) * kSubPairs * RV * kRowLanes * 2, g * kSubPairs, x, acc);
    for (int i = 0; i < RV; ++i) {
      const FVec d = fvec_load(c.d + ((g - c.g0) * RV + i) * kRowLanes);
      const FVec m = Rows::kOffsets ? fvec_load(c.m + ((g - c.g0) * RV + i) * kRowLanes) : fvec_zero();
      for (int j = 0; j < TN; ++j)
        sums[i][j] = add_group<Rows::kOffsets>(sums[i][j], acc[i][j], d, m,
                                               Rows::kOffsets ? xs[(t0 + j) * w.groups + g] : 0.f);
    }
  }
  for (int j = 0; j < TN; ++j)
    for (int i = 0; i < RV; ++i) {
      if (c.last) {
        fvec_store(y + (t0 + j) * w.out_features + (rv0 + i) * kRowLanes,
                   fvec_mul(sums[i][j], fvec_set1(acts.scale[t0 + j])));
      } else {
        fvec_store(kept + (j * RV + i) * kRowLanes, sums[i][j]);
      }
    }
}

template <class Rows, int RV>
void chunk_rows(const typename Rows::Weight& w, const QuantActs& acts, const float* xs, int64_t n,
                const GroupChunk& c, int64_t rv0, float* y) {
  int64_t t = 0;
  for (; t + kTileTokens <= n; t += kTileTokens) chunk_tokens<Rows, RV, kTileTokens>(w, acts, xs, c, t, rv0, y);
  const int64_t left = n - t;
  if (left == 1) chunk_tokens<Rows, RV, 1>(w, acts, xs, c, t, rv0, y);
  if (left == 2) chunk_tokens<Rows, RV, 2>(w, acts, xs, c, t, rv0, y);
  if constexpr (kTileTokens > 3) {
    if (left == 3) chunk_tokens<Rows, RV, 3>(w, acts, xs, c, t, rv0, y);
  }
}

template <class Rows, int RV>
void claim_chunks(GroupPanel& s, const typename Rows::Weight& w, const QuantActs& acts, const float* xs, int64_t n,
                  int64_t chunk_groups, int64_t rv0, int64_t next, float* y) {
  for (int64_t g0 = 0; g0 < w.groups; g0 += chunk_groups) {
    const GroupChunk c{g0, std::min(w.groups, g0 + chunk_groups), g0 == 0, g0 + chunk_groups >= w.groups,
                       s.pairs.data(), s.d.data(), s.m.data(), s.sums.data()};
    s.unpack<Rows, RV>(w, rv0, c.g0, c.g1, next);
    chunk_rows<Rows, RV>(w, acts, xs, n, c, rv0, y);
  }
}

template <class Rows>
void panel_gemm(const QuantActs& acts, const float* xs, int64_t n, const typename Rows::Weight& w, float* y) {
  const int64_t vecs = w.out_features / kRowLanes;
  for_claimed_blocks(vecs, kUnitVecs, [&](int64_t rv0, int64_t rv1, int64_t next) {
    thread_local GroupPanel s;  // a thread's buffers live as long as it does: no allocation per claim
    const int64_t chunk_groups = n <= kChunkMaxTokens ? kChunkGroups : w.groups;  // quant_gemm.h
    s.pairs.resize(chunk_groups * kSubPairs * kUnitVecs * kRowLanes * 2);
    s.d.resize(chunk_groups * kUnitVecs * kRowLanes);
    s.m.resize(chunk_groups * kUnitVecs * kRowLanes);
    s.sums.resize(n * kUnitVecs * kRowLanes);
    if (rv1 - rv0 == kUnitVecs) {
      claim_chunks<Rows, kUnitVecs>(s, w, acts, xs, n, chunk_groups, rv0, next, y);
    } else {
      claim_chunks<Rows, 1>(s, w, acts, xs, n, chunk_groups, rv0, next, y);
    }
  });
}

// y (n, out) = x W^T (+ bias) for either grouped format.
template <class Rows>
void grouped_linear_into(const QuantActs& acts, int64_t n, const typename Rows::Weight& w, float* y) {
  thread_local AlignedFloats xs;
  if constexpr (Rows::kOffsets) group_sums(acts, n, xs);
  if (n > kInPlaceMaxTokens) {  // fewer read the weights in place (group_inplace.cpp)
    panel_gemm<Rows>(acts, xs.data(), n, w, y);
  } else if (n > 0) {
    grouped_inplace_into(acts, xs.data(), n, w, y);
  }
  if (w.bias != nullptr) {
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < w.out_features; ++r) y[t * w.out_features + r] += w.bias[r];
  }
}

const float* bias_data(const at::Tensor& bias, int64_t out) {
  if (!bias.defined() || bias.numel() == 0) return nullptr;
  TORCH_CHECK(bias.dtype() == at::kFloat && bias.is_contiguous() && bias.numel() == out, "bias: contiguous float32 (out,)");
  return bias.data_ptr<float>();
}

at::Tensor quantized_input(const at::Tensor& x, int64_t in_features, QuantActs& acts) {
  const at::Tensor xc = x.to(at::kFloat).contiguous();
  TORCH_CHECK(xc.dim() == 2 && xc.size(1) == in_features && in_features % 32 == 0,
              "x: (n, in_features), in_features a multiple of 32");
  acts.quantize(xc.data_ptr<float>(), xc.size(0), in_features);
  return xc;
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
  return {q.data_ptr<int8_t>(), d.data_ptr<float>(), m.data_ptr<float>(), bias_data(bias, out), out, in, groups};
}

void q8g_linear_into(const QuantActs& acts, int64_t n, const Q8GroupWeight& w, float* y) {
  grouped_linear_into<Q8Rows>(acts, n, w, y);
}

at::Tensor q8g_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& d, const at::Tensor& m,
                      const c10::optional<at::Tensor>& bias) {
  const Q8GroupWeight w = q8g_view(q, d, m, bias.has_value() ? *bias : at::Tensor());
  QuantActs acts;
  const at::Tensor xc = quantized_input(x, w.in_features, acts);
  at::Tensor y = at::empty({xc.size(0), w.out_features}, xc.options());
  q8g_linear_into(acts, xc.size(0), w, y.data_ptr<float>());
  return y;
}

Q6KWeight q6k_view(const at::Tensor& q, const at::Tensor& sc, const at::Tensor& dsup, const at::Tensor& bias) {
  TORCH_CHECK(q.dtype() == at::kByte && q.is_contiguous() && q.dim() == 3 && q.size(2) == kQ6QuadBytes
                  && q.size(1) % (kSuperGroup / 8) == 0,
              "q: contiguous uint8 (out/16, in/8, 96), in a multiple of 256");
  const int64_t blocks = q.size(0), in = q.size(1) * 8, groups = in / kSubGroup, out = blocks * kBlockRows;
  TORCH_CHECK(sc.dtype() == at::kChar && sc.is_contiguous() && sc.dim() == 3 && sc.size(0) == blocks
                  && sc.size(1) == groups && sc.size(2) == kBlockRows,
              "sc: contiguous int8 (out/16, in/16, 16)");
  TORCH_CHECK(dsup.dtype() == at::kFloat && dsup.is_contiguous() && dsup.dim() == 3 && dsup.size(0) == blocks
                  && dsup.size(1) == in / kSuperGroup && dsup.size(2) == kBlockRows,
              "dsup: contiguous float32 (out/16, in/256, 16)");
  return {q.data_ptr<uint8_t>(), sc.data_ptr<int8_t>(), dsup.data_ptr<float>(), bias_data(bias, out), out, in, groups};
}

void q6k_linear_into(const QuantActs& acts, int64_t n, const Q6KWeight& w, float* y) {
  grouped_linear_into<Q6Rows>(acts, n, w, y);
}

at::Tensor q6k_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& sc, const at::Tensor& dsup,
                      const c10::optional<at::Tensor>& bias) {
  const Q6KWeight w = q6k_view(q, sc, dsup, bias.has_value() ? *bias : at::Tensor());
  QuantActs acts;
  const at::Tensor xc = quantized_input(x, w.in_features, acts);
  at::Tensor y = at::empty({xc.size(0), w.out_features}, xc.options());
  q6k_linear_into(acts, xc.size(0), w, y.data_ptr<float>());
  return y;
}

LinearWeight linear_view(const at::Tensor& t0, const at::Tensor& t1, const at::Tensor& t2, const at::Tensor& t3,
                         const at::Tensor& bias) {
  LinearWeight w;
  if (t0.dtype() == at::kChar) {
    w.kind = LinearWeight::Kind::kQ8Group;
    w.q8g = q8g_view(t0, t1, t2, bias);
  } else if (t1.dtype() == at::kChar) {
    w.kind = LinearWeight::Kind::kQ6K;
    w.q6k = q6k_view(t0, t1, t2, bias);
  } else {
    w.q4 = q4_view(t0, t1, t2, t3, bias);
  }
  return w;
}

void linear_into(const QuantActs& acts, int64_t n, const LinearWeight& w, float* y) {
  switch (w.kind) {
    case LinearWeight::Kind::kQ8Group: q8g_linear_into(acts, n, w.q8g, y); break;
    case LinearWeight::Kind::kQ6K: q6k_linear_into(acts, n, w.q6k, y); break;
    case LinearWeight::Kind::kQ4: q4_linear_into(acts, n, w.q4, y); break;
  }
}

}  // namespace llmasos
