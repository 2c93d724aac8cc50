"""Tri-Level E-ViT: golden model, integer reference, accelerator host and tools."""

__version__ = "0.1.0"
