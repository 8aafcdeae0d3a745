"""corel-serve: bundles behind NVIDIA Triton Inference Server.  ``tensors.py`` declares the served
interface for both the server and the ``--server`` client and imports no engine."""
