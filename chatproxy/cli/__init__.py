"""The `flask` terminal commands: `chat`, `conversations`, `keys`, `usage`."""
