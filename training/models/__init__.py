"""Every annotation method; importing this package registers them."""
from . import attention, cnn, gcn, recurrent  # noqa: F401
