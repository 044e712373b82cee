// What the quantized GEMMs (quant_gemm.cpp) share with the forward step (forward_step.cpp): activations
// rounded to integers with one scale per token, the 4-bit weight format, and aligned buffers.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace llmasos {

constexpr int64_t kGroup = 32;

// Activations are rounded to integers in [-kActMax, kActMax], one float scale per token. 15 bits, not 16:
// the products of a run of input pairs must sum in int32 lanes (below). 8 bits with a scale per 32 inputs
// (llama.cpp's q8_1, whose int8 products run twice as fast) moved SmolLM2's logits 25x as far from the
// exact products (0.21 against 0.0083 on average over 10 prompts) and answered "What is the capital of
// France?" with "L'Étoile, la Cité, ..." as llama.cpp does on the same file.
constexpr float kActMax = 16383.f;

// One token's activations, quantized with one scale: x ≈ xq * scale. Every kernel multiplies the
// quantized x, the product the dense path of large steps reproduces with `round_activations`.
// Rows are k elements apart; the kernels read them as int32 pairs (k is a multiple of 32).
struct QuantActs {
  std::vector<int16_t> xq;
  std::vector<float> scale;  // (n)
  int64_t k = 0, blocks = 0;

  void quantize(const float* x, int64_t n, int64_t k_) {
    k = k_;
    blocks = k / kGroup;
    xq.resize(n * k);
    scale.resize(n);
    // Tokens split between the threads (each token's rounding is its own): done by one thread, 4 per
    // layer were ~1 ms of a 32-sequence step and more of a prompt chunk's, while the other waited.
    at::parallel_for(0, n, 16, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) quantize_token(x + t * k, t);
    });
  }

 private:
  // Vectorized: the float products rounded half to even (_mm256_round_ps in the default rounding mode,
  // as nearbyint).
  void quantize_token(const float* src, int64_t t) {
    const __m256 sign = _mm256_set1_ps(-0.f);
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
};

// 4-bit weights as integers: w = row_scale * (q * k_g + c_g) with int16 k_g, c_g per group of 32, chosen
// at load (quant.py, Int4Linear) so that |q k + c| <= kQ4IntMax for every q in [0, 15]. Products of
// activations (<= kActMax) and weights (<= kQ4IntMax) then sum exactly in an int32 lane over a run of 8
// input pairs (16 products x 16383 x 8191 < 2^31), and only each run's sum is converted to float.
// SmolLM2's logits moved from the file's exact weights by 0.024 on average (0.26 at most) over 256
// positions, against 0.054 (0.34) for the float form with bfloat16 scales and offsets it replaced.
constexpr int kQ4IntMax = 8191;

// A 4-bit layer as the kernels read it: rows in blocks of 16 (row_vectors.h). Group g of block b holds 8
// chunks of 32 bytes; byte 2r + e of chunk c is q[r][2c + e] | q[r][2c + 16 + e] << 4 (r the row within the
// block, e in {0, 1}, elements numbered within the group), so one widened chunk gives input pairs c and
// c + 8 of all 16 rows. k and c are (blocks, groups, 16), row_scale (out).
struct Q4Weight {
  const uint8_t* qs;  // (blocks, groups, 256)
  const int16_t* k;  // (blocks, groups, 16)
  const int16_t* c;
  const float* row_scale;  // (out)
  const float* bias;  // nullptr: none
  int64_t out_features, in_features, groups;
};

// n elements of T on a 64-byte (cache line) boundary, left uninitialized: every user writes what it reads.
// std::vector zero-filled the buffers each GEMM call tiles its activations into, on the calling thread
// while the other waited: ~2.5% of a 32-sequence step's samples were that memset.
template <class T>
class AlignedBuffer {
 public:
  explicit AlignedBuffer(size_t n = 0) { resize(n); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(data_); }

  // Room for n elements; what the buffer held is not kept.
  void resize(size_t n) {
    if (n <= capacity_ && data_ != nullptr) return;
    std::free(data_);
    data_ = static_cast<T*>(std::aligned_alloc(64, (std::max<size_t>(n, 1) * sizeof(T) + 63) / 64 * 64));
    TORCH_CHECK(data_ != nullptr, "out of memory for a ", n * sizeof(T), "-byte kernel buffer");
    capacity_ = n;
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  T& operator[](int64_t i) { return data_[i]; }

 private:
  T* data_ = nullptr;
  size_t capacity_ = 0;
};

using AlignedFloats = AlignedBuffer<float>;

// Runs of `per_claim` blocks, taken by the threads from a shared counter: a thread slowed by a busy core
// takes fewer, where with fixed halves the other waits for it at every GEMM (OpenMP's spin was ~10% of a
// 32-sequence step's samples before the panels were claimed this way). Each thread claims its next run
// before computing the current one: fn(begin, end, next) gets that run's first block (`blocks`: none),
// whose weights it can fetch while it computes this run.
template <class Fn>
void for_claimed_blocks(int64_t blocks, int64_t per_claim, const Fn& fn) {
  const int64_t claims = (blocks + per_claim - 1) / per_claim;
  std::atomic<int64_t> counter{0};
  at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), claims), 1, [&](int64_t, int64_t) {
    for (int64_t claim = counter.fetch_add(1); claim < claims;) {
      const int64_t after = counter.fetch_add(1), begin = claim * per_claim;
      fn(begin, std::min(blocks, begin + per_claim), after < claims ? after * per_claim : blocks);
      claim = after;
    }
  });
}

// The block `distance` blocks after b in a thread's sequence: within its run [b, end), else in its next run.
inline int64_t block_ahead(int64_t b, int64_t distance, int64_t end, int64_t next) {
  return b + distance < end ? b + distance : next + (b + distance - end);
}

// Steps of up to this many tokens cut a claim's unpacked weights into L1-sized chunks (quant_gemm.cpp,
// group_gemm.cpp); larger ones (prompt chunks) unpack a claim's whole panel once, as one chunk: with every
// token over each small chunk, the step's activations were read in 256-byte slices of each token's row
// (1.5 MB of them for 512 tokens at 1,536 inputs, past L2) where a whole panel reads them in sequence, and a
// 1,024-token prefill of Qwen2.5-1.5B measured 91 tok/s against 116 (busy machine, 3 rounds each).
constexpr int64_t kChunkMaxTokens = 64;

// A 4-bit layer's tensors (quant.py, Int4Linear) as the kernels read them, checked.
Q4Weight q4_view(const at::Tensor& qs, const at::Tensor& k, const at::Tensor& c, const at::Tensor& row_scale,
                 const at::Tensor& bias);

// y (n, out) = x (n, in) W^T (+ bias), with x already quantized in `acts`.
void q4_linear_into(const QuantActs& acts, int64_t n, const Q4Weight& w, float* y);

// The int8 LM head: q (out/16, in/2, 32), byte 2r + e of pair p is w[r][2p + e], a bfloat16 scale per row.
struct Q8Weight {
  const int8_t* q;
  const uint16_t* scales;  // (out) bfloat16
  int64_t out_features, in_features;
};

// Steps of up to this many tokens read the 4-bit and int8 weights in place, in registers (inplace_gemm.cpp);
// larger ones unpack them to panels (quant_gemm.cpp). Each computes every output bit for bit as the other.
// Why 8: at 4-8 tokens the panels' unpacking (stored, then read back) cost more than a second pass in place.
constexpr int64_t kInPlaceMaxTokens = 8;

// y (n, out) = x W^T for 1 to kInPlaceMaxTokens tokens of x, without the bias.
void q4_inplace_into(const QuantActs& acts, int64_t n, const Q4Weight& w, float* y);
void q8_inplace_into(const QuantActs& acts, int64_t n, const Q8Weight& w, float* y);

// 8-bit grouped weights (group_gemm.cpp): w = d_g * q + m_g with int8 q and float32 d_g, m_g per group of
// 16 inputs of a row. Every GGUF block format is exactly that (Q8_0 and Q6_K with m = 0, Q5_K and Q4_K with
// their sub-block scales and minimums, Q5_0/Q5_1/Q4_0/Q4_1 with theirs), so formats of more than 4 bits, and
// fused projections that mix them with 4-bit ones, are computed as the file stores them.
constexpr int64_t kSubGroup = 16;

// q in the int8 head's layout, (out/16, in/2, 32): byte 2r + e of pair p is w[r][2p + e]; d and m
// (out/16, in/16, 16), a group's 16 rows side by side.
struct Q8GroupWeight {
  const int8_t* q;
  const float* d;
  const float* m;
  const float* bias;  // nullptr: none
  int64_t out_features, in_features, groups;
};

Q8GroupWeight q8g_view(const at::Tensor& q, const at::Tensor& d, const at::Tensor& m, const at::Tensor& bias);
void q8g_linear_into(const QuantActs& acts, int64_t n, const Q8GroupWeight& w, float* y);

// GGUF's Q6_K blocks kept at their 6 bits (group_gemm.cpp): w = dsup_s * sc_g * (q - 32), q in [0, 63], an int8
// sc_g per group of 16 inputs and a float32 dsup_s per super-block of 256 inputs of a row, as the file has them
// (its fp16 d as float). In the int8 layout q took 12 bits a weight with its float d and m; here 6.625, so
// Qwen2.5-1.5B's Q6_K ffn_down and head read 171 MB less per token.
// q is (out/16, in/8, 96) bytes: for each 4 input pairs (8 inputs) of a block of 16 rows, 32 bytes of low
// nibbles of pairs 0 and 1 (byte 2r + e: pair 0's in bits 0-3, pair 1's in bits 4-7), 32 of pairs 2 and 3,
// then 32 of the high 2 bits of the four pairs (pair j's at bits 2j, 2j + 1); byte 2r + e is row r's input
// 2p + e, as in the int8 layout. sc is (out/16, in/16, 16) int8, dsup (out/16, in/256, 16) float32.
constexpr int64_t kSuperGroup = 256;
constexpr int64_t kQ6QuadBytes = 96;

struct Q6KWeight {
  const uint8_t* q;
  const int8_t* sc;
  const float* dsup;
  const float* bias;  // nullptr: none
  int64_t out_features, in_features, groups;
};

Q6KWeight q6k_view(const at::Tensor& q, const at::Tensor& sc, const at::Tensor& dsup, const at::Tensor& bias);
void q6k_linear_into(const QuantActs& acts, int64_t n, const Q6KWeight& w, float* y);

// A projection of the forward step in any of the formats: the tensors Int4Linear.native_tensors gives (qs, k,
// c, row_scale, bias), Int8GroupLinear's (q, d, m, an empty row_scale, bias) or Q6KLinear's (q, sc, dsup,
// empty, bias), told apart by the first two's dtypes (uint8 + int16, int8, uint8 + int8).
struct LinearWeight {
  enum class Kind { kQ4, kQ8Group, kQ6K };
  Q4Weight q4{};
  Q8GroupWeight q8g{};
  Q6KWeight q6k{};
  Kind kind = Kind::kQ4;

  int64_t in_features() const {
    return kind == Kind::kQ8Group ? q8g.in_features : kind == Kind::kQ6K ? q6k.in_features : q4.in_features;
  }
};

LinearWeight linear_view(const at::Tensor& t0, const at::Tensor& t1, const at::Tensor& t2, const at::Tensor& t3,
                         const at::Tensor& bias);
void linear_into(const QuantActs& acts, int64_t n, const LinearWeight& w, float* y);

}  // namespace llmasos
