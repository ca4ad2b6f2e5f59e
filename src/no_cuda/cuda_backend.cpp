// The Trainer's GPU backend when the library is built without CUDA (src/train/cuda_backend.cpp
// otherwise): refuses with the reason.
#include "topksae/error.h"
#include "train/train_backend.h"

namespace topksae::detail {

std::unique_ptr<TrainBackend> make_cuda_backend(const TrainConfig&, TrainState*, cuda::Precision) {
  TOPKSAE_FAIL("training on cuda: ", cuda_unavailable_reason());
}

}  // namespace topksae::detail
