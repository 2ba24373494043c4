"""Keyword-recognition HTTP service: FastAPI + uvicorn + onnxruntime.

Needs only the exported ONNX file and ``model.features``; it imports neither
torch nor ``training`` (``tests/test_service_layering.py`` checks it).
"""
