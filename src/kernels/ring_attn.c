/* Ring attention kernel: blockwise (flash-style) causal attention whose K/V blocks travel around
 * the SP ring while the local block is computed. See ring_attn.h for the schedule. */
#include "kernels/ring_attn.h"

#include "kernels/fastmath.h"
#include "parallel/tags.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#ifdef STRAND_REAL_DOUBLE
#define R_GEMM cblas_dgemm
#define R_EXP exp
#define R_LOG log
#define R_LOG1P log1p
#else
#define R_GEMM cblas_sgemm
#define R_EXP expf
#define R_LOG logf
#define R_LOG1P log1pf
#endif

enum { TILE_MASKED = 0, TILE_PARTIAL = 1, TILE_FULL = 2 };
/* Defaults from strand bench ring at head dim 64, L = 16384: a 128 x 512 score tile (256 KiB)
 * and its gradient stay in L2; 96-256 rows and 256-512 keys were within the machine's noise. */
enum { DEFAULT_TILE_Q = 128, DEFAULT_TILE_K = 512 };

// ----------------------------------------------------------------------------
// elementwise kernels (AVX-512 intrinsics in float builds; loops of LANES that gcc vectorises else)

enum { LANES = 16 };

#if defined(__AVX512F__) && !defined(STRAND_REAL_DOUBLE)
#include <immintrin.h>
/* Lanes j.. of a row of n values: all 16, or the tail. */
static inline __mmask16 lanes(int64_t j, int64_t n) {
    return n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1);
}

/* max of s[0..n) (-inf for n = 0); a ?: loop does not vectorise (NaN order), max_ps does. */
static float row_max(const float *restrict s, int64_t n) {
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0;
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        m0 = _mm512_max_ps(m0, _mm512_loadu_ps(s + j));
        m1 = _mm512_max_ps(m1, _mm512_loadu_ps(s + j + 16));
    }
    for (; j < n; j += 16) {
        const __mmask16 k = lanes(j, n);
        m0 = _mm512_mask_max_ps(m0, k, m0, _mm512_maskz_loadu_ps(k, s + j));
    }
    return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}

/* p[j] = exp(s[j] * scale - shift) in place; returns the sum. */
static float row_exp_sum(float *restrict s, int64_t n, float scale, float shift) {
    const __m512 sc = _mm512_set1_ps(scale), sh = _mm512_set1_ps(shift);
    __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        const __m512 p0 = strand_exp16(_mm512_fmsub_ps(_mm512_loadu_ps(s + j), sc, sh));
        const __m512 p1 = strand_exp16(_mm512_fmsub_ps(_mm512_loadu_ps(s + j + 16), sc, sh));
        _mm512_storeu_ps(s + j, p0);
        _mm512_storeu_ps(s + j + 16, p1);
        sum0 = _mm512_add_ps(sum0, p0);
        sum1 = _mm512_add_ps(sum1, p1);
    }
    for (; j < n; j += 16) {
        const __mmask16 k = lanes(j, n);
        const __m512 p = strand_exp16(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(k, s + j), sc, sh));
        _mm512_mask_storeu_ps(s + j, k, p);
        sum0 = _mm512_mask_add_ps(sum0, k, sum0, p);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(sum0, sum1));
}

/* Backward row: p = exp(s * scale - lse) in place of s; ds = p (dp - delta) in place of dp. */
static void row_softmax_grad(float *restrict s, float *restrict dp, int64_t n, float scale, float lse,
                             float delta) {
    const __m512 sc = _mm512_set1_ps(scale), sh = _mm512_set1_ps(lse), de = _mm512_set1_ps(delta);
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 k = lanes(j, n);
        const __m512 p = strand_exp16(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(k, s + j), sc, sh));
        _mm512_mask_storeu_ps(s + j, k, p);
        _mm512_mask_storeu_ps(dp + j, k,
                              _mm512_mul_ps(p, _mm512_sub_ps(_mm512_maskz_loadu_ps(k, dp + j), de)));
    }
}
#else
static real_t row_max(const real_t *restrict s, int64_t n) {
    real_t lane[LANES];
    for (int k = 0; k < LANES; k++)
        lane[k] = -INFINITY;
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int k = 0; k < LANES; k++)
            lane[k] = s[j + k] > lane[k] ? s[j + k] : lane[k];
    real_t m = -INFINITY;
    for (; j < n; j++)
        m = s[j] > m ? s[j] : m;
    for (int k = 0; k < LANES; k++)
        m = lane[k] > m ? lane[k] : m;
    return m;
}

/* p[j] = exp(s[j] * scale - shift) in place; returns the sum. */
static real_t row_exp_sum(real_t *restrict s, int64_t n, real_t scale, real_t shift) {
    real_t lane[LANES] = {0};
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int k = 0; k < LANES; k++) {
            const real_t p = strand_exp(s[j + k] * scale - shift);
            s[j + k] = p;
            lane[k] += p;
        }
    real_t sum = 0;
    for (; j < n; j++) {
        s[j] = strand_exp(s[j] * scale - shift);
        sum += s[j];
    }
    for (int k = 0; k < LANES; k++)
        sum += lane[k];
    return sum;
}

/* Backward row: p = exp(s * scale - lse) in place of s; ds = p (dp - delta) in place of dp. */
static void row_softmax_grad(real_t *restrict s, real_t *restrict dp, int64_t n, real_t scale, real_t lse,
                             real_t delta) {
    for (int64_t j = 0; j < n; j++) {
        const real_t p = strand_exp(s[j] * scale - lse);
        s[j] = p;
        dp[j] = p * (dp[j] - delta);
    }
}
#endif

/* log(sigmoid(x)) without overflow for any x. */
static inline real_t log_sigmoid(real_t x) {
    return (x < 0 ? x : 0) - R_LOG1P(R_EXP(-(x < 0 ? -x : x)));
}

/* Merge a block's normalised partial row (acc * inv_l, lse_b) into (o, lse): the stable sigmoid
 * form, with the empty state (lse = -inf) taken over directly (no -inf - -inf). */
static void merge_row(real_t *restrict o, real_t *lse, const real_t *restrict acc, real_t inv_l, real_t lse_b,
                      int E) {
    if (*lse == -INFINITY) {
        for (int e = 0; e < E; e++)
            o[e] = acc[e] * inv_l;
        *lse = lse_b;
        return;
    }
    const real_t w = 1 / (1 + R_EXP(*lse - lse_b)); /* sigmoid(lse_b - lse) */
    for (int e = 0; e < E; e++)
        o[e] -= w * (o[e] - acc[e] * inv_l);
    *lse -= log_sigmoid(*lse - lse_b);
}

// ----------------------------------------------------------------------------
// tile products
//
// Seven products per tile pair, all with the head dimension E on one side:
//   scores  S = Q K^T, dP = dO V^T               (nq,nk), inner dimension E
//   thin    P V, dS K (nn) and P^T dO, dS^T Q (tn)  output width E, inner dimension nk or nq
// BLAS packs its operands on every call; here that copy is a large share of the work (each
// packed score is reused for only E columns, and OpenBLAS also zeroes C for beta = 0). The float
// AVX-512 build uses one register-blocked kernel for all of them instead: R rows of C (R x NV zmm
// accumulators) stay in registers while the inner loop broadcasts one A value per row and streams
// one row of B:
//   C(r, 0:16NV) (+)= alpha * sum_j A[r*a_row + j*a_k] * B[j*ldb + 0:16NV]
// thin nn: A = the score tile by rows; thin tn: A = the score tile by columns (B = dO or Q rows);
// scores: A = Q (or dO) rows, B = K (or V) of the tile transposed into panels of 64 keys
// (E x 64, contiguous), packed once per block and head and reused by every query tile.
// The double build and builds without AVX-512 use BLAS.

#if defined(__AVX512F__) && !defined(STRAND_REAL_DOUBLE)
#define TILE_AVX512 1

enum { KER_ROWS = 6, KER_VECS = 4, PANEL = 16 * KER_VECS }; /* 6 x 4 accumulators + 4 B of 32 zmm */

/* R rows, NV vectors; ACC: add into C (else overwrite). Constants after inlining. */
static inline __attribute__((always_inline)) void ker_block(const int R, const int NV, const int ACC,
                                                            int64_t k, float alpha, const float *A,
                                                            int64_t a_row, int64_t a_k, const float *B,
                                                            int64_t ldb, float *C, int64_t ldc) {
    __m512 acc[KER_ROWS][KER_VECS];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++)
            acc[r][v] = _mm512_setzero_ps();
    for (int64_t j = 0; j < k; j++) {
        __m512 b[KER_VECS];
        for (int v = 0; v < NV; v++)
            b[v] = _mm512_loadu_ps(B + j * ldb + 16 * v);
        const float *a = A + j * a_k;
        for (int r = 0; r < R; r++) {
            const __m512 x = _mm512_set1_ps(a[r * a_row]);
            for (int v = 0; v < NV; v++)
                acc[r][v] = _mm512_fmadd_ps(x, b[v], acc[r][v]);
        }
    }
    const __m512 al = _mm512_set1_ps(alpha);
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) {
            float *c = C + r * ldc + 16 * v;
            if (ACC)
                _mm512_storeu_ps(c, _mm512_fmadd_ps(al, acc[r][v], _mm512_loadu_ps(c)));
            else /* overwrite: only the score products, alpha = 1 */
                _mm512_storeu_ps(c, acc[r][v]);
        }
}

#define KER_ARGS k, alpha, A, a_row, a_k, B, ldb, C, ldc
#define KER_ROWS_SWITCH(NV, ACC)                                                                             \
    switch (rows) {                                                                                          \
    case 1:                                                                                                  \
        ker_block(1, NV, ACC, KER_ARGS);                                                                     \
        break;                                                                                               \
    case 2:                                                                                                  \
        ker_block(2, NV, ACC, KER_ARGS);                                                                     \
        break;                                                                                               \
    case 3:                                                                                                  \
        ker_block(3, NV, ACC, KER_ARGS);                                                                     \
        break;                                                                                               \
    case 4:                                                                                                  \
        ker_block(4, NV, ACC, KER_ARGS);                                                                     \
        break;                                                                                               \
    case 5:                                                                                                  \
        ker_block(5, NV, ACC, KER_ARGS);                                                                     \
        break;                                                                                               \
    default:                                                                                                 \
        ker_block(6, NV, ACC, KER_ARGS);                                                                     \
        break;                                                                                               \
    }

/* One block of up to KER_ROWS rows: sizes dispatched to compile-time constants. */
static void ker_accumulate(int rows, int nv, int64_t k, float alpha, const float *A, int64_t a_row,
                           int64_t a_k, const float *B, int64_t ldb, float *C, int64_t ldc) {
    switch (nv) {
    case 1:
        KER_ROWS_SWITCH(1, 1) break;
    case 2:
        KER_ROWS_SWITCH(2, 1) break;
    case 3:
        KER_ROWS_SWITCH(3, 1) break;
    default:
        KER_ROWS_SWITCH(4, 1) break;
    }
}

/* C = A B (no alpha: the score products need none). */
static void ker_overwrite(int rows, int64_t k, const float *A, int64_t a_row, int64_t a_k, const float *B,
                          int64_t ldb, float *C, int64_t ldc) {
    const float alpha = 1;
    KER_ROWS_SWITCH(4, 0)
}

/* C (m, E) += alpha * sum_j A(r, j) B (j, E) over k values of j; E % 16 == 0. The sum runs in chunks
 * of THIN_K values of j so that the chunk of B (THIN_K x 64 floats, 32 KiB) read by every block
 * of rows stays in L1; without them B (up to tile_k rows) streams from L2 once per 6 rows. */
enum { THIN_K = 128 };
static void thin_gemm(int m, int E, int64_t k, float alpha, const float *A, int64_t a_row, int64_t a_k,
                      const float *B, int64_t ldb, float *C, int64_t ldc) {
    for (int64_t k0 = 0; k0 < k; k0 += THIN_K) {
        const int64_t kc = k - k0 < THIN_K ? k - k0 : THIN_K;
        for (int c0 = 0; c0 < E; c0 += PANEL) {
            const int nv = (E - c0) / 16 < KER_VECS ? (E - c0) / 16 : KER_VECS;
            for (int r0 = 0; r0 < m; r0 += KER_ROWS)
                ker_accumulate(m - r0 < KER_ROWS ? m - r0 : KER_ROWS, nv, kc, alpha,
                               A + r0 * a_row + k0 * a_k, a_row, a_k, B + k0 * ldb + c0, ldb,
                               C + (int64_t)r0 * ldc + c0, ldc);
        }
    }
}

/* Panels of one key tile of one head: panel p holds rows 64p.. transposed (E x 64, contiguous),
 * zeros past the tile's end, so the score kernel streams 64 keys per load of 4 vectors. */
static void pack_panels(float *dst, const float *src, int64_t ld, int64_t n, int E) {
    for (int64_t p0 = 0; p0 < n; p0 += PANEL) {
        float *panel = dst + (p0 / PANEL) * E * PANEL;
        const int64_t cols = n - p0 < PANEL ? n - p0 : PANEL;
        for (int64_t c = 0; c < cols; c++) {
            const float *row = src + (p0 + c) * ld;
            for (int e = 0; e < E; e++)
                panel[e * PANEL + c] = row[e];
        }
        for (int e = 0; e < E; e++)
            for (int64_t c = cols; c < PANEL; c++)
                panel[e * PANEL + c] = 0;
    }
}
#endif

/* S (nq, nk) = A (nq, E) B^T where B is the tile's rows (ld ldb) or, with AVX-512, its panels. */
static void gemm_scores(int nq, int nk, int E, const real_t *A, int lda, const real_t *B, int ldb,
                        const real_t *panels, real_t *S, int lds) {
#ifdef TILE_AVX512
    (void)B, (void)ldb;
    for (int p0 = 0; p0 < nk; p0 += PANEL)
        for (int r0 = 0; r0 < nq; r0 += KER_ROWS)
            ker_overwrite(nq - r0 < KER_ROWS ? nq - r0 : KER_ROWS, E, A + (int64_t)r0 * lda, lda, 1,
                          panels + (int64_t)(p0 / PANEL) * E * PANEL, PANEL, S + (int64_t)r0 * lds + p0, lds);
#else
    (void)panels;
    R_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, E, 1, A, lda, B, ldb, 0, S, lds);
#endif
}

/* C (m,E) += alpha A (m,k) B (k,E) */
static void gemm_nn_thin(int m, int E, int k, real_t alpha, const real_t *A, int lda, const real_t *B,
                         int ldb, real_t *C, int ldc) {
#ifdef TILE_AVX512
    if (E % 16 == 0) {
        thin_gemm(m, E, k, alpha, A, lda, 1, B, ldb, C, ldc);
        return;
    }
#endif
    R_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, E, k, alpha, A, lda, B, ldb, 1, C, ldc);
}

/* C (n,E) += alpha A^T (n,m) B (m,E), A (m,n) */
static void gemm_tn_thin(int n, int E, int m, real_t alpha, const real_t *A, int lda, const real_t *B,
                         int ldb, real_t *C, int ldc) {
#ifdef TILE_AVX512
    if (E % 16 == 0) {
        thin_gemm(n, E, m, alpha, A, 1, lda, B, ldb, C, ldc);
        return;
    }
#endif
    R_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, n, E, m, alpha, A, lda, B, ldb, 1, C, ldc);
}

// ----------------------------------------------------------------------------
// tiles and visibility

/* Cut rows into runs of consecutive positions of at most cap rows, also cut at row `split`. */
static int64_t make_tiles(strand_attn_tile *tiles, const int64_t *pos, int64_t n, int64_t split,
                          int64_t cap) {
    int64_t count = 0, i = 0;
    while (i < n) {
        int64_t j = i + 1;
        while (j < n && j - i < cap && j != split && pos[j] == pos[j - 1] + 1)
            j++;
        tiles[count].row = i;
        tiles[count].n = j - i;
        tiles[count].pos = pos[i];
        count++;
        i = j;
    }
    return count;
}

/* Is some key of [ka, kb] visible to some query of [qa, qb]? (window 0 = unbounded) */
static int ranges_visible(int64_t qa, int64_t qb, int64_t ka, int64_t kb, int64_t window) {
    const int64_t lo = qa > ka ? qa : ka;
    int64_t hi = qb;
    if (window > 0 && kb + window - 1 < hi) hi = kb + window - 1;
    return lo <= hi;
}

/* Keys of tile k that can be visible to tile q: those up to q's last position (a partial tile on the
 * diagonal computes only these columns, in whole 64-key panels). */
static int visible_cols(const strand_attn_tile *q, const strand_attn_tile *k) {
    const int64_t last = q->pos + q->n - k->pos;
    return (int)(last < k->n ? last : k->n);
}

static int classify(const strand_attn_tile *q, const strand_attn_tile *k, int64_t window) {
    const int64_t qa = q->pos, qb = q->pos + q->n - 1, ka = k->pos, kb = k->pos + k->n - 1;
    if (!ranges_visible(qa, qb, ka, kb, window)) return TILE_MASKED;
    if (kb <= qa && (window == 0 || ka > qb - window)) return TILE_FULL;
    return TILE_PARTIAL;
}

/* Set invisible scores among the first ncols keys of a partial tile to -inf (positions are
 * consecutive in both tiles). */
static void mask_tile(real_t *s, int ld, int64_t ncols, const strand_attn_tile *q, const strand_attn_tile *k,
                      int64_t window) {
    for (int64_t i = 0; i < q->n; i++) {
        real_t *row = s + i * ld;
        const int64_t qp = q->pos + i;
        int64_t hi = qp - k->pos; /* last visible column */
        int64_t lo = window > 0 ? qp - window + 1 - k->pos : 0;
        if (hi > ncols - 1) hi = ncols - 1;
        if (lo < 0) lo = 0;
        for (int64_t j = 0; j < ncols; j++)
            if (j < lo || j > hi) row[j] = -INFINITY;
    }
}

// ----------------------------------------------------------------------------
// init

static void block_ranges(const strand_shard *shard, int rank, int memory, int64_t *starts, int64_t *ends,
                         int *count) {
    int64_t s[STRAND_MAX_PIECES], l[STRAND_MAX_PIECES];
    int n = strand_shard_pieces(shard, rank, s, l);
    *count = 0;
    for (int copy = 0; copy < (memory ? 2 : 1); copy++)
        for (int p = 0; p < n; p++) {
            if (l[p] <= 0) continue;
            const int64_t shift = copy ? -shard->window : 0;
            starts[*count] = s[p] + shift;
            ends[*count] = s[p] + l[p] - 1 + shift;
            (*count)++;
        }
}

/* Ring steps needed so that every rank sees every block that holds a key visible to it. */
static int ring_steps(const strand_shard *shard, int64_t window, int memory) {
    const int P = shard->grid->sp_size;
    int need = 0;
    for (int r = 0; r < P; r++) {
        int64_t qs[2 * STRAND_MAX_PIECES], qe[2 * STRAND_MAX_PIECES];
        int nq = 0;
        block_ranges(shard, r, 0, qs, qe, &nq);
        for (int s = 1; s < P; s++) {
            int64_t ks[2 * STRAND_MAX_PIECES], ke[2 * STRAND_MAX_PIECES];
            int nk = 0;
            block_ranges(shard, (r - s + P) % P, memory, ks, ke, &nk);
            for (int a = 0; a < nq; a++)
                for (int b = 0; b < nk; b++)
                    if (ranges_visible(qs[a], qe[a], ks[b], ke[b], window) && s > need) need = s;
        }
    }
    return need + 1;
}

int strand_ring_attn_plan(strand_ring_attn *ra, const strand_shard *shard, int heads, int kv_heads,
                          int head_dim, int64_t window, int memory, int tile_q, int tile_k, int flags,
                          strand_plan *plan) {
    memset(ra, 0, sizeof *ra);
    const int component = strand_plan_component(plan, STRAND_MEM_RING);
    if (heads <= 0 || kv_heads <= 0 || head_dim <= 0 || heads % kv_heads != 0)
        STRAND_FAIL(STRAND_ERR_CONFIG, "ring attention: %d heads cannot share %d key/value heads", heads,
                    kv_heads);
    if (window < 0) STRAND_FAIL(STRAND_ERR_CONFIG, "ring attention: negative window %lld", (long long)window);
    ra->comm = shard->grid->sp_comm;
    ra->rank = shard->grid->sp_rank;
    ra->size = shard->grid->sp_size;
    ra->heads = heads;
    ra->kv_heads = kv_heads;
    ra->head_dim = head_dim;
    ra->window = window;
    ra->tile_q = tile_q > 0 ? tile_q : DEFAULT_TILE_Q;
    ra->tile_k = tile_k > 0 ? tile_k : DEFAULT_TILE_K;
    if (tile_k <= 0 && window > 0) {
        /* A window leaves masked triangles at both ends of a query tile's keys: narrower key tiles
         * waste less (W = 1024: 256 keys measured 20% faster than 512). */
        int64_t narrow = window / 4 / 64 * 64;
        narrow = narrow < 128 ? 128 : narrow;
        if (narrow < ra->tile_k) ra->tile_k = (int)narrow;
    }
    const int P = ra->size;
    ra->memory = memory;
    STRAND_PLAN_ADD(plan, ra->rows, P, flags, "ring attention rows");
    STRAND_PLAN_ADD(plan, ra->mem_rows, P, flags, "ring attention rows");
    for (int r = 0; r < P; r++) {
        const int64_t rows = shard->shard_lengths[r], mem_rows = memory ? rows : 0;
        if (rows > ra->max_rows) ra->max_rows = rows;
        if (rows + mem_rows > ra->max_block_rows) ra->max_block_rows = rows + mem_rows;
    }
    const int64_t kvw = 2 * (int64_t)kv_heads * head_dim;
    if (ra->max_block_rows * kvw > INT_MAX || (int64_t)heads * head_dim > INT_MAX / 2)
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "ring attention: a block of %lld rows x %lld values exceeds an MPI count",
                    (long long)ra->max_block_rows, (long long)kvw);
    ra->steps = ring_steps(shard, window, 0);
    ra->steps_mem = memory ? ring_steps(shard, window, 1) : ra->steps;

    const int64_t nb = ra->max_block_rows > 0 ? ra->max_block_rows : 1;
    const int64_t nr = ra->max_rows > 0 ? ra->max_rows : 1;
    for (int i = 0; i < 2; i++) {
        STRAND_PLAN_ADD(plan, ra->kv_buf[i], nb * kvw, flags, "ring attention K/V buffer");
        STRAND_PLAN_ADD(plan, ra->pos_buf[i], nb, flags, "ring attention positions");
    }
    for (int i = 0; i < 3; i++)
        STRAND_PLAN_ADD(plan, ra->dkv_buf[i], nr * kvw, flags, "ring attention dK/dV buffer");
    STRAND_PLAN_ADD(plan, ra->dkv_local, nr * kvw, flags, "ring attention dK/dV buffer");
    STRAND_PLAN_ADD(plan, ra->dkv_home, nr * kvw, flags, "ring attention dK/dV buffer");
    /* Score tiles: rows padded to whole 64-key panels (the vectorised kernel writes them whole), plus
     * 16 values so that consecutive rows (read down a column by the transposed products) do not all
     * fall into the same few L1 sets, as rows a power of two apart do. */
    ra->ld_s = (ra->tile_k + 63) / 64 * 64 + 16;
    STRAND_PLAN_ADD(plan, ra->s_tile, (int64_t)ra->tile_q * ra->ld_s, flags, "attention tile");
    STRAND_PLAN_ADD(plan, ra->p_tile, (int64_t)ra->tile_q * ra->ld_s, flags, "attention tile");
    STRAND_PLAN_ADD(plan, ra->k_panel, (int64_t)ra->ld_s * head_dim, flags, "attention tile");
    STRAND_PLAN_ADD(plan, ra->v_panel, (int64_t)ra->ld_s * head_dim, flags, "attention tile");
    STRAND_PLAN_ADD(plan, ra->q_head, nr * head_dim, flags, "attention head copy");
    STRAND_PLAN_ADD(plan, ra->do_head, nr * head_dim, flags, "attention head copy");
    STRAND_PLAN_ADD(plan, ra->k_head, nb * head_dim, flags, "attention head copy");
    STRAND_PLAN_ADD(plan, ra->v_head, nb * head_dim, flags, "attention head copy");
    STRAND_PLAN_ADD(plan, ra->acc, nr * head_dim, flags, "attention accumulator");
    STRAND_PLAN_ADD(plan, ra->row_m, nr, flags, "attention accumulator");
    STRAND_PLAN_ADD(plan, ra->row_l, nr, flags, "attention accumulator");
    STRAND_PLAN_ADD(plan, ra->delta, (int64_t)heads * nr, flags, "attention delta");
    STRAND_PLAN_ADD(plan, ra->q_tiles, nr, flags, "attention tiles");
    STRAND_PLAN_ADD(plan, ra->k_tiles, nb, flags, "attention tiles");
    strand_plan_component(plan, component);
    return STRAND_OK;
}

int strand_ring_attn_setup(strand_ring_attn *ra, const strand_shard *shard) {
    for (int r = 0; r < ra->size; r++) {
        ra->rows[r] = shard->shard_lengths[r];
        ra->mem_rows[r] = ra->memory ? shard->shard_lengths[r] : 0;
    }
    return STRAND_OK;
}

int strand_ring_attn_init(strand_ring_attn *ra, const strand_shard *shard, int heads, int kv_heads,
                          int head_dim, int64_t window, int memory, int tile_q, int tile_k) {
    strand_plan plan;
    strand_plan_init(&plan, 0, 0);
    int status = strand_ring_attn_plan(ra, shard, heads, kv_heads, head_dim, window, memory, tile_q, tile_k,
                                       STRAND_LIFE_SCRATCH, &plan);
    if (status == STRAND_OK) status = strand_plan_allocate(&plan);
    ra->own = plan; /* freed by strand_ring_attn_free whatever happened */
    if (status == STRAND_OK) status = strand_ring_attn_setup(ra, shard);
    return status;
}

void strand_ring_attn_free(strand_ring_attn *ra) {
    strand_plan_free(&ra->own);
    memset(ra, 0, sizeof *ra);
}

// ----------------------------------------------------------------------------
// one block

/* dst (n, E) = the E values at the start of each of n rows of src (row stride ld). */
static void copy_head(real_t *restrict dst, const real_t *restrict src, int64_t ld, int64_t n, int E) {
    for (int64_t i = 0; i < n; i++)
        memcpy(dst + i * E, src + i * ld, sizeof(real_t) * (size_t)E);
}

/* Attention of the local queries over one K/V block: merge its partial (out_b, lse_b) into
 * (out, lse). kv (nk, 2GE). Key tiles outer, so a key tile (and its panels) serves every query
 * tile while the per-row online-softmax state (m, l, acc) covers all local rows. Returns the
 * number of tiles that needed an element mask. */
static int64_t forward_block(strand_ring_attn *ra, real_t *out, real_t *lse, const real_t *q, int64_t T,
                             int64_t nqt, const real_t *kv, int64_t nkt) {
    const int H = ra->heads, G = ra->kv_heads, E = ra->head_dim;
    const int HE = H * E, KVW = 2 * G * E, group = H / G, LDS = ra->ld_s;
    const real_t scale = (real_t)(1.0 / sqrt((double)E));
    real_t *S = ra->s_tile, *acc = ra->acc, *m = ra->row_m, *l = ra->row_l;
    const real_t *kh = ra->k_head, *vh = ra->v_head, *qh = ra->q_head;
    const int64_t nkv = nkt > 0 ? ra->k_tiles[nkt - 1].row + ra->k_tiles[nkt - 1].n : 0;
    int64_t partial = 0;
    for (int h = 0; h < H; h++) {
        const int g = h / group;
        if (h % group == 0) { /* K, V (nkv, E) of head g, shared by the group's query heads */
            copy_head(ra->k_head, kv + (int64_t)g * E, KVW, nkv, E);
            copy_head(ra->v_head, kv + (int64_t)G * E + (int64_t)g * E, KVW, nkv, E);
        }
        copy_head(ra->q_head, q + (int64_t)h * E, HE, T, E); /* Q (T, E) of head h */
        for (int64_t i = 0; i < T; i++)
            m[i] = -INFINITY, l[i] = 0;
        memset(acc, 0, sizeof(real_t) * (size_t)(T * E));
        for (int64_t b = 0; b < nkt; b++) {
            const strand_attn_tile *kt = &ra->k_tiles[b];
            const int nk_tile = (int)kt->n;
            int packed = 0;
            for (int64_t a = 0; a < nqt; a++) {
                const strand_attn_tile *qt = &ra->q_tiles[a];
                const int cls = classify(qt, kt, ra->window);
                if (cls == TILE_MASKED) continue;
#ifdef TILE_AVX512
                if (!packed) pack_panels(ra->k_panel, kh + kt->row * E, E, nk_tile, E);
#endif
                packed = 1;
                (void)packed;
                const int nq = (int)qt->n, nk = cls == TILE_PARTIAL ? visible_cols(qt, kt) : nk_tile;
                real_t *mq = m + qt->row, *lq = l + qt->row, *aq = acc + qt->row * E;
                // S (nq,nk) = Q (nq,E) K^T (E,nk)
                gemm_scores(nq, nk, E, qh + qt->row * E, E, kh + kt->row * E, E, ra->k_panel, S, LDS);
                if (cls == TILE_PARTIAL) {
                    mask_tile(S, LDS, nk, qt, kt, ra->window);
                    partial++;
                }
                for (int i = 0; i < nq; i++) {
                    real_t *srow = S + (int64_t)i * LDS;
                    const real_t mx = row_max(srow, nk) * scale;
                    const real_t m_new = mx > mq[i] ? mx : mq[i];
                    if (m_new == -INFINITY) { /* nothing visible yet in this row */
                        memset(srow, 0, sizeof(real_t) * (size_t)nk);
                        continue;
                    }
                    const real_t alpha = mq[i] == -INFINITY ? 0 : R_EXP(mq[i] - m_new);
                    const real_t sum = row_exp_sum(srow, nk, scale, m_new);
                    lq[i] = lq[i] * alpha + sum;
                    mq[i] = m_new;
                    if (alpha != 1) {
                        real_t *arow = aq + (int64_t)i * E;
                        for (int e = 0; e < E; e++)
                            arow[e] *= alpha;
                    }
                }
                // acc (nq,E) += P (nq,nk) V (nk,E)
                gemm_nn_thin(nq, E, nk, 1, S, LDS, vh + kt->row * E, E, aq, E);
            }
        }
        for (int64_t i = 0; i < T; i++) {
            if (l[i] <= 0) continue; /* nothing visible in this block */
            merge_row(out + i * HE + (int64_t)h * E, &lse[(int64_t)h * T + i], acc + i * E, 1 / l[i],
                      m[i] + R_LOG(l[i]), E);
        }
    }
    return partial;
}

/* Gradients of one block: dq (T,HE) += ..., and when dkv is not NULL dkv (rows < n_grad, 2GE) += ... */
static void backward_block(strand_ring_attn *ra, real_t *dq, real_t *dkv, const real_t *dout,
                           const real_t *lse, const real_t *q, int64_t T, int64_t nqt, const real_t *kv,
                           int64_t nkt, int64_t n_grad) {
    const int H = ra->heads, G = ra->kv_heads, E = ra->head_dim;
    const int HE = H * E, KVW = 2 * G * E, group = H / G, BK = ra->ld_s;
    const real_t scale = (real_t)(1.0 / sqrt((double)E));
    real_t *S = ra->s_tile, *DP = ra->p_tile;
    const real_t *kh = ra->k_head, *vh = ra->v_head;
    const int64_t nkv = nkt > 0 ? ra->k_tiles[nkt - 1].row + ra->k_tiles[nkt - 1].n : 0;
    for (int h = 0; h < H; h++) {
        const int g = h / group;
        if (h % group == 0) {
            copy_head(ra->k_head, kv + (int64_t)g * E, KVW, nkv, E);
            copy_head(ra->v_head, kv + (int64_t)G * E + (int64_t)g * E, KVW, nkv, E);
        }
        copy_head(ra->q_head, q + (int64_t)h * E, HE, T, E);
        copy_head(ra->do_head, dout + (int64_t)h * E, HE, T, E);
        const real_t *lse_h = lse + (int64_t)h * T, *delta_h = ra->delta + (int64_t)h * T;
        for (int64_t b = 0; b < nkt; b++) {
            const strand_attn_tile *kt = &ra->k_tiles[b];
            const int nk_tile = (int)kt->n;
            const int grad = kt->row < n_grad; /* tiles never straddle n_grad */
            int packed = 0;
            for (int64_t a = 0; a < nqt; a++) {
                const strand_attn_tile *qt = &ra->q_tiles[a];
                const int cls = classify(qt, kt, ra->window);
                if (cls == TILE_MASKED) continue;
#ifdef TILE_AVX512
                if (!packed) {
                    pack_panels(ra->k_panel, kh + kt->row * E, E, nk_tile, E);
                    pack_panels(ra->v_panel, vh + kt->row * E, E, nk_tile, E);
                }
#endif
                packed = 1;
                (void)packed;
                const int nq = (int)qt->n, nk = cls == TILE_PARTIAL ? visible_cols(qt, kt) : nk_tile;
                const real_t *qh = ra->q_head + qt->row * E, *doh = ra->do_head + qt->row * E;
                // S (nq,nk) = Q K^T;  dP (nq,nk) = dO (nq,E) V^T (E,nk)
                gemm_scores(nq, nk, E, qh, E, kh + kt->row * E, E, ra->k_panel, S, BK);
                if (cls == TILE_PARTIAL) mask_tile(S, BK, nk, qt, kt, ra->window);
                gemm_scores(nq, nk, E, doh, E, vh + kt->row * E, E, ra->v_panel, DP, BK);
                for (int i = 0; i < nq; i++) {
                    const real_t row_lse = lse_h[qt->row + i];
                    real_t *srow = S + (int64_t)i * BK, *drow = DP + (int64_t)i * BK;
                    if (row_lse == -INFINITY) { /* a query that sees no key anywhere */
                        memset(srow, 0, sizeof(real_t) * (size_t)nk);
                        memset(drow, 0, sizeof(real_t) * (size_t)nk);
                        continue;
                    }
                    row_softmax_grad(srow, drow, nk, scale, row_lse, delta_h[qt->row + i]);
                }
                // dV (nk,E) += P^T (nk,nq) dO (nq,E)
                if (grad)
                    gemm_tn_thin(nk, E, nq, 1, S, BK, doh, E,
                                 dkv + kt->row * KVW + (int64_t)G * E + (int64_t)g * E, KVW);
                // dQ (nq,E) += scale dS (nq,nk) K (nk,E)
                gemm_nn_thin(nq, E, nk, scale, DP, BK, kh + kt->row * E, E,
                             dq + qt->row * HE + (int64_t)h * E, HE);
                // dK (nk,E) += scale dS^T (nk,nq) Q (nq,E)
                if (grad)
                    gemm_tn_thin(nk, E, nq, scale, DP, BK, qh, E, dkv + kt->row * KVW + (int64_t)g * E, KVW);
            }
        }
    }
}

// ----------------------------------------------------------------------------
// the ring

static int64_t block_rows(const strand_ring_attn *ra, int owner, int memory) {
    return ra->rows[owner] + (memory ? ra->mem_rows[owner] : 0);
}

/* Put this rank's K/V (and memory) with positions into ring buffer 0. */
static void load_block(strand_ring_attn *ra, const real_t *kv, const int64_t *kv_pos, const real_t *mem_kv,
                       const int64_t *mem_pos) {
    const int64_t kvw = 2 * (int64_t)ra->kv_heads * ra->head_dim;
    const int64_t n = ra->rows[ra->rank], nm = ra->mem_rows[ra->rank];
    memcpy(ra->kv_buf[0], kv, sizeof(real_t) * (size_t)(n * kvw));
    memcpy(ra->pos_buf[0], kv_pos, sizeof(int64_t) * (size_t)n);
    if (mem_kv) {
        memcpy(ra->kv_buf[0] + n * kvw, mem_kv, sizeof(real_t) * (size_t)(nm * kvw));
        memcpy(ra->pos_buf[0] + n, mem_pos, sizeof(int64_t) * (size_t)nm);
    }
}

/* Post the exchange of step s: receive the next block from the previous rank into buffer nxt and
 * send the current one (buffer cur) to the next rank. */
static int post_shift(strand_ring_attn *ra, int s, int memory, MPI_Request req[4]) {
    const int P = ra->size, r = ra->rank;
    const int next = (r + 1) % P, prev = (r - 1 + P) % P;
    const int cur = s & 1, nxt = cur ^ 1;
    const int kvw = 2 * ra->kv_heads * ra->head_dim;
    const int64_t n_in = block_rows(ra, (r - s - 1 + 2 * P) % P, memory);
    const int64_t n_out = block_rows(ra, (r - s + P) % P, memory);
    STRAND_CALL_MPI(MPI_Irecv(ra->kv_buf[nxt], (int)(n_in * kvw), STRAND_MPI_REAL, prev, STRAND_TAG_RING_KV,
                              ra->comm, &req[0]));
    STRAND_CALL_MPI(
        MPI_Irecv(ra->pos_buf[nxt], (int)n_in, MPI_INT64_T, prev, STRAND_TAG_RING_POS, ra->comm, &req[1]));
    STRAND_CALL_MPI(MPI_Isend(ra->kv_buf[cur], (int)(n_out * kvw), STRAND_MPI_REAL, next, STRAND_TAG_RING_KV,
                              ra->comm, &req[2]));
    STRAND_CALL_MPI(
        MPI_Isend(ra->pos_buf[cur], (int)n_out, MPI_INT64_T, next, STRAND_TAG_RING_POS, ra->comm, &req[3]));
    strand_comm_add_bytes(n_out * kvw * (int64_t)sizeof(real_t) + n_out * (int64_t)sizeof(int64_t));
    return STRAND_OK;
}

static int wait_all(strand_ring_attn *ra, int n, MPI_Request *req) {
    if (n <= 0) return STRAND_OK;
    const double t0 = strand_now();
    STRAND_CALL_MPI(MPI_Waitall(n, req, MPI_STATUSES_IGNORE));
    const double dt = strand_now() - t0;
    ra->wait_s += dt;
    strand_comm_add_seconds(dt);
    return STRAND_OK;
}

int strand_ring_attn_forward(strand_ring_attn *ra, real_t *out, real_t *lse, const real_t *q,
                             const int64_t *q_pos, const real_t *kv, const int64_t *kv_pos,
                             const real_t *mem_kv, const int64_t *mem_pos) {
    const double t_start = strand_now(), wait_start = ra->wait_s;
    const int P = ra->size, r = ra->rank, memory = mem_kv != NULL;
    const int steps = memory ? ra->steps_mem : ra->steps;
    const int64_t T = ra->rows[r];
    const int HE = ra->heads * ra->head_dim;
    memset(out, 0, sizeof(real_t) * (size_t)(T * HE));
    for (int64_t i = 0; i < (int64_t)ra->heads * T; i++)
        lse[i] = -INFINITY;
    const int64_t nqt = make_tiles(ra->q_tiles, q_pos, T, T, ra->tile_q);
    load_block(ra, kv, kv_pos, mem_kv, mem_pos);
    for (int s = 0; s < steps; s++) {
        MPI_Request req[4];
        int nreq = 0;
        if (s + 1 < steps) {
            STRAND_CALL(post_shift(ra, s, memory, req));
            nreq = 4;
        }
        const int owner = (r - s + P) % P, cur = s & 1;
        const int64_t n = block_rows(ra, owner, memory);
        const int64_t nkt = make_tiles(ra->k_tiles, ra->pos_buf[cur], n, ra->rows[owner], ra->tile_k);
        const int64_t partial = forward_block(ra, out, lse, q, T, nqt, ra->kv_buf[cur], nkt);
        if (s > 0) ra->masked_tiles_late += partial;
        STRAND_CALL(wait_all(ra, nreq, req));
    }
    ra->busy_s += (strand_now() - t_start) - (ra->wait_s - wait_start);
    return STRAND_OK;
}

int strand_ring_attn_backward(strand_ring_attn *ra, real_t *dq, real_t *dkv, const real_t *dout,
                              const real_t *out, const real_t *lse, const real_t *q, const int64_t *q_pos,
                              const real_t *kv, const int64_t *kv_pos, const real_t *mem_kv,
                              const int64_t *mem_pos) {
    const double t_start = strand_now(), wait_start = ra->wait_s;
    const int P = ra->size, r = ra->rank, memory = mem_kv != NULL;
    const int steps = memory ? ra->steps_mem : ra->steps;
    const int next = (r + 1) % P, prev = (r - 1 + P) % P;
    const int64_t T = ra->rows[r];
    const int H = ra->heads, E = ra->head_dim, HE = H * E;
    const int64_t kvw = 2 * (int64_t)ra->kv_heads * E;
    // delta (H,T) = rowsum(dO * O) per head
    for (int64_t i = 0; i < T; i++)
        for (int h = 0; h < H; h++) {
            const real_t *o = out + i * HE + (int64_t)h * E, *d = dout + i * HE + (int64_t)h * E;
            real_t sum = 0;
            for (int e = 0; e < E; e++)
                sum += o[e] * d[e];
            ra->delta[(int64_t)h * T + i] = sum;
        }
    const int64_t nqt = make_tiles(ra->q_tiles, q_pos, T, T, ra->tile_q);
    load_block(ra, kv, kv_pos, mem_kv, mem_pos);
    MPI_Request dkv_send[3] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    MPI_Request dkv_recv[3] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    for (int s = 0; s < steps; s++) {
        const int owner = (r - s + P) % P, cur = s & 1, dcur = s % 3, dnext = (s + 1) % 3;
        MPI_Request req[4];
        int nreq = 0;
        if (s + 1 < steps) {
            STRAND_CALL(post_shift(ra, s, memory, req));
            nreq = 4;
            /* dK/dV buffers rotate over three steps: the one receiving step s+1's accumulator was
             * last sent at step s-2, a whole step ago. */
            STRAND_CALL(wait_all(ra, 1, &dkv_send[dnext]));
            const int64_t n_in = ra->rows[(r - s - 1 + 2 * P) % P];
            STRAND_CALL_MPI(MPI_Irecv(ra->dkv_buf[dnext], (int)(n_in * kvw), STRAND_MPI_REAL, prev,
                                      STRAND_TAG_RING_DKV, ra->comm, &dkv_recv[dnext]));
        }
        const int64_t n_cur = ra->rows[owner], n = block_rows(ra, owner, memory);
        const int64_t nkt = make_tiles(ra->k_tiles, ra->pos_buf[cur], n, n_cur, ra->tile_k);
        /* Step 0's block is our own: accumulate in place. Later blocks' accumulators are still on the
         * way from the previous rank, so compute into dkv_local and add once they have arrived. */
        real_t *target = s == 0 ? ra->dkv_buf[0] : ra->dkv_local;
        memset(target, 0, sizeof(real_t) * (size_t)(n_cur * kvw));
        backward_block(ra, dq, target, dout, lse, q, T, nqt, ra->kv_buf[cur], nkt, n_cur);
        if (s > 0) {
            STRAND_CALL(wait_all(ra, 1, &dkv_recv[dcur]));
            real_t *restrict acc = ra->dkv_buf[dcur];
            for (int64_t i = 0; i < n_cur * kvw; i++)
                acc[i] += target[i];
        }
        if (s + 1 < steps)
            if (s + 1 < steps) {
                STRAND_CALL_MPI(MPI_Isend(ra->dkv_buf[dcur], (int)(n_cur * kvw), STRAND_MPI_REAL, next,
                                          STRAND_TAG_RING_DKV, ra->comm, &dkv_send[dcur]));
                strand_comm_add_bytes(n_cur * kvw * (int64_t)sizeof(real_t));
            }
        STRAND_CALL(wait_all(ra, nreq, req));
    }
    /* The last accumulator goes home in one message: to rank r - (steps-1), which is the next rank
     * when the ring went all the way round. */
    const int last = (steps - 1) % 3;
    if (steps == 1) {
        for (int64_t i = 0; i < T * kvw; i++)
            dkv[i] += ra->dkv_buf[last][i];
    } else {
        const int owner = (r - (steps - 1) + P) % P, source = (r + steps - 1) % P;
        MPI_Request home[2];
        STRAND_CALL_MPI(MPI_Irecv(ra->dkv_home, (int)(T * kvw), STRAND_MPI_REAL, source,
                                  STRAND_TAG_RING_DKV_HOME, ra->comm, &home[0]));
        STRAND_CALL_MPI(MPI_Isend(ra->dkv_buf[last], (int)(ra->rows[owner] * kvw), STRAND_MPI_REAL, owner,
                                  STRAND_TAG_RING_DKV_HOME, ra->comm, &home[1]));
        strand_comm_add_bytes(ra->rows[owner] * kvw * (int64_t)sizeof(real_t));
        STRAND_CALL(wait_all(ra, 2, home));
        for (int64_t i = 0; i < T * kvw; i++)
            dkv[i] += ra->dkv_home[i];
    }
    STRAND_CALL(wait_all(ra, 3, dkv_send));
    ra->busy_s += (strand_now() - t_start) - (ra->wait_s - wait_start);
    return STRAND_OK;
}
