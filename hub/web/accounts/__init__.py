"""Who uses the store: staff accounts and sign-in (``users``, ``login``, ``users_admin``) and API clients
(``clients``, ``clients_admin``)."""
