// dist::all_ok: ranks agree on whether a local action (writing a file, loading a part) worked
// everywhere, so that one rank's failure ends every rank with an Error instead of leaving the
// others waiting in the next collective.
#include <vector>

#include "dist/collectives.h"
#include "topksae/error.h"

namespace topksae::dist {

void all_ok(Collectives& comm, const std::string& my_error, const char* what) {
  std::vector<double> failed(size_t(comm.size()), 0.0);  // [R] 1 where that rank failed
  failed[size_t(comm.rank())] = my_error.empty() ? 0.0 : 1.0;
  comm.all_reduce_sum(failed.data(), failed.size());
  if (!my_error.empty()) throw Error(my_error);
  for (int q = 0; q < comm.size(); ++q)
    TOPKSAE_CHECK(failed[size_t(q)] == 0.0, what, " failed on rank ", q, " (its message is above)");
}

}  // namespace topksae::dist
