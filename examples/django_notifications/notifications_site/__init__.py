"""The example project: per-user notifications over SSE and a room chat."""
