"""The router's OpenAI-compatible Images API: a thin HTTP edge over the same RouterEngine, token
file, limits and metrics as the gRPC port (schemas, mapping, errors, the app and its host)."""
