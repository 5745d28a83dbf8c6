"""Datasets: acquire the raw images (``acquire``), then subset and corrupt them (``corrupt``)."""
