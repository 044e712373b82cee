// The grouped weight formats (quant_gemm.h: 8-bit groups, Q6_K at 6 bits) as row vectors, for the GEMMs
// of group_gemm.cpp (panels) and group_inplace.cpp (steps of 1 to kInPlaceMaxTokens tokens): where a row
// vector's weights and group scales lie, how a group's pairs widen to int16, and the lanes' float step.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "quant_gemm.h"
#include "row_vectors.h"
#include "simd.h"

namespace llmasos {

constexpr int64_t kSubPairs = kSubGroup / 2;  // input pairs per group
static_assert(kSubPairs == 8, "a group's pairs are one dot_eight_pairs (row_vectors.h)");
// Row vectors per in-place step's unit and per panel: two in both builds (AVX-512: two blocks; AVX2: one).
constexpr int kUnitVecs = 2;
// Each token's sum of its integer activations over every group of 16, as floats (exact: |sum| <= 16 x 16383).
inline void group_sums(const QuantActs& acts, int64_t n, AlignedFloats& xs) {
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

// Where row vector rv's 8-bit weights lie: its block's pairs, its lanes (v), its d and m of group 0.
struct Q8Rows {
  using Weight = Q8GroupWeight;
  static constexpr bool kOffsets = true;  // m_g
  const int8_t* q;
  const float* d;
  const float* m;
  int v;

  Q8Rows(const Q8GroupWeight& w, int64_t rv) {
    const int64_t block = rv / kBlockVecs;
    v = static_cast<int>(rv % kBlockVecs);
    q = w.q + block * (w.in_features / 2) * 32;
    d = w.d + block * w.groups * kBlockRows + v * kRowLanes;
    m = w.m + block * w.groups * kBlockRows + v * kRowLanes;
  }
  // Input pair j of group g, widened to int16 (kRowLanes rows x 2).
  IVec pair(int64_t g, int j) const { return widen_i8(q + (g * kSubPairs + j) * 32, v); }
  FVec scale(int64_t g) const { return fvec_load(d + g * kBlockRows); }
  FVec offset(int64_t g) const { return fvec_load(m + g * kBlockRows); }
  // Group g's 8 pairs, sink(j, pair j), for the panels.
  template <class Sink>
  void group_pairs(int64_t g, const Sink& sink) const {
#pragma GCC unroll 8
    for (int jp = 0; jp < kSubPairs; ++jp) sink(jp, pair(g, jp));
  }
  const char* first_byte() const { return reinterpret_cast<const char*>(q); }
  static constexpr int64_t kPairBytes = 32;

  // Group g of block b, fetched ahead of its use.
  static void prefetch(const Q8GroupWeight& w, int64_t b, int64_t g) {
    prefetch_bytes(w.q + (b * (w.in_features / 2) + g * kSubPairs) * 32, kSubPairs * 32);
    prefetch_line(reinterpret_cast<const char*>(w.d + (b * w.groups + g) * kBlockRows));
    prefetch_line(reinterpret_cast<const char*>(w.m + (b * w.groups + g) * kBlockRows));
  }
};

// The same for Q6_K blocks at 6 bits (quant_gemm.h, Q6KWeight).
struct Q6Rows {
  using Weight = Q6KWeight;
  static constexpr bool kOffsets = false;
  const uint8_t* q;
  const int8_t* sc;
  const float* dsup;
  int v;

  Q6Rows(const Q6KWeight& w, int64_t rv) {
    const int64_t block = rv / kBlockVecs;
    v = static_cast<int>(rv % kBlockVecs);
    q = w.q + block * (w.in_features / 8) * kQ6QuadBytes;
    sc = w.sc + block * w.groups * kBlockRows + v * kRowLanes;
    dsup = w.dsup + block * (w.in_features / kSuperGroup) * kBlockRows + v * kRowLanes;
  }
  // Pair j of group g: (low nibble | high 2 bits << 4) - 32, as int16. With j a constant (the loops over it
  // unroll), the shifts are immediates and the two pairs sharing a nibble byte widen it once.
  IVec pair(int64_t g, int j) const {
    const uint8_t* quad = q + (g * 2 + j / 4) * kQ6QuadBytes;
    const int jj = j % 4;
    const IVec low = bits16(widen_u8(quad + (jj / 2) * 32, v), 4 * (jj % 2), 0x0F);
    const IVec high = bits16(widen_u8(quad + 64, v), 2 * jj, 0x03);
    return sub16(or16(low, shl16(high, 4)), set16(32));
  }
  FVec scale(int64_t g) const {
    return fvec_mul(fvec_from_i8(sc + g * kBlockRows), fvec_load(dsup + (g / kSubPerSuper) * kBlockRows));
  }
  FVec offset(int64_t) const { return fvec_zero(); }
  // Group g's 8 pairs, sink(j, pair j), for the panels: each quad's three 32-byte chunks widened once, and
  // pair jj's high bits moved to bits 4-5 by one shift (the 8 bytes of pair() per pair took ~9 vector
  // operations, a fifth of a 32-token step's Q6_K time).
  template <class Sink>
  void group_pairs(int64_t g, const Sink& sink) const {
    for (int h = 0; h < 2; ++h) {
      const uint8_t* quad = q + (g * 2 + h) * kQ6QuadBytes;
      const IVec low01 = widen_u8(quad, v), low23 = widen_u8(quad + 32, v), high = widen_u8(quad + 64, v);
      const IVec mask = set16(0x30), bias = set16(32);
      sink(4 * h, sub16(or16(and16(low01, set16(0x0F)), and16(shl16(high, 4), mask)), bias));
      sink(4 * h + 1, sub16(or16(shr16(low01, 4), and16(shl16(high, 2), mask)), bias));
      sink(4 * h + 2, sub16(or16(and16(low23, set16(0x0F)), and16(high, mask)), bias));
      sink(4 * h + 3, sub16(or16(shr16(low23, 4), and16(shr16(high, 2), mask)), bias));
    }
  }
  const char* first_byte() const { return reinterpret_cast<const char*>(q); }
  static constexpr int64_t kPairBytes = kQ6QuadBytes / 4;

  static void prefetch(const Q6KWeight& w, int64_t b, int64_t g) {
    prefetch_bytes(w.q + (b * (w.in_features / 8) + g * 2) * kQ6QuadBytes, 2 * kQ6QuadBytes);
    prefetch_line(reinterpret_cast<const char*>(w.sc + (b * w.groups + g) * kBlockRows));
  }

 private:
  static constexpr int64_t kSubPerSuper = kSuperGroup / kSubGroup;
};

// The lanes' float step for one group: sums += acc * d; sums += m * xsum (formats with offsets only).
template <bool Offsets>
inline FVec add_group(FVec sums, IVec acc, FVec d, FVec m, float xsum) {
  const FVec scaled = fvec_fmadd(ivec_to_float(acc), d, sums);
  if constexpr (Offsets) return fvec_fmadd(m, fvec_set1(xsum), scaled);
  return scaled;
}

// y (n, out) = x W^T for 1 to kInPlaceMaxTokens tokens, without the bias (group_inplace.cpp); xs holds
// group_sums' for the 8-bit groups (their offsets), and is not read for Q6_K.
void grouped_inplace_into(const QuantActs& acts, const float* xs, int64_t n, const Q8GroupWeight& w, float* y);
void grouped_inplace_into(const QuantActs& acts, const float* xs, int64_t n, const Q6KWeight& w, float* y);

}  // namespace llmasos
