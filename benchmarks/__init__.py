"""ragtune benchmarks: speed and quality as ratios against baselines measured in the same run."""
