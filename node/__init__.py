"""The Scale0 node process: HTTP front door, request pipeline, worker broker, worker SDK, CLI."""
