// AVX2 kernels for CPU decode: a 4-bit weight GEMM (after llama.cpp's q4_1 x q8_1 dot product, with int16
// activations), an int8-weight GEMM for the LM head, and a whole decode step of the Llama family in one call.
// This file also holds the Python module of every kernel source (prefill_attention.cpp; simd.h's helpers).
//
// Why: at batch 1 a 135M-parameter model is memory-bound (~75 MB of int4 weights per token), yet torch's
// _weight_int4pack_mm_for_cpu ran at a third of the bandwidth limit on AVX2, and the ~20 torch ops per
// layer cost ~11 ms of dispatch per token. Here each token's activations are rounded to 15-bit integers
// with one float scale per token (int8 per block of 32, as llama.cpp does, flipped SmolLM2's greedy answer
// to "What is the capital of France?"; int16 per token moved its logits by at most 0.015, against 0.005
// for int16 per block, and a per-block scale cost a multiply per row, token and group), each 32-weight
// group is two int16 madds summed in int32 (see kQ4IntMax), and the decode step runs every layer's norm,
// projections, RoPE, paged attention and SwiGLU without returning to Python.
//
// 4-bit layout (see quant.py, Int4Linear): per output row, groups of 32 weights; group g holds 16 bytes,
// byte j = q[j] | q[j + 16] << 4 with q in [0, 15], and int16 `k`, `c`; each row a float `row_scale`:
// w = row_scale * (q * k + c) (see kQ4IntMax).
// Every row and every token is computed the same way whatever the batch, so a sequence's result does
// not depend on what shares its step.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.h"
#include "simd.h"

namespace llmasos {
namespace {

constexpr int64_t kGroup = 32;

// Activations are rounded to integers in [-kActMax, kActMax], one float scale per token. 15 bits, not 16:
// the products of a run of kQ4RunGroups groups must sum in int32 lanes (below).
constexpr float kActMax = 16383.f;

// One token's activations, quantized with one scale: x ≈ xq * scale. Every kernel multiplies the
// quantized x, the product the dense path of large steps reproduces with `round_activations`.
struct QuantActs {
  std::vector<int16_t> xq;
  std::vector<float> scale;  // (n)
  int64_t k = 0, blocks = 0;

  void quantize(const float* x, int64_t n, int64_t k_) {
    k = k_;
    blocks = k / kGroup;
    xq.resize(n * k);
    scale.resize(n);
    // Vectorized: the float products rounded half to even (_mm256_round_ps in the default rounding
    // mode, as nearbyint); serial between the GEMMs of a decode step, so its speed shows at large batches.
    const __m256 sign = _mm256_set1_ps(-0.f);
    for (int64_t t = 0; t < n; ++t) {
      const float* src = x + t * k;
      __m256 m = _mm256_setzero_ps();
      for (int64_t i = 0; i < k; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(src + i)));
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
      const float amax = _mm_cvtss_f32(m4);
      const float d = amax / kActMax;
      const __m256 inv = _mm256_set1_ps(d > 0.f ? 1.f / d : 0.f);
      scale[t] = d;
      for (int64_t b = 0; b < blocks; ++b) {
        __m256i q32[4];
        for (int q = 0; q < 4; ++q) {
          const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(src + b * kGroup + q * 8), inv);
          q32[q] = _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        }
        int16_t* dst = xq.data() + t * k + b * kGroup;
        // packs interleaves 128-bit lanes; the permute restores element order.
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst),
                            _mm256_permute4x64_epi64(_mm256_packs_epi32(q32[0], q32[1]), 0xD8));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 16),
                            _mm256_permute4x64_epi64(_mm256_packs_epi32(q32[2], q32[3]), 0xD8));
      }
    }
  }
};

// A group's 32 elements as int16, 0-15 and 16-31: unpack_q4 gives q in [0, 15] (one widening load, then
// each 16-bit lane holds byte j = q[j] | q[j + 16] << 4: a mask and a shift split it, 3 ops, not 6).
struct Q4Group {
  __m256i lo, hi;
};

inline Q4Group unpack_q4(const uint8_t* qs) {
  const __m256i bytes = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  return {_mm256_and_si256(bytes, _mm256_set1_epi16(0x0F)), _mm256_srli_epi16(bytes, 4)};
}

// 4-bit weights as integers: w = row_scale * (q * k_g + c_g) with int16 k_g, c_g per group of 32, chosen
// at load (quant.py, Int4Linear) so that |q k + c| <= kQ4IntMax for every q in [0, 15]. Products of
// activations (<= kActMax) and weights (<= kQ4IntMax) then sum exactly in int32 lanes over runs of
// kQ4RunGroups groups (4 groups x 4 products per lane x 16383 x 8191 < 2^31), and only each run's sums are
// converted to float: per (row, group, token) two madds and two integer adds, against two madds, an add,
// a convert and an FMA by the group's float scale before. At 512 tokens the int8 GEMM built that way ran
// 1.2-1.3x faster than the float-scale 4-bit one; runs of 2 groups gained nothing (a convert per 2).
// SmolLM2's logits moved from the file's exact weights by 0.024 on average (0.26 at most) over 256
// positions, against 0.054 (0.34) for the float form with bfloat16 scales and offsets it replaces.
constexpr int kQ4IntMax = 8191;
constexpr int64_t kQ4RunGroups = 4;

struct Q4Weight {
  const uint8_t* qs;
  const int16_t* k;  // (out, groups)
  const int16_t* c;
  const float* row_scale;  // (out)
  const float* bias;  // nullptr: none
  int64_t out_features, in_features;
};

// A group's 32 weights as int16 q * k + c, elements 0-15 and 16-31.
inline Q4Group q4_ints(const Q4Weight& w, int64_t row, int64_t g, int64_t blocks) {
  const Q4Group q = unpack_q4(w.qs + (row * blocks + g) * 16);
  const __m256i k = _mm256_set1_epi16(w.k[row * blocks + g]), c = _mm256_set1_epi16(w.c[row * blocks + g]);
  return {_mm256_add_epi16(_mm256_mullo_epi16(q.lo, k), c), _mm256_add_epi16(_mm256_mullo_epi16(q.hi, k), c)};
}

// A TR-row x TN-token tile: TR * TN independent accumulator chains, each activation block loaded once
// per tile and each weight group unpacked once per tile. y = (hsum(Σ_runs float(run sums)) * xs) * row
// scale, the operations (and their order) of the panel GEMM's tiles, so results are batch-invariant.
template <int TR, int TN>
inline void q4_tile(const QuantActs& acts, int64_t t0, const Q4Weight& w, int64_t r0, float* y) {
  const int64_t blocks = acts.blocks, out_features = w.out_features;
  const int16_t* xs[TN];
  for (int j = 0; j < TN; ++j) xs[j] = acts.xq.data() + (t0 + j) * acts.k;
  __m256 facc[TR][TN];
  for (int i = 0; i < TR; ++i)
    for (int j = 0; j < TN; ++j) facc[i][j] = _mm256_setzero_ps();
  for (int64_t g0 = 0; g0 < blocks; g0 += kQ4RunGroups) {
    const int64_t g1 = std::min(blocks, g0 + kQ4RunGroups);
    __m256i acc[TR][TN];
    for (int i = 0; i < TR; ++i)
      for (int j = 0; j < TN; ++j) acc[i][j] = _mm256_setzero_si256();
    for (int64_t g = g0; g < g1; ++g) {
      __m256i x_lo[TN], x_hi[TN];
      for (int j = 0; j < TN; ++j) {
        x_lo[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xs[j] + g * kGroup));
        x_hi[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xs[j] + g * kGroup + 16));
      }
      for (int i = 0; i < TR; ++i) {  // one row's weights live at a time: no register spills
        const Q4Group wi = q4_ints(w, r0 + i, g, blocks);
        for (int j = 0; j < TN; ++j)
          acc[i][j] = _mm256_add_epi32(
              acc[i][j], _mm256_add_epi32(_mm256_madd_epi16(wi.lo, x_lo[j]), _mm256_madd_epi16(wi.hi, x_hi[j])));
      }
    }
    for (int i = 0; i < TR; ++i)
      for (int j = 0; j < TN; ++j) facc[i][j] = _mm256_add_ps(facc[i][j], _mm256_cvtepi32_ps(acc[i][j]));
  }
  for (int i = 0; i < TR; ++i)
    for (int j = 0; j < TN; ++j)
      y[(t0 + j) * out_features + r0 + i] = hsum(facc[i][j]) * acts.scale[t0 + j] * w.row_scale[r0 + i];
}

// Tiles ahead of the one being computed whose weights (4-bit groups, k, c) are fetched early.
// A one-token step reads each weight once, from DRAM, and a thread's rows are one sequential run, yet
// they streamed at 8-15 GB/s against ~28 GB/s for a plain read of as many bytes. 8 tiles ahead (12-24
// KB for SmolLM2's rows) took SmolLM2's 30 layers of GEMMs from 5.3-6.6 ms to 3.8-4.9 ms per token
// (alternating runs); 4 and 16 tiles ahead gained less.
constexpr int64_t kPrefetchTiles = 8;

template <int TN>
inline void q4_token_tile(const QuantActs& acts, int64_t t0, const Q4Weight& w, int64_t r0, int64_t r1, float* y) {
  constexpr int TR = TN <= 2 ? 4 : 2;
  const int64_t blocks = acts.blocks;
  auto prefetch_tile = [&](int64_t a) {
    const int64_t b = std::min(r1, a + TR);
    if (a >= b) return;
    prefetch_bytes(w.qs + a * blocks * 16, (b - a) * blocks * 16);
    prefetch_bytes(w.k + a * blocks, (b - a) * blocks * 2);
    prefetch_bytes(w.c + a * blocks, (b - a) * blocks * 2);
  };
  for (int64_t a = r0; a < std::min(r1, r0 + kPrefetchTiles * TR); a += TR) prefetch_tile(a);
  int64_t r = r0;
  for (; r + TR <= r1; r += TR) {
    prefetch_tile(r + kPrefetchTiles * TR);
    q4_tile<TR, TN>(acts, t0, w, r, y);
  }
  for (; r < r1; ++r) q4_tile<1, TN>(acts, t0, w, r, y);
}

// y[t, row] for rows [r0, r1) and the 1-3 tokens of a small step (larger steps take the panel GEMM
// below). Each (row, token) is computed by the same arithmetic whatever n is, so results are
// batch-invariant.
void q4_rows(const QuantActs& acts, int64_t n, const Q4Weight& w, int64_t r0, int64_t r1, float* y) {
  switch (n) {
    case 3: q4_token_tile<3>(acts, 0, w, r0, r1, y); break;
    case 2: q4_token_tile<2>(acts, 0, w, r0, r1, y); break;
    case 1: q4_token_tile<1>(acts, 0, w, r0, r1, y); break;
    default: TORCH_CHECK(false, "q4_rows: steps of 1-3 tokens");
  }
}

Q4Weight q4_view(const at::Tensor& qs, const at::Tensor& k, const at::Tensor& c, const at::Tensor& row_scale,
                 const at::Tensor& bias) {
  TORCH_CHECK(qs.dtype() == at::kByte && qs.is_contiguous() && qs.dim() == 2, "qs: contiguous uint8 (out, in/2)");
  const int64_t out = qs.size(0), groups = qs.size(1) * 2 / kGroup;
  TORCH_CHECK(k.dtype() == at::kShort && c.dtype() == at::kShort && k.is_contiguous() && c.is_contiguous()
                  && k.numel() == out * groups && c.numel() == out * groups,
              "k/c: contiguous int16 (out, in/32)");
  TORCH_CHECK(row_scale.dtype() == at::kFloat && row_scale.is_contiguous() && row_scale.numel() == out,
              "row_scale: contiguous float32 (out,)");
  const float* b = nullptr;
  if (bias.defined() && bias.numel() > 0) {
    TORCH_CHECK(bias.dtype() == at::kFloat && bias.is_contiguous(), "bias: contiguous float32");
    b = bias.data_ptr<float>();
  }
  return {qs.data_ptr<uint8_t>(), k.data_ptr<int16_t>(), c.data_ptr<int16_t>(), row_scale.data_ptr<float>(), b,
          out, qs.size(1) * 2};
}

// ---- Steps of several tokens: row panels unpacked once, register tiles of 3 rows x 4 tokens ----
//
// The tile kernels above unpack each weight group once per 4 tokens; at 32 tokens they ran at ~0.9 ns
// per (row, group, token) on 2 cores, a third of what the multiply chain allows. Here a panel of 3 rows
// is unpacked to int16 (q * k + c, or the int8 weights) once for a chunk of tokens, the activations of
// each 4 tokens are interleaved group by group, and a 3 x 4 tile keeps its 12 int32 accumulators, the
// row's two weight vectors and an activation in the 16 registers. A 4 x 4 tile spilled accumulators to
// the stack and ran ~20% slower on one core (int8 head: 45-47 against 54-57 G multiply-adds/s; 4-bit:
// 38-40 against 43-51), and its speed moved with where buffers happened to lie. Every (row, token) takes
// the same operations in the same order as q4_tile / q8_rows_tile, so the results are bit for bit those
// of the one-token kernels: batch-invariant, whatever the panel height.

constexpr int kPanelRows = 3;
constexpr int kTileTokens = 4;
constexpr int64_t kChunkTokens = 64;  // a chunk's int16 activations (<= 192 KB) stay in L2

// n elements of `v` starting on an `Align`-byte boundary (std::vector's own is 16).
template <size_t Align, class T>
inline T* aligned_storage(std::vector<T>& v, size_t n) {
  v.resize(n + Align / sizeof(T));
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(v.data()) + Align - 1) & ~uintptr_t{Align - 1});
}

// The activations of every 4 tokens interleaved: xt[tile][g][j][32]. The last tile is padded with
// zeros (its extra tokens are computed and dropped).
struct TiledActs {
  std::vector<int16_t> storage;
  int16_t* xt = nullptr;
  int64_t tiles = 0;

  void build(const QuantActs& acts, int64_t n) {
    const int64_t k = acts.k, blocks = acts.blocks;
    tiles = (n + kTileTokens - 1) / kTileTokens;
    xt = aligned_storage<32>(storage, tiles * kTileTokens * k);
    for (int64_t t = 0; t < tiles * kTileTokens; ++t) {
      const int64_t tile = t / kTileTokens, j = t % kTileTokens;
      for (int64_t g = 0; g < blocks; ++g) {
        int16_t* dst = xt + ((tile * blocks + g) * kTileTokens + j) * kGroup;
        if (t < n) {
          std::memcpy(dst, acts.xq.data() + t * k + g * kGroup, kGroup * sizeof(int16_t));
        } else {
          std::memset(dst, 0, kGroup * sizeof(int16_t));
        }
      }
    }
  }
};

// A float buffer on a 64-byte (cache line) boundary.
class AlignedFloats {
 public:
  explicit AlignedFloats(int64_t n) : data_(aligned_storage<64>(storage_, n)) {}
  float* data() { return data_; }
  const float* data() const { return data_; }
  float& operator[](int64_t i) { return data_[i]; }

 private:
  std::vector<float> storage_;
  float* data_;
};

struct PanelScratch {
  std::vector<int16_t> w_storage;
  int16_t* w = nullptr;  // wp[g][i][32] int16

  void reserve(int64_t k) { w = aligned_storage<32>(w_storage, kPanelRows * k); }
};

// int8 rows sum their int32 products over runs of this many groups before converting them to float
// (a lane sums 4 products of at most 127 * 16383 per group: 64 groups stay below 2^31).
constexpr int64_t kQ8RunGroups = 64;

// dots[i][j]: the float sum of each run's int32 sums Σ_k w[i] x[j] (8 lanes), for int16 panels of
// either weight format.
template <int TR, int64_t RunGroups>
inline void int_panel_tile(const int16_t* wp, const int16_t* xt, int64_t blocks, __m256 (*dots)[kTileTokens]) {
  constexpr int TN = kTileTokens;
  __m256 facc[TR][TN];
  for (int i = 0; i < TR; ++i)
    for (int j = 0; j < TN; ++j) facc[i][j] = _mm256_setzero_ps();
  for (int64_t g0 = 0; g0 < blocks; g0 += RunGroups) {
    const int64_t g1 = std::min(blocks, g0 + RunGroups);
    __m256i acc[TR][TN];
    for (int i = 0; i < TR; ++i)
      for (int j = 0; j < TN; ++j) acc[i][j] = _mm256_setzero_si256();
    for (int64_t g = g0; g < g1; ++g) {
      const int16_t* xg = xt + g * TN * kGroup;
      const int16_t* wg = wp + g * TR * kGroup;
      for (int i = 0; i < TR; ++i) {
        const __m256i w_lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(wg + i * kGroup));
        const __m256i w_hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(wg + i * kGroup + 16));
        for (int j = 0; j < TN; ++j) {
          const __m256i x_lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(xg + j * kGroup));
          const __m256i x_hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(xg + j * kGroup + 16));
          acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_add_epi32(_mm256_madd_epi16(w_lo, x_lo),
                                                                   _mm256_madd_epi16(w_hi, x_hi)));
        }
      }
    }
    for (int i = 0; i < TR; ++i)
      for (int j = 0; j < TN; ++j) facc[i][j] = _mm256_add_ps(facc[i][j], _mm256_cvtepi32_ps(acc[i][j]));
  }
  for (int i = 0; i < TR; ++i)
    for (int j = 0; j < TN; ++j) dots[i][j] = facc[i][j];
}

// The two weight formats a panel can hold: how rows unpack to int16 (wp[g][i][32]), the run length,
// and each row's scale (the result is (dot * xs) * row scale in both).
struct Q4Panel {
  const Q4Weight* w;
  static constexpr int64_t kRunGroups = kQ4RunGroups;
  template <int TR>
  void unpack(int64_t r0, int64_t blocks, PanelScratch& s) const {
    for (int i = 0; i < TR; ++i) {
      for (int64_t g = 0; g < blocks; ++g) {
        const Q4Group q = q4_ints(*w, r0 + i, g, blocks);
        int16_t* dst = s.w + (g * TR + i) * kGroup;
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst), q.lo);
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst + 16), q.hi);
      }
    }
  }
  float row_scale(int64_t r) const { return w->row_scale[r]; }
};

struct Q8Panel {
  const int8_t* qweight;
  const uint16_t* row_scales;
  static constexpr int64_t kRunGroups = kQ8RunGroups;
  template <int TR>
  void unpack(int64_t r0, int64_t blocks, PanelScratch& s) const {
    const int64_t k = blocks * kGroup;
    for (int i = 0; i < TR; ++i) {
      const int8_t* src = qweight + (r0 + i) * k;
      for (int64_t g = 0; g < blocks; ++g) {
        int16_t* dst = s.w + (g * TR + i) * kGroup;
        for (int h = 0; h < 2; ++h)
          _mm256_store_si256(reinterpret_cast<__m256i*>(dst + h * 16),
                             _mm256_cvtepi8_epi16(_mm_loadu_si128(
                                 reinterpret_cast<const __m128i*>(src + g * kGroup + h * 16))));
      }
    }
  }
  float row_scale(int64_t r) const { return bf16_to_float(row_scales[r]); }
};

// The panel's TR rows (from r0) against tiles [tile0, tile1) of the tiled activations.
template <int TR, class Panel>
inline void panel_rows(const Panel& panel, const QuantActs& acts, const TiledActs& tiled, int64_t n,
                       int64_t tile0, int64_t tile1, int64_t r0, int64_t out_features, PanelScratch& s, float* y) {
  const int64_t blocks = acts.blocks;
  panel.template unpack<TR>(r0, blocks, s);
  for (int64_t tile = tile0; tile < tile1; ++tile) {
    __m256 dots[TR][kTileTokens];
    int_panel_tile<TR, Panel::kRunGroups>(s.w, tiled.xt + tile * blocks * kTileTokens * kGroup, blocks, dots);
    const int64_t t0 = tile * kTileTokens, valid = std::min<int64_t>(kTileTokens, n - t0);
    alignas(16) float xs[kTileTokens];
    for (int j = 0; j < kTileTokens; ++j) xs[j] = acts.scale[t0 + std::min<int64_t>(j, valid - 1)];  // padding: dropped
    const __m128 xs4 = _mm_load_ps(xs);
    alignas(16) float res[TR][kTileTokens];
    for (int i = 0; i < TR; ++i)  // the one-token kernels' (hsum * xs) * row scale, four tokens at once
      _mm_store_ps(res[i], _mm_mul_ps(_mm_mul_ps(hsum4(dots[i][0], dots[i][1], dots[i][2], dots[i][3]), xs4),
                                      _mm_set1_ps(panel.row_scale(r0 + i))));
    for (int64_t j = 0; j < valid; ++j)
      for (int i = 0; i < TR; ++i) y[(t0 + j) * out_features + r0 + i] = res[i][j];
  }
}

// Panels a thread claims at a time: 48 rows, so a claim writes whole 64-byte lines of each output row
// (in a 64-byte aligned output, the decode step's): claims of 12 rows had both threads writing the same
// lines, which bounced between the cores, and a 32-sequence step ran ~15% slower than the static
// split; 48-row claims ran ~20% faster than it (alternating runs). 48 divides every SmolLM2 width
// (576 = 12 claims: 64-row claims would split them 5 to 4), and the threads finish together (12-1,024
// claims per GEMM).
constexpr int64_t kPanelsPerClaim = 48 / kPanelRows;

// y (n, out_features) for a step of several tokens. Threads claim runs of panels from a shared counter
// instead of a fixed half each: on a shared or busy core one thread falls behind, and with a static
// split the other waited for it at every GEMM (~10% of a 32-sequence step's samples were OpenMP's spin).
// A row's result does not depend on which thread computes it.
template <class Panel>
void panel_gemm(const Panel& panel, const QuantActs& acts, int64_t n, int64_t out_features, float* y) {
  TiledActs tiled;
  tiled.build(acts, n);
  const int64_t panels = (out_features + kPanelRows - 1) / kPanelRows;
  const int64_t claims = (panels + kPanelsPerClaim - 1) / kPanelsPerClaim;
  constexpr int64_t kChunkTiles = kChunkTokens / kTileTokens;
  std::atomic<int64_t> next_claim{0};
  at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), claims), 1, [&](int64_t, int64_t) {
    PanelScratch s;
    s.reserve(acts.k);
    for (int64_t claim = next_claim.fetch_add(1); claim < claims; claim = next_claim.fetch_add(1)) {
      const int64_t p0 = claim * kPanelsPerClaim, p1 = std::min(panels, p0 + kPanelsPerClaim);
      for (int64_t c0 = 0; c0 < tiled.tiles; c0 += kChunkTiles) {
        const int64_t c1 = std::min(tiled.tiles, c0 + kChunkTiles);
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t r0 = p * kPanelRows;
          if (r0 + kPanelRows <= out_features) {
            panel_rows<kPanelRows>(panel, acts, tiled, n, c0, c1, r0, out_features, s, y);
          } else {
            for (int64_t r = r0; r < out_features; ++r) panel_rows<1>(panel, acts, tiled, n, c0, c1, r, out_features, s, y);
          }
        }
      }
    }
  });
}

// Steps of at least this many tokens take the panel GEMM (fewer: the tiles that read weights in place).
constexpr int64_t kPanelMinTokens = 4;

// y (n, out) = x (n, in) W^T (+ bias), with x already quantized in `acts`.
void q4_linear_into(const QuantActs& acts, int64_t n, const Q4Weight& w, float* y) {
  if (n >= kPanelMinTokens) {
    panel_gemm(Q4Panel{&w}, acts, n, w.out_features, y);
  } else {
    // Chunks of whole 4-row tiles, so the split between threads does not change a tile's rows.
    const int64_t grain = std::max<int64_t>(16, 256 / std::max<int64_t>(n, 1));
    at::parallel_for(0, w.out_features, grain, [&](int64_t r0, int64_t r1) {
      q4_rows(acts, n, w, r0, r1, y);
    });
  }
  if (w.bias != nullptr) {
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < w.out_features; ++r) y[t * w.out_features + r] += w.bias[r];
  }
}

at::Tensor q4_linear(const at::Tensor& x, const at::Tensor& qs, const at::Tensor& k, const at::Tensor& c,
                     const at::Tensor& row_scale, const c10::optional<at::Tensor>& bias) {
  const Q4Weight w = q4_view(qs, k, c, row_scale, bias.has_value() ? *bias : at::Tensor());
  const at::Tensor xc = x.to(at::kFloat).contiguous();
  TORCH_CHECK(xc.dim() == 2 && xc.size(1) == w.in_features, "x: (n, in_features)");
  const int64_t n = xc.size(0);
  at::Tensor y = at::empty({n, w.out_features}, xc.options());
  QuantActs acts;
  acts.quantize(xc.data_ptr<float>(), n, w.in_features);
  q4_linear_into(acts, n, w, y.data_ptr<float>());
  return y;
}

// x rounded as q4_linear sees it (integers times the token's scale), for the dense path of large steps: the
// same rounding code, in one pass instead of six torch ops.
at::Tensor round_activations(const at::Tensor& x) {
  const at::Tensor xc = x.to(at::kFloat).contiguous();
  TORCH_CHECK(xc.dim() == 2 && xc.size(1) % kGroup == 0, "x: (n, in_features), in_features a multiple of 32");
  const int64_t n = xc.size(0), k = xc.size(1);
  at::Tensor y = at::empty_like(xc);
  const float* xp = xc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, n, 16, [&](int64_t t0, int64_t t1) {
    QuantActs acts;
    for (int64_t t = t0; t < t1; ++t) {
      acts.quantize(xp + t * k, 1, k);
      for (int64_t b = 0; b < acts.blocks; ++b)
        for (int64_t i = 0; i < kGroup; ++i)
          yp[t * k + b * kGroup + i] = static_cast<float>(acts.xq[b * kGroup + i]) * acts.scale[0];
    }
  });
  return y;
}

// LM head: int8 weights (out, in) with one bf16 scale per row, activations rounded to int16 like the
// 4-bit GEMM's (16 weights per madd instead of 8 per float FMA: the head is half of a one-token step's
// reads on a small model, and the float version was bound by its instructions). With one scale per row
// and per token the products sum as integers, converted to float once per run of kQ8RunGroups groups.
template <int TN>
inline void q8_rows_tile(const QuantActs& acts, int64_t t0, const int8_t* wr, float row_scale, int64_t out,
                         int64_t r, float* y) {
  const int64_t blocks = acts.blocks;
  __m256 facc[TN];
  for (int j = 0; j < TN; ++j) facc[j] = _mm256_setzero_ps();
  for (int64_t g0 = 0; g0 < blocks; g0 += kQ8RunGroups) {
    const int64_t g1 = std::min(blocks, g0 + kQ8RunGroups);
    __m256i acc[TN];
    for (int j = 0; j < TN; ++j) acc[j] = _mm256_setzero_si256();
    for (int64_t b = g0; b < g1; ++b) {
      const __m256i w_lo =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + b * kGroup)));
      const __m256i w_hi =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + b * kGroup + 16)));
      for (int j = 0; j < TN; ++j) {
        const int16_t* xg = acts.xq.data() + (t0 + j) * acts.k + b * kGroup;
        const __m256i prod = _mm256_add_epi32(
            _mm256_madd_epi16(w_lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xg))),
            _mm256_madd_epi16(w_hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xg + 16))));
        acc[j] = _mm256_add_epi32(acc[j], prod);
      }
    }
    for (int j = 0; j < TN; ++j) facc[j] = _mm256_add_ps(facc[j], _mm256_cvtepi32_ps(acc[j]));
  }
  for (int j = 0; j < TN; ++j) y[(t0 + j) * out + r] = hsum(facc[j]) * acts.scale[t0 + j] * row_scale;
}

at::Tensor q8_linear(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales) {
  TORCH_CHECK(qweight.dtype() == at::kChar && qweight.is_contiguous(), "qweight: contiguous int8 (out, in)");
  TORCH_CHECK(scales.dtype() == at::kBFloat16 && scales.is_contiguous(), "scales: bfloat16 (out,)");
  const at::Tensor xc = x.to(at::kFloat).contiguous();
  const int64_t n = xc.size(0), k = xc.size(1), out = qweight.size(0);
  TORCH_CHECK(qweight.size(1) == k && k % kGroup == 0, "x: (n, in_features), in_features a multiple of 32");
  at::Tensor y = at::empty({n, out}, xc.options());
  const int8_t* w = qweight.data_ptr<int8_t>();
  const uint16_t* s = reinterpret_cast<const uint16_t*>(scales.data_ptr<at::BFloat16>());
  float* yp = y.data_ptr<float>();
  QuantActs acts;
  acts.quantize(xc.data_ptr<float>(), n, k);
  if (n >= kPanelMinTokens) {
    panel_gemm(Q8Panel{w, s}, acts, n, out, yp);
    return y;
  }
  at::parallel_for(0, out, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int8_t* wr = w + r * k;
      const float rs = bf16_to_float(s[r]);
      for (int64_t t = 0; t < n; ++t) q8_rows_tile<1>(acts, t, wr, rs, out, r, yp);
    }
  });
  return y;
}

void rms_norm(const float* x, const float* w, float eps, int64_t n, int64_t dim, float* y) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xr = x + t * dim;
    float ss = 0.f;
    for (int64_t i = 0; i < dim; ++i) ss += xr[i] * xr[i];
    const float inv = 1.f / std::sqrt(ss / static_cast<float>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) y[t * dim + i] = xr[i] * inv * w[i];
  }
}

// x (heads, dim) rotated in place, "rotate half" layout: x' = x * cos + roll(x, dim/2) * signed_sin,
// each table row scaled by `scale` (1/sqrt(head_dim) for queries, as in the torch path).
void rope(float* x, int64_t heads, int64_t dim, const float* cos, const float* sin, float scale) {
  const int64_t half = dim / 2;
  std::vector<float> tmp(dim);
  for (int64_t h = 0; h < heads; ++h) {
    float* v = x + h * dim;
    for (int64_t i = 0; i < dim; ++i) {
      const float rolled = v[(i + half) % dim];
      tmp[i] = v[i] * (cos[i] * scale) + rolled * (sin[i] * scale);
    }
    std::memcpy(v, tmp.data(), dim * sizeof(float));
  }
}

inline void store_row(float* dst, const float* src, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }
inline void store_row(uint16_t* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bf16(src[i]);
}

template <class KV>
inline float dot(const float* a, const KV* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8(b + i), acc);
  float s = hsum(acc);
  for (; i < n; ++i) s += a[i] * to_float(b[i]);
  return s;
}

// The dot products of q with four keys at once, summed across lanes by one hadd tree (one horizontal
// sum per key cost as much as its 8 FMAs at head_dim 64).
template <class KV>
inline __m128 dot4(const float* q, const KV* k0, const KV* k1, const KV* k2, const KV* k3, int64_t dim) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i < dim; i += 8) {
    const __m256 qv = _mm256_loadu_ps(q + i);
    a0 = _mm256_fmadd_ps(qv, load8(k0 + i), a0);
    a1 = _mm256_fmadd_ps(qv, load8(k1 + i), a1);
    a2 = _mm256_fmadd_ps(qv, load8(k2 + i), a2);
    a3 = _mm256_fmadd_ps(qv, load8(k3 + i), a3);
  }
  return hsum4(a0, a1, a2, a3);
}

// out[0:64] = Σ_u (p[u] * scale) * value(u)[d0 : d0 + 64], the eight accumulators in registers for the
// whole context (as an array shared with the general loop, GCC stored all eight to the stack after
// every row).
template <class ValueRow>
inline void weighted_rows64(const float* p, float scale, int64_t len, const ValueRow& value, int64_t d0, float* out) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  for (int64_t u = 0; u < len; ++u) {
    const __m256 w = _mm256_set1_ps(p[u] * scale);
    const auto* v = value(u) + d0;
    a0 = _mm256_fmadd_ps(w, load8(v), a0);
    a1 = _mm256_fmadd_ps(w, load8(v + 8), a1);
    a2 = _mm256_fmadd_ps(w, load8(v + 16), a2);
    a3 = _mm256_fmadd_ps(w, load8(v + 24), a3);
    a4 = _mm256_fmadd_ps(w, load8(v + 32), a4);
    a5 = _mm256_fmadd_ps(w, load8(v + 40), a5);
    a6 = _mm256_fmadd_ps(w, load8(v + 48), a6);
    a7 = _mm256_fmadd_ps(w, load8(v + 56), a7);
  }
  const __m256 acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
  for (int c = 0; c < 8; ++c) _mm256_storeu_ps(out + c * 8, acc[c]);
}

// Keys ahead of the one being scored whose key and value rows are fetched early. A sequence's rows sit
// in 16-slot blocks scattered over the pool, one kv head's 128-256 bytes in every slot's 384-768, which
// the hardware prefetchers did not follow: 30 layers of 32 sequences at 150 tokens took 19-24 ms from
// DRAM against 9.5 ms with the same rows in cache; prefetched, 12-16 ms for a bfloat16 cache (8 and
// 32 keys ahead measured the same, within this machine's noise).
constexpr int64_t kPrefetchKeys = 16;

// Decode attention over a paged cache: query b (one token; heads at q + b * q_stride, pre-scaled) attends
// to the first pos[b] + 1 slots of its row of `kv_slots` (n, max_t). out: (n, heads * head_dim).
// Work items are (sequence, kv head): the heads sharing a kv head read each key and value row once,
// and a head's output stays in registers while the values stream past (head_dim a multiple of 8, at
// most 256; others take the plain loop).
template <class KV>
void attend(const float* q_all, int64_t q_stride, const KV* k_cache, const KV* v_cache, const int64_t* kv_slots,
            int64_t max_t, const int64_t* pos, int64_t n, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
            float* attn) {
  const int64_t group = num_heads / num_kv_heads, slot_stride = num_kv_heads * head_dim;
  const int64_t q_size = num_heads * head_dim;
  const bool vector_dims = head_dim % 8 == 0 && head_dim <= 256;
  at::parallel_for(0, n * num_kv_heads, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> scores(group * (max_t + 8));
    const int64_t stride = max_t + 8;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / num_kv_heads, kvh = i % num_kv_heads;
      const int64_t len = pos[b] + 1;
      const int64_t* seq_slots = kv_slots + b * max_t;
      const float* q0 = q_all + b * q_stride + kvh * group * head_dim;
      auto key = [&](int64_t t) { return k_cache + seq_slots[t] * slot_stride + kvh * head_dim; };
      auto value = [&](int64_t t) { return v_cache + seq_slots[t] * slot_stride + kvh * head_dim; };
      const int64_t row_bytes = head_dim * static_cast<int64_t>(sizeof(KV));
      auto prefetch = [&](int64_t t) {
        prefetch_bytes(key(t), row_bytes);
        prefetch_bytes(value(t), row_bytes);
      };
      for (int64_t t = 0; t < std::min(len, kPrefetchKeys); ++t) prefetch(t);
      for (int64_t h = 0; h < group; ++h) {
        float* sc = scores.data() + h * stride;
        const float* q = q0 + h * head_dim;
        int64_t t = 0;
        if (vector_dims) {
          for (; t + 4 <= len; t += 4) {
            if (h == 0) {  // the first head's pass brings the rows in; the others find them in cache
              for (int64_t a = t + kPrefetchKeys; a < std::min(len, t + kPrefetchKeys + 4); ++a) prefetch(a);
            }
            _mm_storeu_ps(sc + t, dot4(q, key(t), key(t + 1), key(t + 2), key(t + 3), head_dim));
          }
        }
        for (; t < len; ++t) sc[t] = dot(q, key(t), head_dim);
        float mx = -INFINITY;
        for (t = 0; t < len; ++t) mx = std::max(mx, sc[t]);
        float denom = 0.f;
        t = 0;
        if (vector_dims) {
          __m256 dv = _mm256_setzero_ps();
          for (; t + 8 <= len; t += 8) {
            const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(sc + t), _mm256_set1_ps(mx)));
            _mm256_storeu_ps(sc + t, e);
            dv = _mm256_add_ps(dv, e);
          }
          denom = hsum(dv);
        }
        for (; t < len; ++t) {
          sc[t] = std::exp(sc[t] - mx);
          denom += sc[t];
        }
        const float inv = 1.f / denom;
        float* out = attn + b * q_size + (kvh * group + h) * head_dim;
        if (vector_dims) {
          for (int64_t d0 = 0; d0 < head_dim; d0 += 64) {
            const int chunks = static_cast<int>(std::min<int64_t>(8, (head_dim - d0) / 8));
            if (chunks == 8) {  // the common head_dim 64 (and 128, 256)
              weighted_rows64(sc, inv, len, value, d0, out + d0);
              continue;
            }
            __m256 acc[8];
            for (int c = 0; c < 8; ++c) acc[c] = _mm256_setzero_ps();
            for (int64_t u = 0; u < len; ++u) {
              const __m256 p = _mm256_set1_ps(sc[u] * inv);
              const KV* v = value(u) + d0;
              for (int c = 0; c < chunks; ++c) acc[c] = _mm256_fmadd_ps(p, load8(v + c * 8), acc[c]);
            }
            for (int c = 0; c < chunks; ++c) _mm256_storeu_ps(out + d0 + c * 8, acc[c]);
          }
        } else {
          std::fill(out, out + head_dim, 0.f);
          for (int64_t u = 0; u < len; ++u) {
            const float p = sc[u] * inv;
            const KV* v = value(u);
            for (int64_t d = 0; d < head_dim; ++d) out[d] += p * to_float(v[d]);
          }
        }
      }
    }
  });
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
  for (int64_t b = 0; b < n; ++b) {
    TORCH_CHECK(p[b] >= 0 && p[b] < max_t, "decode_attention: context length out of range");
    for (int64_t t = 0; t <= p[b]; ++t) TORCH_CHECK(sl[b * max_t + t] < num_slots, "decode_attention: bad slot");
  }
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

// The per-token work between a decode step's GEMMs (norms, RoPE, SwiGLU), split between the threads:
// done by one thread, the other waited for it (~10% of a 32-sequence step). Below 8 tokens it runs
// inline. Each token's arithmetic is the same whichever thread runs it.
template <class F>
inline void per_token(int64_t n, const F& f) {
  at::parallel_for(0, n, 8, f);
}

// One layer's keys and values in a float32 or bfloat16 cache (slots, kv_heads, head_dim): where the
// decode step writes a token's row and what it attends over.
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

struct LayerWeights {
  const float* attn_norm;
  const float* ffn_norm;
  Q4Weight qkv, o, gate_up, down;
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

// SwiGLU of rows (n, 2 * inter) -> (n, inter), gate half first: the decode step's own, for tests.
at::Tensor swiglu_rows(const at::Tensor& gate_up) {
  const at::Tensor g = gate_up.to(at::kFloat).contiguous();
  TORCH_CHECK(g.dim() == 2 && g.size(1) % 2 == 0, "swiglu: (n, 2 * inter)");
  const int64_t n = g.size(0), inter = g.size(1) / 2;
  at::Tensor out = at::empty({n, inter}, g.options());
  for (int64_t b = 0; b < n; ++b) swiglu(g.data_ptr<float>() + b * 2 * inter, inter, out.data_ptr<float>() + b * inter);
  return out;
}

// One decode step: n sequences, one new token each at `positions` (its context is positions + 1 tokens,
// at `kv_slots` (n, T) of the flat cache); returns the final-normed hidden states (n, hidden).
at::Tensor decode_step(const at::Tensor& hidden_in, const at::Tensor& positions, const at::Tensor& slot_mapping,
                       const at::Tensor& kv_slots, at::Tensor kv_cache, const at::Tensor& rope_cos,
                       const at::Tensor& rope_sin, const std::vector<at::Tensor>& layer_tensors,
                       const at::Tensor& final_norm, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                       double eps_d) {
  constexpr int64_t kPerLayer = 22;  // attn_norm, ffn_norm, then (qs, k, c, row_scale, bias) x qkv/o/gate_up/down
  const int64_t num_layers = static_cast<int64_t>(layer_tensors.size()) / kPerLayer;
  TORCH_CHECK(static_cast<int64_t>(layer_tensors.size()) == num_layers * kPerLayer, "layer tensors: 22 per layer");
  TORCH_CHECK((kv_cache.dtype() == at::kFloat || kv_cache.dtype() == at::kBFloat16) && kv_cache.is_contiguous()
                  && kv_cache.dim() == 5,
              "kv_cache: contiguous float32 or bfloat16 (layers, 2, slots, kv_heads, head_dim)");
  TORCH_CHECK(kv_cache.size(0) == num_layers && kv_cache.size(3) == num_kv_heads && kv_cache.size(4) == head_dim,
              "kv_cache shape does not match the model");
  TORCH_CHECK(hidden_in.dtype() == at::kFloat && positions.dtype() == at::kLong && slot_mapping.dtype() == at::kLong
                  && kv_slots.dtype() == at::kLong,
              "decode_step: float32 hidden states, int64 indices");
  TORCH_CHECK(rope_cos.dtype() == at::kFloat && rope_cos.is_contiguous() && rope_sin.is_contiguous(),
              "rope tables: contiguous float32 (positions, head_dim)");
  const float eps = static_cast<float>(eps_d);
  std::vector<LayerWeights> layers;
  for (int64_t l = 0; l < num_layers; ++l) {
    const at::Tensor* t = layer_tensors.data() + l * kPerLayer;
    layers.push_back({t[0].data_ptr<float>(), t[1].data_ptr<float>(), q4_view(t[2], t[3], t[4], t[5], t[6]),
                      q4_view(t[7], t[8], t[9], t[10], t[11]), q4_view(t[12], t[13], t[14], t[15], t[16]),
                      q4_view(t[17], t[18], t[19], t[20], t[21])});
  }
  at::Tensor x = hidden_in.contiguous().clone();
  const at::Tensor pos_c = positions.contiguous(), slot_c = slot_mapping.contiguous(), kv_c = kv_slots.contiguous();
  const int64_t n = x.size(0), hidden = x.size(1), max_t = kv_c.size(1);
  const int64_t q_size = num_heads * head_dim, kv_size = num_kv_heads * head_dim;
  const int64_t inter = layers.empty() ? 0 : layers[0].down.in_features;
  const int64_t num_slots = kv_cache.size(2);
  const int64_t* pos = pos_c.data_ptr<int64_t>();
  const int64_t* slots = slot_c.data_ptr<int64_t>();
  const int64_t* ctx = kv_c.data_ptr<int64_t>();
  for (int64_t b = 0; b < n; ++b) {
    TORCH_CHECK(pos[b] >= 0 && pos[b] < rope_cos.size(0) && pos[b] < max_t, "decode_step: position out of range");
    TORCH_CHECK(slots[b] >= 0 && slots[b] < num_slots, "decode_step: slot out of range");
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
    q4_linear_into(acts, n, lw.qkv, qkv.data());
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
    if (bf16_cache) {
      attend(qkv.data(), qkv_w, kv16.k, kv16.v, ctx, max_t, pos, n, num_heads, num_kv_heads, head_dim, attn.data());
    } else {
      attend(qkv.data(), qkv_w, kv32.k, kv32.v, ctx, max_t, pos, n, num_heads, num_kv_heads, head_dim, attn.data());
    }
    acts.quantize(attn.data(), n, q_size);
    q4_linear_into(acts, n, lw.o, tmp.data());
    per_token(n, [&](int64_t b0, int64_t b1) {
      for (int64_t i = b0 * hidden; i < b1 * hidden; ++i) xp[i] += tmp[i];
      rms_norm(xp + b0 * hidden, lw.ffn_norm, eps, b1 - b0, hidden, h.data() + b0 * hidden);
    });
    acts.quantize(h.data(), n, hidden);
    q4_linear_into(acts, n, lw.gate_up, gate_up.data());
    per_token(n, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) swiglu(gate_up.data() + b * 2 * inter, inter, act.data() + b * inter);
    });
    acts.quantize(act.data(), n, inter);
    q4_linear_into(acts, n, lw.down, tmp.data());
    for (int64_t i = 0; i < n * hidden; ++i) xp[i] += tmp[i];
  }
  at::Tensor out = at::empty_like(x);
  rms_norm(xp, final_norm.contiguous().data_ptr<float>(), eps, n, hidden, out.data_ptr<float>());
  return out;
}

// dst[:, :, dst_ids[i]] = src[:, :, src_ids[i]] for KV blocks laid out (layers, 2, blocks, ...): the copy
// of a suspended sequence's KV to host swap memory and back. A block is `planes` (layers * 2) contiguous
// runs; streaming stores skip reading the destination into cache first (a plain copy moves each byte
// three times: read the source, read the destination line, write it back).
void copy_blocks(const at::Tensor& src, const at::Tensor& src_ids, at::Tensor dst, const at::Tensor& dst_ids) {
  TORCH_CHECK(src.is_contiguous() && dst.is_contiguous() && src.dim() >= 3 && dst.dim() == src.dim(),
              "copy_blocks: contiguous (layers, 2, blocks, ...) tensors");
  TORCH_CHECK(src.dtype() == dst.dtype(), "copy_blocks: same dtype");
  TORCH_CHECK(src.size(0) == dst.size(0) && src.size(1) == dst.size(1), "copy_blocks: same layers");
  const at::Tensor si = src_ids.to(at::kLong).contiguous(), di = dst_ids.to(at::kLong).contiguous();
  const int64_t pairs = si.numel();
  TORCH_CHECK(di.numel() == pairs, "copy_blocks: one destination per source block");
  const int64_t planes = src.size(0) * src.size(1);
  const int64_t src_blocks = src.size(2), dst_blocks = dst.size(2);
  const int64_t block_bytes = src.numel() / (planes * src_blocks) * src.element_size();
  TORCH_CHECK(dst.numel() / (planes * dst_blocks) * dst.element_size() == block_bytes, "copy_blocks: block sizes");
  const int64_t* sp = si.data_ptr<int64_t>();
  const int64_t* dp = di.data_ptr<int64_t>();
  for (int64_t i = 0; i < pairs; ++i)
    TORCH_CHECK(sp[i] >= 0 && sp[i] < src_blocks && dp[i] >= 0 && dp[i] < dst_blocks, "copy_blocks: bad block id");
  const char* s = static_cast<const char*>(src.data_ptr());
  char* d = static_cast<char*>(dst.data_ptr());
  at::parallel_for(0, pairs * planes, 8, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t pair = w / planes, plane = w % planes;
      const char* from = s + (plane * src_blocks + sp[pair]) * block_bytes;
      char* to = d + (plane * dst_blocks + dp[pair]) * block_bytes;
      if (block_bytes % 32 == 0 && reinterpret_cast<uintptr_t>(to) % 32 == 0) {
        for (int64_t b = 0; b < block_bytes; b += 32)
          _mm256_stream_si256(reinterpret_cast<__m256i*>(to + b),
                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from + b)));
      } else {
        std::memcpy(to, from, block_bytes);
      }
    }
    _mm_sfence();  // streamed lines are visible before this thread's share is reported done
  });
}

}  // namespace
}  // namespace llmasos

// Every kernel runs without the GIL: they touch no Python object, and a decode step holds the CPU
// for milliseconds, in which a server's event loop (or any other Python thread) must go on running.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using release = py::call_guard<py::gil_scoped_release>;
  using namespace llmasos;
  m.def("q4_linear", &q4_linear, release(), "y = x W^T (+ bias) with 4-bit weights and integer group constants (AVX2)");
  m.attr("Q4_INT_MAX") = kQ4IntMax;
  m.attr("ACTIVATION_MAX") = static_cast<int>(kActMax);
  m.def("round_activations", &round_activations, release(), "x rounded to int16 with one scale per token, as q4_linear sees it");
  m.def("q8_linear", &q8_linear, release(), "y = x W^T with per-row int8 weights (AVX2, int16 activations)");
  m.def("decode_attention", &decode_attention, release(), "one-token-per-sequence attention over a paged KV cache");
  m.def("prefill_attention", &prefill_attention, release(),
        "causal attention of packed prompt chunks over a paged KV cache (prefill_attention.cpp)");
  m.def("swiglu", &swiglu_rows, release(), "silu(gate) * up for rows (n, 2 * inter), as the decode step computes it");
  m.def("copy_blocks", &copy_blocks, release(), "copy KV blocks between pools (layers, 2, blocks, ...) by id, streaming stores");
  m.def("decode_step", &decode_step, release(), "one decode step of the Llama family over a paged KV cache");
}
