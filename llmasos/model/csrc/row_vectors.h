// Vectors whose lanes are output rows, for the quantized GEMMs (quant_gemm.cpp): each int32 lane holds one
// row's sum of int16 products, two input elements per instruction, so a row's result is its lane after the
// last input pair: no horizontal sums, and a tile's results are stored as whole vectors.
//
// Why rows across lanes: the layout before it spread one row's inputs over the lanes and summed them at the
// end of every (row, token); those sums, the strided stores and GCC's spills around them held the GEMMs at
// 58-68% of vpdpwssd's peak on a Zen 4. A standalone prototype of this layout ran them at 80-94% on the same
// 2 cores (188-190 against 135 G multiply-adds/s at 32 tokens, 221 against 160 at 512).
//
// Weights come in blocks of 16 rows (kBlockRows); an AVX-512 vector holds a block, an AVX2 vector half of
// one. Both builds compute every lane's integer sums and float steps identically, so they give the same
// bits (integer sums are exact, and wrap alike in both).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace llmasos {

constexpr int kBlockRows = 16;

#ifdef __AVX512VNNI__
constexpr int kRowLanes = 16;
using IVec = __m512i;
using FVec = __m512;

inline IVec ivec_zero() { return _mm512_setzero_si512(); }
inline FVec fvec_zero() { return _mm512_setzero_ps(); }
// kRowLanes rows x 2 int16 (a 64-byte aligned panel row).
inline IVec load_pairs(const int16_t* p) { return _mm512_load_si512(p); }
inline void store_pairs(int16_t* p, IVec v) { _mm512_store_si512(p, v); }
// acc + w_lo x_lo + w_hi x_hi in each int32 lane: vpdpwssd.
inline IVec dot_pairs(IVec acc, IVec w, IVec x) { return _mm512_dpwssd_epi32(acc, w, x); }
inline IVec ivec_add(IVec a, IVec b) { return _mm512_add_epi32(a, b); }
// The low 32 bits of each lane's product (wrapping alike in both builds).
inline IVec ivec_mul(IVec a, IVec b) { return _mm512_mullo_epi32(a, b); }
// kRowLanes int16 (one per row), sign-extended to int32 lanes.
inline IVec widen_i16(const int16_t* p) {
  return _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline FVec add_run(FVec f, IVec run) { return _mm512_add_ps(f, _mm512_cvtepi32_ps(run)); }
inline FVec fvec_mul(FVec a, FVec b) { return _mm512_mul_ps(a, b); }
inline FVec fvec_fmadd(FVec a, FVec b, FVec c) { return _mm512_fmadd_ps(a, b, c); }
inline FVec ivec_to_float(IVec v) { return _mm512_cvtepi32_ps(v); }
inline FVec fvec_set1(float v) { return _mm512_set1_ps(v); }
inline FVec fvec_load(const float* p) { return _mm512_loadu_ps(p); }
inline void fvec_store(float* p, FVec v) { _mm512_storeu_ps(p, v); }
inline IVec broadcast_pair(int32_t v) { return _mm512_set1_epi32(v); }
// Bytes [16 v, 16 v + kRowLanes * 2) of a 32-byte chunk, widened to int16 (zero- or sign-extended).
inline IVec widen_u8(const uint8_t* chunk, int) {
  return _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(chunk)));
}
inline IVec widen_i8(const int8_t* chunk, int) {
  return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(chunk)));
}
// kRowLanes int16 (one per row) in both halves of each row's lane.
inline IVec pair_of_each(const int16_t* p) {
  const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_or_si512(v, _mm512_slli_epi32(v, 16));
}
inline IVec low_nibbles(IVec b) { return _mm512_and_si512(b, _mm512_set1_epi16(0x0F)); }
inline IVec high_nibbles(IVec b) { return _mm512_srli_epi16(b, 4); }
inline IVec mul_add16(IVec q, IVec k, IVec c) { return _mm512_add_epi16(_mm512_mullo_epi16(q, k), c); }
// int16 lanes: (v >> s) & mask, v << s, v >> s, a & b, a | b, a - b; kRowLanes int8 (one per row) as floats.
inline IVec bits16(IVec v, int s, int16_t mask) { return _mm512_and_si512(_mm512_srli_epi16(v, s), _mm512_set1_epi16(mask)); }
inline IVec shl16(IVec v, int s) { return _mm512_slli_epi16(v, s); }
inline IVec shr16(IVec v, int s) { return _mm512_srli_epi16(v, s); }
inline IVec and16(IVec a, IVec b) { return _mm512_and_si512(a, b); }
inline IVec or16(IVec a, IVec b) { return _mm512_or_si512(a, b); }
inline IVec sub16(IVec a, IVec b) { return _mm512_sub_epi16(a, b); }
inline IVec set16(int16_t v) { return _mm512_set1_epi16(v); }
inline FVec fvec_from_i8(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
#else
constexpr int kRowLanes = 8;
using IVec = __m256i;
using FVec = __m256;

inline IVec ivec_zero() { return _mm256_setzero_si256(); }
inline FVec fvec_zero() { return _mm256_setzero_ps(); }
inline IVec load_pairs(const int16_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }
inline void store_pairs(int16_t* p, IVec v) { _mm256_store_si256(reinterpret_cast<__m256i*>(p), v); }
// madd + add: the int32 lanes vpdpwssd gives.
inline IVec dot_pairs(IVec acc, IVec w, IVec x) { return _mm256_add_epi32(acc, _mm256_madd_epi16(w, x)); }
inline IVec ivec_add(IVec a, IVec b) { return _mm256_add_epi32(a, b); }
inline IVec ivec_mul(IVec a, IVec b) { return _mm256_mullo_epi32(a, b); }
inline IVec widen_i16(const int16_t* p) {
  return _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline FVec add_run(FVec f, IVec run) { return _mm256_add_ps(f, _mm256_cvtepi32_ps(run)); }
inline FVec fvec_mul(FVec a, FVec b) { return _mm256_mul_ps(a, b); }
inline FVec fvec_fmadd(FVec a, FVec b, FVec c) { return _mm256_fmadd_ps(a, b, c); }
inline FVec ivec_to_float(IVec v) { return _mm256_cvtepi32_ps(v); }
inline FVec fvec_set1(float v) { return _mm256_set1_ps(v); }
inline FVec fvec_load(const float* p) { return _mm256_loadu_ps(p); }
inline void fvec_store(float* p, FVec v) { _mm256_storeu_ps(p, v); }
inline IVec broadcast_pair(int32_t v) { return _mm256_set1_epi32(v); }
inline IVec widen_u8(const uint8_t* chunk, int v) {
  return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(chunk + 16 * v)));
}
inline IVec widen_i8(const int8_t* chunk, int v) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(chunk + 16 * v)));
}
inline IVec pair_of_each(const int16_t* p) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_or_si256(v, _mm256_slli_epi32(v, 16));
}
inline IVec low_nibbles(IVec b) { return _mm256_and_si256(b, _mm256_set1_epi16(0x0F)); }
inline IVec high_nibbles(IVec b) { return _mm256_srli_epi16(b, 4); }
inline IVec mul_add16(IVec q, IVec k, IVec c) { return _mm256_add_epi16(_mm256_mullo_epi16(q, k), c); }
inline IVec bits16(IVec v, int s, int16_t mask) { return _mm256_and_si256(_mm256_srli_epi16(v, s), _mm256_set1_epi16(mask)); }
inline IVec shl16(IVec v, int s) { return _mm256_slli_epi16(v, s); }
inline IVec shr16(IVec v, int s) { return _mm256_srli_epi16(v, s); }
inline IVec and16(IVec a, IVec b) { return _mm256_and_si256(a, b); }
inline IVec or16(IVec a, IVec b) { return _mm256_or_si256(a, b); }
inline IVec sub16(IVec a, IVec b) { return _mm256_sub_epi16(a, b); }
inline IVec set16(int16_t v) { return _mm256_set1_epi16(v); }
inline FVec fvec_from_i8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
#endif

// Vectors per block of 16 rows: 1 with AVX-512, 2 with AVX2.
constexpr int kBlockVecs = kBlockRows / kRowLanes;

// Input elements 2p and 2p + 1 of a token's int16 activations as one int32 in every lane: the low halves
// of each lane multiply element 2p, the high halves 2p + 1, as the weights' pairs are laid out.
inline IVec activation_pair(const int16_t* x, int64_t p) {
  int32_t v;
  std::memcpy(&v, x + 2 * p, sizeof(v));
  return broadcast_pair(v);
}

// y[t, rows] = (sums * token scale) * row scales for one vector of rows.
inline void store_rows(FVec sums, float token_scale, const float* row_scales, float* y) {
  fvec_store(y, fvec_mul(fvec_mul(sums, fvec_set1(token_scale)), fvec_load(row_scales)));
}

// Input pairs [p, p + 8) of a panel of RV row vectors times TN tokens' activations, added to acc[i][j]; `at`
// points to pair p's first row vector (pair p + q of row vector i at at + (q * RV + i) * kRowLanes * 2).
// Eight pairs is a 4-bit run and an 8-bit group: with the count fixed the compiler unrolls them whole; as
// the tail of a loop whose bound it could not see (a run ended at min(pairs, p0 + 8)) it peeled the first
// pair, shuffled the accumulators between registers after every run (16 moves per 64 vpdpwssd of a 2 x 4
// tile) and branched on the remainder.
template <int RV, int TN>
inline void dot_eight_pairs(const int16_t* at, int64_t p, const int16_t* const* x, IVec (*acc)[TN]) {
#pragma GCC unroll 8
  for (int q = 0; q < 8; ++q) {
    IVec wv[RV];
    for (int i = 0; i < RV; ++i) wv[i] = load_pairs(at + (q * RV + i) * kRowLanes * 2);
    for (int j = 0; j < TN; ++j) {
      const IVec xb = activation_pair(x[j], p + q);
      for (int i = 0; i < RV; ++i) acc[i][j] = dot_pairs(acc[i][j], wv[i], xb);
    }
  }
}

}  // namespace llmasos
