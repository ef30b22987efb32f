"""``zlh dev``: a running platform's containers from the command line, over its public API."""
