// Kernels defined in one source and registered in the module of another (cpu_kernels.cpp).
#pragma once

#include <torch/extension.h>

namespace llmasos {

// Causal attention of a step's packed query tokens over a paged KV cache (prefill_attention.cpp).
at::Tensor prefill_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                             const at::Tensor& kv_slots, const at::Tensor& query_start,
                             const at::Tensor& context_lens);

}  // namespace llmasos
