// AVX2 helpers shared by the kernel sources: bfloat16 conversions, horizontal sums, prefetches, loads of
// float32 or bfloat16 cache rows, and a vector e^x.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace llmasos {

inline float bf16_to_float(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// The 8 lanes summed as ((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7)): the order hsum4 gives each of
// four vectors at once, so a tile's results reduced four at a time equal the one-token kernels' bit for bit.
inline float hsum(__m256 v) {
  const __m256 h = _mm256_hadd_ps(v, v);
  const __m256 hh = _mm256_hadd_ps(h, h);
  return _mm_cvtss_f32(_mm_add_ps(_mm256_castps256_ps128(hh), _mm256_extractf128_ps(hh, 1)));
}

// {hsum(a), hsum(b), hsum(c), hsum(d)} in 3 hadds and one add (hadd keeps each vector's pairs apart).
inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// prefetcht0 as volatile asm: at -O3, GCC 12 removed every __builtin_prefetch (and _mm_prefetch) of the
// attention loop during its interprocedural passes (seen in its tree dumps), and the binary had none.
inline void prefetch_line(const char* p) { asm volatile("prefetcht0 %0" : : "m"(*p)); }

// Every cache line of [p, p + bytes).
inline void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t b = 0; b < bytes; b += 64) prefetch_line(c + b);
  if (bytes > 0) prefetch_line(c + bytes - 1);
}

// KV cache elements: float32, or bfloat16 held as uint16_t (half the memory per token of context; decode
// attention measured the same speed with either: 16-20 ms for 30 layers of 32 sequences at 150 tokens).
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
inline float to_float(float v) { return v; }
inline float to_float(uint16_t v) { return bf16_to_float(v); }

// float32 -> bfloat16 rounded to nearest even, NaN to the quiet NaN: torch's conversion, so a row the
// forward step writes is bit for bit the row the torch layers write for the same values.
inline uint16_t float_to_bf16(float f) {
  if (std::isnan(f)) return 0x7FC0;
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return static_cast<uint16_t>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}
// e^x for 8 floats: Cephes' range reduction x = n ln2 + r and its degree-5 polynomial for e^r, then 2^n
// through the exponent bits; within 2 ulp of expf. x is clamped to [-87.3, 88.3], where 2^n stays a
// normal float (e^-87.3 ~ 1e-38 stands for 0, e^88.3 ~ 2e38 for infinity). A scalar expf per (head,
// token) was a third of a decode step's attention time.
inline __m256 exp256(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

}  // namespace llmasos
