# Attention: ring kernel and mixer against naive attention and finite differences at 1-4 ranks;
# a copy task across ranks that attention learns and a conv model cannot.
strand_add_mpi_test(NAME test_attn SOURCES ${STRAND_TEST_DIR}/unit/test_attn.c RANKS 1 2 3 4)
strand_add_mpi_test(NAME test_attn_learning SOURCES ${STRAND_TEST_DIR}/unit/test_attn_learning.c ${STRAND_TEST_DIR}/unit/learning_util.c RANKS 2 TIMEOUT 600)
