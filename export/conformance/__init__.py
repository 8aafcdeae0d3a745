"""The conformance kit: small bundles built from known ONNX graphs, photos for each pixel rule, and
expected records from PyTorch and brute-force search (``corel-export conformance DIR``)."""
