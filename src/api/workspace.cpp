// The per-thread workspace: a holder for whichever engine's scratch the last call needed.
#include "api/engine.h"

namespace topksae {

Workspace::Workspace() = default;
Workspace::~Workspace() = default;
Workspace::Workspace(Workspace&&) noexcept = default;
Workspace& Workspace::operator=(Workspace&&) noexcept = default;

size_t Workspace::bytes() const { return impl_ ? impl_->bytes() : 0; }
uint64_t Workspace::growths() const { return impl_ ? impl_->growths : 0; }
uint64_t Workspace::dense_acts_built() const { return impl_ ? impl_->dense_acts_built : 0; }

}  // namespace topksae
