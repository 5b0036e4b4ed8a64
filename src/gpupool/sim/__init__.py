"""The trace simulator: loaders, the FGD-protocol and timed engines, metrics and plots."""
