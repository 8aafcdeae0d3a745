"""The torch-free runtime: runs a bundle from its manifest alone (numpy + pillow + onnxruntime or OpenVINO).

Its rooms, each importing only those listed after it (``tests/test_layout.py`` holds the rule):

* ``cli/``: one module per console script (corel-infer, corel-eval, corel-serve, corel-web);
* ``jobs/``: one ``Job`` for ``corel-infer``, run locally, on a Triton server or on Ray, and its records;
* ``serve/`` (Triton: the tensor interface both sides read, the model, the server) and ``web/`` (the page);
* ``evaluation/``: metrics, threshold tuning, a bundle over a split;
* the engine core: ``annotator.py`` (the public API), ``search.py`` (greedy and beam label search),
  ``memory.py`` (the label memory's blend), ``scoring.py`` (scores to labels);
* ``photos.py``: the one path from a photo to a tensor or a one-line reason;
* ``engines/`` (onnxruntime, OpenVINO, TensorRT, the ``auto`` choice), ``preprocessing.py`` (pixels),
  ``dataset.py`` (the Corel layout);
* ``bundle/``: the contract (manifest, its schema and rules, the decoding, scoring and preprocessing
  configs, the run-time label map), importing no imaging library and no engine.
"""
