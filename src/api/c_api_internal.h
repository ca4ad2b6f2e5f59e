// What the C API's translation units share: the handle structs and the exception fence.
#pragma once
#include <memory>
#include <new>
#include <string>

#include "topksae/api.h"
#include "topksae/topksae_c.h"

struct topksae_model {
  std::shared_ptr<const topksae::Model> model;
};
struct topksae_workspace {
  topksae::Workspace ws;
};
struct topksae_hooks {
  topksae::Hooks hooks;
};

namespace topksae::c_api {

std::string& last_error();  // this thread's
topksae_status fail(topksae_status status, const char* message) noexcept;

// Runs f, turning every exception into a status and this thread's last error.
template <typename F>
topksae_status fence(F&& f) noexcept {
  try {
    f();
    last_error().clear();
    return TOPKSAE_OK;
  } catch (const InvalidArgument& e) {
    return fail(TOPKSAE_ERROR_INVALID_ARGUMENT, e.what());
  } catch (const Error& e) {
    return fail(TOPKSAE_ERROR, e.what());
  } catch (const std::bad_alloc&) {
    return fail(TOPKSAE_ERROR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return fail(TOPKSAE_ERROR_INTERNAL, e.what());
  } catch (...) {
    return fail(TOPKSAE_ERROR_INTERNAL, "unknown exception");
  }
}

Device to_device(topksae_device d);  // throws InvalidArgument on a value outside the enum

template <typename... Args>
void require(bool cond, const Args&... args) {
  if (!cond) throw InvalidArgument(concat(args...));
}

}  // namespace topksae::c_api
