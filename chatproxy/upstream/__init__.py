"""The upstream client: requests to OpenAI or an OpenAI-compatible server, with retries,
failover, error mapping (`client`), its connection pools (`transport`), and
streamed answers read piece by piece (`streams`).
"""
