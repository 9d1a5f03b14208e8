"""HTTP edge: the aiohttp app with the token API, health, metrics and (later) the Slack endpoint."""
