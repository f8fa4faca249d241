"""The bundled provider sandbox: a deterministic universe of SMEs served over HTTP as four providers.

* :mod:`connectors.sandbox.universe` - the SMEs and their data, and the canonical ground truth;
* :mod:`connectors.sandbox.providers` - the wire payloads (pure renderers);
* :mod:`connectors.sandbox.auth` - client credentials and the tokens the providers accept;
* :mod:`connectors.sandbox.server` - the HTTP server (``SandboxServer``, ``serve_forever``);
* :mod:`connectors.sandbox.seed` - registering a universe in the warehouse.

See ``README.md`` in this folder for the universe and the wire shapes.
"""
