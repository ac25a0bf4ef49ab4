"""enl_torch: ENL and NonLocal for PyTorch (under construction)."""
