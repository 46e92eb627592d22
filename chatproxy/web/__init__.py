"""The HTTP layer: blueprints for the page, `/callChatGPT`, `/api`, `/v1`, health and OpenAPI,
and what only they use (SSE responses, security headers, the request log).

Views parse and bound the input, call `access`, `store` and `upstream` to do
the work, and shape the response. Nothing below this package imports it.
"""
