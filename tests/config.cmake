# Config: key table, INI loading, overrides, validation, format round trip.
strand_add_test(NAME test_config SOURCES ${STRAND_TEST_DIR}/unit/test_config.c LABELS unit)
