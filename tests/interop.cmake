# The topksae side of the sae_lens interop checks (tests/interop/, run by tools/test.d/50-interop.sh
# through tests/interop/run.sh, not by ctest: they need the .venv-interop Python environment).
add_executable(interop_tool ${CMAKE_CURRENT_SOURCE_DIR}/interop/interop_tool.cpp)
target_link_libraries(interop_tool PRIVATE topksae::topksae nlohmann_json::nlohmann_json)
target_compile_options(interop_tool PRIVATE -Wall -Wextra)
# The training subcommands need the training library (src/train/), which lands separately.
if(EXISTS ${PROJECT_SOURCE_DIR}/src/train)
  target_compile_definitions(interop_tool PRIVATE TOPKSAE_INTEROP_TRAIN=1)
endif()
