// The build without NCCL (TOPKSAE_NCCL=OFF, no CUDA, no MPI, or no NCCL found): a sharded GPU launch
// stops here with the reason.
#include "dist/device_collectives.h"
#include "topksae/error.h"

namespace topksae::dist {

bool nccl_built() { return false; }

std::unique_ptr<DeviceCollectives> make_nccl_collectives(std::shared_ptr<Collectives>) {
  TOPKSAE_FAIL("latent-sharded training on GPUs needs NCCL, but this topksae was built without it "
               "(configure with CUDA and MPI, and -DTOPKSAE_NCCL=ON after installing NCCL's headers, "
               "libnccl-dev; tools/setup.sh does): run the sharded job with --device cpu, or one process per job");
}

}  // namespace topksae::dist
