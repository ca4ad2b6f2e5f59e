# `topksae batch-tokens` end to end (inputs written and outputs read with the Python standard library).
find_package(Python3 COMPONENTS Interpreter)
if(Python3_Interpreter_FOUND AND TARGET topksae_cli)
  add_test(NAME cli.batch_tokens
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/cli/batch_tokens_test.py $<TARGET_FILE:topksae_cli>)
endif()
