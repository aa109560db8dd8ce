"""Benchmarks of ldm_np against PyTorch eager: run ``python benchmarks/run.py``."""
