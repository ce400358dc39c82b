"""The multi-store tier's central side: the broker's messages from every hub into PostgreSQL (README.md here).

``config`` (central.toml), ``schema`` (PostgreSQL migrations), ``mqtt`` (paho on asyncio, acknowledging by hand),
``store`` (one batch in one transaction), ``consumer`` (the loop: batch, commit, acknowledge), ``check`` (is every
store complete and consistent), ``cli`` (``smartshelf central run | migrate | check``). PostgreSQL's driver
(asyncpg, the ``central`` extra) is imported only when a command needs it.
"""
