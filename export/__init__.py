"""Freezing trained delay SNNs into fixed-delay graphs, and exporting those to ONNX."""
