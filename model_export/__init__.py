"""PyTorch <-> ONNX <-> board weight-pack conversion."""
