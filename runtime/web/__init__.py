"""The browser runtime (the page and its JavaScript, onnxruntime-web under ``vendor/``) and ``server.py``,
the local server ``corel-web`` runs."""
