"""The engines that run a bundle's graphs: onnxruntime (CPU, CUDA, TensorRT providers), OpenVINO and
TensorRT engines, each behind the same ``run(outputs, feeds)`` interface, and the ``auto`` choice
between them (``choice.py``).  Importing this package loads no engine."""
