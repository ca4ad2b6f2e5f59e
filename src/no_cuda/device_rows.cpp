// The device mixing buffer without the CUDA backend: says why there is none (src/data/device_rows.h).
#include "data/device_rows.h"

#include "topksae/error.h"

namespace topksae::detail {

std::unique_ptr<DeviceRows> DeviceRows::make(int64_t, int64_t) {
  TOPKSAE_FAIL("the mixing buffer on the device: ", cuda_unavailable_reason());
}

}  // namespace topksae::detail
