# Layer forward/backward tests (finite-difference gradient checks).
strand_add_test(NAME test_layers SOURCES ${STRAND_TEST_DIR}/unit/test_layers.c LABELS layers TIMEOUT 60)
strand_add_test(NAME test_fastmath SOURCES ${STRAND_TEST_DIR}/unit/test_fastmath.c LABELS layers TIMEOUT 60)
# parallel.threads: 2 threads against 1, bit for bit where no FFT is involved.
strand_add_mpi_test(NAME test_threads SOURCES ${STRAND_TEST_DIR}/unit/test_threads.c RANKS 1 LABELS layers
                    TIMEOUT 120)
