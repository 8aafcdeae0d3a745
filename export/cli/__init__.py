"""The export console scripts, one module each: corel-export (``export``), corel-memory (``memory``)."""
