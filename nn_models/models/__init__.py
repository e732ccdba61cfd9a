"""PyTorch model classes, one module per model card (DESIGN §4)."""
