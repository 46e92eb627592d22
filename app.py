"""The application factory, for `flask --app app run` and the tests."""

from chatproxy import create_app

__all__ = ["create_app"]
