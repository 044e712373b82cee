// AVX2 GEMMs for quantized weights: 4-bit (after llama.cpp's q4_1 x q8_1 dot product, with integer group
// constants) for the layers, int8 for the LM head, both against activations rounded to 15-bit integers.
//
// Why: at batch 1 a 135M-parameter model is memory-bound (~75 MB of int4 weights per token), yet torch's
// _weight_int4pack_mm_for_cpu ran at a third of the bandwidth limit on AVX2. Here each token's activations
// are rounded with one float scale per token (int8 per block of 32, as llama.cpp does, flipped SmolLM2's
// greedy answer to "What is the capital of France?"; int16 per token moved its logits by at most 0.015,
// against 0.005 for int16 per block, and a per-block scale cost a multiply per row, token and group), and
// each 32-weight group is two int16 madds summed in int32 (see kQ4IntMax).
//
// 4-bit layout (see quant.py, Int4Linear): per output row, groups of 32 weights; group g holds 16 bytes,
// byte j = q[j] | q[j + 16] << 4 with q in [0, 15], and int16 `k`, `c`; each row a float `row_scale`:
// w = row_scale * (q * k + c) (see kQ4IntMax).
// Every row and every token is computed the same way whatever the batch, so a sequence's result does
// not depend on what shares its step.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.h"
#include "quant_gemm.h"
#include "simd.h"

namespace llmasos {
namespace {

// acc + Σ w_lo x_lo + Σ w_hi x_hi, pairs of int16 products summed into each int32 lane. With AVX-512 VNNI
// `vpdpwssd` fuses each multiply-add with its accumulation: 2 instructions instead of 4, and the int32
// lanes hold the same sums (integer addition is exact, and wraps alike in both forms), so the two builds
// agree bit for bit. One core of a Zen 4 ran the panel tile at 95-97 G multiply-adds/s with it, against
// 78-81 with madd + add.
inline __m256i madd_pairs(__m256i acc, __m256i w_lo, __m256i x_lo, __m256i w_hi, __m256i x_hi) {
#ifdef __AVX512VNNI__
  return _mm256_dpwssd_epi32(_mm256_dpwssd_epi32(acc, w_lo, x_lo), w_hi, x_hi);
#else
  return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(w_lo, x_lo), _mm256_madd_epi16(w_hi, x_hi)));
#endif
}

// A group's 32 elements as int16, 0-15 and 16-31: unpack_q4 gives q in [0, 15] (one widening load, then
// each 16-bit lane holds byte j = q[j] | q[j + 16] << 4: a mask and a shift split it, 3 ops, not 6).
struct Q4Group {
  __m256i lo, hi;
};

inline Q4Group unpack_q4(const uint8_t* qs) {
  const __m256i bytes = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  return {_mm256_and_si256(bytes, _mm256_set1_epi16(0x0F)), _mm256_srli_epi16(bytes, 4)};
}

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
          acc[i][j] = madd_pairs(acc[i][j], wi.lo, x_lo[j], wi.hi, x_hi[j]);
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

// The activations of every 4 tokens interleaved: xt[tile][g][j][32]. The last tile is padded with
// zeros (its extra tokens are computed and dropped).
struct TiledActs {
  AlignedBuffer<int16_t> storage;
  int16_t* xt = nullptr;
  int64_t tiles = 0;

  void build(const QuantActs& acts, int64_t n) {
    const int64_t k = acts.k, blocks = acts.blocks;
    tiles = (n + kTileTokens - 1) / kTileTokens;
    storage.resize(tiles * kTileTokens * k);
    xt = storage.data();
    // Split between the threads by tile (a 512-token chunk's copy is MBs, and the GEMM waits for it).
    at::parallel_for(0, tiles, 8, [&](int64_t tile0, int64_t tile1) {
      for (int64_t t = tile0 * kTileTokens; t < tile1 * kTileTokens; ++t) {
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
    });
  }
};

struct PanelScratch {
  AlignedBuffer<int16_t> w_storage;
  int16_t* w = nullptr;  // wp[g][i][32] int16

  void reserve(int64_t k) {
    w_storage.resize(kPanelRows * k);
    w = w_storage.data();
  }
};

// int8 rows sum their int32 products over runs of this many groups before converting them to float
// (a lane sums 4 products of at most 127 * 16383 per group: 64 groups stay below 2^31).
constexpr int64_t kQ8RunGroups = 64;

#ifdef __AVX512VNNI__
// One group of a TR-row x 4-token tile: acc[i][j] += Σ w[i] x[j] over its 32 elements.
template <int TR>
inline void vnni_tile_group(const int16_t* wg, const int16_t* xg, __m256i (*acc)[kTileTokens]) {
  __m256i x_lo[kTileTokens], x_hi[kTileTokens];
  for (int j = 0; j < kTileTokens; ++j) {
    x_lo[j] = _mm256_load_si256(reinterpret_cast<const __m256i*>(xg + j * kGroup));
    x_hi[j] = _mm256_load_si256(reinterpret_cast<const __m256i*>(xg + j * kGroup + 16));
  }
  for (int i = 0; i < TR; ++i) {
    const __m256i w_lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(wg + i * kGroup));
    for (int j = 0; j < kTileTokens; ++j) acc[i][j] = _mm256_dpwssd_epi32(acc[i][j], w_lo, x_lo[j]);
  }
  for (int i = 0; i < TR; ++i) {
    const __m256i w_hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(wg + i * kGroup + 16));
    for (int j = 0; j < kTileTokens; ++j) acc[i][j] = _mm256_dpwssd_epi32(acc[i][j], w_hi, x_hi[j]);
  }
}
#endif

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
#ifdef __AVX512VNNI__
    // Whole runs unrolled, each group's low halves against every token, then its high halves, with the
    // tokens' 8 activation vectors held (AVX-512's 32 registers: 12 accumulators, 8 activations, a
    // weight). GCC then keeps every accumulator in place; the loop above it copied them between
    // registers around each vpdpwssd, and on one Zen 4 core the tile ran at 97-101 G multiply-adds/s
    // against 116-117 this way, vpdpwssd's peak (2 per cycle at 3.67 GHz). Integer sums: same bits.
    int64_t g = g0;
    for (; g + 4 <= g1; g += 4) {
      vnni_tile_group<TR>(wp + g * TR * kGroup, xt + g * TN * kGroup, acc);
      vnni_tile_group<TR>(wp + (g + 1) * TR * kGroup, xt + (g + 1) * TN * kGroup, acc);
      vnni_tile_group<TR>(wp + (g + 2) * TR * kGroup, xt + (g + 2) * TN * kGroup, acc);
      vnni_tile_group<TR>(wp + (g + 3) * TR * kGroup, xt + (g + 3) * TN * kGroup, acc);
    }
    for (; g < g1; ++g) vnni_tile_group<TR>(wp + g * TR * kGroup, xt + g * TN * kGroup, acc);
#else
    for (int64_t g = g0; g < g1; ++g) {
      const int16_t* xg = xt + g * TN * kGroup;
      const int16_t* wg = wp + g * TR * kGroup;
      for (int i = 0; i < TR; ++i) {
        const __m256i w_lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(wg + i * kGroup));
        const __m256i w_hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(wg + i * kGroup + 16));
        for (int j = 0; j < TN; ++j) {
          const __m256i x_lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(xg + j * kGroup));
          const __m256i x_hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(xg + j * kGroup + 16));
          acc[i][j] = madd_pairs(acc[i][j], w_lo, x_lo, w_hi, x_hi);
        }
      }
    }
#endif
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
// (in a 64-byte aligned output, the forward step's): claims of 12 rows had both threads writing the same
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


}  // namespace

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
        acc[j] = madd_pairs(acc[j], w_lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xg)), w_hi,
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xg + 16)));
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

}  // namespace llmasos
