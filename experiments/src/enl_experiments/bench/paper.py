"""The paper's Table 3 (Levi & Ullman, BMVC 2019, Sec. 4.3), as printed.

Evaluation mode, ResNet-50 backbone, maskrcnn-benchmark on COCO val, memory
measured on the GPU. The paper does not name the detector of this table; its
41.48 M parameters for the baseline match Faster R-CNN R50-FPN (81 classes),
and the "Gflops" column is compared with our multiply-adds (GMACs).
"""

TABLE_3 = {
    "baseline": {"gflops": 90.20, "memory_mb": 1350, "params_m": 41.48},
    "+1NL, BU": {"gflops": 106.92, "memory_mb": 1358, "params_m": 43.58},
    "+3ENL, TD": {"gflops": 93.87, "memory_mb": 1426, "params_m": 41.88},
    "+3NL, TD": {"gflops": 146.85, "memory_mb": 7476, "params_m": 41.88},
}
