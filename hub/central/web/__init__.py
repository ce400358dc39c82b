"""The central page and API (README.md here): every store's stock, alerts, shrink, reorders and last contact, read
from the central PostgreSQL store, on the hub's Flask stack with central's own roles and region scoping.

``app.create_central_app`` builds the Flask app; ``server.CentralWebServer`` serves it (``smartshelf central serve``).
Nothing is imported here: ``hub.central.schema`` composes this package's migration step (``schema``) without
loading Flask or the app.
"""
