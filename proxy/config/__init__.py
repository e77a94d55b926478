"""What a valid configuration is, and what it compiles to.

- types, units: the schema's building blocks (strict frozen models; ``5s``, ``64KiB``);
- schema, route_schema, upstream_schema: config.yaml's models (a model that configures a
  runtime object of the same name carries a ``Config`` suffix: ``QuotaConfig``);
- loader: YAML text to a ``Config``, or errors that name the file, line and column;
- yaml_reading: the strict YAML loader, and a lean parse for large files;
- sharing: equal parts of a loaded config's routes held once (10,000 routes, less memory);
- runtime: the compiled, immutable snapshot the request path reads;
- reload_plan: what a new config changes, and watching the file.

Imports: the standard library, PyYAML, pydantic and yarl, and the pure rules a config is checked
against or compiled into: chain, cache.rules, and the settings of upstreams' breaker,
budget and quota. Never aiohttp, http, ops, buffer or the wiring. chain.routing and
chain.payloads read the schema models in turn (a route is compiled from them at load
time): the schema modules sit below them, runtime above.
"""
