"""The products, each declared once as a `ProductModule` (module.py) in its own package, and the
registry (registry.py) the hubs iterate: engine, error mapping, routes, socket commands, streams,
projection, drivers and CLI. docs/adding-a-product.md walks through adding one."""
