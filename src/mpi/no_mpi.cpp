// The build without MPI (TOPKSAE_MPI=OFF or no MPI found): a sharded launch stops here with the
// reason instead of running R independent copies of the whole model.
#include "dist/collectives.h"
#include "topksae/error.h"

namespace topksae::dist {

bool mpi_built() { return false; }

std::shared_ptr<Collectives> make_mpi_collectives(double) {
  TOPKSAE_FAIL("this process was launched with several MPI ranks, but this topksae was built without MPI "
               "(configure with -DTOPKSAE_MPI=ON after installing libopenmpi-dev; tools/setup.sh does); "
               "latent-sharded training needs it");
}

}  // namespace topksae::dist
