"""How the status page is served: the HTTP server (hypercorn's protocol on our accept loops, in its own thread),
connection admission, the WSGI bridge to the Flask app, TLS, and the plain-HTTP redirect."""
