"""``make bench``: ENL's cost, measured (paper Sec. 4.3, Table 3).

Three sections, each in its own worker process, run one after another:

1. ``detectors``: the cost table (Table 3) for R50-FPN Faster / Mask R-CNN
   built by Model Garden: baseline, +1NL BU, +3ENL TD, +3NL TD. Parameters of
   the built models, FLOPs from TensorFlow's profiler and from
   ``enl_core.cost`` (compared on the block deltas), peak memory of one eval
   forward (:mod:`~enl_experiments.bench.detectors`).
2. ``torch`` / ``keras``: block scaling, ENL vs NonLocal (dot product,
   embedded Gaussian) vs SDPA / ``keras.ops.dot_product_attention``, N =
   1,024..65,536, forward and forward+backward; median time, peak memory, and
   ENL's GFLOP/s as a fraction of the same run's sgemm throughput
   (:mod:`~enl_experiments.bench.scaling`).
3. The targets, checked (:mod:`~enl_experiments.bench.targets`),
   into ``results/bench/report.md``.

Example:
    ``python -m enl_experiments.bench`` (default, ~25 min on 2 cores) or
    ``BENCH_QUICK=1 python -m enl_experiments.bench`` (a few minutes).
"""
