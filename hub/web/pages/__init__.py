"""The staff pages, one module per area (its SQL in the area's ``*_queries`` module, or ``metrics`` for reports)."""
