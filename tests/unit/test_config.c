/* Config: defaults, INI loading, --set overrides, error messages, validation, format round trip and
 * the Markdown reference. */
#define _POSIX_C_SOURCE 200809L
#include "strand/config.h"
#include "test_util.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char temp_dir[64];
static char temp_paths[32][128];
static int temp_files = 0;

/* Write `text` to a new file in the test's temp directory; returns its path (static storage). */
static const char *write_temp(const char *name, const char *text) {
    STRAND_ASSERT(temp_files < 32);
    char *path = temp_paths[temp_files++];
    snprintf(path, 128, "%s/%s", temp_dir, name);
    FILE *file = fopen(path, "w");
    STRAND_ASSERT(file != NULL);
    fputs(text, file);
    fclose(file);
    return path;
}

static bool contains(const char *haystack, const char *needle) {
    return strstr(haystack, needle) != NULL;
}

/* The call failed with `code` and its message contains `fragment`. */
#define CHECK_FAILS(expr, code, fragment)                                                                    \
    do {                                                                                                     \
        strand_error_clear();                                                                                \
        int status_ = (expr);                                                                                \
        CHECK_MSG(status_ == (code), "%s returned %d, expected %d (%s)", #expr, status_, (int)(code),        \
                  strand_error_message());                                                                   \
        CHECK_MSG(contains(strand_error_message(), (fragment)), "message '%s' lacks '%s'",                   \
                  strand_error_message(), (fragment));                                                       \
    } while (0)

#define CHECK_OK(expr)                                                                                       \
    do {                                                                                                     \
        strand_error_clear();                                                                                \
        int status_ = (expr);                                                                                \
        CHECK_MSG(status_ == STRAND_OK, "%s returned %d: %s", #expr, status_, strand_error_message());       \
    } while (0)

/* An int key's value, through its row (a mixer's options are private to its file). */
static int key_int(const strand_config *c, const char *name) {
    const strand_config_key *key = strand_config_find_key(name);
    int value = -12345;
    CHECK_MSG(key && key->type == STRAND_KEY_INT, "%s is an int key", name);
    if (key) memcpy(&value, (const char *)c + key->offset, sizeof value);
    return value;
}

static void test_defaults(void) {
    strand_config c;
    strand_config_defaults(&c);
    CHECK_OK(strand_config_validate(&c));
    CHECK(c.d_model == 128);
    CHECK(strcmp(c.layers, "conv,conv,conv,conv") == 0);
    CHECK(c.norm == STRAND_NORM_RMSNORM);
    CHECK(c.norm_position == STRAND_NORM_PRE);
    CHECK(c.mlp == STRAND_MLP_GELU);
    CHECK(c.mlp_hidden == 0);
    CHECK(key_int(&c, "model.conv_kernel") == 4);
    CHECK(c.tie_embeddings == 1);
    CHECK(c.init_std == 0.02);
    CHECK(c.norm_eps == 1e-5);
    CHECK(c.seq_len == 1024);
    CHECK(c.steps == 300);
    CHECK(c.accum_steps == 1);
    CHECK(c.lr == 3e-3);
    CHECK(c.min_lr_ratio == 0.1);
    CHECK(c.warmup_steps == 20);
    CHECK(c.weight_decay == 0.1);
    CHECK(c.beta1 == 0.9 && c.beta2 == 0.95 && c.adam_eps == 1e-8);
    CHECK(c.grad_clip == 1.0);
    CHECK(c.seed == 1234);
    CHECK(c.rc_augment == 0);
    CHECK(c.log_every == 10);
    CHECK(c.eval_windows == 8);
    CHECK(strcmp(c.data_path, "data/lambda.h5") == 0);
    CHECK(c.sp == 0 && c.dp == 0);
    CHECK(strcmp(c.run_dir, "runs/default") == 0);

    CHECK(strand_config_mlp_hidden(&c) == 512);
    c.mlp = STRAND_MLP_SWIGLU;
    CHECK(strand_config_mlp_hidden(&c) == 344); /* ceil(8*128/3) = 342 -> 344 */
    c.d_model = 96;
    CHECK(strand_config_mlp_hidden(&c) == 256); /* exactly 256 */
    c.mlp_hidden = 100;
    CHECK(strand_config_mlp_hidden(&c) == 100);

    /* [conv] was the long convolution's section before it became [fft]: old files still load. */
    CHECK_OK(strand_config_set(&c, "conv.strategy=alltoall"));
    CHECK(c.fft_strategy == STRAND_FFT_STRATEGY_ALLTOALL);
    CHECK_OK(strand_config_load_text(&c, "[conv]\nplanner = measure\n", "old.ini"));
    CHECK(c.fft_planner == STRAND_FFT_PLAN_MEASURE);
}

static void test_load_file(void) {
    const char *path = write_temp("good.ini", "; a comment\n"
                                              "# another comment\n"
                                              "\n"
                                              "[model]\n"
                                              "d_model = 256\n"
                                              "  layers = conv, conv ; indented, inline comment\n"
                                              "  norm = LayerNorm\n"
                                              "mlp=swiglu\n"
                                              "tie_embeddings = off\n"
                                              "[ train ]\r\n"
                                              "lr = 1e-3\r\n"
                                              "lr = 2e-3\n"
                                              "steps = 1000\n"
                                              "rc_augment = YES\n"
                                              "seed = 18446744073709551615\n"
                                              "[data]\n"
                                              "path = /tmp/with space/x.h5\n"
                                              "[parallel]\n"
                                              "sp = 4\n");
    strand_config c;
    strand_config_defaults(&c);
    CHECK_OK(strand_config_load_file(&c, path));
    CHECK(c.d_model == 256);
    CHECK(strcmp(c.layers, "conv,conv") == 0);
    CHECK(c.norm == STRAND_NORM_LAYERNORM);
    CHECK(c.mlp == STRAND_MLP_SWIGLU);
    CHECK(c.tie_embeddings == 0);
    CHECK(c.lr == 2e-3); /* later duplicate wins */
    CHECK(c.steps == 1000);
    CHECK(c.rc_augment == 1);
    CHECK(c.seed == UINT64_MAX);
    CHECK(strcmp(c.data_path, "/tmp/with space/x.h5") == 0);
    CHECK(c.sp == 4 && c.dp == 0);
    CHECK(key_int(&c, "model.conv_kernel") == 4); /* untouched keys keep their values */
    CHECK_OK(strand_config_validate(&c));

    /* --set after the file wins over it. */
    CHECK_OK(strand_config_set(&c, "train.lr=5e-4"));
    CHECK(c.lr == 5e-4);
    CHECK_OK(strand_config_set(&c, " model.d_model = 64 "));
    CHECK(c.d_model == 64);
    CHECK_OK(strand_config_set(&c, "run.dir=a=b"));
    CHECK(strcmp(c.run_dir, "a=b") == 0);

    /* Bool spellings. */
    const char *truths[] = {"true", "1", "yes", "on", "TRUE", "On"};
    const char *falses[] = {"false", "0", "no", "off", "False", "OFF"};
    for (int i = 0; i < 6; i++) {
        char arg[64];
        snprintf(arg, sizeof arg, "train.rc_augment=%s", truths[i]);
        CHECK_OK(strand_config_set(&c, arg));
        CHECK(c.rc_augment == 1);
        snprintf(arg, sizeof arg, "train.rc_augment=%s", falses[i]);
        CHECK_OK(strand_config_set(&c, arg));
        CHECK(c.rc_augment == 0);
    }
}

static void test_parse_errors(void) {
    strand_config c, before;
    strand_config_defaults(&c);
    memcpy(&before, &c, sizeof c);

    /* int */
    CHECK_FAILS(strand_config_set(&c, "model.d_model=abc"), STRAND_ERR_INPUT,
                "model.d_model = abc: not an integer");
    CHECK_FAILS(strand_config_set(&c, "model.d_model=12x"), STRAND_ERR_INPUT, "not an integer");
    CHECK_FAILS(strand_config_set(&c, "model.d_model=1.5"), STRAND_ERR_INPUT,
                "not an integer (write it in plain");
    CHECK_FAILS(strand_config_set(&c, "model.d_model="), STRAND_ERR_INPUT, "empty value");
    /* int64 */
    CHECK_FAILS(strand_config_set(&c, "train.steps=1e6"), STRAND_ERR_INPUT,
                "train.steps = 1e6: not an integer");
    CHECK_FAILS(strand_config_set(&c, "train.steps=99999999999999999999"), STRAND_ERR_CONFIG, "out of range");
    /* uint64 */
    CHECK_FAILS(strand_config_set(&c, "train.seed=-1"), STRAND_ERR_CONFIG, "train.seed = -1: out of range");
    CHECK_FAILS(strand_config_set(&c, "train.seed=18446744073709551616"), STRAND_ERR_CONFIG, "out of range");
    CHECK_FAILS(strand_config_set(&c, "train.seed=0x10"), STRAND_ERR_INPUT, "not an integer");
    CHECK_FAILS(strand_config_set(&c, "train.seed=-x"), STRAND_ERR_INPUT, "not an integer");
    /* double */
    CHECK_FAILS(strand_config_set(&c, "train.lr=fast"), STRAND_ERR_INPUT, "train.lr = fast: not a number");
    CHECK_FAILS(strand_config_set(&c, "train.lr=1e-3x"), STRAND_ERR_INPUT, "not a number");
    CHECK_FAILS(strand_config_set(&c, "train.lr=nan"), STRAND_ERR_INPUT, "finite");
    CHECK_FAILS(strand_config_set(&c, "train.lr=inf"), STRAND_ERR_INPUT, "finite");
    CHECK_FAILS(strand_config_set(&c, "train.lr=1e999"), STRAND_ERR_INPUT, "finite");
    CHECK_FAILS(strand_config_set(&c, "train.lr=1e-400"), STRAND_ERR_CONFIG, "out of range");
    CHECK_FAILS(strand_config_set(&c, "train.lr="), STRAND_ERR_INPUT, "empty value");
    /* bool */
    CHECK_FAILS(strand_config_set(&c, "model.tie_embeddings=maybe"), STRAND_ERR_INPUT,
                "model.tie_embeddings = maybe: not a boolean");
    CHECK_FAILS(strand_config_set(&c, "model.tie_embeddings=2"), STRAND_ERR_INPUT, "not a boolean");
    /* enum */
    CHECK_FAILS(strand_config_set(&c, "model.norm=batchnorm"), STRAND_ERR_CONFIG,
                "model.norm = batchnorm: must be one of rmsnorm, layernorm");
    CHECK_FAILS(strand_config_set(&c, "model.mlp=relu"), STRAND_ERR_CONFIG, "must be one of gelu, swiglu");
    /* string */
    char long_arg[1200] = "data.path=";
    memset(long_arg + strlen(long_arg), 'x', 1100);
    CHECK_FAILS(strand_config_set(&c, long_arg), STRAND_ERR_CONFIG, "too long (1100 bytes; at most 1023)");
    CHECK_FAILS(strand_config_set(&c, "run.dir=a\tb"), STRAND_ERR_INPUT, "control character");
    CHECK_FAILS(strand_config_set(&c, "run.dir=a ;b"), STRAND_ERR_INPUT, "starts a comment");
    /* form */
    CHECK_FAILS(strand_config_set(&c, "train.lr 3e-4"), STRAND_ERR_INPUT,
                "config override 'train.lr 3e-4': expected section.key=value");
    CHECK_FAILS(strand_config_set(&c, "=3"), STRAND_ERR_INPUT, "expected section.key=value");

    CHECK(memcmp(&c, &before, sizeof c) == 0); /* failed sets change nothing */
}

static void test_ranges(void) {
    strand_config c;
    strand_config_defaults(&c);
    CHECK_FAILS(strand_config_set(&c, "train.lr=-1"), STRAND_ERR_CONFIG,
                "train.lr = -1: out of range (must be > 0 and <= 10)");
    CHECK_FAILS(strand_config_set(&c, "train.lr=0"), STRAND_ERR_CONFIG, "out of range");
    CHECK_OK(strand_config_set(&c, "train.lr=10"));
    CHECK_FAILS(strand_config_set(&c, "train.beta1=1"), STRAND_ERR_CONFIG, "(must be >= 0 and < 1)");
    CHECK_OK(strand_config_set(&c, "train.beta1=0"));
    CHECK_FAILS(strand_config_set(&c, "model.d_model=4"), STRAND_ERR_CONFIG,
                "model.d_model = 4: out of range (must be >= 8 and <= 65536)");
    CHECK_FAILS(strand_config_set(&c, "model.conv_kernel=9"), STRAND_ERR_CONFIG, "out of range");
    CHECK_FAILS(strand_config_set(&c, "model.d_model=99999999999"), STRAND_ERR_CONFIG, "out of range");
    CHECK_OK(strand_config_set(&c, "train.seq_len=1099511627776"));
    CHECK(c.seq_len == (INT64_C(1) << 40));
    CHECK_FAILS(strand_config_set(&c, "train.seq_len=1099511627777"), STRAND_ERR_CONFIG, "out of range");
    CHECK_FAILS(strand_config_set(&c, "train.steps=0"), STRAND_ERR_CONFIG, "(must be >= 1)");
    CHECK_FAILS(strand_config_set(&c, "train.grad_clip=-0.5"), STRAND_ERR_CONFIG, "out of range");
    CHECK_OK(strand_config_set(&c, "train.grad_clip=0"));
    CHECK_FAILS(strand_config_set(&c, "model.norm_eps=0"), STRAND_ERR_CONFIG, "must be > 0 and <= 0.1");
    CHECK_FAILS(strand_config_set(&c, "train.eval_windows=1000001"), STRAND_ERR_CONFIG, "out of range");
    CHECK_FAILS(strand_config_set(&c, "parallel.sp=-1"), STRAND_ERR_CONFIG, "out of range");
}

static void test_unknown_keys(void) {
    strand_config c;
    strand_config_defaults(&c);
    CHECK_FAILS(strand_config_set(&c, "train.lrr=1"), STRAND_ERR_CONFIG,
                "unknown config key 'train.lrr' (did you mean 'train.lr'?)");
    CHECK_FAILS(strand_config_set(&c, "modle.d_model=64"), STRAND_ERR_CONFIG,
                "unknown config key 'modle.d_model' (did you mean 'model.d_model'?)");
    CHECK_FAILS(strand_config_set(&c, "lr=1"), STRAND_ERR_CONFIG, "(did you mean 'train.lr'?)");
    CHECK_FAILS(strand_config_set(&c, "train.warmup_step=5"), STRAND_ERR_CONFIG,
                "did you mean 'train.warmup_steps'?");
    CHECK_FAILS(strand_config_set(&c, "train.LR=1"), STRAND_ERR_CONFIG, "did you mean 'train.lr'?");
    CHECK_FAILS(strand_config_set(&c, "foo.bar=1"), STRAND_ERR_CONFIG, "unknown config key 'foo.bar'");
    CHECK(!contains(strand_error_message(), "did you mean"));

    /* In a file: the message names file and line. */
    const char *path = write_temp("typo.ini", "[train]\nsteps = 5\n\nlrr = 1\n");
    char expected[256];
    snprintf(expected, sizeof expected, "%s:4: unknown config key 'train.lrr' (did you mean 'train.lr'?)",
             path);
    CHECK_FAILS(strand_config_load_file(&c, path), STRAND_ERR_CONFIG, expected);

    path = write_temp("section.ini", "[model]\nd_model = 64\n[modle]\nconv_kernel = 3\n");
    snprintf(expected, sizeof expected, "%s:3: unknown config section [modle] (did you mean [model]?)", path);
    CHECK_FAILS(strand_config_load_file(&c, path), STRAND_ERR_CONFIG, expected);

    /* A header with no keys under it is still checked. */
    path = write_temp("empty_section.ini", "[model]\nd_model = 64\n[nonsense]\n");
    snprintf(expected, sizeof expected, "%s:3: unknown config section [nonsense]", path);
    CHECK_FAILS(strand_config_load_file(&c, path), STRAND_ERR_CONFIG, expected);
    CHECK(!contains(strand_error_message(), "did you mean"));

    path = write_temp("nosection.ini", "lr = 1e-3\n");
    snprintf(expected, sizeof expected, "%s:1: key 'lr' is outside any [section] (did you mean 'train.lr'?)",
             path);
    CHECK_FAILS(strand_config_load_file(&c, path), STRAND_ERR_CONFIG, expected);
    CHECK(c.d_model == 128); /* failed loads change nothing */
}

static void test_file_errors(void) {
    strand_config c, before;
    strand_config_defaults(&c);
    memcpy(&before, &c, sizeof c);
    char expected[512];

    const char *path = write_temp("range.ini", "[model]\nd_model = 64\n\n[train]\n; comment\nlr = -1\n");
    snprintf(expected, sizeof expected, "%s:6: train.lr = -1: out of range (must be > 0 and <= 10)", path);
    CHECK_FAILS(strand_config_load_file(&c, path), STRAND_ERR_CONFIG, expected);
    CHECK(memcmp(&c, &before, sizeof c) == 0); /* d_model = 64 on line 2 was not kept */

    /* Only the first error is reported. */
    path = write_temp("two.ini", "[train]\nsteps = x\nlr = y\n");
    snprintf(expected, sizeof expected, "%s:2: train.steps = x: not an integer", path);
    CHECK_FAILS(strand_config_load_file(&c, path), STRAND_ERR_INPUT, expected);

    path = write_temp("syntax.ini", "[train]\nsteps = 5\njust some words\n");
    snprintf(expected, sizeof expected, "%s:3: syntax error", path);
    CHECK_FAILS(strand_config_load_file(&c, path), STRAND_ERR_INPUT, expected);

    path = write_temp("bracket.ini", "[train\nsteps = 5\n");
    snprintf(expected, sizeof expected, "%s:1: syntax error", path);
    CHECK_FAILS(strand_config_load_file(&c, path), STRAND_ERR_INPUT, expected);

    char long_line[600] = "[train]\n";
    memset(long_line + strlen(long_line), 'w', 400);
    path = write_temp("longline.ini", long_line);
    snprintf(expected, sizeof expected, "%s:2: line too long", path);
    CHECK_FAILS(strand_config_load_file(&c, path), STRAND_ERR_INPUT, expected);

    /* Line numbers stay right after an over-long value line. */
    char text[2048];
    snprintf(text, sizeof text, "[data]\npath = /%0500d\n[train]\nlr = 0\n", 7);
    path = write_temp("long_then_bad.ini", text);
    snprintf(expected, sizeof expected, "%s:4: train.lr = 0: out of range", path);
    CHECK_FAILS(strand_config_load_file(&c, path), STRAND_ERR_CONFIG, expected);

    snprintf(expected, sizeof expected, "cannot open config file %s/missing.ini: No such file or directory",
             temp_dir);
    char missing[128];
    snprintf(missing, sizeof missing, "%s/missing.ini", temp_dir);
    CHECK_FAILS(strand_config_load_file(&c, missing), STRAND_ERR_IO, expected);
    snprintf(expected, sizeof expected, "cannot read config file %s: Is a directory", temp_dir);
    CHECK_FAILS(strand_config_load_file(&c, temp_dir), STRAND_ERR_IO, expected);
    CHECK(memcmp(&c, &before, sizeof c) == 0);
}

static void test_layers(void) {
    strand_config c;
    strand_config_defaults(&c);
    CHECK_FAILS(strand_config_set(&c, "model.layers=conv,foo"), STRAND_ERR_CONFIG,
                "model.layers = conv,foo: unknown mixer 'foo' (available: conv");
    CHECK_FAILS(strand_config_set(&c, "model.layers=conv,,conv"), STRAND_ERR_CONFIG, "entry 2 is empty");
    CHECK_FAILS(strand_config_set(&c, "model.layers=conv,"), STRAND_ERR_CONFIG, "entry 2 is empty");
    CHECK_FAILS(strand_config_set(&c, "model.layers="), STRAND_ERR_CONFIG, "must name at least one mixer");
    CHECK_FAILS(strand_config_set(&c, "model.layers=Conv"), STRAND_ERR_CONFIG, "unknown mixer 'Conv'");
    CHECK_OK(strand_config_set(&c, "model.layers= conv ,conv,  conv"));
    CHECK(strcmp(c.layers, "conv,conv,conv") == 0);

    /* 51 blocks fit the field (51 * 5 - 1 = 254 bytes); 52 do not (259 > 255). */
    char arg[512] = "model.layers=conv";
    for (int i = 1; i < 51; i++)
        strcat(arg, ",conv");
    CHECK_OK(strand_config_set(&c, arg));
    strcat(arg, ",conv");
    CHECK_FAILS(strand_config_set(&c, arg), STRAND_ERR_CONFIG, "too long");

    const char *path = write_temp("layers.ini", "[model]\nlayers = conv, xlstm\n");
    char expected[256];
    snprintf(expected, sizeof expected, "%s:2: model.layers = conv, xlstm: unknown mixer 'xlstm'", path);
    CHECK_FAILS(strand_config_load_file(&c, path), STRAND_ERR_CONFIG, expected);
}

static void test_validate(void) {
    strand_config c;
    strand_config_defaults(&c);
    /* A warmup longer than the run is allowed: the schedule clamps it (short test runs keep the
     * default warmup). */
    c.warmup_steps = 301;
    CHECK_OK(strand_config_validate(&c));

    strand_config_defaults(&c);
    c.lr = -1;
    CHECK_FAILS(strand_config_validate(&c), STRAND_ERR_CONFIG,
                "train.lr = -1: out of range (must be > 0 and <= 10)");
    c.lr = NAN;
    CHECK_FAILS(strand_config_validate(&c), STRAND_ERR_CONFIG, "finite");

    strand_config_defaults(&c);
    c.d_model = 7;
    CHECK_FAILS(strand_config_validate(&c), STRAND_ERR_CONFIG, "model.d_model = 7: out of range");

    strand_config_defaults(&c);
    c.norm = 2; /* an enumerated key holds the index of its value */
    CHECK_FAILS(strand_config_validate(&c), STRAND_ERR_CONFIG, "model.norm");
    c.norm = -1;
    CHECK_FAILS(strand_config_validate(&c), STRAND_ERR_CONFIG, "has no value number -1");

    strand_config_defaults(&c);
    strcpy(c.layers, "conv,xlstm");
    CHECK_FAILS(strand_config_validate(&c), STRAND_ERR_CONFIG, "unknown mixer 'xlstm'");
    c.layers[0] = '\0';
    CHECK_FAILS(strand_config_validate(&c), STRAND_ERR_CONFIG, "at least one mixer");

    strand_config_defaults(&c);
    c.tie_embeddings = 2;
    CHECK_FAILS(strand_config_validate(&c), STRAND_ERR_CONFIG, "model.tie_embeddings");

    strand_config_defaults(&c);
    memset(c.run_dir, 'r', sizeof c.run_dir);
    CHECK_FAILS(strand_config_validate(&c), STRAND_ERR_CONFIG, "not zero-terminated");

    strand_config_defaults(&c);
    c.accum_steps = 0;
    CHECK_FAILS(strand_config_validate(&c), STRAND_ERR_CONFIG, "train.accum_steps = 0: out of range");
}

/* Format, write, load into fresh defaults: the struct must come back byte for byte. */
static void check_round_trip(const strand_config *c, const char *name) {
    size_t needed = strand_config_format(c, NULL, 0);
    char *text = malloc(needed + 1);
    CHECK(strand_config_format(c, text, needed + 1) == needed);
    CHECK(strlen(text) == needed);
    const char *path = write_temp(name, text);
    strand_config back;
    strand_config_defaults(&back);
    CHECK_OK(strand_config_load_file(&back, path));
    CHECK_MSG(memcmp(c, &back, sizeof back) == 0, "round trip of %s differs:\n%s", name, text);
    CHECK(back.lr == c->lr && back.init_std == c->init_std && back.norm_eps == c->norm_eps);
    CHECK(back.seed == c->seed && back.seq_len == c->seq_len);
    CHECK(strcmp(back.data_path, c->data_path) == 0 && strcmp(back.run_dir, c->run_dir) == 0);
    free(text);
}

static void test_round_trip(void) {
    strand_config c;
    strand_config_defaults(&c);
    check_round_trip(&c, "defaults_rt.ini");

    /* Doubles that %.9g or %g would not reproduce. */
    c.lr = 0.1 + 0.2;
    c.init_std = 1.0 / 3.0;
    c.norm_eps = 1e-7 * 3.3;
    c.min_lr_ratio = nextafter(0.1, 1.0);
    c.weight_decay = 5e-324 * 3; /* denormal */
    c.beta1 = nextafter(1.0, 0.0);
    c.beta2 = 0.999;
    c.adam_eps = 1e-300;
    c.grad_clip = 123456.789;
    c.seed = UINT64_MAX - 1;
    c.seq_len = INT64_C(1) << 40;
    c.steps = INT64_MAX;
    c.warmup_steps = 12345;
    c.tie_embeddings = 0;
    c.rc_augment = 1;
    CHECK_OK(strand_config_set(&c, "model.layers=conv, conv"));
    CHECK_OK(strand_config_set(&c, "model.mlp=swiglu"));
    CHECK_OK(strand_config_set(&c, "model.norm_position=post"));
    CHECK_OK(strand_config_set(&c, "data.path=/scratch/my data/#1/genome;v2.h5"));
    CHECK_OK(strand_config_set(&c, "run.dir=runs/a:b=c"));
    c.sp = 8;
    c.dp = 2;
    CHECK_OK(strand_config_validate(&c));
    check_round_trip(&c, "custom_rt.ini");

    /* A path longer than inih's line buffer. */
    char arg[1100] = "data.path=/";
    memset(arg + strlen(arg), 'p', 1000);
    CHECK_OK(strand_config_set(&c, arg));
    CHECK(strlen(c.data_path) == 1001);
    check_round_trip(&c, "long_rt.ini");

    /* Truncated output is still terminated and the length reports what was needed. */
    char small[16];
    size_t full = strand_config_format(&c, NULL, 0);
    CHECK(strand_config_format(&c, small, sizeof small) == full);
    CHECK(strlen(small) == sizeof small - 1);
    CHECK(strncmp(small, "[model]\nd_model", sizeof small - 1) == 0);

    /* Section order and layout. */
    strand_config_defaults(&c);
    char text[8192];
    strand_config_format(&c, text, sizeof text);
    const char *model = strstr(text, "[model]"), *train = strstr(text, "\n[train]\n");
    const char *data = strstr(text, "\n[data]\n"), *parallel = strstr(text, "\n[parallel]\n");
    const char *run = strstr(text, "\n[run]\n");
    CHECK(model == text && train && data && parallel && run);
    CHECK(train < data && data < parallel && parallel < run);
    CHECK(contains(text, "\nlr = 0.003\n"));
    CHECK(contains(text, "\nnorm_eps = 1e-05\n"));
    CHECK(contains(text, "\npath = data/lambda.h5\n"));
    CHECK(contains(text, "\ntie_embeddings = true\n"));
}

static void test_long_values(void) {
    /* An over-long value line with an inline comment and surrounding spaces. */
    char text[1400];
    char value[700];
    memset(value, 'q', 600);
    value[600] = '\0';
    snprintf(text, sizeof text, "[run]\n   dir   =   /%s   ; the run dir\n", value);
    const char *path = write_temp("long_comment.ini", text);
    strand_config c;
    strand_config_defaults(&c);
    CHECK_OK(strand_config_load_file(&c, path));
    CHECK(c.run_dir[0] == '/' && strlen(c.run_dir) == 601);

    /* Too long for the field: error, with the line. */
    char big[1300];
    memset(big, 'z', 1100);
    big[1100] = '\0';
    snprintf(text, sizeof text, "[data]\npath = %s\n", big);
    path = write_temp("too_long.ini", text);
    char expected[256];
    snprintf(expected, sizeof expected, "%s:2: data.path = zzz", path);
    CHECK_FAILS(strand_config_load_file(&c, path), STRAND_ERR_CONFIG, expected);
    CHECK(contains(strand_error_message(), "too long (1100 bytes; at most 1023)"));
}

/* Write `size` bytes (NULs included) to a new temp file; returns its path (static storage). */
static const char *write_temp_bytes(const char *name, const char *bytes, size_t size) {
    STRAND_ASSERT(temp_files < 32);
    char *path = temp_paths[temp_files++];
    snprintf(path, 128, "%s/%s", temp_dir, name);
    FILE *file = fopen(path, "wb");
    STRAND_ASSERT(file != NULL);
    STRAND_ASSERT(fwrite(bytes, 1, size, file) == size);
    fclose(file);
    return path;
}

/* libinih stops a line at a NUL byte, so "d_model = 16\0 99" would read as 16: refused with file,
 * line and column, and nothing is changed. */
static void test_nul_bytes(void) {
    strand_config c, before;
    strand_config_defaults(&c);
    memcpy(&before, &c, sizeof c);
    static const char text[] = "[model]\nd_model = 16\0 99\n[train]\nsteps = 5\n";
    const char *path = write_temp_bytes("nul.ini", text, sizeof text - 1);
    char expected[256];
    snprintf(expected, sizeof expected, "%s:2: contains a NUL byte (column 13)", path);
    CHECK_FAILS(strand_config_load_file(&c, path), STRAND_ERR_INPUT, expected);
    CHECK(memcmp(&c, &before, sizeof c) == 0);

    /* A NUL on the last line, after a line longer than inih's buffer. */
    char big[1400];
    int n = snprintf(big, sizeof big, "[data]\npath = /%0600d\n[train]\nlr = 1e-3", 5);
    big[n] = '\0';
    memcpy(big + n, "\0x\n", 3);
    path = write_temp_bytes("nul_last.ini", big, (size_t)n + 3);
    snprintf(expected, sizeof expected, "%s:4: contains a NUL byte (column 10)", path);
    CHECK_FAILS(strand_config_load_file(&c, path), STRAND_ERR_INPUT, expected);

    /* The same file without the NUL still loads. */
    path = write_temp_bytes("no_nul.ini", text, strlen(text));
    CHECK_OK(strand_config_load_file(&c, path));
    CHECK(c.d_model == 16);
}

/* Ordered pairs of the key table: each minimum may not exceed its maximum, whatever the mixers. */
static void test_ordered_pairs(void) {
    strand_config c;
    strand_config_defaults(&c);
    CHECK_OK(strand_config_set(&c, "hyena.decay_fast=2"));
    CHECK_FAILS(strand_config_validate(&c), STRAND_ERR_CONFIG,
                "hyena.decay_fast = 2 must not exceed hyena.decay_slow = 1.5");
    CHECK_OK(strand_config_set(&c, "hyena.decay_fast=1.5")); /* equal: every channel decays alike */
    CHECK_OK(strand_config_validate(&c));

    strand_config_defaults(&c);
    CHECK_OK(strand_config_set(&c, "s4d.dt_min=0.5"));
    CHECK_FAILS(strand_config_validate(&c), STRAND_ERR_CONFIG,
                "s4d.dt_min = 0.5 must not exceed s4d.dt_max = 0.1");
    CHECK_OK(strand_config_set(&c, "s4d.dt_max=0.5"));
    CHECK_OK(strand_config_validate(&c));
}

/* Every recorded error is one line: control characters are written as escapes (\n, \r, \t,
 * \xHH) and a trailing line break (HDF5 messages end with one) is dropped. */
static void test_error_one_line(void) {
    strand_error_set(STRAND_ERR_IO, __FILE__, __LINE__,
                     "H5Fopen failed\nmajor: File accessibility\r\tminor: x%c\n", '\x01');
    CHECK_MSG(
        strcmp(strand_error_message(), "H5Fopen failed\\nmajor: File accessibility\\r\\tminor: x\\x01") == 0,
        "message '%s'", strand_error_message());
    strand_config c;
    strand_config_defaults(&c);
    CHECK_FAILS(strand_config_set(&c, "run.dir=a\nb"), STRAND_ERR_INPUT,
                "run.dir = a\\nb: contains a control character");
    CHECK(!strchr(strand_error_message(), '\n'));
    CHECK_FAILS(strand_config_set(&c, "train.l\nr=1"), STRAND_ERR_CONFIG, "unknown config key 'train.l\\nr'");
    CHECK(!strchr(strand_error_message(), '\n'));
}

static void test_reference(void) {
    char *text = NULL;
    size_t length = 0;
    FILE *out = open_memstream(&text, &length);
    strand_config_print_reference(out);
    fclose(out);
    CHECK(strncmp(text, "| key | type | default | range / values | on resume | meaning |\n|---|", 67) == 0);
    CHECK(contains(text, "| `parallel.sp` | int | `0` | 0 to 1048576 | may change |"));
    CHECK(contains(text, "| `train.lr` | float | `3e-3` | (0, 10] | must match |"));
    CHECK(contains(text, "- `attn`: "));
    CHECK(contains(text, "| `train.lr` | float | `3e-3` | (0, 10] |"));
    CHECK(contains(text, "| `model.d_model` | int | `128` | 8 to 65536 |"));
    CHECK(contains(text, "| `train.beta1` | float | `0.9` | [0, 1) |"));
    CHECK(contains(text, "| `model.norm` | enum | `rmsnorm` | `rmsnorm`, `layernorm` |"));
    CHECK(contains(text, "| `data.path` | string | `data/lambda.h5` |"));

    /* Every key in the formatted config has a row. */
    strand_config c;
    strand_config_defaults(&c);
    char formatted[8192], section[32] = "";
    strand_config_format(&c, formatted, sizeof formatted);
    int keys = 0;
    for (char *line = strtok(formatted, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '[') {
            snprintf(section, sizeof section, "%.*s", (int)(strlen(line) - 2), line + 1);
            continue;
        }
        char key[128], row[200];
        snprintf(key, sizeof key, "%.*s", (int)strcspn(line, " "), line);
        snprintf(row, sizeof row, "| `%s.%s` |", section, key);
        CHECK_MSG(contains(text, row), "reference lacks %s", row);
        keys++;
    }
    CHECK(keys >= 29); /* every key of the first release; later keys only add */
    int rows = 0;
    for (const char *p = text; (p = strstr(p, "\n| `")); p++)
        rows++;
    CHECK(rows == keys);
    free(text);
}

int main(void) {
    snprintf(temp_dir, sizeof temp_dir, "%s/strand_config_XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (strlen(temp_dir) > 40 || !mkdtemp(temp_dir)) {
        snprintf(temp_dir, sizeof temp_dir, "/tmp/strand_config_XXXXXX");
        if (!mkdtemp(temp_dir)) {
            perror("mkdtemp");
            return 1;
        }
    }
    test_defaults();
    test_load_file();
    test_parse_errors();
    test_ranges();
    test_unknown_keys();
    test_file_errors();
    test_layers();
    test_validate();
    test_round_trip();
    test_long_values();
    test_reference();
    test_nul_bytes();
    test_ordered_pairs();
    test_error_one_line();

    for (int i = 0; i < temp_files; i++)
        unlink(temp_paths[i]);
    if (rmdir(temp_dir) != 0) fprintf(stderr, "note: could not remove %s\n", temp_dir);
    return test_finish("test_config");
}
