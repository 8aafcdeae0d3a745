"""Every annotation method; importing this package registers them."""
from . import cnn, gcn, recurrent, attention  # noqa: F401  (registration order: the CLI's order)
