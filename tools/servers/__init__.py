"""Real servers on loopback for the fleet tests and benchmarks: Mosquitto (``Broker``) and PostgreSQL
(``Postgres``), each in a private temporary directory, on free ports, as an unprivileged user when we are root."""
