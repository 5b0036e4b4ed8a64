"""The ``gpupool`` command line (Typer + Rich)."""
