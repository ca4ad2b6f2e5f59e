# End-to-end tests of the `topksae` command: tests/cli/cli_test.py (Python standard library only)
# writes npy / safetensors / Arrow inputs itself, drives the binary, and checks its outputs: a run on
# npy shards, one on a sae_lens-style Arrow activation cache, and a synthetic run read back by
# `topksae info` / `topksae eval`, exact resume after an interruption (also across an epoch of
# --loop-data and after --skip-nonfinite skips), a real Ctrl-C, a failed
# checkpoint save, and every bad-input error path.
find_program(TOPKSAE_CLI_PYTHON3 python3)
if(TARGET topksae_cli AND TOPKSAE_CLI_PYTHON3)
  foreach(case synthetic_run npy_run arrow_run resume_exact resume_edges sigint full_disk bad_inputs)
    add_test(NAME cli_${case} COMMAND ${TOPKSAE_CLI_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/cli/cli_test.py
                                      $<TARGET_FILE:topksae_cli> ${case})
    set_tests_properties(cli_${case} PROPERTIES TIMEOUT 300 ENVIRONMENT OMP_NUM_THREADS=1)
  endforeach()
endif()
