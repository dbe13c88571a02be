/* strand plan's formulas (src/perf/cost.c, predict.c) against hand-computed cases: the work the
 * shared kernels count, their time on a machine with round-number rates (flat tables, so every
 * lookup is exact), the ring's overlap rule, oversubscription, the grid and memory of a plan
 * (equal to the dry run's estimate), efficiency and where scaling stops. */
#include "kernels/fftconv.h"
#include "strand/memory_model.h"
#include "strand/model.h"
#include "strand/perf.h"
#include "test_util.h"

/* Every rate a round number; tables flat. */
static void round_machine(strand_machine *m) {
    strand_machine_default(m);
    m->cores_per_node = 2;
    m->sgemm_gflops = m->sgemv_gflops = 10;
    for (int i = 0; i < STRAND_MACHINE_GEMM_WIDTHS; i++)
        m->gemm_gflops[i] = 10;
    for (int i = 0; i < STRAND_MACHINE_FFT_SIZES; i++)
        m->fft_real_s_per_point[i] = 1e-9, m->fft_complex_s_per_point[i] = 2e-9;
    for (int i = 0; i < STRAND_MACHINE_ATTN_DIMS; i++)
        m->attn_gflops[i] = 10;
    m->memory_bytes_per_s = 1e9;
    m->transcendentals_per_s = 1e8;
    m->p2p_latency_s = 1e-6;
    m->p2p_bytes_per_s = 1e9;
    m->p2p_inter_latency_s = 0;
    m->p2p_inter_bytes_per_s = 0;
    m->alltoall_bytes_per_s = 5e8;
    m->hdf5_read_bytes_per_s = 1e9;
    m->hdf5_write_bytes_per_s = 1e9;
}

static strand_cost empty_cost(void) {
    strand_cost c;
    memset(&c, 0, sizeof c);
    c.real_bytes = 4;
    return c;
}

static strand_cost_shape shape_of(int C, int64_t L, int sp, int layout, int strategy) {
    strand_cost_shape s = {
        .C = C, .L = L, .sp = sp, .layout = layout, .conv_strategy = strategy, .real_bytes = 4};
    s.T = (L + sp - 1) / sp;
    s.fft_size = strand_fftconv_size_for(L);
    return s;
}

static void test_counts(void) {
    /* linear: three GEMMs of 2 rows in out FLOPs at the rates of their inner dimensions (in, out,
     * rows); bias passes 3 rows out reals */
    strand_cost c = empty_cost();
    strand_cost_linear(&c, 100, 8, 32);
    strand_cost_linear(&c, 100, 32, 8); /* the same three widths: the same slots */
    CHECK(c.gemms == 3);
    CHECK_CLOSE(c.gemm_width[0], 8, 0);
    CHECK_CLOSE(c.gemm_width[1], 32, 0);
    CHECK_CLOSE(c.gemm_width[2], 100, 0);
    for (int i = 0; i < 3; i++) /* each width: one GEMM of each linear */
        CHECK_CLOSE(c.gemm_flops[i], 2 * 2.0 * 100 * 8 * 32, 1e-15);
    CHECK_CLOSE(c.memory_bytes, (3.0 * 100 * 32 + 3.0 * 100 * 8) * 4, 1e-15);
    /* strand's exp: two streamed passes in float, a libm call in double */
    c = empty_cost();
    strand_cost_exp(&c, 1000);
    CHECK_CLOSE(c.memory_bytes, 2 * 1000 * 4, 0);
    c = empty_cost();
    c.real_bytes = 8;
    strand_cost_exp(&c, 1000);
    CHECK(c.memory_bytes == 0 && c.transcendentals == 1000);

    /* causal pairs: 10 positions, 55 pairs; span 3: 1 + 2 + 8 x 3 = 27 */
    CHECK_CLOSE(strand_cost_causal_pairs(10, 0), 55, 0);
    CHECK_CLOSE(strand_cost_causal_pairs(10, 3), 27, 0);
    CHECK_CLOSE(strand_cost_causal_pairs(10, 10), 55, 0);

    /* ring attention, zigzag, L = 1024 over 4 ranks (T = 256), H = G = 2, E = 16 */
    strand_cost_shape s = shape_of(32, 1024, 4, STRAND_LAYOUT_ZIGZAG, STRAND_CONV_AUTO);
    c = empty_cost();
    strand_cost_ring_attention(&c, &s, 2, 2, 16, 0);
    const double per_rank = 3.5 * 4 * 16 * 2 * (1024.0 * 1025 / 2) / 4;
    CHECK_CLOSE(c.attn_flops, per_rank, 1e-15);
    CHECK_CLOSE(c.ring_steps, 4, 0);
    CHECK_CLOSE(c.ring_flops_per_step, per_rank / 4, 1e-15);
    CHECK_CLOSE(c.ring_bytes_per_step, 3.0 * 256 * 2 * 2 * 16 * 4, 1e-15);
    /* contiguous: the last rank's share, (2 sp - 1) / sp of the mean */
    s.layout = STRAND_LAYOUT_CONTIGUOUS;
    c = empty_cost();
    strand_cost_ring_attention(&c, &s, 2, 2, 16, 0);
    CHECK_CLOSE(c.attn_flops, per_rank * 7 / 4, 1e-15);
    /* contiguous with a window of 300: a block's first query looks back 299 positions, over the
     * previous rank's 256 rows into the one before: its own block and two more */
    c = empty_cost();
    strand_cost_ring_attention(&c, &s, 2, 2, 16, 300);
    CHECK_CLOSE(c.ring_steps, 3, 0);
    CHECK_CLOSE(c.attn_flops, 3.5 * 4 * 16 * 2 * (300.0 * 1024 - 300.0 * 299 / 2) / 4, 1e-15);
    /* one rank: no ring */
    s = shape_of(32, 1024, 1, STRAND_LAYOUT_ZIGZAG, STRAND_CONV_AUTO);
    c = empty_cost();
    strand_cost_ring_attention(&c, &s, 2, 2, 16, 0);
    CHECK(c.ring_steps == 0 && c.ring_bytes_per_step == 0);

    /* long convolution, all-to-all: C = 8 over 2 ranks, L = 1024 (N = 2048, T = 512): 6 real
     * transforms per local channel (4), 6 T C reals exchanged, half of them to the other rank */
    s = shape_of(8, 1024, 2, STRAND_LAYOUT_CONTIGUOUS, STRAND_CONV_ALLTOALL);
    CHECK(s.fft_size == 2048);
    c = empty_cost();
    strand_cost_long_conv(&c, &s, 8);
    CHECK_CLOSE(c.fft_real_points, 6.0 * 4 * 2048, 0);
    CHECK_CLOSE(c.fft_n, 2048, 0);
    CHECK_CLOSE(c.alltoall_bytes, 6.0 * 512 * 8 * 4 / 2, 1e-15);
    CHECK_CLOSE(c.alltoall_count, 4, 0);
    /* FFTW-MPI: 9 complex transforms per channel pair of N / sp local points, two transposes each */
    s.conv_strategy = STRAND_CONV_FFTW_MPI;
    c = empty_cost();
    strand_cost_long_conv(&c, &s, 8);
    CHECK_CLOSE(c.fft_complex_points, 9.0 * 4 * 1024, 0);
    CHECK_CLOSE(c.alltoall_count, 4 + 2 * 9.0 * 4, 0);
    CHECK_CLOSE(c.alltoall_bytes, 6.0 * 512 * 8 * 4 / 2 + 9.0 * 4 * 2 * 1024 * 8 / 2, 1e-15);
    /* one rank: local transforms of every channel, nothing sent */
    s = shape_of(8, 1024, 1, STRAND_LAYOUT_CONTIGUOUS, STRAND_CONV_ALLTOALL);
    c = empty_cost();
    strand_cost_long_conv(&c, &s, 8);
    CHECK_CLOSE(c.fft_real_points, 6.0 * 8 * 2048, 0);
    CHECK(c.alltoall_bytes == 0 && c.alltoall_count == 0);

    /* short conv halo: contiguous, 2 messages of (K-1) C reals */
    s = shape_of(16, 1024, 2, STRAND_LAYOUT_CONTIGUOUS, STRAND_CONV_AUTO);
    c = empty_cost();
    strand_cost_short_conv(&c, &s, 16, 4);
    CHECK_CLOSE(c.p2p_messages, 2, 0);
    CHECK_CLOSE(c.p2p_bytes, 2.0 * 3 * 16 * 4, 0);
    CHECK_CLOSE(c.memory_bytes, (2 + 3 + 4) * 512.0 * 16 * 4, 0);
}

static void test_seconds(void) {
    strand_machine m;
    round_machine(&m);
    strand_cost_shape s = shape_of(64, 4096, 2, STRAND_LAYOUT_ZIGZAG, STRAND_CONV_ALLTOALL);
    strand_cost c = empty_cost();
    c.gemms = 1, c.gemm_width[0] = 64, c.gemm_flops[0] = 1e10; /* 1 s */
    c.memory_bytes = 5e8;                                      /* 0.5 s */
    c.transcendentals = 1e7;                                   /* 0.1 s */
    c.fft_n = 8192, c.fft_real_points = 1e8;                   /* 0.1 s */
    c.alltoall_bytes = 1e9, c.alltoall_count = 4;              /* 2 s + 4 latencies */
    c.p2p_bytes = 1e6, c.p2p_messages = 2;                     /* 1 ms + 2 latencies */
    strand_cost_time t;
    strand_cost_seconds(&c, &s, &m, 2, 1, &t);
    CHECK_CLOSE(t.gemm_s, 1, 1e-12);
    CHECK_CLOSE(t.memory_s, 0.5, 1e-12);
    CHECK_CLOSE(t.transcendental_s, 0.1, 1e-12);
    CHECK_CLOSE(t.fft_s, 0.1, 1e-12);
    CHECK_CLOSE(t.compute_s, 1.7, 1e-12);
    CHECK_CLOSE(t.comm_s, 2 + 4e-6 + 1e-3 + 2e-6, 1e-12);
    /* four ranks on two cores: every compute term twice as long, communication unchanged */
    strand_cost_seconds(&c, &s, &m, 4, 1, &t);
    CHECK_CLOSE(t.compute_s, 3.4, 1e-12);
    CHECK_CLOSE(t.comm_s, 2 + 4e-6 + 1e-3 + 2e-6, 1e-12);

    /* a node's memory bandwidth 1.5 GB/s shared: 0.75 GB/s each for 2 ranks on the node (and for
     * 4 ranks on its 2 cores, which also run at half speed); one rank alone keeps its 1 GB/s */
    m.memory_node_bytes_per_s = 1.5e9, m.memory_node_ranks = 2;
    strand_cost_seconds(&c, &s, &m, 2, 1, &t);
    CHECK_CLOSE(t.memory_s, 5e8 / 0.75e9, 1e-12);
    strand_cost_seconds(&c, &s, &m, 4, 1, &t);
    CHECK_CLOSE(t.memory_s, 2 * 5e8 / 0.75e9, 1e-12);
    strand_cost_seconds(&c, &s, &m, 1, 1, &t);
    CHECK_CLOSE(t.memory_s, 0.5, 1e-12);
    m.memory_node_bytes_per_s = 1e10;
    /* a busy node's compute factor 0.8: compute 1/0.8 as long with 2 ranks on the node, memory not */
    m.compute_node_factor = 0.8;
    strand_cost_seconds(&c, &s, &m, 2, 1, &t);
    CHECK_CLOSE(t.gemm_s, 1 / 0.8, 1e-12);
    CHECK_CLOSE(t.memory_s, 0.5, 1e-12);
    strand_cost_seconds(&c, &s, &m, 1, 1, &t);
    CHECK_CLOSE(t.gemm_s, 1, 1e-12);
    m.compute_node_factor = 1;

    /* ring: 4 steps of 2e9 FLOPs (0.2 s at 10 GFLOP/s) each sending 1e8 bytes (0.1 s): hidden */
    c = empty_cost();
    c.attn_flops = 8e9, c.attn_head_dim = 64;
    c.ring_steps = 4, c.ring_flops_per_step = 2e9, c.ring_bytes_per_step = 1e8;
    strand_cost_seconds(&c, &s, &m, 2, 1, &t);
    CHECK_CLOSE(t.attn_s, 0.8, 1e-12);
    CHECK_CLOSE(t.comm_s, 0, 1e-12);
    CHECK_CLOSE(t.ring_s, 0.8, 1e-12);
    /* 4e8 bytes a step (0.4 s + latency) > 0.2 s: the excess is exposed communication */
    c.ring_bytes_per_step = 4e8;
    strand_cost_seconds(&c, &s, &m, 2, 1, &t);
    CHECK_CLOSE(t.comm_s, 4 * (0.4 + 1e-6 - 0.2), 1e-12);
    CHECK_CLOSE(t.ring_s, 4 * (0.4 + 1e-6), 1e-12);

    /* a wavefront: the matrix-vector work waits for sp - 1 = 3 earlier ranks */
    c = empty_cost();
    c.gemv_flops = 1e9, c.serial_ranks = 3; /* 0.1 s, four times */
    strand_cost_seconds(&c, &s, &m, 4, 1, &t);
    CHECK_CLOSE(t.gemv_s, 0.1 * 2 * 4, 1e-12); /* also oversubscribed 2x */
}

static void test_plan(void) {
    strand_machine m;
    round_machine(&m);
    strand_config config;
    strand_config_defaults(&config);
    CONFIG_SET(&config, "model.layers=conv,conv");
    CONFIG_SET(&config, "model.d_model=32");
    CONFIG_SET(&config, "train.seq_len=4096");
    CONFIG_SET(&config, "model.vocab=16");
    CHECK(strand_config_validate(&config) == STRAND_OK);
    strand_plan_nodes nodes = {.ranks_per_node = 2, .node_memory_bytes = 0, .baseline_bytes = 0};
    strand_plan_point p[3];
    CHECK(strand_perf_plan_train(&config, &m, 1, &nodes, &p[0]) == STRAND_OK);
    CHECK(strand_perf_plan_train(&config, &m, 2, &nodes, &p[1]) == STRAND_OK);
    CHECK(strand_perf_plan_train(&config, &m, 4, &nodes, &p[2]) == STRAND_OK);
    for (int i = 0; i < 3; i++) {
        CHECK_MSG(p[i].refused[0] == 0, "%s", p[i].refused);
        CHECK_CLOSE(p[i].step_s, p[i].compute_s + p[i].comm_s + p[i].io_s, 1e-12);
        strand_memory_report report;
        CHECK(strand_memory_estimate(&config, p[i].sp, p[i].dp, &report) == STRAND_OK);
        CHECK(p[i].memory_bytes == report.total); /* the dry run's estimate, exactly */
        CHECK(p[i].rows == report.rows);
        CHECK(p[i].mixers == 1 && strcmp(p[i].mixer_name[0], "conv") == 0);
    }
    CHECK(p[0].sp == 1 && p[1].sp == 2 && p[2].sp == 4 && p[2].dp == 1);
    CHECK(p[2].nodes == 2 && p[2].ranks_per_node == 2);
    CHECK(p[0].comm_s == 0 && p[1].comm_s > 0);
    /* The rest of the model on one rank (T = 4096, C = 32, H = 128, V = 16), by hand:
     * GEMMs: per block fc (C -> H) and proj (H -> C), and the head (C -> V), 6 T in out FLOPs each;
     * reals streamed: per block the two linears' bias passes 3 T H + 3 T C, norms, residuals and
     * zeroing 22 T C, the MLP's 8 T H; the head's 3 T V + 5 T V + 8 T C; AdamW 9 P;
     * exps (strand_exp): GELU 2 T H per block, the softmax T V: two streamed passes each in
     * float builds, libm calls in double. */
    const double T = 4096, C = 32, H = 128, V = 16;
    strand_memory_report r1;
    CHECK(strand_memory_estimate(&config, 1, 1, &r1) == STRAND_OK);
    const double gemm_s = (2 * (6 * T * C * H * 2) + 6 * T * C * V) / 1e10;
    const double values = 2 * (3 * T * H + 3 * T * C + 22 * T * C + 8 * T * H) + 8 * T * V + 8 * T * C;
    const double exps = 2 * 2 * T * H + T * V;
    const int fast = sizeof(real_t) == 4;
    const double memory_s =
        (values + 9.0 * (double)r1.parameters + (fast ? 2 * exps : 0)) * sizeof(real_t) / 1e9;
    const double trans_s = fast ? 0 : exps / 1e8;
    CHECK_CLOSE(p[0].other_compute_s, gemm_s + memory_s + trans_s, 1e-12);
    /* the all-reduce at 2 ranks: 2 (w-1)/w P reals at 1 GB/s and 2 log2(2) latencies */
    CHECK_CLOSE(p[1].allreduce_s, (double)r1.parameters * sizeof(real_t) / 1e9 + 2e-6, 1e-12);
    strand_perf_efficiency(p, 3);
    CHECK_CLOSE(p[0].efficiency, 1, 1e-12);
    CHECK_CLOSE(p[1].efficiency, p[0].step_s / (2 * p[1].step_s), 1e-12);

    /* recompute: the rest of the model (not the optimizer) an eighth again, each mixer a third of its own
     * work for all blocks but the last (n = 2: a sixth) */
    CONFIG_SET(&config, "train.recompute=block");
    strand_plan_point rc;
    CHECK(strand_perf_plan_train(&config, &m, 1, &nodes, &rc) == STRAND_OK);
    const double optimizer_s = 9.0 * (double)r1.parameters * sizeof(real_t) / 1e9; /* once a step */
    CHECK_CLOSE(rc.other_compute_s, p[0].other_compute_s + (p[0].other_compute_s - optimizer_s) / 8, 1e-12);
    CHECK_CLOSE(rc.mixer_compute_s[0], p[0].mixer_compute_s[0] * 7 / 6, 1e-12);
    CONFIG_SET(&config, "train.recompute=none");

    /* a grid the configuration refuses comes back marked, not as an error */
    CONFIG_SET(&config, "parallel.sp=2");
    strand_plan_point q;
    CHECK(strand_perf_plan_train(&config, &m, 3, &nodes, &q) == STRAND_OK);
    CHECK(q.refused[0] != 0);
    CONFIG_SET(&config, "parallel.sp=0");
    CONFIG_SET(&config, "train.seq_len=3");
    CHECK(strand_perf_plan_train(&config, &m, 4, &nodes, &q) == STRAND_OK);
    CHECK_MSG(strstr(q.refused, "smaller than") != NULL, "%s", q.refused);

    /* node memory: 2 ranks per node of p[1]'s size do not fit in 1.5 of them */
    CONFIG_SET(&config, "train.seq_len=4096");
    nodes.node_memory_bytes = 1.5 * (double)p[1].memory_bytes;
    CHECK(strand_perf_plan_train(&config, &m, 2, &nodes, &q) == STRAND_OK);
    CHECK(!q.fits);

    /* scaling limit: the same work no faster, or efficiency under one half */
    strand_plan_point s[3];
    memset(s, 0, sizeof s);
    for (int i = 0; i < 3; i++)
        s[i].ranks = 1 << i, s[i].tokens_per_step = 1000,
        snprintf(s[i].dominant, sizeof s[i].dominant, "FFTs");
    s[0].step_s = 1, s[1].step_s = 0.6, s[2].step_s = 0.7;
    strand_perf_efficiency(s, 3);
    CHECK_CLOSE(s[1].efficiency, 1 / 1.2, 1e-12);
    char why[256];
    CHECK(strand_perf_scaling_limit(s, 3, why, sizeof why) == 2);
    CHECK_MSG(strstr(why, "4 ranks") && strstr(why, "FFTs"), "%s", why);
    s[2].step_s = 0.55; /* faster, but efficiency 1 / 2.2 */
    strand_perf_efficiency(s, 3);
    CHECK(strand_perf_scaling_limit(s, 3, why, sizeof why) == 2);
    CHECK_MSG(strstr(why, "efficiency 45%") != NULL, "%s", why);
    s[2].step_s = 0.3;
    strand_perf_efficiency(s, 3);
    CHECK(strand_perf_scaling_limit(s, 3, why, sizeof why) == -1);

    /* an unknown mixer is an error */
    CHECK(strand_perf_plan_mixer(&config, "nope", &m, 1, &nodes, &q) != STRAND_OK);
    strand_error_clear();
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    test_counts();
    test_seconds();
    test_plan();
    const int status = test_finish("test_plan");
    MPI_Finalize();
    return status;
}
