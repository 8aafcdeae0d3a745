"""``python -m corel_annotate.runtime.cli_eval``: the same as ``corel-eval``."""
from .cli import eval_app

if __name__ == "__main__":
    eval_app()
