# Layer forward/backward tests (finite-difference gradient checks).
strand_add_test(NAME test_layers SOURCES ${STRAND_TEST_DIR}/unit/test_layers.c LABELS layers TIMEOUT 60)
