// The grouped GEMMs (group_gemm.cpp) for steps of 1 to kInPlaceMaxTokens tokens: each weight read in place,
// once, in registers, for a pass of up to kPassTokens tokens at a time (more tokens: a second pass over the
// unit's weights, from L1). Every lane takes its groups' float steps in the panels' order, so both give the
// same bits. Why passes rather than the panels from 4 tokens: a 4-token step through the panels (unpacked,
// stored, read back) cost twice a 3-token step in place (Qwen2.5-1.5B's Q6_K head 26.8 against 13.3 ms of
// one core, its Q6_K down projections 19.1 against 10.3).
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "group_rows.h"
#include "quant_gemm.h"
#include "row_vectors.h"
#include "simd.h"

namespace llmasos {
namespace {

constexpr int64_t kClaimVecs = 8;  // row vectors per claim of the threads
constexpr int64_t kAheadVecs = 4;  // how far ahead (in row vectors) a step fetches weights
constexpr int kPassTokens = 4;  // tokens per pass over a unit's weights

// Group g of the blocks holding row vectors [rv, rv + NV), fetched ahead of their use.
template <class Rows, int NV>
inline void prefetch_group(const typename Rows::Weight& w, int64_t rv, int64_t g) {
  for (int64_t b = rv / kBlockVecs; b <= (rv + NV - 1) / kBlockVecs; ++b) {
    if (b * kBlockRows >= w.out_features) return;
    Rows::prefetch(w, b, g);
  }
}

// Tokens [t0, t0 + TN) against row vectors [rv0, rv0 + NV), fetching those from `ahead` on (< 0: none).
template <class Rows, int NV, int TN>
void group_pass(const QuantActs& acts, const float* xs, const typename Rows::Weight& w, int64_t t0, int64_t rv0,
                int64_t ahead, float* y) {
  const int16_t* x[TN];
  for (int j = 0; j < TN; ++j) x[j] = acts.xq.data() + (t0 + j) * acts.k;
  const Rows first(w, rv0), last(w, rv0 + NV - 1);
  const Rows* rows[2] = {&first, &last};
  FVec sums[NV][TN];
  for (int i = 0; i < NV; ++i)
    for (int j = 0; j < TN; ++j) sums[i][j] = fvec_zero();
  for (int64_t g = 0; g < w.groups; ++g) {
    if (ahead >= 0) prefetch_group<Rows, NV>(w, ahead, g);
    IVec acc[NV][TN];
    for (int i = 0; i < NV; ++i)
      for (int j = 0; j < TN; ++j) acc[i][j] = ivec_zero();
    // A group's pairs widened together (group_pairs: Q6_K's nibble and high-bit bytes once for 4 pairs, where
    // pair() took ~9 vector operations each, most of a one-token step's work); the integer sums are exact in
    // any order.
#pragma GCC unroll 2
    for (int i = 0; i < NV; ++i) {
      rows[i]->group_pairs(g, [&](int jp, IVec wv) {
        for (int j = 0; j < TN; ++j) acc[i][j] = dot_pairs(acc[i][j], wv, activation_pair(x[j], g * kSubPairs + jp));
      });
    }
    for (int i = 0; i < NV; ++i) {
      const FVec d = rows[i]->scale(g), m = rows[i]->offset(g);
      for (int j = 0; j < TN; ++j)
        sums[i][j] = add_group<Rows::kOffsets>(sums[i][j], acc[i][j], d, m,
                                               Rows::kOffsets ? xs[(t0 + j) * w.groups + g] : 0.f);
    }
  }
  for (int i = 0; i < NV; ++i)
    for (int j = 0; j < TN; ++j)
      fvec_store(y + (t0 + j) * w.out_features + (rv0 + i) * kRowLanes,
                 fvec_mul(sums[i][j], fvec_set1(acts.scale[t0 + j])));
}

// Every token of the step against row vectors [rv0, rv0 + NV), a pass of up to kPassTokens at a time.
template <class Rows, int NV>
void group_unit(const QuantActs& acts, const float* xs, int64_t n, const typename Rows::Weight& w, int64_t rv0,
                int64_t ahead, float* y) {
  for (int64_t t0 = 0; t0 < n; t0 += kPassTokens) {
    const int64_t fetch = t0 == 0 ? ahead : -1;  // the first pass fetches; later ones find the weights in L1
    switch (std::min<int64_t>(kPassTokens, n - t0)) {
      case 1: group_pass<Rows, NV, 1>(acts, xs, w, t0, rv0, fetch, y); break;
      case 2: group_pass<Rows, NV, 2>(acts, xs, w, t0, rv0, fetch, y); break;
      case 3: group_pass<Rows, NV, 3>(acts, xs, w, t0, rv0, fetch, y); break;
      default: group_pass<Rows, NV, 4>(acts, xs, w, t0, rv0, fetch, y);
    }
  }
}

template <class Rows>
void group_claims(const QuantActs& acts, const float* xs, int64_t n, const typename Rows::Weight& w, float* y) {
  TORCH_CHECK(n >= 1 && n <= kInPlaceMaxTokens, "grouped_inplace_into: 1 to ", kInPlaceMaxTokens, " tokens");
  const int64_t vecs = w.out_features / kRowLanes;
  for_claimed_blocks(vecs, kClaimVecs, [&](int64_t begin, int64_t end, int64_t next) {
    int64_t rv = begin;
    for (; rv + kUnitVecs <= end; rv += kUnitVecs)
      group_unit<Rows, kUnitVecs>(acts, xs, n, w, rv, block_ahead(rv, kAheadVecs, end, next), y);
    for (; rv < end; ++rv) group_unit<Rows, 1>(acts, xs, n, w, rv, block_ahead(rv, kAheadVecs, end, next), y);
  });
}

}  // namespace

void grouped_inplace_into(const QuantActs& acts, const float* xs, int64_t n, const Q8GroupWeight& w, float* y) {
  group_claims<Q8Rows>(acts, xs, n, w, y);
}

void grouped_inplace_into(const QuantActs& acts, const float* xs, int64_t n, const Q6KWeight& w, float* y) {
  group_claims<Q6Rows>(acts, xs, n, w, y);
}

}  // namespace llmasos
