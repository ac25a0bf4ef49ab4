"""enl_experiments: the embedded dataset, the main job, benchmarks and figures."""
