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
// Layout of the buffer: [C][phase][N * Hq * Wq + slack]; a position q = n*Pq + y*Wq + x
// (Pq = Hq*Wq) is the output pixel (n, y, x) when y < Ho and x < Wo; other positions are
// computed and discarded. The op is registered with the dispatcher (torch.ops.binprune_sparse)
// so that the library needs only ATen headers (fast to compile) and no Python binding.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>
#include <chrono>
#include <cstdio>
#include <cstdlib>
static double PROF[8]; static long PROFN;
static inline double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
struct ProfPrint{~ProfPrint(){ if(getenv("SPPROF")) fprintf(stderr, "calls %ld setup %.1f pack %.1f prep %.1f compute %.1f us/call\n", PROFN, PROF[0]/PROFN*1e6, PROF[1]/PROFN*1e6, PROF[2]/PROFN*1e6, PROF[3]/PROFN*1e6);}} PP;

namespace {

#if defined(__AVX512F__)
constexpr int64_t VW = 16;  // floats per vector register
constexpr int MAX_R = 16;   // accumulator registers per tile (32 zmm available)
#else
constexpr int64_t VW = 8;
constexpr int MAX_R = 8;    // 16 ymm available
#endif
typedef float vec __attribute__((vector_size(VW * sizeof(float))));

inline vec loadu(const float* p) {
  vec v;
  std::memcpy(&v, p, sizeof(vec));
  return v;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Geometry {
  int64_t N, C, H, W, O, KH, KW, sh, sw, pt, pl, pb, pr, dh, dw;
  int64_t Ho, Wo, Hq, Wq, Pq, L, R, T, ntiles, PS, CS, nph;
  std::vector<int64_t> slot;  // phase (ry * sw + rx) -> slot in the buffer, or -1 if unused
  std::vector<int64_t> ry, rx;  // per slot
};

Geometry make_geometry(const at::Tensor& x, int64_t O, at::IntArrayRef kernel, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation) {
  Geometry g;
  g.N = x.size(0); g.C = x.size(1); g.H = x.size(2); g.W = x.size(3); g.O = O;
  g.KH = kernel[0]; g.KW = kernel[1]; g.sh = stride[0]; g.sw = stride[1];
  g.pt = padding[0]; g.pb = padding[1]; g.pl = padding[2]; g.pr = padding[3];
  g.dh = dilation[0]; g.dw = dilation[1];
  const int64_t Hp = g.H + g.pt + g.pb, Wp = g.W + g.pl + g.pr;
  g.Ho = (Hp - g.dh * (g.KH - 1) - 1) / g.sh + 1;
  g.Wo = (Wp - g.dw * (g.KW - 1) - 1) / g.sw + 1;
  TORCH_CHECK(g.Ho > 0 && g.Wo > 0, "binprune_sparse: input too small for the kernel");
  g.Hq = ceil_div(Hp, g.sh);
  g.Wq = ceil_div(Wp, g.sw);
  g.Pq = g.Hq * g.Wq;
  g.L = g.N * g.Pq;
  g.slot.assign(g.sh * g.sw, -1);
  for (int64_t ky = 0; ky < g.KH; ++ky)
    for (int64_t kx = 0; kx < g.KW; ++kx) {
      const int64_t p = ((ky * g.dh) % g.sh) * g.sw + (kx * g.dw) % g.sw;
      if (g.slot[p] < 0) {
        g.slot[p] = static_cast<int64_t>(g.ry.size());
        g.ry.push_back(p / g.sw);
        g.rx.push_back(p % g.sw);
      }
    }
  g.nph = static_cast<int64_t>(g.ry.size());
  // Tile: R vectors of accumulators; the smallest power of two covering the positions, capped.
  const int64_t need = ceil_div(g.L, VW);
  g.R = 1;
  while (g.R < need && g.R < MAX_R) g.R *= 2;
  g.T = g.R * VW;
  g.ntiles = ceil_div(g.L, g.T);
  const int64_t max_shift = ((g.KH - 1) * g.dh / g.sh) * g.Wq + (g.KW - 1) * g.dw / g.sw;
  g.PS = ceil_div(g.ntiles * g.T + max_shift, VW) * VW;  // slack: the last tile's reach
  g.CS = g.nph * g.PS;
  return g;
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

// Copy x (any strides) into the padded phase-split buffer; every element is written once. Each
// input plane (c, n) is read once (it stays in L1) and written to all its phases.
void pack(const at::Tensor& x, const Geometry& g, float* buf) {
  const float* xp = x.data_ptr<float>();
  const int64_t sN = x.stride(0), sC = x.stride(1), sH = x.stride(2), sW = x.stride(3);
  // per phase: the columns qx whose input column ix = qx*sw + rx - pl lies in [0, W)
  std::vector<int64_t> qx0(g.nph), qx1(g.nph);
  for (int64_t s = 0; s < g.nph; ++s) {
    const int64_t rx = g.rx[s];
    qx0[s] = std::min(g.Wq, g.pl > rx ? ceil_div(g.pl - rx, g.sw) : int64_t(0));
    qx1[s] = std::max(qx0[s], std::min(g.Wq, g.W + g.pl > rx ? ceil_div(g.W + g.pl - rx, g.sw) : int64_t(0)));
  }
  at::parallel_for(0, g.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      for (int64_t n = 0; n < g.N; ++n) {
        for (int64_t s = 0; s < g.nph; ++s) {
          float* plane = buf + c * g.CS + s * g.PS + n * g.Pq;
          const int64_t ry = g.ry[s], first = g.rx[s] - g.pl;
          for (int64_t qy = 0; qy < g.Hq; ++qy) {
            float* dst = plane + qy * g.Wq;
            const int64_t iy = qy * g.sh + ry - g.pt;
            if (iy < 0 || iy >= g.H) {
              for (int64_t qx = 0; qx < g.Wq; ++qx) dst[qx] = 0.f;
              continue;
            }
            const float* src = xp + n * sN + c * sC + iy * sH;
            if (g.sw == 1) pack_row<1>(dst, src, first, 1, sW, qx0[s], qx1[s], g.Wq);
            else if (g.sw == 2) pack_row<2>(dst, src, first, 2, sW, qx0[s], qx1[s], g.Wq);
            else pack_row<0>(dst, src, first, g.sw, sW, qx0[s], qx1[s], g.Wq);
          }
        }
      }
      for (int64_t s = 0; s < g.nph; ++s) {
        float* base = buf + c * g.CS + s * g.PS;
        for (int64_t q = g.L; q < g.PS; ++q) base[q] = 0.f;
      }
    }
  });
}

// Where each tile's valid positions go: runs (position in tile, offset in the output of channel 0,
// length). The same for every output channel, so computed once per call.
struct Runs {
  std::vector<int64_t> start;      // per tile: first run, ntiles + 1 entries
  std::vector<int32_t> src, len;   // per run
  std::vector<int64_t> dst;        // per run: offset in out for output channel 0
};

Runs make_runs(const Geometry& g) {
  Runs runs;
  runs.start.reserve(g.ntiles + 1);
  for (int64_t t = 0; t < g.ntiles; ++t) {
    runs.start.push_back(static_cast<int64_t>(runs.src.size()));
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
        runs.src.push_back(static_cast<int32_t>(q - q0));
        runs.len.push_back(static_cast<int32_t>(run));
        runs.dst.push_back((n * g.O * g.Ho + y) * g.Wo + x);
        q += run;
      }
    }
  }
  runs.start.push_back(static_cast<int64_t>(runs.src.size()));
  return runs;
}

inline void scatter(const Runs& runs, int64_t t, const float* tile, float* out_o) {
  for (int64_t j = runs.start[t]; j < runs.start[t + 1]; ++j) {
    const float* src = tile + runs.src[j];
    float* dst = out_o + runs.dst[j];
    for (int32_t i = 0; i < runs.len[j]; ++i) dst[i] = src[i];
  }
}

// Input channels are processed in blocks whose tile input fits in L1 (~20 KB); the partial sums of
// a block of output channels live in a small per-thread buffer between channel blocks.
constexpr int64_t L1_BYTES = 20 * 1024;
constexpr int64_t MIN_TAPS_PER_BLOCK = 16;

// acc += sum over taps k in [k0, k1) of val[k] * in[off[k] .. off[k] + R * VW). With few
// accumulators (R < 8) the FMA latency would serialize the taps, so U interleaved sets of
// accumulators take consecutive taps and are summed at the end.
template <int R>
inline void accumulate(vec* acc, const float* in, const int64_t* off, const float* val, int64_t k0, int64_t k1) {
  constexpr int U = R >= 8 ? 1 : 8 / R;
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

template <int R>
void compute(const Geometry& g, const Runs& runs, const float* buf, const int64_t* cut, int64_t ncb,
             const int64_t* off, const float* val, const float* bias, float* out) {
  // Work items: (tile, block of output channels). Tiles outermost, so one thread reuses a tile's
  // input for every output channel.
  const int64_t threads = at::get_num_threads();
  const int64_t splits = std::max<int64_t>(1, std::min<int64_t>(g.O, ceil_div(4 * threads, g.ntiles)));
  const int64_t ob = ceil_div(g.O, splits), nob = ceil_div(g.O, ob);
  at::parallel_for(0, g.ntiles * nob, 1, [&](int64_t begin, int64_t end) {
    std::vector<vec> partial(ncb > 1 ? ob * R : 0);
    alignas(64) float tile[R * VW];
    for (int64_t i = begin; i < end; ++i) {
      const int64_t t = i / nob, o0 = (i % nob) * ob, o1 = std::min(g.O, o0 + ob);
      const int64_t q0 = t * g.T;
      const float* in = buf + q0;
      for (int64_t cb = 0; cb < ncb; ++cb) {
        for (int64_t o = o0; o < o1; ++o) {
          vec acc[R];
          vec* part = ncb > 1 ? partial.data() + (o - o0) * R : nullptr;
          for (int r = 0; r < R; ++r) acc[r] = cb == 0 ? vec{} : part[r];
          accumulate<R>(acc, in, off, val, cut[o * (ncb + 1) + cb], cut[o * (ncb + 1) + cb + 1]);
          if (cb + 1 < ncb) {
            for (int r = 0; r < R; ++r) part[r] = acc[r];
            continue;
          }
          const float b = bias ? bias[o] : 0.f;
          for (int r = 0; r < R; ++r) {
            const vec v = acc[r] + b;
            std::memcpy(tile + r * VW, &v, sizeof(vec));
          }
          scatter(runs, t, tile, out + o * g.Ho * g.Wo);
        }
      }
    }
  });
}

// The buffer is reused between calls (per thread): a fresh allocation of tens of MB would be
// zero-filled by the OS page by page on every call.
std::vector<float>& workspace() {
  thread_local std::vector<float> buf;
  return buf;
}

at::Tensor conv2d(const at::Tensor& x_in, const at::Tensor& rowptr, const at::Tensor& tap_c,
                  const at::Tensor& tap_ky, const at::Tensor& tap_kx, const at::Tensor& values,
                  const c10::optional<at::Tensor>& bias, at::IntArrayRef kernel, at::IntArrayRef stride,
                  at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(x_in.dim() == 4 && x_in.scalar_type() == at::kFloat && x_in.device().is_cpu(),
              "binprune_sparse.conv2d: expected a float32 CPU tensor (N, C, H, W)");
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && padding.size() == 4 && dilation.size() == 2,
              "binprune_sparse.conv2d: kernel, stride, dilation take 2 values, padding 4 (top, bottom, left, right)");
  const int64_t O = rowptr.numel() - 1;
  const int64_t nnz = values.numel();
  TORCH_CHECK(tap_c.numel() == nnz && tap_ky.numel() == nnz && tap_kx.numel() == nnz,
              "binprune_sparse.conv2d: tap arrays differ in length");
  double t0 = now(); PROFN++;
  const at::Tensor x = x_in;  // any strides: pack reads them
  Geometry g = make_geometry(x, O, kernel, stride, padding, dilation);
  at::Tensor out = at::empty({g.N, O, g.Ho, g.Wo}, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (g.N == 0) return out;

  TORCH_CHECK(rowptr.scalar_type() == at::kLong && tap_c.scalar_type() == at::kInt && tap_ky.scalar_type() == at::kInt &&
              tap_kx.scalar_type() == at::kInt && values.scalar_type() == at::kFloat,
              "binprune_sparse.conv2d: rowptr is int64, taps int32, values float32");
  TORCH_CHECK(!bias.has_value() || (bias->scalar_type() == at::kFloat && bias->numel() == O),
              "binprune_sparse.conv2d: bias must be float32 with one value per output channel");
  const at::Tensor rp_ = rowptr.contiguous();
  const int64_t* rp = rp_.data_ptr<int64_t>();
  TORCH_CHECK(rp[0] == 0 && rp[O] == nnz, "binprune_sparse.conv2d: rowptr does not match the taps");
  const at::Tensor c_ = tap_c.contiguous(), ky_ = tap_ky.contiguous(), kx_ = tap_kx.contiguous();
  const int32_t* tc = c_.data_ptr<int32_t>();
  const int32_t* ty = ky_.data_ptr<int32_t>();
  const int32_t* tx = kx_.data_ptr<int32_t>();
  for (int64_t o = 0; o < O; ++o) {  // taps sorted by input channel within each output channel
    TORCH_CHECK(rp[o] <= rp[o + 1], "binprune_sparse.conv2d: rowptr must be non-decreasing");
    for (int64_t k = rp[o] + 1; k < rp[o + 1]; ++k)
      TORCH_CHECK(tc[k - 1] <= tc[k], "binprune_sparse.conv2d: taps must be sorted by input channel");
  }
  // offset of each kernel position in the buffer (phase slot, row and column shift), then per tap
  std::vector<int64_t> shift(g.KH * g.KW);
  for (int64_t ky = 0; ky < g.KH; ++ky)
    for (int64_t kx = 0; kx < g.KW; ++kx) {
      const int64_t a = ky * g.dh, b = kx * g.dw;
      shift[ky * g.KW + kx] = g.slot[(a % g.sh) * g.sw + b % g.sw] * g.PS + (a / g.sh) * g.Wq + b / g.sw;
    }
  std::vector<int64_t> off(nnz);
  for (int64_t k = 0; k < nnz; ++k) {
    TORCH_CHECK(tc[k] >= 0 && tc[k] < g.C && ty[k] >= 0 && ty[k] < g.KH && tx[k] >= 0 && tx[k] < g.KW,
                "binprune_sparse.conv2d: tap out of range");
    off[k] = tc[k] * g.CS + shift[ty[k] * g.KW + tx[k]];
  }
  std::vector<float>& ws = workspace();
  const size_t need = static_cast<size_t>(g.C * g.CS);
  if (ws.size() < need) ws.resize(need);
  double t1 = now(); PROF[0] += t1 - t0;
  pack(x, g, ws.data());
  double t2 = now(); PROF[1] += t2 - t1;

  // channel blocks: taps of each output channel are sorted by input channel (the CSR order), so
  // cut[o][cb] is where block cb starts among the taps of o
  // Blocks only pay when each output channel has enough taps per block to amortize reloading its
  // partial sums (R vectors in, R out).
  const int64_t cb_fit = std::max<int64_t>(1, L1_BYTES / (g.nph * (g.T + g.PS - g.ntiles * g.T) * 4));
  const int64_t ncb_fit = ceil_div(g.C, cb_fit);
  const int64_t ncb_max = std::max<int64_t>(1, nnz / (std::max<int64_t>(O, 1) * MIN_TAPS_PER_BLOCK));
  int64_t ncb = std::min(ncb_fit, ncb_max);
  const int64_t cb_size = ceil_div(g.C, ncb);
  ncb = ceil_div(g.C, cb_size);
  std::vector<int64_t> cut(O * (ncb + 1));
  for (int64_t o = 0; o < O; ++o) {
    int64_t k = rp[o];
    for (int64_t cb = 0; cb < ncb; ++cb) {
      while (k < rp[o + 1] && tc[k] < cb * cb_size) ++k;
      cut[o * (ncb + 1) + cb] = k;
    }
    cut[o * (ncb + 1) + ncb] = rp[o + 1];
  }
  const Runs runs = make_runs(g);
  const at::Tensor vals = values.contiguous();
  const at::Tensor bias_c = bias.has_value() ? bias->contiguous() : at::Tensor();
  const float* bp = bias_c.defined() ? bias_c.data_ptr<float>() : nullptr;
  const float* vp = vals.data_ptr<float>();
  float* op = out.data_ptr<float>();
  double t3 = now(); PROF[2] += t3 - t2;
  switch (g.R) {
    case 1: compute<1>(g, runs, ws.data(), cut.data(), ncb, off.data(), vp, bp, op); break;
    case 2: compute<2>(g, runs, ws.data(), cut.data(), ncb, off.data(), vp, bp, op); break;
    case 4: compute<4>(g, runs, ws.data(), cut.data(), ncb, off.data(), vp, bp, op); break;
    case 8: compute<8>(g, runs, ws.data(), cut.data(), ncb, off.data(), vp, bp, op); break;
#if defined(__AVX512F__)
    case 16: compute<16>(g, runs, ws.data(), cut.data(), ncb, off.data(), vp, bp, op); break;
#endif
    default: TORCH_CHECK(false, "binprune_sparse: unexpected tile size");
  }
  PROF[3] += now() - t3;
  return out;
}

}  // namespace

TORCH_LIBRARY(binprune_sparse, m) {
  m.def("conv2d(Tensor x, Tensor rowptr, Tensor tap_c, Tensor tap_ky, Tensor tap_kx, Tensor values, "
        "Tensor? bias, int[] kernel, int[] stride, int[] padding, int[] dilation) -> Tensor");
}

TORCH_LIBRARY_IMPL(binprune_sparse, CPU, m) { m.impl("conv2d", &conv2d); }
