// Whether an MPI launcher started this process with several ranks, read from the environment the
// launchers set (no MPI call: the command decides from this whether to initialise MPI at all, so
// a plain `topksae train` never touches MPI).
#include <cstdlib>

#include "dist/collectives.h"

namespace topksae::dist {

bool launched_with_several_ranks() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"}) {
    const char* v = std::getenv(var);
    if (v && std::atol(v) > 1) return true;
  }
  return false;
}

}  // namespace topksae::dist
