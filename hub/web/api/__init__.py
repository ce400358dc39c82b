"""The HTTP API for POS / WMS clients (``views``: the blueprint); hub/web/README.md, *HTTP API*."""
