"""faustgen: compile ONNX neural networks to small, dependency-free C."""

__version__ = "0.1.0"
