# tests/test_cli_inference.cpp runs the code behind `topksae encode / decode / eval`
# (tools/topksae/cli_inference.cpp, which needs no CLI11) inside topksae_tests, so the GPU check,
# which builds no command line, still tests the commands' GPU path (its CudaCli.* cases).
target_sources(topksae_tests PRIVATE ${PROJECT_SOURCE_DIR}/tools/topksae/cli_inference.cpp)
target_include_directories(topksae_tests PRIVATE ${PROJECT_SOURCE_DIR}/tools/topksae)
