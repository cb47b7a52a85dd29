"""A faithful Bitrix24 simulator: portals' REST, the OAuth server, limits and event delivery.

Bitrix24 cannot be reached from the test machines, and its awkward behaviour (leaky-bucket
limits, rotating refresh tokens, events without retries, echoes of the app's own writes) is
exactly what b24pipe has to survive. One aiohttp process serves everything on one port:
`python -m b24pipe.sim --port P` (see README "Bitrix24 simulator").
"""
