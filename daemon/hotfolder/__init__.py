"""hotfolder: a hot-folder service for image processing."""

__version__ = "0.1.0"
