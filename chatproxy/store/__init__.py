"""The store: the database (`database`), its tables (`models`) and their
migrations (`schema`), conversations and their turns (`conversations`), and
exports and imports (`exports`).
"""
