// Copies of KV blocks between pools: a suspended sequence's KV to host swap memory and back.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels.h"

namespace llmasos {

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

}  // namespace llmasos
