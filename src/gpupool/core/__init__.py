"""The pure scheduling core: cluster state, requests, fragmentation, the plugin framework.

Nothing here performs I/O, reads the wall clock or uses global randomness: callers inject
a seeded ``numpy.random.Generator`` where a choice must be random.
"""
