// The forward step's weights (forward_step.cpp), held between steps.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "quant_gemm.h"

namespace llmasos {

struct LayerWeights {
  const float* attn_norm;
  const float* ffn_norm;
  LinearWeight qkv, o, gate_up, down;  // each 4-bit or 8-bit grouped
};

// A model's layers as the forward step reads them, checked and viewed once when the model is converted:
// handing the step its 22 tensors per layer on every call cost ~135 us (pybind converting SmolLM2's 660
// tensors), ~3% of a one-token step. Holds the tensors, so the views stay valid.
class StepWeights {
 public:
  // attn_norm, ffn_norm, then (qs, k, c, row_scale, bias) or (q, d, m, empty, bias) for qkv, o, gate_up
  // and down, per layer (quant_gemm.h, linear_view).
  explicit StepWeights(std::vector<at::Tensor> tensors);
  const std::vector<LayerWeights>& layers() const { return layers_; }

 private:
  std::vector<at::Tensor> tensors_;
  std::vector<LayerWeights> layers_;
};

}  // namespace llmasos
