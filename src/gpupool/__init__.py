"""gpupool: pool the GPUs of a lab or a company and schedule everyone's work onto them fairly."""

__version__ = "0.1.0"
