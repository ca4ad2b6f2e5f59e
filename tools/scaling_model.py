#!/usr/bin/env python3
"""The latent-sharding cost model behind docs/scaling.md (issue 20, item 7): bytes moved per
training step, modelled step time on NVLink and InfiniBand, and memory per rank, for R ranks that
each hold a contiguous block of d_sae/R latents and see the same batch.

Every constant below is an ASSUMPTION named where it is set (vendor figures and the H200 ceilings
measured in PERF.md), not a measurement of a sharded run: no sharded run has happened yet. The
model does no overlap of communication with compute, so it is pessimistic where NCCL could run
beside the backward.

Usage: python3 tools/scaling_model.py [--markdown]
"""
import argparse
import math

GiB = 2**30
# Compute ceilings of one H100/H200 (PERF.md, measured on an H200 in run 5; an H100 has the same
# arithmetic rate and ~0.8x the bandwidth): tf32 GEMM and device copy.
GEMM_TF32 = 400e12          # flop/s
COPY_BW = 4.1e12            # byte/s, read+write counted once each
# Collective bandwidths (NCCL "bus bandwidth", the rate at which each GPU's link is busy):
NVLINK_BUS = 360e9          # byte/s, NVLink 4 within one 8-GPU node (NCCL all-reduce busbw, typical)
IB_BUS = 45e9               # byte/s, one 400 Gb/s NDR NIC per GPU across nodes
NVLINK_LAT = 15e-6          # s per collective step inside a node
IB_LAT = 40e-6              # s per collective step across nodes (grows with log2 R for trees)
GPUS_PER_NODE = 8
CARD_BYTES = {"H100 (80 GB)": 79.1 * GiB, "H200 (141 GB)": 139.0 * GiB}


def step_model(d_in, d_sae, R, B=4096, k=64, dead_frac=0.05, bytes_per_param=16):
    """One step's bytes and time on one rank of R. Returns a dict."""
    local = math.ceil(d_sae / R)                 # latents on the largest rank (R need not divide d_sae)
    params = 2 * d_in * local + local + d_in     # W_enc[:, block], W_dec[block, :], b_enc[block], b_dec
    k_aux = min(d_in // 2, int(d_sae * dead_frac))
    # -- compute on one rank --
    t_gemm = 2 * B * d_in * local / GEMM_TF32    # the one dense GEMM: u @ W_enc[:, block]
    t_adam = 28 * params / COPY_BW               # read p, g, m, v; write p, m, v (fp32)
    t_h = 2 * 4 * B * local / COPY_BW            # write and read h (pre-activations) once
    compute = t_gemm + t_adam + t_h
    # -- collectives (ring algorithms; payload S, each rank moves ~ factor * S) --
    recon = 4 * B * d_in                         # fp32 partial reconstruction [B, d_in]
    cand = 8 * B * k                             # (value fp32, index int32) top-k candidates [B, k]
    # AuxK over the dead latents of all ranks: candidates by a distributed radix select (4 passes of
    # 8-bit digits, an all-reduce of a [B, 256] int32 histogram each) so the bytes do not grow with R
    # or k_aux, then the partial AuxK reconstruction [B, d_in] is all-reduced like the main one.
    hist = 4 * B * 256
    if R == 1:
        moved = 0.0
        t_comm = 0.0
    else:
        bus = NVLINK_BUS if R <= GPUS_PER_NODE else IB_BUS
        lat = NVLINK_LAT if R <= GPUS_PER_NODE else IB_LAT
        f_ar = 2 * (R - 1) / R                   # all-reduce
        f_ag = (R - 1)                           # all-gather: each rank receives R-1 blocks of `cand`
        # main top-k: gather candidates while R*k is small, else the radix-select histograms
        topk_bytes = min(f_ag * cand, 4 * f_ar * hist)
        aux_bytes = 4 * f_ar * hist + f_ar * recon
        moved = f_ar * recon + topk_bytes + aux_bytes + f_ar * 4 * (d_in + 8)  # + db_dec term, metrics
        n_coll = 2 + 4 + 4 + 2                   # recon, top-k (up to 4 passes), AuxK (4+1), norm/metrics
        t_comm = moved / bus + n_coll * lat * (1 + math.log2(R))
    mem = bytes_per_param * params + 4 * B * d_in * 4 + 4 * 1024 * local  # params etc + x/recon/grads + h chunk
    return dict(R=R, local=local, params=params, mem=mem, compute=compute, moved=moved, comm=t_comm,
                step=compute + t_comm, tokens_s=B / (compute + t_comm))


def largest_per_card(d_in, card_bytes, bytes_per_param, B=4096):
    """Largest d_sae whose one-rank plan fits card_bytes."""
    lo, hi = 1, 1 << 30
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if step_model(d_in, mid, 1, B=B, bytes_per_param=bytes_per_param)["mem"] <= card_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args()
    for d_sae, name in ((1 << 20, "2^20"), (1 << 24, "2^24")):
        print(f"\n### d_in 4096 x d_sae {name} ({d_sae:,} latents), k=64, B=4096, tf32, 5% dead\n")
        print("| R | latents/rank | memory/rank 16 B/param | 12 B/param | compute ms | MiB moved/rank | "
              "comm ms | step ms | efficiency |")
        print("|---|---|---|---|---|---|---|---|---|")
        base = step_model(4096, d_sae, 1)["step"]
        for R in (1, 2, 4, 8, 16, 32, 64):
            m16 = step_model(4096, d_sae, R)
            m12 = step_model(4096, d_sae, R, bytes_per_param=12)
            eff = base / (R * m16["step"])
            print(f"| {R} | {m16['local']:,} | {m16['mem'] / GiB:.1f} GiB | {m12['mem'] / GiB:.1f} GiB | "
                  f"{m16['compute'] * 1e3:.1f} | {m16['moved'] / 2**20:.0f} | {m16['comm'] * 1e3:.2f} | "
                  f"{m16['step'] * 1e3:.1f} | {eff * 100:.0f}% |")
    print("\n### Largest dictionary on one card, d_in 4096, batch 4096 (fp32 weights and Adam)\n")
    print("| card | 16 B/param (stored gradients) | 12 B/param (fused gradients: automatic where 16 does not fit) |")
    print("|---|---|---|")
    for card, cb in CARD_BYTES.items():
        a = largest_per_card(4096, cb, 16)
        b = largest_per_card(4096, cb, 12)
        print(f"| {card} | {a:,} latents ({a / 2**20:.2f} x 2^20) | {b:,} latents ({b / 2**20:.2f} x 2^20) |")


if __name__ == "__main__":
    main()
