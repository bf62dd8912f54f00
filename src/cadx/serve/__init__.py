"""The reading room (``cadx serve``): a worklist and viewer in the browser over trained runs, reader feedback,
background predictions through the one prediction path. The top layer beside the CLI; nothing below imports it."""

from cadx.serve.app import create_app
from cadx.serve.settings import ServeSettings, check_settings

__all__ = ["ServeSettings", "check_settings", "create_app"]
