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

#include <string>

#include "dist/device_collectives.h"
#include "topksae/error.h"

namespace topksae::dist {

double nccl_timeout_s() {
  const char* v = std::getenv("TOPKSAE_NCCL_TIMEOUT_S");
  if (!v || !*v) return 300.0;
  char* end = nullptr;
  const double t = std::strtod(v, &end);
  TOPKSAE_CHECK(end && *end == '\0' && t > 0, "TOPKSAE_NCCL_TIMEOUT_S must be a number of seconds > 0, got '", v, "'");
  return t;
}

}  // namespace topksae::dist
