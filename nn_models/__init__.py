"""Plain PyTorch/NumPy models, training, tuning, registry and serving (no Dagster)."""

import os

# On small shared CPUs, OpenMP threads that spin while waiting made small models and
# scikit-learn's k-means 6–8× slower; passive waiting must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
