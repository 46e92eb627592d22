"""The store: the database (`database`), its tables (`models`), conversations and
their turns (`conversations`), and exports and imports (`exports`).
"""
