# Distributed FFT long convolution: both strategies and layouts against the direct reference.
strand_add_mpi_test(NAME test_fftconv SOURCES ${STRAND_TEST_DIR}/unit/test_fftconv.c RANKS 1 2 3 4 LABELS fftconv
                    TIMEOUT 120)
