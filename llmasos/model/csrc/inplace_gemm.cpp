// The quantized GEMMs of steps of 1 to kInPlaceMaxTokens tokens (quant_gemm.h): each weight read in place,
// once, in registers, for a pass of up to kPassTokens tokens at a time (more tokens: a second pass over the
// unit's weights, from L1). The 4-bit layers and the int8 head; steps of more tokens unpack the weights to
// panels (quant_gemm.cpp).
//
// A 4-bit run (8 input pairs of a row, quant_gemm.h) is sum((q k + c) x) over its 16 inputs, which is
// k sum(q x) + c sum(x) exactly: the kernel sums q x (q in [0, 15], widened) and multiplies by k and c once
// per run, with sum(x) per token and run computed once per step. Why: q k + c in int16 for every weight
// (two multiplies and two adds per 32 bytes of weights) was most of a small step's instructions: a 3-token
// step's layers cost as much as a 4-token panel step's, and a 2-token step 1.4x a 1-token one. The int32
// products may wrap, but the run's true sum fits in int32 (kQ4IntMax), so the wrapped lanes add up to it
// exactly: every run gives the integer the panels give, and enters the float sums in the same order.
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "quant_gemm.h"
#include "row_vectors.h"
#include "simd.h"

namespace llmasos {
namespace {

constexpr int64_t kPairsPerGroup = kGroup / 2;
constexpr int64_t kRunInputs = 16;  // a 4-bit run: 8 input pairs
constexpr int64_t kQ8RunPairs = 512;  // the int8 head's runs (quant_gemm.cpp)
constexpr int kPassTokens = 4;  // tokens per pass over a unit's weights: 2 x 4 accumulators a row vector

// How far ahead of the weights being computed a step fetches more. A one-token step reads each weight
// once, from DRAM, in one sequential run per thread, yet the rows streamed at 8-15 GB/s against ~28 GB/s
// for a plain read of as many bytes until they were prefetched ~8-24 KB ahead. The prefetches go with the
// work, a group (or a cache line of the head) at a time: a whole block's ~90 lines at once stalled on the
// core's outstanding-miss slots.
constexpr int64_t kAheadVecs = 4;  // 4-bit: row vectors (4 blocks with AVX-512, 2 with AVX2)
constexpr int64_t kHeadAheadBlocks = 2;
// Blocks per claim: 64 rows, so a 576-row layer makes 9 claims and the threads end within one claim of
// each other. The head's claims are 4 times as large.
constexpr int64_t kClaimBlocks = 4;

// Each token's sum of its integer activations over every run of 16 inputs: (n, k / 16), exact in int32.
void run_sums(const QuantActs& acts, int64_t n, AlignedBuffer<int32_t>& sums) {
  const int64_t runs = acts.k / kRunInputs;
  sums.resize(n * runs);
  for (int64_t t = 0; t < n; ++t) {
    const int16_t* x = acts.xq.data() + t * acts.k;
    for (int64_t r = 0; r < runs; ++r) {
      int32_t s = 0;
      for (int64_t i = 0; i < kRunInputs; ++i) s += x[r * kRunInputs + i];
      sums[t * runs + r] = s;
    }
  }
}

// Group g of the blocks whose first row vectors lie in [ahead, ahead + NV): each block fetched once.
template <int NV>
inline void prefetch_q4_group(const Q4Weight& w, int64_t ahead, int64_t g) {
  for (int i = 0; i < NV; ++i) {
    if ((ahead + i) % kBlockVecs != 0) continue;
    const int64_t block = (ahead + i) / kBlockVecs;
    if (block * kBlockRows >= w.out_features) return;
    const int64_t at = block * w.groups + g;
    prefetch_bytes(w.qs + at * 256, 256);
    prefetch_line(reinterpret_cast<const char*>(w.k + at * kBlockRows));
    prefetch_line(reinterpret_cast<const char*>(w.c + at * kBlockRows));
  }
}

// Tokens [t0, t0 + TN) against row vectors [rv0, rv0 + NV), fetching those of `ahead` on (< 0: none). Runs
// A (pairs 0-7 of a group: each chunk's low nibbles) and B (8-15: the high ones) sum apart and enter the
// float sums in that order, as in the panels.
template <int NV, int TN>
inline void q4_pass(const QuantActs& acts, const int32_t* xsum, const Q4Weight& w, int64_t t0, int64_t rv0,
                    int64_t ahead, float* y) {
  const int64_t runs = acts.k / kRunInputs;
  const int16_t* x[TN];
  const int32_t* s[TN];
  for (int j = 0; j < TN; ++j) {
    x[j] = acts.xq.data() + (t0 + j) * acts.k;
    s[j] = xsum + (t0 + j) * runs;
  }
  int64_t block[NV];
  int v[NV];
  for (int i = 0; i < NV; ++i) {
    block[i] = (rv0 + i) / kBlockVecs;
    v[i] = static_cast<int>((rv0 + i) % kBlockVecs);
  }
  FVec sums[NV][TN];
  for (int i = 0; i < NV; ++i)
    for (int j = 0; j < TN; ++j) sums[i][j] = fvec_zero();
  for (int64_t g = 0; g < w.groups; ++g) {
    if (ahead >= 0) prefetch_q4_group<NV>(w, ahead, g);
    IVec qa[NV][TN], qb[NV][TN];
    for (int i = 0; i < NV; ++i)
      for (int j = 0; j < TN; ++j) qa[i][j] = qb[i][j] = ivec_zero();
    // Unrolled whole, the accumulators stay in registers (a loop over i kept them on the stack).
#pragma GCC unroll 2
    for (int i = 0; i < NV; ++i) {
      const uint8_t* chunks = w.qs + (block[i] * w.groups + g) * 256;
#pragma GCC unroll 8
      for (int ch = 0; ch < 8; ++ch) {
        const IVec bytes = widen_u8(chunks + ch * 32, v[i]);
        const IVec lo = low_nibbles(bytes), hi = high_nibbles(bytes);
#pragma GCC unroll 4
        for (int j = 0; j < TN; ++j) {
          qa[i][j] = dot_pairs(qa[i][j], lo, activation_pair(x[j], g * kPairsPerGroup + ch));
          qb[i][j] = dot_pairs(qb[i][j], hi, activation_pair(x[j], g * kPairsPerGroup + ch + 8));
        }
      }
    }
    for (int i = 0; i < NV; ++i) {
      const int64_t at = (block[i] * w.groups + g) * kBlockRows + v[i] * kRowLanes;
      const IVec k = widen_i16(w.k + at), c = widen_i16(w.c + at);
      for (int j = 0; j < TN; ++j) {
        const IVec run_a = ivec_add(ivec_mul(qa[i][j], k), ivec_mul(c, broadcast_pair(s[j][2 * g])));
        const IVec run_b = ivec_add(ivec_mul(qb[i][j], k), ivec_mul(c, broadcast_pair(s[j][2 * g + 1])));
        sums[i][j] = add_run(add_run(sums[i][j], run_a), run_b);
      }
    }
  }
  for (int i = 0; i < NV; ++i)
    for (int j = 0; j < TN; ++j)
      store_rows(sums[i][j], acts.scale[t0 + j], w.row_scale + (rv0 + i) * kRowLanes,
                 y + (t0 + j) * w.out_features + (rv0 + i) * kRowLanes);
}

// Every token of the step against row vectors [rv0, rv0 + NV), a pass of up to kPassTokens at a time.
template <int NV>
void q4_unit(const QuantActs& acts, const int32_t* xsum, int64_t n, const Q4Weight& w, int64_t rv0, int64_t ahead,
             float* y) {
  for (int64_t t0 = 0; t0 < n; t0 += kPassTokens) {
    const int64_t fetch = t0 == 0 ? ahead : -1;  // the first pass fetches; later ones find the weights in L1
    switch (std::min<int64_t>(kPassTokens, n - t0)) {
      case 1: q4_pass<NV, 1>(acts, xsum, w, t0, rv0, fetch, y); break;
      case 2: q4_pass<NV, 2>(acts, xsum, w, t0, rv0, fetch, y); break;
      case 3: q4_pass<NV, 3>(acts, xsum, w, t0, rv0, fetch, y); break;
      default: q4_pass<NV, 4>(acts, xsum, w, t0, rv0, fetch, y);
    }
  }
}

template <int NV>
void q4_claims(const QuantActs& acts, const int32_t* xsum, int64_t n, const Q4Weight& w, float* y) {
  for_claimed_blocks(w.out_features / kBlockRows, kClaimBlocks, [&](int64_t begin, int64_t end, int64_t next) {
    const int64_t vend = end * kBlockVecs, vnext = next * kBlockVecs;
    int64_t rv = begin * kBlockVecs;
    for (; rv + NV <= vend; rv += NV) q4_unit<NV>(acts, xsum, n, w, rv, block_ahead(rv, kAheadVecs, vend, vnext), y);
    for (; rv < vend; ++rv) q4_unit<1>(acts, xsum, n, w, rv, block_ahead(rv, kAheadVecs, vend, vnext), y);
  });
}

// The int8 head: four interleaved accumulators per token break vpdpwssd's dependency chain; their sum is
// the run's exact integer sum, as one accumulator would give.
template <int TN>
inline void q8_pass(const QuantActs& acts, const Q8Weight& w, int64_t t0, int64_t block, int v, int64_t ahead_block,
                    const float* rs, float* y) {
  const int64_t pairs = w.in_features / 2;
  const int16_t* x[TN];
  for (int j = 0; j < TN; ++j) x[j] = acts.xq.data() + (t0 + j) * acts.k;
  const int8_t* src = w.q + block * pairs * 32;
  const char* ahead = reinterpret_cast<const char*>(w.q + std::max<int64_t>(ahead_block, 0) * pairs * 32);
  const bool fetch = ahead_block >= 0 && ahead_block * kBlockRows < w.out_features && v == 0;
  FVec sums[TN];
  for (int j = 0; j < TN; ++j) sums[j] = fvec_zero();
  for (int64_t p0 = 0; p0 < pairs; p0 += kQ8RunPairs) {
    const int64_t p1 = std::min(pairs, p0 + kQ8RunPairs);
    IVec a0[TN], a1[TN], a2[TN], a3[TN];
    for (int j = 0; j < TN; ++j) a0[j] = a1[j] = a2[j] = a3[j] = ivec_zero();
    for (int64_t p = p0; p < p1; p += 4) {  // pairs is a multiple of 16
      if (fetch) prefetch_line(ahead + p * 32 + 64);  // two lines of pairs, in step with their use
      if (fetch) prefetch_line(ahead + p * 32);
      const IVec w0 = widen_i8(src + p * 32, v), w1 = widen_i8(src + (p + 1) * 32, v);
      const IVec w2 = widen_i8(src + (p + 2) * 32, v), w3 = widen_i8(src + (p + 3) * 32, v);
      for (int j = 0; j < TN; ++j) {
        a0[j] = dot_pairs(a0[j], w0, activation_pair(x[j], p));
        a1[j] = dot_pairs(a1[j], w1, activation_pair(x[j], p + 1));
        a2[j] = dot_pairs(a2[j], w2, activation_pair(x[j], p + 2));
        a3[j] = dot_pairs(a3[j], w3, activation_pair(x[j], p + 3));
      }
    }
    for (int j = 0; j < TN; ++j) sums[j] = add_run(sums[j], ivec_add(ivec_add(a0[j], a1[j]), ivec_add(a2[j], a3[j])));
  }
  for (int j = 0; j < TN; ++j)
    store_rows(sums[j], acts.scale[t0 + j], rs + v * kRowLanes,
               y + (t0 + j) * w.out_features + block * kBlockRows + v * kRowLanes);
}

}  // namespace

void q4_inplace_into(const QuantActs& acts, int64_t n, const Q4Weight& w, float* y) {
  TORCH_CHECK(n >= 1 && n <= kInPlaceMaxTokens, "q4_inplace_into: 1 to ", kInPlaceMaxTokens, " tokens");
  thread_local AlignedBuffer<int32_t> xsum;
  run_sums(acts, n, xsum);
  // Two row vectors a unit while their accumulators fit the registers beside each token's (AVX-512: 2 x 2
  // tokens; AVX2, 16 registers: one token); one for larger passes.
#ifdef __AVX512VNNI__
  const bool pairs_of_vecs = n <= 2;
#else
  const bool pairs_of_vecs = n == 1;
#endif
  if (pairs_of_vecs) {
    q4_claims<2>(acts, xsum.data(), n, w, y);
  } else {
    q4_claims<1>(acts, xsum.data(), n, w, y);
  }
}

void q8_inplace_into(const QuantActs& acts, int64_t n, const Q8Weight& w, float* y) {
  TORCH_CHECK(n >= 1 && n <= kInPlaceMaxTokens, "q8_inplace_into: 1 to ", kInPlaceMaxTokens, " tokens");
  for_claimed_blocks(w.out_features / kBlockRows, 4 * kClaimBlocks, [&](int64_t begin, int64_t end, int64_t next) {
    alignas(64) float rs[kBlockRows];
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t r = 0; r < kBlockRows; ++r) rs[r] = bf16_to_float(w.scales[b * kBlockRows + r]);
      const int64_t ahead = block_ahead(b, kHeadAheadBlocks, end, next);
      for (int v = 0; v < kBlockVecs; ++v) {
        for (int64_t t0 = 0; t0 < n; t0 += kPassTokens) {
          const int64_t fetch = t0 == 0 ? ahead : -1;
          switch (std::min<int64_t>(kPassTokens, n - t0)) {
            case 1: q8_pass<1>(acts, w, t0, b, v, fetch, rs, y); break;
            case 2: q8_pass<2>(acts, w, t0, b, v, fetch, rs, y); break;
            case 3: q8_pass<3>(acts, w, t0, b, v, fetch, rs, y); break;
            default: q8_pass<4>(acts, w, t0, b, v, fetch, rs, y);
          }
        }
      }
    }
  });
}

}  // namespace llmasos
