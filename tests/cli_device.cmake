# `topksae encode / decode / eval` with --device / --precision (tests/cli/device_test.py):
# cli_device, the refusals everywhere; cli_device_cuda, the --device cuda outputs against
# --device cpu, reported as skipped (exit 77) without a GPU. tools/cuda_emu_check.sh runs the
# second against the CUDA emulation.
find_program(TOPKSAE_CLI_PYTHON3 python3)
if(TARGET topksae_cli AND TOPKSAE_CLI_PYTHON3)
  foreach(part refusals cuda)
    set(name cli_device)
    if(part STREQUAL "cuda")
      set(name cli_device_cuda)
    endif()
    add_test(NAME ${name} COMMAND ${TOPKSAE_CLI_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/cli/device_test.py
                                  $<TARGET_FILE:topksae_cli> ${part})
    set_tests_properties(${name} PROPERTIES TIMEOUT 300 ENVIRONMENT OMP_NUM_THREADS=1 SKIP_RETURN_CODE 77)
  endforeach()
endif()
