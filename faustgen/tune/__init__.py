"""The numeric side: the numpy interpreter, onnxruntime as reference, calibration errors,
factor fine-tuning (PyTorch) and side-by-side latency measurement."""
