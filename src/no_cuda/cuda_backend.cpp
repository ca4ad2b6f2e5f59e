// The Trainer's GPU backends (single-process and latent-sharded) when the library is built without
// CUDA (src/train/cuda_backend.cpp otherwise): refuse with the reason.
#include "topksae/error.h"
#include "train/train_backend.h"

namespace topksae::detail {

std::unique_ptr<TrainBackend> make_cuda_backend(const TrainConfig&, TrainState*, cuda::Precision) {
  TOPKSAE_FAIL("training on cuda: ", cuda_unavailable_reason());
}

std::unique_ptr<TrainBackend> make_cuda_sharded_backend(const TrainConfig&, TrainState*,
                                                        std::shared_ptr<dist::DeviceCollectives>, cuda::Precision) {
  TOPKSAE_FAIL("latent-sharded training on cuda: ", cuda_unavailable_reason());
}

}  // namespace topksae::detail
