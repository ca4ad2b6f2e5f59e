# Finds oneDNN (Debian: libdnnl-dev), which runs the CPU backend's dense GEMM, and defines the
# imported target topksae::dnnl. Included by the build and, installed next to topksaeConfig.cmake,
# by find_package(topksae) in a consumer. Searches the system first, then the directories in
# TOPKSAE_DNNL_INCLUDE_HINTS / TOPKSAE_DNNL_LIB_HINTS: the build passes its .deps/ fallback
# (Debian packages unpacked by tools/gpu_prep.sh for the GPU machine, which cannot install any),
# the installed config passes the directories the build found it in.
# oneDNN's own CMake config is not used: it requires the OpenCL headers (its GPU runtime), which
# a CPU GEMM does not need.
if(NOT TARGET topksae::dnnl)
  find_path(TOPKSAE_DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.h PATHS ${TOPKSAE_DNNL_INCLUDE_HINTS})
  find_library(TOPKSAE_DNNL_LIBRARY NAMES dnnl PATHS ${TOPKSAE_DNNL_LIB_HINTS})
  if(NOT TOPKSAE_DNNL_INCLUDE_DIR OR NOT TOPKSAE_DNNL_LIBRARY)
    message(FATAL_ERROR "oneDNN not found (the CPU GEMM library): install libdnnl-dev (tools/setup.sh does), or "
                        "unpack libdnnl-dev + libdnnl2 under .deps/ (tools/gpu_prep.sh). Searched the system and: "
                        "${TOPKSAE_DNNL_INCLUDE_HINTS} ${TOPKSAE_DNNL_LIB_HINTS}")
  endif()
  add_library(topksae::dnnl UNKNOWN IMPORTED)
  set_target_properties(topksae::dnnl PROPERTIES IMPORTED_LOCATION "${TOPKSAE_DNNL_LIBRARY}"
                                                 INTERFACE_INCLUDE_DIRECTORIES "${TOPKSAE_DNNL_INCLUDE_DIR}")
endif()
