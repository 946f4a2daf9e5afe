"""One participant as its own process: ``derelayl node`` (its key, its data, its model store,
an HTTP server, a connection to the contract), and ``derelayl devnet`` (a network of such
processes on one machine). The only networking code of derelayl."""
