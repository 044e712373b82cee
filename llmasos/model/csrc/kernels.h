// The kernels of every source, for the module (cpu_kernels.cpp) and for each other.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace llmasos {

// quant_gemm.cpp: y = x W^T with 4-bit (integer group constants) or int8 weights; x as they round it.
at::Tensor q4_linear(const at::Tensor& x, const at::Tensor& qs, const at::Tensor& k, const at::Tensor& c,
                     const at::Tensor& row_scale, const c10::optional<at::Tensor>& bias);
at::Tensor round_activations(const at::Tensor& x);
at::Tensor q8_linear(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales);
// group_gemm.cpp: y = x W^T (+ bias) with 8-bit grouped weights w = d_g q + m_g (quant_gemm.h).
at::Tensor q8g_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& d, const at::Tensor& m,
                      const c10::optional<at::Tensor>& bias);
// group_gemm.cpp: the same with Q6_K blocks at 6 bits, w = dsup sc_g (q - 32) (quant_gemm.h, Q6KWeight).
at::Tensor q6k_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& sc, const at::Tensor& dsup,
                      const c10::optional<at::Tensor>& bias);

// decode_attention.cpp: one query per sequence over the paged cache (float32 or bfloat16 as uint16_t).
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                            const at::Tensor& kv_slots, const at::Tensor& context_lens);
void attend_decode(const float* q_all, int64_t q_stride, const float* k_cache, const float* v_cache,
                   const int64_t* kv_slots, int64_t max_t, const int64_t* pos, int64_t n, int64_t num_heads,
                   int64_t num_kv_heads, int64_t head_dim, float* attn);
void attend_decode(const float* q_all, int64_t q_stride, const uint16_t* k_cache, const uint16_t* v_cache,
                   const int64_t* kv_slots, int64_t max_t, const int64_t* pos, int64_t n, int64_t num_heads,
                   int64_t num_kv_heads, int64_t head_dim, float* attn);
// Refuses positions past kv_slots' width or context slots outside the cache.
void check_decode_layout(const int64_t* pos, const int64_t* kv_slots, int64_t n, int64_t max_t, int64_t num_slots);

// prefill_attention.cpp: causal attention of a step's packed query tokens over the paged cache.
at::Tensor prefill_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                             const at::Tensor& kv_slots, const at::Tensor& query_start,
                             const at::Tensor& context_lens);
// The same for the forward step: q rows q_stride apart, sequence b's tokens at [query_start[b],
// query_start[b + 1]), its context the first context_lens[b] slots of kv_slots row b (max_t wide).
void attend_prefill(const float* q_all, int64_t q_stride, const float* k_cache, const float* v_cache,
                    const int64_t* kv_slots, int64_t max_t, const int64_t* query_start, const int64_t* context_lens,
                    int64_t num_seqs, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, float* out);
void attend_prefill(const float* q_all, int64_t q_stride, const uint16_t* k_cache, const uint16_t* v_cache,
                    const int64_t* kv_slots, int64_t max_t, const int64_t* query_start, const int64_t* context_lens,
                    int64_t num_seqs, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, float* out);
// Refuses offsets, lengths or slots that would read outside the step or the cache.
void check_prefill_layout(const int64_t* query_start, const int64_t* context_lens, const int64_t* kv_slots,
                          int64_t num_seqs, int64_t max_t, int64_t num_slots, int64_t num_tokens);

// forward_step.cpp: a whole step of the Llama family (decode tokens, prompt chunks or both), and its
// SwiGLU for tests.
class StepWeights;  // forward_step.h
at::Tensor forward_step(const at::Tensor& hidden_in, const at::Tensor& positions, const at::Tensor& slot_mapping,
                        const at::Tensor& kv_slots, at::Tensor kv_cache, const at::Tensor& rope_cos,
                        const at::Tensor& rope_sin, const StepWeights& weights, const at::Tensor& final_norm,
                        int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, double eps_d,
                        const c10::optional<at::Tensor>& query_start, const c10::optional<at::Tensor>& context_lens);
at::Tensor swiglu_rows(const at::Tensor& gate_up);

// argmax.cpp: torch.argmax(logits, dim=-1) of contiguous float32 rows, for greedy sampling.
at::Tensor argmax_rows(const at::Tensor& logits);

// copy_blocks.cpp: KV blocks between pools by id.
void copy_blocks(const at::Tensor& src, const at::Tensor& src_ids, at::Tensor dst, const at::Tensor& dst_ids);

}  // namespace llmasos
