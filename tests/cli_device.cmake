# `topksae encode / decode / eval` with --device / --precision: the refusals everywhere, and with a
# GPU the --device cuda outputs against --device cpu (tests/cli/device_test.py).
find_program(TOPKSAE_CLI_PYTHON3 python3)
if(TARGET topksae_cli AND TOPKSAE_CLI_PYTHON3)
  add_test(NAME cli_device COMMAND ${TOPKSAE_CLI_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/cli/device_test.py
                                   $<TARGET_FILE:topksae_cli>)
  set_tests_properties(cli_device PROPERTIES TIMEOUT 300 ENVIRONMENT OMP_NUM_THREADS=1)
endif()
