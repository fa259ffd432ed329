// Direct sparse convolution for binprune's pruned networks (CPU, float32).
//
// A 99%-sparse layer keeps ~1% of its weights, so its work is a few shifted copies of the input
// added together: out[o] = bias[o] + sum over kept taps k of w_k * shift(x[c_k], ky_k, kx_k).
// The input is copied once per call into a padded, phase-split, channel-major buffer in which
// every tap is a constant offset, so each kept weight becomes one fused multiply-add over a
// contiguous run of positions spanning all images of the batch (vectorized over space and
// batch at once, whatever the image size). Strides become phases (s*s sub-grids, each a
// stride-1 problem), dilation and groups are offsets, padding is the zero border of the buffer.
//
// Buffer layout: [C][phase][N * Hq * Wq + slack]; position q = n*Pq + y*Wq + x (Pq = Hq*Wq) is
// output pixel (n, y, x) when y < Ho and x < Wo; other positions are computed and discarded
// (the slack only feeds those, so it is never cleared).
//
// Two ops, registered with the dispatcher (torch.ops.binprune_sparse; only ATen headers, fast to
// compile, no Python binding): plan(...) validates the taps once and precomputes everything that
// depends only on the layer and the input shape (tap offsets, channel blocks, where each tile's
// valid outputs go) as one int64 tensor, which the caller caches; run(x, plan, values, bias)
// does the work. conv2d(...) = run(plan(...)) for one-off calls.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

namespace {

#if defined(__AVX512F__)
constexpr int64_t VW = 16;  // floats per vector register
constexpr int64_t MAX_R = 16;  // accumulator registers per tile (32 zmm available)
#else
constexpr int64_t VW = 8;
constexpr int64_t MAX_R = 8;  // 16 ymm available
#endif
typedef float vec __attribute__((vector_size(VW * sizeof(float))));
constexpr int64_t TILE_WIDTHS[] = {1, 2, 3, 4, 6, 8, 12, 16};  // R values compiled (<= MAX_R used)
constexpr int64_t L1_BYTES = 20 * 1024;  // input per channel block, to stay in a 32 KB L1
constexpr int64_t MIN_TAPS_PER_BLOCK = 8;  // fewer: reloading partial sums costs more than L1 misses
constexpr int64_t PLAN_MAGIC = 0x42505350;  // "BPSP"
constexpr int64_t HEADER = 32;

inline vec loadu(const float* p) {
  vec v;
  std::memcpy(&v, p, sizeof(vec));
  return v;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Everything a call needs besides the input, weights and bias. Scalars are the plan tensor's
// header; arrays point into it.
struct Plan {
  int64_t N, C, H, W, O, KH, KW, sh, sw, pt, pb, pl, pr, dh, dw;
  int64_t Ho, Wo, Hq, Wq, Pq, L, R, T, ntiles, PS, CS, nph, ncb, nnz, nruns;
  const int64_t *ry, *rx, *qx0, *qx1;  // per phase slot
  const int64_t* pmap;  // small planes: per phase slot and plane position, the input offset or -1
  const int64_t* off;  // per tap: offset in the buffer
  const int64_t* cut;  // per output channel: ncb + 1 tap indices where channel blocks start
  const int64_t *run_start, *run_src, *run_len, *run_dst;  // per tile / per run
};

constexpr int64_t SCALARS = 30;  // N ... nruns above, in order

// Geometry of the buffer for this layer and input shape (fills the plan's scalars).
void make_geometry(Plan& g, at::IntArrayRef input, int64_t O, at::IntArrayRef kernel, at::IntArrayRef stride,
                   at::IntArrayRef padding, at::IntArrayRef dilation, std::vector<int64_t>& ry,
                   std::vector<int64_t>& rx) {
  TORCH_CHECK(input.size() == 4 && kernel.size() == 2 && stride.size() == 2 && padding.size() == 4 &&
                  dilation.size() == 2,
              "binprune_sparse: input (N, C, H, W), kernel, stride, dilation (2 values), padding (top, bottom, "
              "left, right)");
  g.N = input[0]; g.C = input[1]; g.H = input[2]; g.W = input[3]; g.O = O;
  g.KH = kernel[0]; g.KW = kernel[1]; g.sh = stride[0]; g.sw = stride[1];
  g.pt = padding[0]; g.pb = padding[1]; g.pl = padding[2]; g.pr = padding[3];
  g.dh = dilation[0]; g.dw = dilation[1];
  TORCH_CHECK(g.KH > 0 && g.KW > 0 && g.sh > 0 && g.sw > 0 && g.dh > 0 && g.dw > 0 && g.pt >= 0 && g.pb >= 0 &&
                  g.pl >= 0 && g.pr >= 0 && g.N >= 0 && g.C > 0 && g.H > 0 && g.W > 0,
              "binprune_sparse: invalid convolution settings");
  const int64_t Hp = g.H + g.pt + g.pb, Wp = g.W + g.pl + g.pr;
  g.Ho = (Hp - g.dh * (g.KH - 1) - 1) / g.sh + 1;
  g.Wo = (Wp - g.dw * (g.KW - 1) - 1) / g.sw + 1;
  TORCH_CHECK(Hp - g.dh * (g.KH - 1) > 0 && Wp - g.dw * (g.KW - 1) > 0, "binprune_sparse: input smaller than kernel");
  g.Hq = ceil_div(Hp, g.sh);
  g.Wq = ceil_div(Wp, g.sw);
  g.Pq = g.Hq * g.Wq;
  g.L = g.N * g.Pq;
  std::vector<int64_t> seen(g.sh * g.sw, 0);
  for (int64_t ky = 0; ky < g.KH; ++ky)
    for (int64_t kx = 0; kx < g.KW; ++kx) {
      const int64_t p = ((ky * g.dh) % g.sh) * g.sw + (kx * g.dw) % g.sw;
      if (!seen[p]) {
        seen[p] = 1;
        ry.push_back(p / g.sw);
        rx.push_back(p % g.sw);
      }
    }
  g.nph = static_cast<int64_t>(ry.size());
  // Tile: R vector accumulators; the narrowest compiled width covering the positions, capped.
  const int64_t need = ceil_div(std::max<int64_t>(g.L, 1), VW);
  g.R = MAX_R;
  for (int64_t r : TILE_WIDTHS)
    if (r <= MAX_R && r >= need) {
      g.R = r;
      break;
    }
  g.T = g.R * VW;
  g.ntiles = ceil_div(g.L, g.T);
  const int64_t reach = ((g.KH - 1) * g.dh / g.sh) * g.Wq + (g.KW - 1) * g.dw / g.sw;
  g.PS = ceil_div(g.ntiles * g.T + reach, VW) * VW;  // slack: the last tile's reach
  g.CS = g.nph * g.PS;
}

// Where each tile's valid positions go: runs (position in tile, offset in the output of
// channel 0, length), the same for every output channel.
void make_runs(const Plan& g, std::vector<int64_t>& start, std::vector<int64_t>& src, std::vector<int64_t>& len,
               std::vector<int64_t>& dst) {
  for (int64_t t = 0; t < g.ntiles; ++t) {
    start.push_back(static_cast<int64_t>(src.size()));
    const int64_t q0 = t * g.T, qend = std::min(q0 + g.T, g.L);
    int64_t q = q0;
    while (q < qend) {
      const int64_t n = q / g.Pq, rem = q - n * g.Pq, y = rem / g.Wq, x = rem - y * g.Wq;
      if (y >= g.Ho) {
        q = (n + 1) * g.Pq;
      } else if (x >= g.Wo) {
        q += g.Wq - x;
      } else {
        const int64_t run = std::min(g.Wo - x, qend - q);
        src.push_back(q - q0);
        len.push_back(run);
        dst.push_back((n * g.O * g.Ho + y) * g.Wo + x);
        q += run;
      }
    }
  }
  start.push_back(static_cast<int64_t>(src.size()));
}

// Tap offsets in the buffer, after checking the taps (in range, sorted by input channel within
// each output channel: the order of weight.nonzero()).
std::vector<int64_t> make_offsets(const Plan& g, const int64_t* rp, const int32_t* tc, const int32_t* ty,
                                  const int32_t* tx, const std::vector<int64_t>& slot) {
  TORCH_CHECK(rp[0] == 0 && rp[g.O] == g.nnz, "binprune_sparse: rowptr does not match the taps");
  std::vector<int64_t> shift(g.KH * g.KW);
  for (int64_t ky = 0; ky < g.KH; ++ky)
    for (int64_t kx = 0; kx < g.KW; ++kx) {
      const int64_t a = ky * g.dh, b = kx * g.dw;
      shift[ky * g.KW + kx] = slot[(a % g.sh) * g.sw + b % g.sw] * g.PS + (a / g.sh) * g.Wq + b / g.sw;
    }
  std::vector<int64_t> off(g.nnz);
  for (int64_t o = 0; o < g.O; ++o) {
    TORCH_CHECK(rp[o] <= rp[o + 1], "binprune_sparse: rowptr must be non-decreasing");
    for (int64_t k = rp[o]; k < rp[o + 1]; ++k) {
      TORCH_CHECK(tc[k] >= 0 && tc[k] < g.C && ty[k] >= 0 && ty[k] < g.KH && tx[k] >= 0 && tx[k] < g.KW,
                  "binprune_sparse: tap out of range");
      TORCH_CHECK(k == rp[o] || tc[k - 1] <= tc[k], "binprune_sparse: taps must be sorted by input channel");
      off[k] = tc[k] * g.CS + shift[ty[k] * g.KW + tx[k]];
    }
  }
  return off;
}

// Channel blocks whose tile input fits in L1, where each output channel has enough taps per
// block; cut[o * (ncb + 1) + b] is the first tap of output channel o in block b.
std::vector<int64_t> make_cuts(Plan& g, const int64_t* rp, const int32_t* tc) {
  const int64_t fit = std::max<int64_t>(1, L1_BYTES / (g.nph * (g.T + g.PS - g.ntiles * g.T) * 4));
  const int64_t most = std::max<int64_t>(1, g.nnz / (std::max<int64_t>(g.O, 1) * MIN_TAPS_PER_BLOCK));
  const int64_t size = ceil_div(g.C, std::min(ceil_div(g.C, fit), most));
  g.ncb = ceil_div(g.C, size);
  std::vector<int64_t> cut(g.O * (g.ncb + 1));
  for (int64_t o = 0; o < g.O; ++o) {
    int64_t k = rp[o];
    for (int64_t b = 0; b < g.ncb; ++b) {
      while (k < rp[o + 1] && tc[k] < b * size) ++k;
      cut[o * (g.ncb + 1) + b] = k;
    }
    cut[o * (g.ncb + 1) + g.ncb] = rp[o + 1];
  }
  return cut;
}

// Rows shorter than a vector: the pack goes element by element through a map (below) instead of
// row by row, whose fixed cost per row would dominate (a 4x4 image at stride 2 has rows of 3).
inline bool small_planes(const Plan& g) { return g.Wq < VW; }

// For each phase slot and plane position: the offset of its input pixel in a contiguous (H, W)
// plane, or -1 where the buffer holds padding.
std::vector<int64_t> make_plane_map(const Plan& g, const std::vector<int64_t>& ry, const std::vector<int64_t>& rx) {
  std::vector<int64_t> pmap;
  if (!small_planes(g)) return pmap;
  pmap.reserve(g.nph * g.Pq);
  for (int64_t s = 0; s < g.nph; ++s)
    for (int64_t qy = 0; qy < g.Hq; ++qy)
      for (int64_t qx = 0; qx < g.Wq; ++qx) {
        const int64_t iy = qy * g.sh + ry[s] - g.pt, ix = qx * g.sw + rx[s] - g.pl;
        pmap.push_back(iy >= 0 && iy < g.H && ix >= 0 && ix < g.W ? iy * g.W + ix : -1);
      }
  return pmap;
}

// Concatenate the plan into one int64 tensor: header scalars, then the arrays.
at::Tensor serialize(const Plan& g, const std::vector<std::vector<int64_t>>& arrays) {
  int64_t total = HEADER;
  for (const auto& a : arrays) total += static_cast<int64_t>(a.size());
  at::Tensor out = at::empty({total}, at::TensorOptions().dtype(at::kLong));
  int64_t* p = out.data_ptr<int64_t>();
  const int64_t scalars[SCALARS] = {g.N, g.C, g.H, g.W, g.O, g.KH, g.KW, g.sh, g.sw, g.pt, g.pb, g.pl, g.pr, g.dh, g.dw,
                                    g.Ho, g.Wo, g.Hq, g.Wq, g.Pq, g.L, g.R, g.T, g.ntiles, g.PS, g.CS, g.nph, g.ncb,
                                    g.nnz, g.nruns};
  p[0] = PLAN_MAGIC;
  p[1] = SCALARS;
  std::copy(scalars, scalars + SCALARS, p + 2);
  p += HEADER;
  for (const auto& a : arrays) p = std::copy(a.begin(), a.end(), p);
  return out;
}

Plan deserialize(const at::Tensor& plan) {
  TORCH_CHECK(plan.dim() == 1 && plan.scalar_type() == at::kLong && plan.is_contiguous() && plan.numel() >= HEADER,
              "binprune_sparse: not a plan");
  const int64_t* p = plan.data_ptr<int64_t>();
  TORCH_CHECK(p[0] == PLAN_MAGIC && p[1] == SCALARS, "binprune_sparse: not a plan (or from another version)");
  Plan g;
  int64_t* s[SCALARS] = {&g.N, &g.C, &g.H, &g.W, &g.O, &g.KH, &g.KW, &g.sh, &g.sw, &g.pt, &g.pb, &g.pl, &g.pr, &g.dh,
                         &g.dw, &g.Ho, &g.Wo, &g.Hq, &g.Wq, &g.Pq, &g.L, &g.R, &g.T, &g.ntiles, &g.PS, &g.CS, &g.nph,
                         &g.ncb, &g.nnz, &g.nruns};
  for (int64_t i = 0; i < SCALARS; ++i) *s[i] = p[2 + i];
  const int64_t sizes[] = {g.nph, g.nph, g.nph, g.nph, small_planes(g) ? g.nph * g.Pq : 0, g.nnz, g.O * (g.ncb + 1),
                           g.ntiles + 1, g.nruns, g.nruns, g.nruns};
  const int64_t** fields[] = {&g.ry, &g.rx, &g.qx0, &g.qx1, &g.pmap, &g.off, &g.cut, &g.run_start, &g.run_src,
                              &g.run_len, &g.run_dst};
  int64_t at_ = HEADER;
  for (int i = 0; i < 11; ++i) {
    *fields[i] = p + at_;
    at_ += sizes[i];
  }
  TORCH_CHECK(at_ == plan.numel(), "binprune_sparse: truncated plan");
  return g;
}

at::Tensor plan(const at::Tensor& rowptr, const at::Tensor& tap_c, const at::Tensor& tap_ky, const at::Tensor& tap_kx,
                at::IntArrayRef input, at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                at::IntArrayRef dilation) {
  TORCH_CHECK(rowptr.scalar_type() == at::kLong && tap_c.scalar_type() == at::kInt && tap_ky.scalar_type() == at::kInt &&
                  tap_kx.scalar_type() == at::kInt && rowptr.numel() >= 1,
              "binprune_sparse.plan: rowptr is int64 (O + 1), taps int32");
  Plan g;
  std::vector<int64_t> ry, rx;
  make_geometry(g, input, rowptr.numel() - 1, kernel, stride, padding, dilation, ry, rx);
  g.nnz = tap_c.numel();
  TORCH_CHECK(tap_ky.numel() == g.nnz && tap_kx.numel() == g.nnz, "binprune_sparse.plan: tap arrays differ in length");
  const at::Tensor rp_ = rowptr.contiguous(), c_ = tap_c.contiguous(), y_ = tap_ky.contiguous(), x_ = tap_kx.contiguous();
  const int64_t* rp = rp_.data_ptr<int64_t>();
  const int32_t* tc = c_.data_ptr<int32_t>();
  std::vector<int64_t> slot(g.sh * g.sw, -1), qx0(g.nph), qx1(g.nph);
  for (int64_t s = 0; s < g.nph; ++s) {
    slot[ry[s] * g.sw + rx[s]] = s;
    // columns qx whose input column ix = qx*sw + rx - pl lies in [0, W)
    qx0[s] = std::min(g.Wq, g.pl > rx[s] ? ceil_div(g.pl - rx[s], g.sw) : int64_t(0));
    qx1[s] = std::max(qx0[s], std::min(g.Wq, g.W + g.pl > rx[s] ? ceil_div(g.W + g.pl - rx[s], g.sw) : int64_t(0)));
  }
  std::vector<int64_t> off = make_offsets(g, rp, tc, y_.data_ptr<int32_t>(), x_.data_ptr<int32_t>(), slot);
  std::vector<int64_t> cut = make_cuts(g, rp, tc);
  std::vector<int64_t> start, src, len, dst;
  make_runs(g, start, src, len, dst);
  g.nruns = static_cast<int64_t>(src.size());
  return serialize(g, {ry, rx, qx0, qx1, make_plane_map(g, ry, rx), off, cut, start, src, len, dst});
}

// One padded row of a phase plane: zeros, input columns qx*SW + first (SW: the phase stride,
// a compile-time 1 or 2 so that the copy vectorizes; 0 means the runtime stride sw), zeros.
template <int SW>
inline void pack_row(float* __restrict dst, const float* __restrict src, int64_t first, int64_t sw, int64_t sW,
                     int64_t c0, int64_t c1, int64_t Wq) {
  for (int64_t qx = 0; qx < c0; ++qx) dst[qx] = 0.f;
  if (SW > 0 && sW == 1) {
    for (int64_t qx = c0; qx < c1; ++qx) dst[qx] = src[qx * SW + first];
  } else {
    for (int64_t qx = c0; qx < c1; ++qx) dst[qx] = src[(qx * sw + first) * sW];
  }
  for (int64_t qx = c1; qx < Wq; ++qx) dst[qx] = 0.f;
}

// Small planes: every buffer position through the plane map (one gather each, no per-row cost).
void pack_small(const float* xp, const Plan& g, float* buf) {
  if (g.Pq == 1 && g.pmap[0] == 0) {  // 1x1 images without padding (a Linear layer): a transpose
    at::parallel_for(0, ceil_div(g.C, 64), 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = 0; n < g.N; ++n)
        for (int64_t c = begin * 64; c < std::min(g.C, end * 64); ++c) buf[c * g.CS + n] = xp[n * g.C + c];
    });
    return;
  }
  const int64_t plane = g.H * g.W;
  at::parallel_for(0, g.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c)
      for (int64_t n = 0; n < g.N; ++n) {
        const float* __restrict src = xp + (n * g.C + c) * plane;
        for (int64_t s = 0; s < g.nph; ++s) {
          float* __restrict dst = buf + c * g.CS + s * g.PS + n * g.Pq;
          const int64_t* __restrict m = g.pmap + s * g.Pq;
          for (int64_t j = 0; j < g.Pq; ++j) dst[j] = m[j] >= 0 ? src[m[j]] : 0.f;
        }
      }
  });
}

// Copy x (contiguous) into the padded phase-split buffer. Each input plane (c, n) is read once
// (it stays in L1) and written to all its phases; every plane position is written.
void pack(const at::Tensor& x, const Plan& g, float* buf) {
  const float* xp = x.data_ptr<float>();
  if (small_planes(g)) return pack_small(xp, g, buf);
  const int64_t sN = x.stride(0), sC = x.stride(1), sH = x.stride(2), sW = x.stride(3);
  at::parallel_for(0, g.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c)
      for (int64_t n = 0; n < g.N; ++n)
        for (int64_t s = 0; s < g.nph; ++s) {
          float* plane = buf + c * g.CS + s * g.PS + n * g.Pq;
          const int64_t first = g.rx[s] - g.pl;
          for (int64_t qy = 0; qy < g.Hq; ++qy) {
            float* dst = plane + qy * g.Wq;
            const int64_t iy = qy * g.sh + g.ry[s] - g.pt;
            if (iy < 0 || iy >= g.H) {
              for (int64_t qx = 0; qx < g.Wq; ++qx) dst[qx] = 0.f;
              continue;
            }
            const float* src = xp + n * sN + c * sC + iy * sH;
            if (g.sw == 1) pack_row<1>(dst, src, first, 1, sW, g.qx0[s], g.qx1[s], g.Wq);
            else if (g.sw == 2) pack_row<2>(dst, src, first, 2, sW, g.qx0[s], g.qx1[s], g.Wq);
            else pack_row<0>(dst, src, first, g.sw, sW, g.qx0[s], g.qx1[s], g.Wq);
          }
        }
  });
}

// acc += sum over taps k in [k0, k1) of val[k] * in[off[k] .. off[k] + R * VW). With few
// accumulators (R < 8) the FMA latency would serialize the taps, so U interleaved sets of
// accumulators take consecutive taps and are summed at the end.
template <int R>
inline void accumulate(vec* acc, const float* in, const int64_t* off, const float* val, int64_t k0, int64_t k1) {
  constexpr int U = R >= 8 ? 1 : (8 + R - 1) / R;
  vec more[U][R];
  for (int u = 0; u < U; ++u)
    for (int r = 0; r < R; ++r) more[u][r] = u == 0 ? acc[r] : vec{};
  int64_t k = k0;
  for (; k + U <= k1; k += U)
    for (int u = 0; u < U; ++u) {
      const float* p = in + off[k + u];
      const float w = val[k + u];
      for (int r = 0; r < R; ++r) more[u][r] += w * loadu(p + r * VW);
    }
  for (; k < k1; ++k) {
    const float* p = in + off[k];
    const float w = val[k];
    for (int r = 0; r < R; ++r) more[0][r] += w * loadu(p + r * VW);
  }
  for (int r = 0; r < R; ++r) {
    vec sum = more[0][r];
    for (int u = 1; u < U; ++u) sum += more[u][r];
    acc[r] = sum;
  }
}

inline void scatter(const Plan& g, int64_t t, const float* tile, float* out_o) {
  for (int64_t j = g.run_start[t]; j < g.run_start[t + 1]; ++j) {
    const float* __restrict src = tile + g.run_src[j];
    float* __restrict dst = out_o + g.run_dst[j];
    for (int64_t i = 0; i < g.run_len[j]; ++i) dst[i] = src[i];
  }
}

// Work items: (tile, block of output channels), tiles outermost so that a thread reuses a
// tile's input for every output channel. Within a tile, channel blocks keep the input in L1;
// partial sums wait in a small per-thread buffer between blocks.
template <int R>
void compute(const Plan& g, const float* buf, const float* val, const float* bias, float* out) {
  const int64_t threads = at::get_num_threads();
  const int64_t splits = std::max<int64_t>(1, std::min<int64_t>(g.O, ceil_div(4 * threads, g.ntiles)));
  const int64_t ob = ceil_div(g.O, splits), nob = ceil_div(g.O, ob);
  at::parallel_for(0, g.ntiles * nob, 1, [&](int64_t begin, int64_t end) {
    std::vector<vec> partial(g.ncb > 1 ? ob * R : 0);
    alignas(64) float tile[R * VW];
    for (int64_t i = begin; i < end; ++i) {
      const int64_t t = i / nob, o0 = (i % nob) * ob, o1 = std::min(g.O, o0 + ob);
      const float* in = buf + t * g.T;
      for (int64_t b = 0; b < g.ncb; ++b)
        for (int64_t o = o0; o < o1; ++o) {
          vec acc[R];
          vec* part = g.ncb > 1 ? partial.data() + (o - o0) * R : nullptr;
          for (int r = 0; r < R; ++r) acc[r] = b == 0 ? vec{} : part[r];
          accumulate<R>(acc, in, g.off, val, g.cut[o * (g.ncb + 1) + b], g.cut[o * (g.ncb + 1) + b + 1]);
          if (b + 1 < g.ncb) {
            for (int r = 0; r < R; ++r) part[r] = acc[r];
            continue;
          }
          const float bo = bias ? bias[o] : 0.f;
          for (int r = 0; r < R; ++r) {
            const vec v = acc[r] + bo;
            std::memcpy(tile + r * VW, &v, sizeof(vec));
          }
          scatter(g, t, tile, out + o * g.Ho * g.Wo);
        }
    }
  });
}

// Large outputs are recycled: PyTorch's CPU allocator returns big blocks to the OS, which then
// zero-fills a fresh tensor page by page on first touch (on a 2-core VM, 55 ms for a 67 MB
// output, a quarter of a ResNet-18 layer1 convolution at batch 256). A buffer returns to the
// pool only when its storage is freed (the tensor and every view of it are gone), so reuse is
// safe; the pool keeps at most POOL_BYTES of free buffers (empty_cache() frees them).
constexpr size_t POOL_BYTES = size_t(512) << 20;
constexpr size_t POOL_MIN_BYTES = size_t(1) << 20;  // smaller blocks: malloc's own free lists reuse them

struct Pool {
  std::mutex lock;
  std::multimap<size_t, void*> free;
  size_t held = 0;
};

Pool& pool() {
  static Pool* p = new Pool;  // never destroyed: buffers may be released during interpreter exit
  return *p;
}

void release(void* ptr, size_t bytes) {
  Pool& p = pool();
  {
    std::lock_guard<std::mutex> guard(p.lock);
    if (p.held + bytes <= POOL_BYTES) {
      p.free.emplace(bytes, ptr);
      p.held += bytes;
      return;
    }
  }
  std::free(ptr);
}

at::Tensor output_tensor(at::IntArrayRef sizes, const at::TensorOptions& options) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  const size_t bytes = ((static_cast<size_t>(n) * sizeof(float) + 63) / 64) * 64;
  if (bytes < POOL_MIN_BYTES) return at::empty(sizes, options);
  void* ptr = nullptr;
  {
    Pool& p = pool();
    std::lock_guard<std::mutex> guard(p.lock);
    auto it = p.free.find(bytes);
    if (it != p.free.end()) {
      ptr = it->second;
      p.free.erase(it);
      p.held -= bytes;
    }
  }
  if (ptr == nullptr) ptr = std::aligned_alloc(64, bytes);
  TORCH_CHECK(ptr != nullptr, "binprune_sparse: out of memory");
  return at::from_blob(ptr, sizes, [bytes](void* q) { release(q, bytes); }, options);
}

// The packed input is reused between calls (per calling thread), for the same reason.
std::vector<float>& workspace() {
  thread_local std::vector<float> buf;
  return buf;
}

// Frees the pool's free buffers and the calling thread's workspace.
void empty_cache() {
  {
    Pool& p = pool();
    std::lock_guard<std::mutex> guard(p.lock);
    for (auto& entry : p.free) std::free(entry.second);
    p.free.clear();
    p.held = 0;
  }
  std::vector<float>().swap(workspace());
}

at::Tensor run(const at::Tensor& x_in, const at::Tensor& plan_t, const at::Tensor& values,
               const c10::optional<at::Tensor>& bias) {
  const Plan g = deserialize(plan_t);
  const at::Tensor x = x_in.contiguous();  // a copy only for unusual layouts (e.g. channels-last)
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.device().is_cpu(),
              "binprune_sparse.run: expected a float32 CPU tensor (N, C, H, W)");
  TORCH_CHECK(x.size(0) == g.N && x.size(1) == g.C && x.size(2) == g.H && x.size(3) == g.W,
              "binprune_sparse.run: the input's shape is not the plan's");
  TORCH_CHECK(values.scalar_type() == at::kFloat && values.numel() == g.nnz, "binprune_sparse.run: values");
  TORCH_CHECK(!bias.has_value() || (bias->scalar_type() == at::kFloat && bias->numel() == g.O),
              "binprune_sparse.run: bias must be float32 with one value per output channel");
  at::Tensor out = output_tensor({g.N, g.O, g.Ho, g.Wo}, x.options());
  if (g.N == 0) return out;
  std::vector<float>& ws = workspace();
  if (ws.size() < static_cast<size_t>(g.C * g.CS)) ws.resize(g.C * g.CS);
  pack(x, g, ws.data());
  const at::Tensor vals = values.contiguous();
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  const float* vp = vals.data_ptr<float>();
  float* op = out.data_ptr<float>();
  switch (g.R) {
    case 1: compute<1>(g, ws.data(), vp, bp, op); break;
    case 2: compute<2>(g, ws.data(), vp, bp, op); break;
    case 3: compute<3>(g, ws.data(), vp, bp, op); break;
    case 4: compute<4>(g, ws.data(), vp, bp, op); break;
    case 6: compute<6>(g, ws.data(), vp, bp, op); break;
    case 8: compute<8>(g, ws.data(), vp, bp, op); break;
#if defined(__AVX512F__)
    case 12: compute<12>(g, ws.data(), vp, bp, op); break;
    case 16: compute<16>(g, ws.data(), vp, bp, op); break;
#endif
    default: TORCH_CHECK(false, "binprune_sparse: unexpected tile width");
  }
  return out;
}

at::Tensor conv2d(const at::Tensor& x, const at::Tensor& rowptr, const at::Tensor& tap_c, const at::Tensor& tap_ky,
                  const at::Tensor& tap_kx, const at::Tensor& values, const c10::optional<at::Tensor>& bias,
                  at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(x.dim() == 4, "binprune_sparse.conv2d: expected an input (N, C, H, W)");
  return run(x, plan(rowptr, tap_c, tap_ky, tap_kx, x.sizes(), kernel, stride, padding, dilation), values, bias);
}

}  // namespace

// The op namespace can be changed at build time (-DBINPRUNE_SPARSE_NS=...) to load two variants
// side by side when comparing them; binprune itself always uses binprune_sparse.
#ifndef BINPRUNE_SPARSE_NS
#define BINPRUNE_SPARSE_NS binprune_sparse
#endif

TORCH_LIBRARY(BINPRUNE_SPARSE_NS, m) {
  m.def("plan(Tensor rowptr, Tensor tap_c, Tensor tap_ky, Tensor tap_kx, int[] input, int[] kernel, int[] stride, "
        "int[] padding, int[] dilation) -> Tensor");
  m.def("run(Tensor x, Tensor plan, Tensor values, Tensor? bias) -> Tensor");
  m.def("conv2d(Tensor x, Tensor rowptr, Tensor tap_c, Tensor tap_ky, Tensor tap_kx, Tensor values, "
        "Tensor? bias, int[] kernel, int[] stride, int[] padding, int[] dilation) -> Tensor");
  m.def("empty_cache() -> ()", &empty_cache);
}

TORCH_LIBRARY_IMPL(BINPRUNE_SPARSE_NS, CPU, m) {
  m.impl("plan", &plan);
  m.impl("run", &run);
  m.impl("conv2d", &conv2d);
}
