"""Everything HTTP-facing: quart-trio app, hypercorn server, httpx relay."""
