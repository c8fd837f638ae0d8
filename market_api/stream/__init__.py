"""The push stream (Server-Sent Events): routes, the response body, the hub, the change
reader, the encoding. docs/design/api-internals.md ("The push stream") explains it."""
