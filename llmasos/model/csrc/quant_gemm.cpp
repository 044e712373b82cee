// GEMMs for quantized weights: 4-bit (after llama.cpp's q4_1 x q8_1 dot product, with integer group
// constants) for the layers, int8 for the LM head, both against activations rounded to 15-bit integers.
//
// Why: at batch 1 a 135M-parameter model is memory-bound (~75 MB of int4 weights per token), yet torch's
// _weight_int4pack_mm_for_cpu ran at a third of the bandwidth limit on AVX2. Here each token's activations
// are rounded with one float scale per token (int8 per block of 32, as llama.cpp does, flipped SmolLM2's
// greedy answer to "What is the capital of France?"; int16 per token moved its logits by at most 0.015,
// against 0.005 for int16 per block, and a per-block scale cost a multiply per row, token and group).
//
// Rows lie across vector lanes, in blocks of 16 (row_vectors.h); quant_gemm.h gives the 4-bit layout. The
// int8 head is (blocks, in/2, 32): byte 2r + e of pair p is w[r][2p + e], with a bfloat16 scale per row.
// A row's result is the int32 sums of runs of its input pairs (8 pairs for 4-bit, see kQ4IntMax; up to 512
// for int8), each converted to float and added in order, times the token's scale, times the row's scale.
// Every path (up to kInPlaceMaxTokens tokens reading the weights in place, inplace_gemm.cpp; more through
// unpacked panels) takes those steps in that order, so a sequence's result does not depend on what shares
// its step.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.h"
#include "quant_gemm.h"
#include "row_vectors.h"
#include "simd.h"

namespace llmasos {
namespace {

constexpr int64_t kPairsPerGroup = kGroup / 2;
// 4-bit runs: half a group (16 products of at most 16383 x 8191 per lane, see kQ4IntMax).
constexpr int64_t kQ4RunPairs = kPairsPerGroup / 2;
// int8 runs: 1,024 products of at most 127 x 16383 per lane stay below 2^31.
constexpr int64_t kQ8RunPairs = 512;

// ---- the two weight formats ----
// Each says where a block's bytes lie (to fetch them early), how vector v of a block unpacks to int16
// pairs (unpack_pairs writes pairs [p0, p1) to dst(p - p0)), its rows' float scales, how many pairs a run
// sums and how many a panel chunk holds (whole runs).

struct Q4Format {
  const Q4Weight* w;
  static constexpr int64_t kRunPairs = kQ4RunPairs;
  static constexpr int64_t kChunkPairs = 4 * kPairsPerGroup;  // panel_gemm's chunks: 4 groups

  int64_t out_features() const { return w->out_features; }
  int64_t pairs() const { return w->in_features / 2; }
  const uint8_t* chunks(int64_t block, int64_t g) const { return w->qs + (block * w->groups + g) * 8 * 32; }
  // Group g of a block: its chunks and its constants.
  void prefetch_group(int64_t block, int64_t g) const {
    if (block * kBlockRows >= w->out_features) return;
    const int64_t at = block * w->groups + g;
    prefetch_bytes(w->qs + at * 256, 256);
    prefetch_line(reinterpret_cast<const char*>(w->k + at * kBlockRows));
    prefetch_line(reinterpret_cast<const char*>(w->c + at * kBlockRows));
  }
  // Group g's 16 pairs of vector v: pairs c (lo) and c + 8 (hi) of chunk c, as q k + c in int16.
  template <class Sink>
  inline void unpack_group(int64_t block, int64_t g, int v, const Sink& sink) const {
    const int64_t at = (block * w->groups + g) * kBlockRows + v * kRowLanes;
    const IVec k = pair_of_each(w->k + at), c = pair_of_each(w->c + at);
    const uint8_t* chunk = chunks(block, g);
    for (int ch = 0; ch < 8; ++ch) {
      const IVec bytes = widen_u8(chunk + ch * 32, v);
      sink(ch, mul_add16(low_nibbles(bytes), k, c), mul_add16(high_nibbles(bytes), k, c));
    }
  }
  // Pairs [p0, p1) (whole groups) of vector v of a block into dst(pair - p0), fetching the same groups of
  // block `ahead` (the next claim's).
  template <class Dst>
  void unpack_pairs(int64_t block, int v, int64_t p0, int64_t p1, int64_t ahead, const Dst& dst) const {
    for (int64_t g = p0 / kPairsPerGroup; g < p1 / kPairsPerGroup; ++g) {
      if (v == 0) prefetch_group(ahead, g);
      const int64_t at = g * kPairsPerGroup - p0;
      unpack_group(block, g, v, [&](int ch, IVec lo, IVec hi) {
        store_pairs(dst(at + ch), lo);
        store_pairs(dst(at + ch + 8), hi);
      });
    }
  }
  void row_scales(int64_t r0, int64_t rows, float* dst) const { std::memcpy(dst, w->row_scale + r0, rows * 4); }
};

struct Q8Format {
  const Q8Weight* w;
  static constexpr int64_t kRunPairs = kQ8RunPairs;
  static constexpr int64_t kChunkPairs = kQ8RunPairs;  // a chunk holds whole runs

  int64_t out_features() const { return w->out_features; }
  int64_t pairs() const { return w->in_features / 2; }
  const int8_t* block_pairs(int64_t block) const { return w->q + block * pairs() * 32; }
  template <class Dst>
  void unpack_pairs(int64_t block, int v, int64_t p0, int64_t p1, int64_t ahead, const Dst& dst) const {
    const int8_t* src = block_pairs(block);
    const char* next = reinterpret_cast<const char*>(block_pairs(ahead));
    const bool fetch = v == 0 && ahead * kBlockRows < w->out_features;
    for (int64_t p = p0; p < p1; p += 2) {
      if (fetch) prefetch_line(next + p * 32);
      store_pairs(dst(p - p0), widen_i8(src + p * 32, v));
      store_pairs(dst(p - p0 + 1), widen_i8(src + (p + 1) * 32, v));
    }
  }
  void row_scales(int64_t r0, int64_t rows, float* dst) const {
    for (int64_t r = 0; r < rows; ++r) dst[r] = bf16_to_float(w->scales[r0 + r]);
  }
};

// ---- steps past kInPlaceMaxTokens tokens: the weights unpacked a chunk at a time, tiles of row vectors x tokens ----
//
// A claim of kPanelBlocks blocks unpacks its weights to int16 a chunk of input pairs at a time (4-bit: 4
// groups, 8 KB with AVX-512; steps of more than kChunkMaxTokens tokens: all of them, quant_gemm.h), pair-major: pair p of row vector rv at (p * vecs + rv) * kRowLanes * 2. Every
// token runs over a chunk while it is in L1, in tiles of RV row vectors x TN tokens that keep RV * TN int32
// accumulators and as many float sums in registers (AVX-512: 2 x 4, 16 of its 32 registers; AVX2: 2 x 3 of
// 16); each token's pair is broadcast from its activations. A tile's float sums wait in the claim's buffer
// between chunks, so each lane adds its runs in the same order as a panel of every input did.
// Why chunks: that whole panel (96 KB at 1,536 inputs, 573 KB at Qwen2.5-1.5B's 8,960) was read back from
// L2 by every tile, and a down projection's panel beside the step's activations outgrew L2.
#ifdef __AVX512VNNI__
constexpr int kPanelBlocks = 2;
constexpr int kTileTokens = 4;
#else
constexpr int kPanelBlocks = 1;
constexpr int kTileTokens = 3;
#endif
constexpr int kPanelVecs = kPanelBlocks * kBlockVecs;

struct PanelScratch {
  AlignedBuffer<int16_t> pairs;  // a chunk: (chunk pairs, vecs, kRowLanes, 2)
  AlignedFloats sums;  // every token's float sums between chunks: (n, vecs, kRowLanes)
  alignas(64) float rs[kPanelBlocks * kBlockRows];
};

// Where a chunk lies in the inputs, whether it is a claim's first or last, and the claim's buffers. The
// tiles take these pointers, not the thread_local scratch: through it every tile of a chunk paid a call to
// __tls_get_addr (10% of a 32-token 4-bit GEMM once the panels were cut into chunks).
struct Chunk {
  int64_t p0, p1;
  bool first, last;
  const int16_t* pairs;
  float* sums;
  const float* rs;
};

// Tokens [t0, t0 + TN) against a chunk of RV row vectors starting at row r0: their sums taken up (zero at
// the first chunk), the chunk's runs added, then kept for the next chunk or, after the last, scaled into y.
template <int RV, int TN, class Format>
inline void chunk_tokens(const Format& f, const QuantActs& acts, const Chunk& c, int64_t t0,
                         int64_t r0, float* y) {
  constexpr int64_t kRunPairs = Format::kRunPairs;
  const int16_t* x[TN];
  for (int j = 0; j < TN; ++j) x[j] = acts.xq.data() + (t0 + j) * acts.k;
  float* kept = c.sums + t0 * RV * kRowLanes;
  FVec sums[RV][TN];
  for (int i = 0; i < RV; ++i)
    for (int j = 0; j < TN; ++j) sums[i][j] = c.first ? fvec_zero() : fvec_load(kept + (j * RV + i) * kRowLanes);
  for (int64_t p0 = c.p0; p0 < c.p1; p0 += kRunPairs) {
    const int64_t p1 = std::min(c.p1, p0 + kRunPairs);
    const int16_t* at = c.pairs + (p0 - c.p0) * RV * kRowLanes * 2;
    IVec acc[RV][TN];
    for (int i = 0; i < RV; ++i)
      for (int j = 0; j < TN; ++j) acc[i][j] = ivec_zero();
    if constexpr (kRunPairs == 8) {  // 4-bit: pairs is a multiple of 16, every run whole
      dot_eight_pairs<RV, TN>(at, p0, x, acc);
    } else {  // pairs is a multiple of 16
      for (int64_t p = p0; p < p1; p += 8) dot_eight_pairs<RV, TN>(at + (p - p0) * RV * kRowLanes * 2, p, x, acc);
    }
    for (int i = 0; i < RV; ++i)
      for (int j = 0; j < TN; ++j) sums[i][j] = add_run(sums[i][j], acc[i][j]);
  }
  const int64_t out = f.out_features();
  for (int j = 0; j < TN; ++j)
    for (int i = 0; i < RV; ++i) {
      if (c.last) {
        store_rows(sums[i][j], acts.scale[t0 + j], c.rs + i * kRowLanes, y + (t0 + j) * out + r0 + i * kRowLanes);
      } else {
        fvec_store(kept + (j * RV + i) * kRowLanes, sums[i][j]);
      }
    }
}

// Every token of the step against a chunk of RV row vectors at row r0: whole tiles, then the 1 to
// kTileTokens - 1 left over.
template <int RV, class Format>
void chunk_rows(const Format& f, const QuantActs& acts, int64_t n, const Chunk& c, int64_t r0,
                float* y) {
  int64_t t = 0;
  for (; t + kTileTokens <= n; t += kTileTokens) chunk_tokens<RV, kTileTokens>(f, acts, c, t, r0, y);
  const int64_t left = n - t;
  if (left == 1) chunk_tokens<RV, 1>(f, acts, c, t, r0, y);
  if (left == 2) chunk_tokens<RV, 2>(f, acts, c, t, r0, y);
  if constexpr (kTileTokens > 3) {
    if (left == 3) chunk_tokens<RV, 3>(f, acts, c, t, r0, y);
  }
}

// y (n, out) for a step of several tokens, a claim kPanelBlocks blocks. A claim's 32 rows (16 with AVX2)
// write whole 64-byte lines of each token's output row, so the threads never share a line.
template <class Format>
void panel_gemm(const Format& f, const QuantActs& acts, int64_t n, float* y) {
  const int64_t blocks = f.out_features() / kBlockRows, pairs = f.pairs();
  for_claimed_blocks(blocks, kPanelBlocks, [&](int64_t b0, int64_t b1, int64_t next) {
    thread_local PanelScratch s;  // a thread's buffers live as long as it does: no allocation per claim
    const int64_t chunk_pairs = n <= kChunkMaxTokens ? Format::kChunkPairs : pairs;  // whole runs either way
    s.pairs.resize(chunk_pairs * kPanelVecs * kRowLanes * 2);
    s.sums.resize(n * kPanelVecs * kRowLanes);
    const int64_t nb = b1 - b0;
    const int vecs = static_cast<int>(nb) * kBlockVecs;
    int16_t* dst = s.pairs.data();
    f.row_scales(b0 * kBlockRows, nb * kBlockRows, s.rs);
    for (int64_t p0 = 0; p0 < pairs; p0 += chunk_pairs) {
      const Chunk c{p0, std::min(pairs, p0 + chunk_pairs), p0 == 0, p0 + chunk_pairs >= pairs,
                    dst, s.sums.data(), s.rs};
      for (int64_t b = 0; b < nb; ++b)
        for (int v = 0; v < kBlockVecs; ++v) {
          const int64_t rv = b * kBlockVecs + v;  // the next claim's weights fetched as this one unpacks
          f.unpack_pairs(b0 + b, v, c.p0, c.p1, next + b,
                         [&](int64_t p) { return dst + (p * vecs + rv) * kRowLanes * 2; });
        }
      if (vecs == kPanelVecs) {
        chunk_rows<kPanelVecs>(f, acts, n, c, b0 * kBlockRows, y);
      } else {
        chunk_rows<kBlockVecs>(f, acts, n, c, b0 * kBlockRows, y);
      }
    }
  });
}

}  // namespace

Q4Weight q4_view(const at::Tensor& qs, const at::Tensor& k, const at::Tensor& c, const at::Tensor& row_scale,
                 const at::Tensor& bias) {
  TORCH_CHECK(qs.dtype() == at::kByte && qs.is_contiguous() && qs.dim() == 3 && qs.size(2) == 256,
              "qs: contiguous uint8 (out/16, in/32, 256)");
  const int64_t blocks = qs.size(0), groups = qs.size(1), out = blocks * kBlockRows;
  TORCH_CHECK(k.dtype() == at::kShort && c.dtype() == at::kShort && k.is_contiguous() && c.is_contiguous()
                  && k.dim() == 3 && c.sizes() == k.sizes() && k.size(0) == blocks && k.size(1) == groups
                  && k.size(2) == kBlockRows,
              "k/c: contiguous int16 (out/16, in/32, 16)");
  TORCH_CHECK(row_scale.dtype() == at::kFloat && row_scale.is_contiguous() && row_scale.numel() == out,
              "row_scale: contiguous float32 (out,)");
  const float* b = nullptr;
  if (bias.defined() && bias.numel() > 0) {
    TORCH_CHECK(bias.dtype() == at::kFloat && bias.is_contiguous() && bias.numel() == out, "bias: contiguous float32 (out,)");
    b = bias.data_ptr<float>();
  }
  return {qs.data_ptr<uint8_t>(), k.data_ptr<int16_t>(), c.data_ptr<int16_t>(), row_scale.data_ptr<float>(), b,
          out, groups * kGroup, groups};
}

void q4_linear_into(const QuantActs& acts, int64_t n, const Q4Weight& w, float* y) {
  if (n > kInPlaceMaxTokens) {
    panel_gemm(Q4Format{&w}, acts, n, y);
  } else if (n > 0) {
    q4_inplace_into(acts, n, w, y);
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

// LM head: int8 weights with one bf16 scale per row, activations rounded to int16 like the 4-bit GEMM's
// (16 weights per madd instead of 8 per float FMA: the head is half of a one-token step's reads on a small
// model, and the float version was bound by its instructions).
at::Tensor q8_linear(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales) {
  TORCH_CHECK(qweight.dtype() == at::kChar && qweight.is_contiguous() && qweight.dim() == 3 && qweight.size(2) == 32,
              "qweight: contiguous int8 (out/16, in/2, 32)");
  const int64_t out = qweight.size(0) * kBlockRows, k = qweight.size(1) * 2;
  TORCH_CHECK(scales.dtype() == at::kBFloat16 && scales.is_contiguous() && scales.numel() == out,
              "scales: bfloat16 (out,)");
  const at::Tensor xc = x.to(at::kFloat).contiguous();
  TORCH_CHECK(xc.dim() == 2 && xc.size(1) == k && k % kGroup == 0, "x: (n, in_features), in_features a multiple of 32");
  const int64_t n = xc.size(0);
  at::Tensor y = at::empty({n, out}, xc.options());
  const Q8Weight w{qweight.data_ptr<int8_t>(), reinterpret_cast<const uint16_t*>(scales.data_ptr<at::BFloat16>()), out, k};
  const Q8Format f{&w};
  float* yp = y.data_ptr<float>();
  QuantActs acts;
  acts.quantize(xc.data_ptr<float>(), n, k);
  if (n > kInPlaceMaxTokens) {
    panel_gemm(f, acts, n, yp);
  } else if (n > 0) {
    q8_inplace_into(acts, n, w, yp);
  }
  return y;
}

}  // namespace llmasos
