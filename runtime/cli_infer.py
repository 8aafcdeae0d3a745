"""``python -m corel_annotate.runtime.cli_infer``: the same as ``corel-infer``."""
from .cli import infer_app

if __name__ == "__main__":
    infer_app()
