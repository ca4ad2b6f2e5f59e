# The format tests run tests/fixtures/make_fixtures.py (Python standard library only) once per
# test process. Resolve the real interpreter here: a pyenv shim costs ~0.5 s per start.
find_program(TOPKSAE_PYTHON3 python3)
if(TOPKSAE_PYTHON3)
  execute_process(COMMAND ${TOPKSAE_PYTHON3} -c "import sys; print(sys.executable)"
                  OUTPUT_VARIABLE _topksae_py OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _topksae_py_rc)
  if(_topksae_py_rc EQUAL 0 AND EXISTS "${_topksae_py}")
    target_compile_definitions(topksae_tests PRIVATE TOPKSAE_PYTHON="${_topksae_py}")
  endif()
endif()
