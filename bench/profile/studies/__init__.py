"""The measurements behind docs/PERFORMANCE.md (``bench profile --study ...``), one module each.

- ``unet.unet_study``: what keeps the U-Net's training step below the fp32 matmul
  peak, and which settings raise it (variants measured paired with the peak);
- ``engine_overhead.engine_overhead_study``: K-client federated pretraining against the same
  number of optimiser steps on one client, with a cProfile breakdown;
- ``client_state.client_state_study``: how much state a client keeps (memory and disk)
  and what K clients need;
- ``unet_ab.unet_ab_study``: the recommended U-Net settings against the defaults,
  interleaved A/B;
- ``paired``: the timing paired with the matmul peak that the U-Net studies share.

A machine shared with other jobs makes wall-clock times drift; each
timing here is paired with a matmul timing taken right before it, so the
ratio compares the two under the same load, and both the paired and the
conventional ratio (median step vs best matmul of the run) are reported.
"""
