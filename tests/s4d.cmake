# S4D mixer: initialisations, kernel generation and its error bound, finite differences of every
# parameter across ranks (both conv strategies, both layouts), recurrent vs convolution mode, scan
# mode (s4d.mode = scan) vs conv mode and its carried state.
strand_add_mpi_test(NAME test_s4d SOURCES ${STRAND_TEST_DIR}/unit/test_s4d.c RANKS 1 2 3 4 LABELS s4d TIMEOUT 120)
