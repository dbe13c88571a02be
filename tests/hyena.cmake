# Mixer "hyena": finite differences of every parameter and the input across 1-4 ranks for both
# long-convolution strategies, a direct O(L^2) reference, the fixed filter grid, setup errors, and a
# whole model with a hyena block.
strand_add_mpi_test(NAME test_hyena SOURCES ${STRAND_TEST_DIR}/unit/test_hyena.c RANKS 1 2 3 4 LABELS hyena
                    TIMEOUT 120)
