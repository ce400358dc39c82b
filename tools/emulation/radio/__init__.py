"""The emulated radio (host side, CPython only): the air that emulated nodes and the hub's Bumble adapter share
(``air.py``), and the bridges that put emulated boards on it.
"""
