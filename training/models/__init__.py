"""The model classes, one module per family; ``training/factory.py`` maps method names to them."""
