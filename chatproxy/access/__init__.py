"""Who may ask and how much: access keys (`keys`), and per-minute limits, daily
quotas and the usage ledger (`quotas`), and the check of both
before every API request (`check`).
"""
