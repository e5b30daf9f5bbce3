"""The CUDA C source of the line renderer, kept apart from CuPy so it can be read and tested.

One thread draws one pixel column of one image: it finds the min/max of its
window (normalisation, in double), the few segments whose stroke can reach its
column, and the rows those segments span; it then writes the whole column
top to bottom (zeros outside the stroke), so consecutive threads of a warp
store consecutive bytes of the same row. No atomics, no shared memory, no
per-image Python loop: a batch of N images is one launch of N x ceil(W/128)
blocks.

`render_column` is plain C apart from the `__device__` qualifier, so the unit
tests compile this very source for the host (with `__device__` defined away)
and compare it pixel for pixel with the numba CPU renderer; the geometry is
the one in `geometry.py`.
"""

from __future__ import annotations

KERNEL_NAME = "render_lines"
THREADS_PER_BLOCK = 128

COLUMN_SOURCE = r"""
__device__ inline float gb_point_y(const float* seq, int i, double lo, double inv,
                                   int constant, float pad, float sy) {
    float t = constant ? 0.5f : (float)(((double)seq[i] - lo) * inv);
    return pad + (1.0f - t) * sy;
}

__device__ inline void render_column(const float* seq, unsigned char* img, int L, int W, int H,
                                     float line_width, int c) {
    double lo = (double)seq[0], hi = (double)seq[0];
    for (int i = 1; i < L; ++i) {
        double v = (double)seq[i];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    double span = hi - lo;
    int constant = !(span > 0.0);
    double inv = constant ? 0.0 : 1.0 / span;
    float hw = 0.5f * line_width;
    float pad = hw + 1.0f;
    float reach = hw + 0.5f;
    float sx = ((float)W - 2.0f * pad) / (float)(L - 1);
    float sy = (float)H - 2.0f * pad;
    float px = (float)c + 0.5f;

    /* segments i (point i to i+1) whose stroke can reach this column */
    int i_lo = (int)ceilf((px - pad - reach) / sx) - 1;
    int i_hi = (int)floorf((px - pad + reach) / sx);
    if (i_lo < 0) i_lo = 0;
    if (i_hi > L - 2) i_hi = L - 2;

    float rmin = 3.0e38f, rmax = -3.0e38f;
    for (int i = i_lo; i <= i_hi + 1 && i < L; ++i) {
        float y = gb_point_y(seq, i, lo, inv, constant, pad, sy);
        rmin = y < rmin ? y : rmin;
        rmax = y > rmax ? y : rmax;
    }
    int r0 = (int)ceilf(rmin - reach - 0.5f);
    int r1 = (int)floorf(rmax + reach - 0.5f);
    if (r0 < 0) r0 = 0;
    if (r1 > H - 1) r1 = H - 1;
    if (i_lo > i_hi) { r0 = 1; r1 = 0; }

    for (int r = 0; r < H; ++r) {
        unsigned char value = 0;
        if (r >= r0 && r <= r1) {
            float py = (float)r + 0.5f;
            float best = 0.0f;
            for (int i = i_lo; i <= i_hi; ++i) {
                float ax = pad + (float)i * sx;
                float bx = pad + (float)(i + 1) * sx;
                float ay = gb_point_y(seq, i, lo, inv, constant, pad, sy);
                float by = gb_point_y(seq, i + 1, lo, inv, constant, pad, sy);
                float dx = bx - ax, dy = by - ay;
                float inv_len2 = 1.0f / (dx * dx + dy * dy);
                float t = ((px - ax) * dx + (py - ay) * dy) * inv_len2;
                t = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
                float ex = px - ax - t * dx, ey = py - ay - t * dy;
                float d2 = ex * ex + ey * ey;
                if (d2 >= reach * reach) continue;
                float cover = reach - sqrtf(d2);
                best = cover > best ? cover : best;
            }
            best = best > 1.0f ? 1.0f : best;
            value = (unsigned char)(best * 255.0f + 0.5f);
        }
        img[(long long)r * W + c] = value;
    }
}
"""

KERNEL_SOURCE = COLUMN_SOURCE + r"""
extern "C" __global__ void render_lines(const float* seqs, unsigned char* out, int n_images,
                                        int L, int W, int H, float line_width) {
    int n = blockIdx.x;
    int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (n >= n_images || c >= W) return;
    render_column(seqs + (long long)n * L, out + (long long)n * H * W, L, W, H, line_width, c);
}
"""

# The host build of the same column function, for tests and for reading the kernel on a CPU.
HOST_SOURCE = (
    "#include <math.h>\n#define __device__\n"
    + COLUMN_SOURCE
    + r"""
extern "C" void render_lines_host(const float* seqs, unsigned char* out, int n_images,
                                  int L, int W, int H, float line_width) {
    for (int n = 0; n < n_images; ++n)
        for (int c = 0; c < W; ++c)
            render_column(seqs + (long long)n * L, out + (long long)n * H * W, L, W, H, line_width, c);
}
"""
)
