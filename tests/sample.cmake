# Generation: incremental decoding (every mixer's step mode, the model one position at a time)
# against the full causal forward. The end-to-end `strand sample` test (both modes) is
# eval_checkpoint in core.cmake.
strand_add_mpi_test(NAME test_model_step SOURCES ${STRAND_TEST_DIR}/unit/test_model_step.c RANKS 1 LABELS sample
                    TIMEOUT 120)
