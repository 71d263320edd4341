"""makewatch's watcher: Make API client, simulator, pollers and state."""

__version__ = "0.1.0"
